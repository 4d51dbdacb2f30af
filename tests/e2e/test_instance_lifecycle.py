"""The instance's own folder, raised open-file limits and the check after stop,
for real: a scaffolded scenario whose Python server writes what it saw into
its instance folder on SIGTERM, and an after-stop check that reads it back,
under both runtimes. A variant that writes nothing must fail at after-stop,
keep its folder, and leave nothing running."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from harness import results
from harness.limits import nofile_target

from ..conftest import ROOT, SHORT_WINDOWS, langbench_processes

pytestmark = pytest.mark.e2e

SERVER_PATCH = '''
import json as _json, resource as _resource

_served = [0]
_orig_answer = Handler.answer


def _counting_answer(self, status, body):
    if status == 200:
        _served[0] += 1
    return _orig_answer(self, status, body)


Handler.answer = _counting_answer


def _write_stop_file():
    if os.environ.get("WRITE_STOP_FILE", "1") != "1":
        return
    folder = os.environ["LANGBENCH_INSTANCE_DIR"]
    soft, hard = _resource.getrlimit(_resource.RLIMIT_NOFILE)
    with open(os.path.join(folder, "stopped.json.tmp"), "w") as fh:
        _json.dump({"served": _served[0], "nofile_soft": soft, "nofile_hard": hard}, fh)
    os.rename(os.path.join(folder, "stopped.json.tmp"), os.path.join(folder, "stopped.json"))


if __name__ == "__main__":
    main()
    _write_stop_file()
'''

CHECK = '''"""After stop: the server's stop file exists and counts at least the correct answers seen."""
import json, os, sys
folder, ok_total = sys.argv[1], int(sys.argv[2])
path = os.path.join(folder, "stopped.json")
if not os.path.exists(path):
    print(json.dumps({"ok": False, "checks": [{"name": "stop file", "ok": False,
                      "detail": "no stopped.json in " + folder}]}))
    sys.exit(1)
d = json.load(open(path))
ok = d["served"] >= ok_total
print(json.dumps({"ok": ok, "checks": [{"name": "served", "ok": ok, "detail": f"{d['served']} served, {ok_total} counted"}],
                  "metrics": {"served": d["served"], "nofile": {"value": d["nofile_soft"], "unit": "files", "better": "none"}}}))
