"""Harness core seams: drivers validate their own params and declare level
kinds and metrics; runtimes are found by name and place by role; scenario
Python dependencies; check metrics; open-file limits."""
from __future__ import annotations

import resource
import subprocess
import sys
from types import SimpleNamespace

import pytest

from harness import deps, limits
from harness.checks import parse_metrics, run_verdict
from harness.drivers import get_driver
from harness.drivers.base import run_pinned
from harness.errors import InputError, ManifestError
from harness.manifest import Level, load_scenario
from harness.runtimes import get_runtime, runtime_names

from .conftest import ROOT


def _scenario(mini_root):
    return mini_root / "scenarios" / "notes-grpc" / "scenario.toml"


@pytest.mark.parametrize("old, new, field, words", [
    ('driver = "grpcload"', 'driver = "loadinator"', "workloads[0].driver", "unknown load driver 'loadinator'"),
    ('call = "notes.Noticeboard.GetNoteByTitle"', 'call = "x"\ncolour = "red"', "workloads[0].params.colour",
     "unknown parameter of driver grpcload"),
    ('call = "notes.Noticeboard.GetNoteByTitle"', '', "workloads[0].params.call", "missing (required by driver grpcload)"),
    ('data_file = "data/titles.json"', 'data_file = "data/nope.json"', "workloads[0].params.data_file",
     "no file 'data/nope.json'"),
    ('data_file = "data/titles.json"', 'data_file = "data/titles.json"\nconnections = "eight"',
     "workloads[0].params.connections", "expected int"),
    ('data_file = "data/titles.json"', 'data_file = "data/titles.json"\nconnections = 0',
     "workloads[0].params.connections", "at least 1"),
    ('rate = [1000]', 'rate = [1000]\nconnections = [1000]', "profiles.quick.connections",
     "no workload's driver takes 'connections' levels"),
])
def test_driver_validates_its_params_when_the_manifest_loads(mini_root, old, new, field, words):
    toml = _scenario(mini_root)
    text = toml.read_text()
    assert old in text
    toml.write_text(text.replace(old, new, 1))
    with pytest.raises(ManifestError) as exc:
        load_scenario(toml)
    assert exc.value.field == field and words in str(exc.value), str(exc.value)


def test_bad_driver_param_is_exit_2_before_any_build(mini_root):
    toml = _scenario(mini_root)
    toml.write_text(toml.read_text().replace("[workloads.params]\nproto", "[workloads.params]\nbogus = 1\nproto", 1))
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "--root", str(mini_root), "run", "--runtime",
                           "process", "--profile", "quick"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "params.bogus" in proc.stderr
    assert not (mini_root / ".langbench").exists()          # nothing was built


def test_level_kinds_go_to_the_workloads_whose_driver_takes_them(mini_root):
    sc = load_scenario(_scenario(mini_root))
    lv = sc.profiles["quick"]
    assert lv.kinds() == {"concurrency", "rate"}
    wrk, ghz = get_driver("wrk"), get_driver("ghz")
    assert [x.key for x in lv.levels(wrk.level_kinds)] == ["c16", "c64"]
    assert [x.key for x in lv.levels(ghz.level_kinds)] == ["c16", "c64", "r1000"]
    assert Level("connections", 5000).key == "connections-5000"
    # every driver declares its metrics with a direction
    for d in (wrk, ghz):
        assert {m.name for m in d.metrics} >= {"rps", "p99_ms", "errors"}
        assert all(m.better in ("higher", "lower", "none") for m in d.metrics)


def test_a_profile_that_leaves_a_workload_without_levels_is_refused(mini_root):
    toml = _scenario(mini_root)
    text = toml.read_text()
    # events-kafka style: a wrk workload beside a rate-only profile gets nothing
    text = text.replace('driver = "grpcload"', 'driver = "wrk"', 1).replace(
        'proto = "notes.proto"\ncall = "notes.Noticeboard.GetNoteByTitle"\ndata_file = "data/titles.json"',
        'script = "check.py"', 1)
    text = text.replace('ok_status = ["OK", "NotFound"]', 'ok_status = ["200"]', 1)
    text = text.replace("status_ratio = { OK = 200, NotFound = 10 }\nconsistent = true\nnull_messages = 1\n"
                        "null_message_bytes = 397", "", 1)
    text = text.replace("concurrency = [16, 64]\nrate = [1000]", "rate = [1000]", 1)
    toml.write_text(text)
    with pytest.raises(ManifestError) as exc:
        load_scenario(toml)
    assert exc.value.field == "profiles.quick.rate" and "workload 'unary' gets no level" in str(exc.value)


