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


SERVICE = """
[[services]]
name = "db"
command = ["db", "--port", "{svc.db.port}"]
ports = ["port"]
readiness = { kind = "tcp" }
"""


@pytest.mark.parametrize("docker, field, ok", [
    ('docker = { dockerfile = "db/Dockerfile" }', None, True),
    ('docker = { dockerfile = "db/Dockerfile", context = ".", command = ["db"] }', None, True),
    ('docker = { dockerfile = "db/Nope" }', "services[0].docker.dockerfile", False),
    ('docker = { dockerfile = "../../elsewhere/Dockerfile" }', "services[0].docker.dockerfile", False),
    ('docker = { dockerfile = "db/Dockerfile", context = "data" }', "services[0].docker.dockerfile", False),
    ('docker = { dockerfile = "db/Dockerfile", context = "missing" }', "services[0].docker.context", False),
    ('docker = { file = "db/Dockerfile" }', "services[0].docker.file", False),
    ('docker = "db/Dockerfile"', "services[0].docker", False),
])
def test_service_image_declaration(mini_root, docker, field, ok):
    sc_dir = mini_root / "scenarios" / "notes-grpc"
    (sc_dir / "db").mkdir()
    (sc_dir / "db" / "Dockerfile").write_text("FROM scratch\n")
    toml = sc_dir / "scenario.toml"
    toml.write_text(toml.read_text() + SERVICE + docker + "\n")
    if ok:
        svc = load_scenario(toml).services[0]
        assert svc.docker.dockerfile == (sc_dir / "db" / "Dockerfile").resolve()
        assert svc.docker.context.is_dir() and svc.docker.dockerfile.is_relative_to(svc.docker.context)
        return
    with pytest.raises(ManifestError) as exc:
        load_scenario(toml)
    assert exc.value.field == field and str(toml) in str(exc.value)


def test_kafka_broker_declares_its_image(root):
    svc = load_scenario(root / "scenarios" / "events-kafka" / "scenario.toml").services[0]
    assert svc.name == "kafka" and svc.docker.dockerfile.name == "Dockerfile"
    assert "kafka" in svc.docker.dockerfile.read_text().lower()


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
    (["run", "notes-grpc", "--duration", "0.1"], "--duration: 0.1 s is out of range"),
    (["run", "notes-grpc", "--warmup", "-1"], "--warmup: -1 s is out of range"),
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


def test_duration_and_warmup_replace_the_chosen_profile_windows(root):
    """--duration/--warmup: the chosen profile's windows and the workloads'
    own durations for it are replaced; other profiles are left alone."""
    from harness.cli import _with_windows
    sel = discover(root).select(["ws-echo"], None)
    (sc, _), = _with_windows(sel, "quick", 2.0, 1.0)
    q = sc.profiles["quick"]
    assert (q.duration_s, q.warmup_s) == (2.0, 1.0)
    tail = sc.workload("tail")
    assert tail.duration_s("quick", q.duration_s) == 2.0
    assert tail.duration_s("standard", 6) == 20            # the standard profile's own, untouched
    assert sc.profiles["standard"].duration_s == sel[0][0].profiles["standard"].duration_s
    (sc, _), = _with_windows(sel, "quick", None, 0.0)
    assert sc.profiles["quick"].duration_s == sel[0][0].profiles["quick"].duration_s
    assert sc.profiles["quick"].warmup_s == 0.0 and sc.workload("tail").duration_s("quick", 4) == 5