sys.exit(0 if ok else 1)
'''


def _scaffold(tmp_path_factory, name: str):
    """A throw-away project with `langbench new NAME`, Python only."""
    root = tmp_path_factory.mktemp(name) / "proj"
    (root / "scenarios").mkdir(parents=True)
    (root / "implementations").mkdir()
    if (ROOT / "tools").is_dir():
        shutil.copytree(ROOT / "tools", root / "tools")
    cli = [sys.executable, "-m", "harness.cli", "--root", str(root)]
    assert subprocess.run([*cli, "new", name], capture_output=True, text=True).returncode == 0
    for other in ("go", "rust", "scala"):
        shutil.rmtree(root / "implementations" / name / other)
    return root, cli


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root, cli = _scaffold(tmp_path_factory, "stopfile")
    sc = root / "scenarios" / "stopfile"
    (sc / "after_stop.py").write_text(CHECK)
    toml = (sc / "scenario.toml").read_text()
    toml = toml.replace("\n[env]\n", '\n[after_stop]\ncommand = ["{python}", "{scenario_dir}/after_stop.py", '
                                      '"{instance_dir}", "{ok_total}"]\ntimeout_s = 30\n\n[env]\n', 1)
    (sc / "scenario.toml").write_text(toml)
    impls = root / "implementations" / "stopfile"
    server = impls / "python" / "server.py"
    src = server.read_text().replace('if __name__ == "__main__":\n    main()\n', "")
    server.write_text(src + SERVER_PATCH)
    shutil.copytree(impls / "python", impls / "python-silent")
    manifest = impls / "python-silent" / "langbench.toml"
    manifest.write_text(manifest.read_text().replace('[run]\n', '[run]\nenv = { WRITE_STOP_FILE = "0" }\n', 1))
    return root, cli


@pytest.mark.parametrize("runtime", ["process", "docker"])
def test_instance_folder_nofile_and_after_stop(project, tmp_path, runtime):
    root, cli = project
    out = tmp_path / "run"
    proc = subprocess.run([*cli, "run", "stopfile", "--runtime", runtime, "--profile", "quick", *SHORT_WINDOWS,
                           "--out", str(out), "--no-report", "--no-interop", "--no-calibrate"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 1, proc.stderr[-3000:]        # the silent variant fails
    data = results.load(out)
    insts = {i["implementation_id"]: i for i in data["instances"]}
    good, silent = insts["stopfile/python"], insts["stopfile/python-silent"]
    # the good one: the check read the file the server wrote after SIGTERM
    assert good["error"] is None and good["after_stop"]["ok"], good["after_stop"]
    m = good["after_stop"]["metrics"]
    assert m["served"]["value"] >= good["ok_total"] > 0
    assert m["nofile"]["value"] == good["nofile"] == nofile_target()
    assert good["instance_files"] == {"count": 1, "bytes": good["instance_files"]["bytes"], "kept": False}
    assert not (out / "instances" / "stopfile-python-t1").exists()
    # the silent one: failed at after-stop, its (empty) folder recorded, the run's other results kept
    assert "check after stop failed" in silent["error"] and "no stopped.json" in silent["error"]
    assert data["implementations"]["stopfile/python-silent"]["failure"].startswith("after-stop:")
    assert data["implementations"]["stopfile/python"]["status"] == "ok"
    rows = results.flat_rows(data)
    assert {r["implementation"] for r in rows if r["ok"]} >= {"python"}
    assert langbench_processes() == []
    if runtime == "docker":
        left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=langbench.run={data['run_id']}"],
                              capture_output=True, text=True).stdout.split()
        assert left == []


@pytest.fixture(scope="module")
def duo(tmp_path_factory):
    """A scaffolded scenario run as two nodes (b started first, a the entry),
    with node b killed at 30% of every level and started again at 60%."""
    root, cli = _scaffold(tmp_path_factory, "duo")
    sc = root / "scenarios" / "duo"
    toml = (sc / "scenario.toml").read_text()
    toml = toml.replace("\n[env]\n", '\n[topology]\nnodes = ["b", "a"]\nentry = "a"\n\n[env]\n', 1)
    toml = toml.replace('driver = "wrk"', 'driver = "wrk"\nfaults = [{at = 0.3, action = "kill", target = "b"}, '
                                          '{at = 0.6, action = "start", target = "b"}]', 1)
    (sc / "scenario.toml").write_text(toml)
    impls = root / "implementations" / "duo"
    manifest = impls / "python" / "langbench.toml"
    text = manifest.read_text()
    run_block = text[text.index("[run]"):text.index("[tuning]")]
    nodes = ('[nodes.a]\ncommand = ["python3", "server.py"]\nenv = { NEXT = "{node.b.target}" }\n\n'
             '[nodes.b]\ncommand = ["python3", "server.py"]\nenv = { GREETING = "hello" }\n\n')
    manifest.write_text(text.replace(run_block, nodes))
    return root, cli


@pytest.mark.parametrize("runtime", ["process", "docker"])
def test_two_nodes_with_a_node_killed_under_load(duo, tmp_path, runtime):
    root, cli = duo
    out = tmp_path / "run"
    proc = subprocess.run([*cli, "run", "duo", "--runtime", runtime, "--profile", "quick", "--out", str(out),
                           "--no-report", "--no-interop", "--no-calibrate"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = results.load(out)
    inst = data["instances"][0]
    assert list(inst["nodes"]) == ["b", "a"]
    assert inst["nodes"]["a"]["env"]["NEXT"] == f"127.0.0.1:{inst['nodes']['b']['port']}"
    assert inst["nodes"]["b"]["restarts"] == len(data["measurements"]) == 2
    for m in data["measurements"]:
        assert m["ok"], m["error"]
        assert [(e["action"], e["target"], e["ok"]) for e in m["faults"]] == [("kill", "b", True),
                                                                             ("start", "b", True)]
        a = m["nodes"]["a"]
        assert a["cpu_cores"] > 0 and a["rss_mb"] > 5          # the entry node served the load
        assert m["nodes"]["b"]["cpu_cores"] is None              # replaced inside the window
        assert m["server"]["cpu_cores"] >= a["cpu_cores"] * 0.99
    rows = results.flat_rows(data)
    assert all(r["nodes"] == 2 for r in rows)
    assert langbench_processes() == []
    if runtime == "docker":
        assert inst["nodes"]["a"]["runtime"]["container_name"] != inst["nodes"]["b"]["runtime"]["container_name"]
        left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=langbench.run={data['run_id']}"],
                              capture_output=True, text=True).stdout.split()
        assert left == []