def test_runtimes_by_name_and_placement():
    assert {"process", "docker"} <= set(runtime_names())
    assert "base" not in runtime_names() and "cgroups" not in runtime_names()
    rt = get_runtime("process")
    assert rt.name == "process"
    for role in ("server", "client", "service"):
        assert rt.address(role) == "127.0.0.1"
        port = rt.free_port(role)
        assert 1024 < port < 65536
    with pytest.raises(ValueError):
        rt.address("database")
    with pytest.raises(InputError) as exc:
        get_runtime("kubernetes")
    assert "known: docker" in str(exc.value) and "process" in str(exc.value)


def test_scenario_python_dependencies(mini_root, tmp_path):
    toml = _scenario(mini_root)
    text = toml.read_text()
    toml.write_text(text.replace("requires = [", 'requires = ["no-such-package-langbench==1.0", ', 1))
    sc = load_scenario(toml)
    gone = deps.missing([sc])
    assert gone == [("notes-grpc", "no-such-package-langbench==1.0", "not installed")]
    with pytest.raises(InputError) as exc:
        deps.check_installed([sc])
    assert "scenario.toml: field 'python.requires'" in str(exc.value)
    too_old = SimpleNamespace(name="x", python_requires=["pytest>=999"])
    assert deps.missing([too_old])[0][2].endswith("installed")
    assert deps.missing([SimpleNamespace(name="x", python_requires=["pytest>=1"])]) == []
    toml.write_text(text.replace("requires = [", 'requires = ["not a requirement!!", ', 1))
    with pytest.raises(ManifestError) as exc2:
        load_scenario(toml)
    assert exc2.value.field == "python.requires[0]"


def test_check_metrics_are_parsed_and_validated(tmp_path):
    m, bad = parse_metrics({"records": 12, "recovery_s": {"value": 1.5, "unit": "s", "better": "lower"}})
    assert bad is None and m == {"records": {"value": 12, "unit": "", "better": "none"},
                                 "recovery_s": {"value": 1.5, "unit": "s", "better": "lower"}}
    for raw, words in [({"x": "many"}, "metrics.x: expected a number"), ({"x": True}, "expected a number"),
                       ({"x": {"value": 1, "better": "up"}}, "better must be"), ({"a b": 1}, "metric name"),
                       ([1], "expected an object")]:
        assert words in parse_metrics(raw)[1]
    script = tmp_path / "v.py"
    script.write_text('import json; print(json.dumps({"ok": True, "checks": [], "metrics": {"n": "x"}}))')
    v = run_verdict([sys.executable, str(script)], tmp_path, 10)
    assert not v.ok and "malformed verdict: metrics.n" in v.detail
    script.write_text('import json; print(json.dumps({"ok": True, "checks": [], "metrics": {"n": 3}}))')
    v = run_verdict([sys.executable, str(script)], tmp_path, 10)
    assert v.ok and v.to_json()["metrics"]["n"]["value"] == 3


def test_load_tools_get_the_raised_open_file_limit():
    want = limits.nofile_target()
    assert want >= resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    run = run_pinned(["sh", "-c", "ulimit -n; ulimit -Hn"], [0], timeout_s=10)
    soft, hard = run.stdout.split()
    assert int(soft) == int(hard) == want
    if limits.can_raise_hard_limits():
        assert want == min(limits.NOFILE, int(open("/proc/sys/fs/nr_open").read()))
    else:
        assert want == resource.getrlimit(resource.RLIMIT_NOFILE)[1]       # the hard limit is the ceiling


TOPOLOGY = '''
[topology]
nodes = ["c", "b", "a"]
entry = "a"
readiness.b = { kind = "tcp", timeout_s = 5 }
'''

