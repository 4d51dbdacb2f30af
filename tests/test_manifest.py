from __future__ import annotations

import subprocess
import sys

import pytest

from harness.errors import ManifestError
from harness.manifest import Level, discover, load_implementation, load_scenario

from .conftest import add_impl

GOOD_IMPL = """
language = "python"
framework = "test"
[run]
command = ["python3", "server.py"]
[tuning]
threads = "1"
"""


def test_real_project_is_discovered(root):
    cat = discover(root)
    sc = cat.scenario("notes-grpc")
    assert [w.name for w in sc.workloads] == ["unary", "stream"]
    assert {"quick", "standard"} <= set(sc.profiles)
    levels = sc.profiles["quick"].levels()
    assert [lv.kind for lv in levels].count("rate") == 1
    langs = {i.language for i in cat.implementations["notes-grpc"]}
    assert langs == {"python", "go", "rust", "scala"}
    for impl in cat.implementations["notes-grpc"]:
        assert impl.tuning, impl.id
        assert impl.client, impl.id


@pytest.mark.parametrize("text, field", [
    ('language = "go"\n[run]\ncommand = ["x"]\n[tuning]\na = "b"\n', "framework"),
    ('language = "go"\nframework = "f"\n[tuning]\na = "b"\n', "run"),
    ('language = "go"\nframework = "f"\n[run]\ncommand = "x"\n[tuning]\na = "b"\n', "run.command"),
    ('language = "go"\nframework = "f"\n[run]\ncommand = ["x"]\n', "tuning"),
    ('language = 3\nframework = "f"\n[run]\ncommand = ["x"]\n[tuning]\na = "b"\n', "language"),
    ('language = "go"\nframework = "f"\ncolour = 1\n[run]\ncommand = ["x"]\n[tuning]\na = "b"\n', "colour"),
    ('language = "go"\nframework = "f"\n[run]\ncommand = ["x"]\n[tuning]\n', "tuning"),
    ('language = "go"\nframework = "f"\n[build]\ncommand = []\n[run]\ncommand = ["x"]\n[tuning]\na = "b"\n',
     "build.command"),
    ('language = "go"\nframework = "f"\n[run]\ncommand = ["x"]\nenv = { A = true }\n[tuning]\na = "b"\n',
     "run.env.A"),
    ('language = "go" framework\n', "(syntax)"),
])
def test_bad_implementation_manifest_names_file_and_field(tmp_path, text, field):
    p = tmp_path / "go" / "langbench.toml"
    p.parent.mkdir()
    p.write_text(text)
    with pytest.raises(ManifestError) as exc:
        load_implementation(p, "notes-grpc")
    assert exc.value.field == field
    assert str(p) in str(exc.value) and f"'{field}'" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_bad_scenario_fields(mini_root):
    toml = mini_root / "scenarios" / "notes-grpc" / "scenario.toml"
    text = toml.read_text()
    toml.write_text(text.replace('kind = "grpc"', 'kind = "smoke-signal"'))
    with pytest.raises(ManifestError) as exc:
        load_scenario(toml)
    assert exc.value.field == "readiness.kind"
    toml.write_text(text.replace('concurrency = [16, 64]', 'concurrency = [16, -1]'))
    with pytest.raises(ManifestError) as exc:
        load_scenario(toml)
    assert exc.value.field == "profiles.quick.concurrency"
    toml.write_text(text.replace('name = "notes-grpc"', 'name = "other"'))
    with pytest.raises(ManifestError) as exc:
        load_scenario(toml)
    assert exc.value.field == "name"


def test_cli_list_reports_malformed_manifest_in_one_line(mini_root):
    add_impl(mini_root, "broken", 'language = "go"\nframework = "f"\n[run]\ncommand = "server"\n[tuning]\na = "b"\n')
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "--root", str(mini_root), "list"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "broken/langbench.toml" in lines[0] and "'run.command'" in lines[0]


def test_cli_list_json(mini_root):
    add_impl(mini_root, "py", GOOD_IMPL)
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "--root", str(mini_root), "list",
                           "--format", "json"], capture_output=True, text=True, check=True)
    import json
    data = json.loads(proc.stdout)
    assert data[0]["scenario"] == "notes-grpc"
    assert data[0]["implementations"] == [{"name": "py", "language": "python", "framework": "test"}]
    assert data[0]["workloads"] == ["unary", "stream"]


@pytest.mark.parametrize("args, needle", [
    (["run", "no-such-scenario"], "unknown scenario 'no-such-scenario'"),
    (["run", "notes-grpc", "--impl", "cobol"], "unknown implementation 'cobol'"),
    (["report", "/nonexistent/run"], "no such results file"),
])
def test_cli_bad_input_exit_2(root, args, needle):
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "--root", str(root), *args],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_level_keys():
    assert Level("concurrency", 16).key == "c16"
    assert Level("rate", 500, concurrency=64).to_json() == {"kind": "rate", "value": 500, "key": "r500",
                                                            "concurrency": 64}