NODES_IMPL = '''
language = "go"
framework = "f"
[nodes.a]
command = ["srv", "--next", "{node.b.target}"]
[nodes.b]
command = ["srv", "--next", "{node.c.target}"]
container_command = ["/app/srv", "--next", "{node.c.target}"]
[nodes.c]
command = ["srv"]
env = { LEDGER = "{instance_dir}/ledger" }
[tuning]
t = "1"
'''


def _with_topology(mini_root):
    toml = _scenario(mini_root)
    text = toml.read_text()
    toml.write_text(text.replace("\n[env]\n", TOPOLOGY + "\n[env]\n", 1))
    return toml


def test_topology_and_nodes_load(mini_root):
    from harness.manifest import discover
    toml = _with_topology(mini_root)
    sc = load_scenario(toml)
    assert sc.node_names == ["c", "b", "a"] and sc.entry == "a"
    assert sc.topology.readiness["b"].kind == "tcp" and sc.topology.readiness["a"] == sc.readiness
    d = mini_root / "implementations" / "notes-grpc" / "tri"
    d.mkdir(parents=True)
    (d / "langbench.toml").write_text(NODES_IMPL)
    impl = discover(mini_root).implementations["notes-grpc"][0]
    assert impl.node("b").container_command[0] == "/app/srv" and impl.node("c").env["LEDGER"]
    # an implementation with [run] has one node, "server", running that command
    one = discover(ROOT).implementations["notes-grpc"][0]
    assert one.node("server").command == one.run and not one.node_specs
    assert load_scenario(ROOT / "scenarios" / "notes-grpc" / "scenario.toml").node_names == ["server"]


@pytest.mark.parametrize("impl_text, field", [
    (NODES_IMPL.replace("[nodes.c]\ncommand = [\"srv\"]\nenv = { LEDGER = \"{instance_dir}/ledger\" }\n", ""),
     "nodes.c"),
    (NODES_IMPL.replace("[nodes.c]", "[nodes.d]"), "nodes.c"),
    (NODES_IMPL.replace("[tuning]", "[run]\ncommand = [\"x\"]\n[tuning]"), "run"),
    ('language = "go"\nframework = "f"\n[run]\ncommand = ["x"]\n[tuning]\nt = "1"\n', "run"),
])
def test_implementation_must_declare_the_scenarios_nodes(mini_root, impl_text, field):
    from harness.manifest import discover
    _with_topology(mini_root)
    d = mini_root / "implementations" / "notes-grpc" / "tri"
    d.mkdir(parents=True)
    (d / "langbench.toml").write_text(impl_text)
    with pytest.raises(ManifestError) as exc:
        discover(mini_root)
    assert exc.value.field == field, str(exc.value)


def test_nodes_in_a_one_node_scenario_are_refused(mini_root):
    from harness.manifest import discover
    d = mini_root / "implementations" / "notes-grpc" / "tri"
    d.mkdir(parents=True)
    (d / "langbench.toml").write_text(NODES_IMPL)
    with pytest.raises(ManifestError) as exc:
        discover(mini_root)
    assert exc.value.field == "nodes" and "declare [run]" in str(exc.value)


def test_declared_mixes_join_a_full_run_only(mini_root):
    from harness.manifest import discover
    toml = _with_topology(mini_root)
    toml.write_text(toml.read_text().replace('entry = "a"\n', 'entry = "a"\nmixes = ["a=tri,b=duo,c=tri", '
                                                               '"a=duo,b=tri,c=cobol"]\n', 1))
    for name, lang in (("tri", "go"), ("duo", "rust")):
        d = mini_root / "implementations" / "notes-grpc" / name
        d.mkdir(parents=True)
        (d / "langbench.toml").write_text(NODES_IMPL.replace('language = "go"', f'language = "{lang}"'))
    cat = discover(mini_root)
    assert cat.scenarios["notes-grpc"].topology.mixes[0] == {"a": "tri", "b": "duo", "c": "tri"}
    (_, impls), = cat.select(["notes-grpc"], None)
    # the mix whose parts all exist joins; the one naming a missing implementation does not
    assert [i.name for i in impls] == ["duo", "tri", "mix-a.tri-b.duo-c.tri"]
    m = impls[-1]
    assert m.language == "mixed" and m.node("b").owner.name == "duo" and m.node("a").owner.name == "tri"
    (_, impls), = cat.select(["notes-grpc"], ["tri", "duo"])
    assert [i.name for i in impls] == ["duo", "tri"]           # --impl: what was named, no mixes
    # mix_trials: the declared mixes run in the first trials only
    from harness.runner import make_plan
    toml.write_text(toml.read_text().replace('entry = "a"\n', 'entry = "a"\nmix_trials = 1\n', 1))
    sel = discover(mini_root).select(["notes-grpc"], None)
    plan = make_plan(sel, 3, 7)
    assert sorted((p.impl.name, p.trial) for p in plan if p.impl.language == "mixed") == [("mix-a.tri-b.duo-c.tri", 1)]
    assert len([p for p in plan if p.impl.language != "mixed"]) == 6


@pytest.mark.parametrize("topology, field", [
    ('[topology]\nnodes = ["a", "b"]\nmixes = ["a=go"]\n', "topology.mixes[0]"),
    ('[topology]\nnodes = ["a", "b"]\nmixes = ["a=go,b"]\n', "topology.mixes[0]"),
    ('[topology]\nnodes = ["a", "b"]\nmixes = ["a=go,b=go,a=rust"]\n', "topology.mixes[0]"),
    ('[topology]\nnodes = ["a", "b"]\nmix_trials = 0\n', "topology.mix_trials"),
    ('[topology]\nnodes = ["a", "a"]\n', "topology.nodes"),
    ('[topology]\nnodes = ["a", "b"]\nentry = "z"\n', "topology.entry"),
    ('[topology]\nnodes = ["a-1"]\n', "topology.nodes[0]"),
    ('[topology]\nnodes = ["a"]\nreadiness.q = { kind = "tcp" }\n', "topology.readiness.q"),
    ('[topology]\nnodes = ["a"]\nquota = "half"\n', "topology.quota"),
])
def test_bad_topology_names_the_field(mini_root, topology, field):
    toml = _scenario(mini_root)
    toml.write_text(toml.read_text().replace("\n[env]\n", "\n" + topology + "\n[env]\n", 1))
    with pytest.raises(ManifestError) as exc:
        load_scenario(toml)
    assert exc.value.field == field, str(exc.value)


def test_fault_schedule_targets_are_checked(mini_root):
    toml = _with_topology(mini_root)
    text = toml.read_text()
    good = text.replace('driver = "grpcload"', 'driver = "grpcload"\nfaults = [{at = 0.4, action = "kill", target = "b"}, '
                                          '{at = 0.6, action = "start", target = "b"}]', 1)
    toml.write_text(good)
    w = load_scenario(toml).workloads[0]
    assert [(f.at, f.action, f.target) for f in w.faults] == [(0.4, "kill", "b"), (0.6, "start", "b")]
    for bad, field in [('{at = 1.4, action = "kill", target = "b"}', "workloads[0].faults[0].at"),
                       ('{at = 0.4, action = "nuke", target = "b"}', "workloads[0].faults[0].action"),
                       ('{at = 0.4, action = "kill", target = "zz"}', "workloads[0].faults[0].target")]:
        toml.write_text(text.replace('driver = "grpcload"', f'driver = "grpcload"\nfaults = [{bad}]', 1))
        with pytest.raises(ManifestError) as exc:
            load_scenario(toml)
        assert exc.value.field == field, str(exc.value)


def test_cli_mix_errors_are_one_line_exit_2():
    cli = [sys.executable, "-m", "harness.cli", "--root", str(ROOT), "run"]
    for argv, words in [(["notes-grpc", "--mix", "a=go"], "runs one node per implementation"),
                        (["--mix", "a=go"], "name exactly one scenario"),
                        (["notes-grpc", "--mix", "a"], "'a' is not NODE=IMPLEMENTATION")]:
        proc = subprocess.run([*cli, *argv, "--runtime", "process"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, \
            proc.stderr
