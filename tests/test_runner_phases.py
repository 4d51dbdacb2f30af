"""The runner's phases with a fake runtime and a fake driver (no processes,
no load tool): phase order, counting of correct answers, a fault schedule
during a level, an after-stop check over the instance folder, a server that
dies under load, a failed verification, and Ctrl-C. Runs in seconds."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from harness import calibrate as calibrate_mod
from harness import phases as phases_mod
from harness import runner as runner_mod
from harness.drivers.base import Driver, LoadResult, Metric, Reference
from harness.manifest import (CommandSpec, Fault, Implementation, ProfileLevels, Readiness, Scenario, Service,
                              VerifyStep, Workload)
from harness.profiles import CpuLayout, Profile
from harness.results import flat_rows, load
from harness.runner import Progress, Runner
from harness.runtimes.base import Runtime, ServerHandle, StopResult

TRUE = [sys.executable, "-c", "pass"]


class FakeHandle(ServerHandle):
    def __init__(self, rt, spec):
        self.rt, self.spec = rt, spec
        self.started_at = time.monotonic()
        self.code = None
        self.stopped = False
        rt.started.append(self)

    def alive(self):
        if self.spec.impl is not None and self.spec.impl.name in self.rt.die_after_first_level \
                and self.rt.levels_run.get(self.spec.impl.name, 0) >= 1:
            self.code = 137
        return self.code is None and not self.stopped

    def exit_code(self):
        return self.code

    def cpu_seconds(self):
        return 0.25 * (time.monotonic() - self.started_at)     # a server using a quarter core

    def memory_bytes(self):
        return 40_000_000

    def quota_applied(self):
        return (self.spec.cpu_quota, self.spec.cfs_period_us)

    def stop(self, grace_s=5.0):
        if not self.stopped and self.code is None and self.spec.impl is not None:
            folder = Path(self.spec.env["LANGBENCH_INSTANCE_DIR"])
            (folder / "final.json").write_text(json.dumps({"pid": os.getpid()}))
        if not self.stopped and self.rt.gc_log and self.spec.impl is not None:
            _write_gc_log(self.rt, self.spec)
        self.stopped = True
        self.rt.stops.append((self.spec.key, grace_s, self.spec.labels.get("langbench.node")))
        return StopResult(0 if self.code is None else self.code, 0.01, False)

    def describe(self):
        return {"fake": True}

    def main_pid(self):
        return os.getpid() if self.rt.gc_log else None


def _write_gc_log(rt, spec) -> None:
    """A Go gctrace line in the middle of every level the fake driver ran:
    uptimes counted from this process's start (the fake server's main pid)."""
    from harness import gclog
    start = gclog.process_start_monotonic(os.getpid())
    lines = [f"gc {i + 1} @{(t0 + t1) / 2 - start:.3f}s 1%: 0.050+1.0+{0.1 * (i + 1):.3f} ms clock, x"
             for i, (t0, t1) in enumerate(rt.windows)]
    spec.log_path.parent.mkdir(parents=True, exist_ok=True)
    spec.log_path.write_text("starting\n" + "\n".join(lines) + "\n")


class FakeRuntime(Runtime):
    name = "fake"

    def __init__(self):
        self.started: list[FakeHandle] = []
        self.stops: list[tuple[str, float]] = []
        self.levels_run: dict[str, int] = {}
        self.die_after_first_level: set[str] = set()
        self.fail_start: set[str] = set()
        self.gc_log = False
        self.windows: list[tuple[float, float]] = []

    def available(self):
        return True, "fake"

    def start(self, spec):
        if spec.labels.get("langbench.node") in self.fail_start:
            raise OSError("no such file: server")
        return FakeHandle(self, spec)

    def cleanup_leftovers(self, current_run=None):
        return []

    def running(self):
        return [h for h in self.started if not h.stopped]


class FakeDriver(Driver):
    name = "fake"
    level_kinds = ("concurrency",)
    metrics = Driver.metrics + (Metric("conns_per_mb", "conn/MB", "higher", "connections held per MB"),)
    conns_per_mb = 100.0

    def __init__(self, rt: FakeRuntime, interrupt_at: str | None = None):
        self.rt = rt
        self.interrupt_at = interrupt_at

    def version(self):
        return "fake 1"

    # the reference null server: a real process that accepts connections;
    # against it the fake tool "does" reference_factor times its usual rate
    reference_factor: float | None = None

    def reference(self, workload, scenario, *, host, port, workdir, threads):
        if self.reference_factor is None:
            return None
        code = ("import socket, time\n"
                f"s = socket.socket(); s.bind(('{host}', {port})); s.listen()\n"
                "time.sleep(60)\n")
        return Reference("fake-null", "1", [sys.executable, "-c", code], "accepts connections")

    def run(self, *, target, scenario, workload, level, duration_s, cpus, raw_path, on_start=None,
            instance_dir=None):
        reference = target not in target_impl          # the reference null server
        impl = None if reference else target_impl[target]
        if impl is not None and self.interrupt_at == impl:
            raise KeyboardInterrupt()
        on_start("spawning")
        on_start(os.getpid())
        t0 = time.monotonic()
        time.sleep(duration_s)
        t1 = time.monotonic()
        on_start("exited")
        on_start(None)
        if reference:
            n = round(100 * level.value * self.reference_factor * (t1 - t0) / duration_s)
            return LoadResult(tool="fake", tool_version="1", command=["fake"], level=level.to_json(),
                              duration_s=duration_s, wall_s=t1 - t0, count=n, ok_count=n, errors=0,
                              rps=n / (t1 - t0), latency_ms={"p50": 0.1, "p90": 0.2, "p99": 0.3, "p999": 0.4,
                                                             "max": 0.5, "mean": 0.12}, send_t0=t0, send_t1=t1)
        if raw_path is not None:
            self.rt.levels_run[impl] = self.rt.levels_run.get(impl, 0) + 1
            self.rt.windows.append((t0, t1))
        n = 100 * level.value
        return LoadResult(tool="fake", tool_version="1", command=["fake"], level=level.to_json(),
                          duration_s=duration_s, wall_s=t1 - t0, count=n, ok_count=n, errors=0,
                          rps=n / (t1 - t0), latency_ms={"p50": 1.0, "p90": 2.0, "p99": 3.0, "p999": 4.0,
                                                         "max": 5.0, "mean": 1.2},
                          send_t0=t0, send_t1=t1, extra={"conns_per_mb": self.conns_per_mb * level.value})


target_impl: dict[str, str] = {}       # target -> implementation name (the fake driver's only view)


def _scenario(tmp: Path, faults=(), after_stop=True, verify_ok=True) -> Scenario:
    d = tmp / "scenarios" / "fake"
    d.mkdir(parents=True, exist_ok=True)
    (d / "after_stop.py").write_text(
        "import json, os, sys\n"
        "ok = os.path.exists(os.path.join(sys.argv[1], 'final.json'))\n"
        "print(json.dumps({'ok': ok, 'checks': [{'name': 'final', 'ok': ok, 'detail': sys.argv[1]}],"
        " 'metrics': {'answers': int(sys.argv[2])}}))\n"
        "sys.exit(0 if ok else 1)\n")
    (d / "verify.py").write_text(
        "import json, sys\n"
        f"ok = {verify_ok!r} or sys.argv[1] != 'bad'\n"
        "print(json.dumps({'ok': ok, 'checks': [{'name': 'v', 'ok': ok, 'detail': 'x'}], 'produced': 2}))\n"
        "sys.exit(0 if ok else 1)\n")
    ready = Readiness("command", {"command": TRUE}, 5.0)
    svc = Service("svc", None, TRUE, {}, [], ready, 10.0)
    return Scenario(
        name="fake", title="fake", description="", protocol="none", dir=d, env={}, readiness=ready,
        verify=[VerifyStep("v", [sys.executable, str(d / "verify.py"), "{impl_name}"], 10.0, [])],
        interop=None, services=[svc], before_instance=None, after_load=None,
        after_stop=CommandSpec([sys.executable, str(d / "after_stop.py"), "{instance_dir}", "{ok_total}"], 10.0)
        if after_stop else None,
        workloads=[Workload("w", "", "fake", {}, list(faults))],
        profiles={"quick": ProfileLevels([1, 2], [], 0.3, 0.0)}, manifest_path=d / "scenario.toml")


def _impl(tmp: Path, name: str) -> Implementation:
    d = tmp / "implementations" / "fake" / name
    d.mkdir(parents=True, exist_ok=True)
    return Implementation(scenario="fake", name=name, language=name, framework="f", description="", dir=d,
                          build=None, artifacts=[], requires=[], exclude=[], run=["server"],
                          run_env={"IMPL": name}, client=None, tuning={"t": "1"}, manifest_path=d / "x.toml")


PROFILE = Profile("quick", server_cpu_quota=0.5, cfs_period_us=10_000, sample_hz=20.0, idle_s=0.1, trials=1,
                  client_bound_threshold=0.99, noisy_foreign_cores=10.0, noisy_steal_cores=10.0,
                  warmup_window_s=0.1, warmup_tolerance=0.5, warmup_max_s=1.0)


@pytest.fixture
def harness_env(monkeypatch, tmp_path):
    rt = FakeRuntime()
    drivers = {"fake": FakeDriver(rt)}
    monkeypatch.setattr(runner_mod, "get_driver", lambda name: drivers[name])
    monkeypatch.setattr(phases_mod, "get_driver", lambda name: drivers[name])
    monkeypatch.setattr(calibrate_mod, "get_driver", lambda name: drivers[name])
    monkeypatch.setattr(runner_mod.hostcpu, "pin_all_threads", lambda cpus: [])
    monkeypatch.setattr(runner_mod.builder, "build", _fake_build)
    orig_new = phases_mod.InstanceRun._new_instance

    def new_instance(self):
        ctx = orig_new(self)
        target_impl[ctx.target] = ctx.impl.name
        ctx.placeholders["impl_name"] = ctx.impl.name
        return ctx
    monkeypatch.setattr(phases_mod.InstanceRun, "_new_instance", new_instance)
    return rt, drivers, tmp_path


def _fake_build(impl, sc, cache_dir, log, ph):
    from harness.build import BuildResult
    return BuildResult(ok=True, cached=True, seconds=0.0, artifact_bytes=None, source_hash="fake", command=None,
                       log=str(log))


def _runner(tmp, rt, sc, impls, trials=1) -> Runner:
    cpus = sorted(os.sched_getaffinity(0))
    return Runner(root=tmp, selection=[(sc, impls)], runtime=rt, profile=PROFILE, profile_name="quick",
                  layout=CpuLayout(client=cpus[:1], server=cpus[1:2] or cpus[:1]), out_dir=tmp / "out",
                  trials=trials, seed=1, interop=False, progress=Progress(quiet=True))


def test_phases_in_order_with_a_fault_and_an_after_stop_check(harness_env):
    rt, _, tmp = harness_env
    sc = _scenario(tmp, faults=[Fault(0.2, "stop", "svc"), Fault(0.6, "start", "svc")])
    r = _runner(tmp, rt, sc, [_impl(tmp, "good")])
    r.run()
    data = load(tmp / "out")
    assert data["status"] == "complete"
    inst = data["instances"][0]
    names = [p["name"] for p in inst["phases"]]
    assert names[0] == "idle" and "w c1" in names and "w c2" in names
    assert names.index("w c1") < names.index("w c2")
    # a fault: stopped at 20% and started at 60% of each level, marked in the time series
    for m in data["measurements"]:
        acts = [(e["action"], e["target"], e["ok"]) for e in m["faults"]]
        assert acts == [("stop", "svc", True), ("start", "svc", True)], m["faults"]
        t_stop, t_start = m["faults"][0]["t"], m["faults"][1]["t"]
        assert 0.3 * 0.3 < t_start - t_stop < 0.3 * 0.7        # 40% of 0.3 s apart, give or take
    assert sum(n.startswith("fault: stop svc") for n in names) == 2
    assert data["services"]["fake"]["svc"]["restarts"] == 2
    # correct answers counted once each: verify produced 2, levels 100 and 200
    assert inst["ok_total"] == 2 + 100 + 200
    # the after-stop check saw the file the server wrote at SIGTERM, and its metric
    assert inst["after_stop"]["ok"] and inst["after_stop"]["metrics"]["answers"]["value"] == 302
    assert inst["instance_files"]["count"] == 1 and not inst["instance_files"]["kept"]
    assert not Path(inst["instance_dir"]).exists()
    rows = flat_rows(data)
    assert [r_["ok"] for r_ in rows] == [True, True]
    assert all(0.2 < r_["cpu_cores"] < 0.3 for r_ in rows)           # the fake server's quarter core
    assert rt.running() == []
    from harness.report import render
    assert "good: faults" in render(data)          # the faults are marked in the time-series charts


def test_a_server_that_dies_under_load_fails_alone(harness_env):
    rt, _, tmp = harness_env
    rt.die_after_first_level.add("dies")
    sc = _scenario(tmp)
    r = _runner(tmp, rt, sc, [_impl(tmp, "dies"), _impl(tmp, "fine")])
    r.run()
    data = load(tmp / "out")
    assert data["implementations"]["fake/dies"]["status"] == "failed"
    assert data["implementations"]["fake/dies"]["failure"].startswith("run: server died")
    assert data["implementations"]["fake/fine"]["status"] == "ok"
    dies = next(i for i in data["instances"] if i["implementation_id"] == "fake/dies")
    assert dies["crashed"] and dies["after_stop"] is None       # never stopped cleanly: no after-stop check
    assert dies["instance_files"]["count"] == 0
    rows = {(r_["implementation"], r_["level"]): r_ for r_ in flat_rows(data)}
    # it died during c1: that level failed with the reason, c2 never ran
    assert not rows[("dies", "c1")]["ok"] and "server died under load" in rows[("dies", "c1")]["error"]
    assert ("dies", "c2") not in rows
    assert all(rows[("fine", lv)]["ok"] for lv in ("c1", "c2"))
    assert rt.running() == []


def test_failed_verification_is_never_loaded(harness_env):
    rt, _, tmp = harness_env
    sc = _scenario(tmp, verify_ok=False)
    r = _runner(tmp, rt, sc, [_impl(tmp, "bad"), _impl(tmp, "good")])
    r.run()
    data = load(tmp / "out")
    assert data["implementations"]["fake/bad"]["failure"].startswith("verify:")
    assert {m["implementation_id"] for m in data["measurements"]} == {"fake/good"}
    assert rt.levels_run == {"good": 2}
    assert rt.running() == []


def test_a_run_where_every_implementation_failed_still_renders(harness_env):
    rt, _, tmp = harness_env
    sc = _scenario(tmp, verify_ok=False)
    _runner(tmp, rt, sc, [_impl(tmp, "bad")]).run()
    data = load(tmp / "out")
    assert data["measurements"] == []
    from harness.report import render
    html = render(data)
    assert "verify:" in html and "Example load command" not in html


def test_after_stop_failure_fails_the_implementation(harness_env, monkeypatch):
    rt, _, tmp = harness_env
    monkeypatch.setattr(FakeHandle, "stop", lambda self, grace_s=5.0: (
        setattr(self, "stopped", True), StopResult(0, 0.01, False))[1])
    sc = _scenario(tmp)
    _runner(tmp, rt, sc, [_impl(tmp, "nofile")]).run()
    data = load(tmp / "out")
    assert data["implementations"]["fake/nofile"]["failure"].startswith("after-stop:")
    assert all(not r_["ok"] and "check after stop failed" in r_["error"] for r_ in flat_rows(data))


def test_ctrl_c_stops_everything_and_keeps_what_was_measured(harness_env):
    rt, drivers, tmp = harness_env
    drivers["fake"].interrupt_at = "second"
    sc = _scenario(tmp)
    r = _runner(tmp, rt, sc, [_impl(tmp, "first"), _impl(tmp, "second")])
    with pytest.raises(KeyboardInterrupt):
        r.run()
    data = load(tmp / "out")
    assert data["status"] == "interrupted"
    assert rt.running() == []                               # servers and the service stopped
    done = {m["implementation_id"] for m in data["measurements"]}
    assert done <= {"fake/first"}                           # what ran before Ctrl-C is kept


def test_three_nodes_sampled_apart_and_summed_with_a_node_fault(harness_env):
    from dataclasses import replace as dc_replace
    from harness.manifest import NodeSpec, Topology
    rt, _, tmp = harness_env
    base = _scenario(tmp, faults=[Fault(0.3, "kill", "b"), Fault(0.6, "start", "b")])
    ready = base.readiness
    sc = dc_replace(base, topology=Topology(["c", "b", "a"], "a", {n: ready for n in "cba"}))
    impl = _impl(tmp, "tri")
    impl = dc_replace(impl, node_specs={n: NodeSpec(n, ["server", "--node", n, "--next", "{node.c.target}"], {})
                                        for n in "abc"})
    r = _runner(tmp, rt, sc, [impl])
    r.run()
    data = load(tmp / "out")
    assert data["implementations"]["fake/tri"]["status"] == "ok", data["implementations"]["fake/tri"]
    inst = data["instances"][0]
    assert list(inst["nodes"]) == ["c", "b", "a"] and inst["topology"] == {"nodes": ["c", "b", "a"], "entry": "a", "quota": "each",
                                                                 "mix_trials": None}
    # placeholders reach every node: b was told where c listens, every node its own name
    c_port = inst["nodes"]["c"]["port"]
    assert inst["nodes"]["b"]["command"][-1] == f"127.0.0.1:{c_port}"
    assert {n: v["env"]["LANGBENCH_NODE"] for n, v in inst["nodes"].items()} == {"a": "a", "b": "b", "c": "c"}
    assert inst["port"] == inst["nodes"]["a"]["port"]
    for m in data["measurements"]:
        per = m["nodes"]
        assert set(per) == {"a", "b", "c"}
        for n in ("a", "c"):
            assert 0.2 < per[n]["cpu_cores"] < 0.3, (n, per[n])     # each fake node uses a quarter core
            assert per[n]["rss_mb"] == pytest.approx(40.0)
        assert per["b"]["cpu_cores"] is None                        # its process was replaced inside the window
        # the server's figures are the sum over the nodes, b's earlier process included
        assert 0.6 < m["server"]["cpu_cores"] < 0.8
        assert m["server"]["rss_mb"] is None or m["server"]["rss_mb"] == pytest.approx(120.0)
        assert [(e["action"], e["target"]) for e in m["faults"]] == [("kill", "b"), ("start", "b")]
        assert all(e["ok"] for e in m["faults"])
    assert inst["nodes"]["b"]["restarts"] == 2
    assert [g for k, g, n in rt.stops if n == "b"][:2] == [0.0, 0.0]     # killed in both levels, not asked
    # stopped in reverse start order at the end: a, then b, then c
    assert [n for k, g, n in rt.stops if n][-3:] == ["a", "b", "c"]
    assert inst["after_stop"]["ok"]
    assert rt.running() == []


def test_node_rows_table_and_report(harness_env, tmp_path):
    from dataclasses import replace as dc_replace
    from harness.manifest import NodeSpec, Topology
    from harness.report import render
    from harness.results import node_rows
    rt, _, tmp = harness_env
    base = _scenario(tmp)
    sc = dc_replace(base, topology=Topology(["b", "a"], "a", {n: base.readiness for n in "ab"}, "split"))
    impl = dc_replace(_impl(tmp, "duo"), node_specs={n: NodeSpec(n, ["server"], {}) for n in "ab"})
    _runner(tmp, rt, sc, [impl]).run()
    data = load(tmp / "out")
    nr = node_rows(data)
    assert {(r_["level"], r_["node"]) for r_ in nr} == {("c1", "a"), ("c1", "b"), ("c2", "a"), ("c2", "b")}
    assert all(0.2 < r_["cpu_cores"] < 0.3 and r_["rss_mb"] == 40.0 for r_ in nr)
    rows = flat_rows(data)
    assert all(r_["nodes"] == 2 and 0.4 < r_["cpu_cores"] < 0.6 and r_["rss_mb"] == 80.0 for r_ in rows)
    # quota = "split": the two nodes share the profile's 0.5 cores
    assert {h.spec.cpu_quota for h in rt.started if h.spec.impl is not None} == {0.25}
    html = render(data)
    assert "Per node" in html and html.count("<td class=\"l\">duo</td>") >= 4


def test_a_mixed_topology_takes_each_node_from_its_implementation(harness_env):
    from dataclasses import replace as dc_replace
    from harness.errors import InputError
    from harness.manifest import NodeSpec, Topology, mix
    rt, _, tmp = harness_env
    base = _scenario(tmp)
    sc = dc_replace(base, topology=Topology(["b", "a"], "a", {n: base.readiness for n in "ab"}))
    go = dc_replace(_impl(tmp, "go"), node_specs={n: NodeSpec(n, ["go-server", n], {"LANG_OF": "go"}) for n in "ab"})
    rs = dc_replace(_impl(tmp, "rust"), node_specs={n: NodeSpec(n, ["rust-server", n], {"LANG_OF": "rust"})
                                                    for n in "ab"})
    m = mix(sc, [go, rs], {"a": "go", "b": "rust"})
    assert m.name == "mix-a.go-b.rust" and m.parts == [rs, go] and m.language == "mixed"
    for bad, words in [({"a": "go"}, "no implementation given for node 'b'"),
                       ({"a": "go", "b": "cobol"}, "no implementation 'cobol'"),
                       ({"a": "go", "b": "rust", "z": "go"}, "has no node 'z'")]:
        with pytest.raises(InputError) as exc:
            mix(sc, [go, rs], bad)
        assert words in str(exc.value)
    with pytest.raises(InputError):
        mix(base, [go, rs], {"a": "go"})
    _runner(tmp, rt, sc, [m]).run()
    data = load(tmp / "out")
    assert data["implementations"][f"fake/{m.name}"]["status"] == "ok"
    assert data["implementations"]["fake/go"]["status"] == "built"       # parts are built, not measured alone
    inst = data["instances"][0]
    assert inst["nodes"]["a"]["implementation"] == "fake/go" and inst["nodes"]["a"]["command"] == ["go-server", "a"]
    assert inst["nodes"]["b"]["implementation"] == "fake/rust" and inst["nodes"]["b"]["env"]["LANG_OF"] == "rust"
    started = {h.spec.labels["langbench.node"]: h.spec.impl.name for h in rt.started if h.spec.impl is not None}
    assert started == {"a": "go", "b": "rust"}
    assert all(r_["ok"] for r_ in flat_rows(data))


def test_open_metrics_from_a_driver_and_a_check_reach_tables_compare_and_report(harness_env):
    from harness.report import render
    from harness.results import columns
    from harness.summary import compare, summary_rows
    from harness.results import extra_metrics
    rt, drivers, tmp = harness_env
    sc = _scenario(tmp)
    _runner(tmp, rt, sc, [_impl(tmp, "m")], trials=3).run()
    base = load(tmp / "out")
    decl = base["metrics"]
    assert decl["conns_per_mb"] == {"unit": "conn/MB", "better": "higher", "description": "connections held per MB",
                                    "source": "driver fake"}
    assert decl["answers"]["source"] == "after-stop check of fake" and decl["answers"]["better"] == "none"
    assert "rps" not in decl                                   # built-in figures are not re-declared
    cols = columns(base)
    assert "conns_per_mb" in cols and "answers" in cols and cols[-1] == "error"
    rows = flat_rows(base)
    assert {r_["level"]: r_["conns_per_mb"] for r_ in rows} == {"c1": 100.0, "c2": 200.0}
    assert all(r_["answers"] == 302 for r_ in rows)
    srows = summary_rows(rows, sorted(extra_metrics(base)))
    assert {r_["level"]: r_["conns_per_mb_median"] for r_ in srows} == {"c1": 100.0, "c2": 200.0}
    # a second run holding half as many connections per MB: regressed on that metric
    drivers["fake"].conns_per_mb = 50.0
    rt2 = FakeRuntime()
    drivers["fake"].rt = rt2
    r2 = _runner(tmp, rt2, sc, [_impl(tmp, "m")], trials=3)
    r2.out_dir = tmp / "out2"
    r2.run()
    cur = load(tmp / "out2")
    verdicts = compare(flat_rows(base), flat_rows(cur), 0.10, extra=extra_metrics(base, cur))
    mine = {(v["level"], v["metric"]): v["verdict"] for v in verdicts}
    assert mine[("c1", "conns_per_mb")] == "regressed" and mine[("c2", "conns_per_mb")] == "regressed"
    assert ("c1", "answers") not in mine                      # no better direction: shown, not judged
    html = render(cur, base)
    assert "conns_per_mb conn/MB" in html and "driver fake" in html


class RampDriver(FakeDriver):
    """Holds idle connections in steps: no answers, memory per step."""
    name = "ramp"
    level_kinds = ("connections",)
    quiet_level_kinds = ("connections",)

    def run(self, *, target, scenario, workload, level, duration_s, cpus, raw_path, on_start=None,
            instance_dir=None):
        on_start(os.getpid())
        t0 = time.monotonic()
        steps = []
        for i, n in enumerate((level.value // 2, level.value)):
            s0 = time.monotonic()
            time.sleep(duration_s / 2)
            steps.append({"name": f"{n} open", "t0": s0, "t1": time.monotonic(), "connections": n})
        t1 = time.monotonic()
        self.rt.windows.append((t0, t1))
        on_start("exited")
        on_start(None)
        return LoadResult(tool="ramp", tool_version="1", command=["ramp"], level=level.to_json(),
                          duration_s=duration_s, wall_s=t1 - t0, count=0, ok_count=0, errors=0, rps=0.0,
                          latency_ms={"p50": None, "p90": None, "p99": None, "p999": None, "max": None,
                                      "mean": None}, send_t0=t0, send_t1=t1, steps=steps)


def test_a_ramp_reports_steps_and_zero_answers_is_not_an_error(harness_env):
    from dataclasses import replace as dc_replace
    rt, drivers, tmp = harness_env
    drivers["ramp"] = RampDriver(rt)
    base = _scenario(tmp)
    sc = dc_replace(base, workloads=[Workload("hold", "", "ramp", {})],
                    profiles={"quick": ProfileLevels([], [], 0.6, 0.0, {"connections": [1000]})})
    _runner(tmp, rt, sc, [_impl(tmp, "r")]).run()
    data = load(tmp / "out")
    (m,) = data["measurements"]
    assert m["ok"], m["error"]
    assert m["level"]["key"] == "connections-1000"
    assert [s_["connections"] for s_ in m["steps"]] == [500, 1000]
    for s_ in m["steps"]:
        assert s_["rss_mb"] == pytest.approx(40.0) and 0.2 < s_["cpu_cores"] < 0.3 and s_["t1"] > s_["t0"]
    assert [p["name"] for p in data["instances"][0]["phases"] if p["name"].startswith("step")] == \
        ["step 500 open", "step 1000 open"]
    from harness.report import render
    html = render(data)
    assert "Step by step" in html and "<td class=\"l\">500 open</td>" in html and "<th>connections</th>" in html


def test_version_1_results_files_are_still_read(harness_env):
    """A file written before schema version 2 (no metrics, nodes, faults,
    steps, instance folders or after-stop checks) loads, tabulates, renders
    and compares against a version 2 file."""
    from harness.report import render
    from harness.results import columns, extra_metrics
    from harness.summary import compare
    rt, _, tmp = harness_env
    _runner(tmp, rt, _scenario(tmp), [_impl(tmp, "v")], trials=3).run()
    v2 = json.loads((tmp / "out" / "results.json").read_text())
    v1 = json.loads(json.dumps(v2))
    v1["schema_version"] = 1
    v1.pop("metrics", None)
    for m in v1["measurements"]:
        for k in ("nodes", "faults", "steps"):
            m.pop(k, None)
        m["load"].pop("extra", None)
        m["load"].pop("steps", None)
    for i in v1["instances"]:
        for k in ("after_stop", "instance_dir", "instance_files", "nofile", "nodes", "topology"):
            i.pop(k, None)
    old = tmp / "v1"
    old.mkdir()
    (old / "results.json").write_text(json.dumps(v1))
    data = load(old)
    rows = flat_rows(data)
    assert len(rows) == 6 and all(r_["ok"] and r_["nodes"] == 1 for r_ in rows)          # 3 trials x 2 levels
    assert "conns_per_mb" not in columns(data) and extra_metrics(data) == {}
    assert "Workload w" in render(data)
    verdicts = compare(rows, flat_rows(load(tmp / "out")), 0.10, extra=extra_metrics(data, v2))
    assert {v["verdict"] for v in verdicts if v["metric"] == "rps"} == {"within noise"}


def test_run_header_records_fault_schedule_and_failed_phase(harness_env):
    rt, _, tmp = harness_env
    rt.die_after_first_level.add("dies")
    sc = _scenario(tmp, faults=[Fault(0.5, "restart", "svc")])
    _runner(tmp, rt, sc, [_impl(tmp, "dies")]).run()
    data = load(tmp / "out")
    w = data["scenarios"]["fake"]["workloads"][0]
    assert w["faults"] == [{"at": 0.5, "action": "restart", "target": "svc"}]
    assert data["scenarios"]["fake"]["topology"] is None
    inst = data["instances"][0]
    assert inst["failed_phase"] == "load" and inst["crashed"]


def test_a_node_that_cannot_start_fails_the_run_and_the_others_are_stopped(harness_env):
    from dataclasses import replace as dc_replace
    from harness.manifest import NodeSpec, Topology
    rt, _, tmp = harness_env
    rt.fail_start.add("b")                       # b starts second; the entry a never starts
    base = _scenario(tmp)
    sc = dc_replace(base, topology=Topology(["c", "b", "a"], "a", {n: base.readiness for n in "abc"}))
    impl = dc_replace(_impl(tmp, "tri"), node_specs={n: NodeSpec(n, ["server"], {}) for n in "abc"})
    _runner(tmp, rt, sc, [impl]).run()
    data = load(tmp / "out")
    assert data["implementations"]["fake/tri"]["failure"].startswith("run: could not start node b")
    inst = data["instances"][0]
    assert inst["failed_phase"] == "start" and inst["shutdown"] is None and inst["after_stop"] is None
    assert inst["nodes"]["c"]["shutdown"]["was_running"] and rt.running() == []


def test_calibration_records_ceilings_and_flags_client_limited_levels(harness_env):
    """The driver against its reference null server (a real process, pinned
    and capped like a server) before the scenario: a ceiling per level; a
    result above half the driver's maximum is client-limited and not ranked;
    the reference is gone afterwards."""
    import psutil
    rt, drivers, tmp = harness_env
    drivers["fake"].reference_factor = 1.5      # the tool does 1.5x the fake server's rate against the null one
    sc = _scenario(tmp, after_stop=False)
    sc.services.clear()
    r = _runner(tmp, rt, sc, [_impl(tmp, "a"), _impl(tmp, "b")])
    r.run()
    data = load(tmp / "out")
    cal = data["ceilings"]["fake"]["w"]
    assert cal["reference"]["name"] == "fake-null" and cal["error"] is None
    assert set(cal["levels"]) == {"c1", "c2"}
    assert cal["levels"]["c2"]["rps"] == pytest.approx(1.5 * 200 / 0.3, rel=0.2)
    assert cal["max_level"] == "c2" and cal["max_bound"] in ("neither", "client", "reference")
    rows = {(x["implementation"], x["level"]): x for x in flat_rows(data)}
    # c1: 333/s against a maximum of 1,000/s: a third, not limited; c2: two thirds of it: limited
    assert not rows[("a", "c1")]["client_limited"] and rows[("a", "c2")]["client_limited"]
    assert rows[("a", "c1")]["ceiling_pct"] == pytest.approx(100 / 1.5, rel=0.2)
    assert rows[("a", "c2")]["ceiling_max_rps"] == pytest.approx(cal["max_rps"], rel=0.01)
    from harness.summary import ranks
    rk = ranks(list(rows.values()))
    assert ("fake", "w", "c2") not in rk and ("fake", "w", "c1") in rk
    assert not any(p.info["cmdline"] and "time.sleep(60)" in " ".join(p.info["cmdline"])
                   for p in psutil.process_iter(["cmdline"]))
    from harness.report import render
    html = render(data)
    assert "Load-tool ceiling" in html and "client-limited" in html
    # a driver without a reference: recorded, nothing flagged, the run still fine
    drivers["fake"].reference_factor = None
    r = _runner(tmp, rt, sc, [_impl(tmp, "a")])
    r.out_dir = tmp / "out2"
    r.run()
    data = load(tmp / "out2")
    assert "no reference server" in data["ceilings"]["fake"]["w"]["error"]
    assert not any(x["client_limited"] for x in flat_rows(data))
    assert all(x["ok"] for x in flat_rows(data))


def test_workloads_with_the_same_tool_and_requests_share_one_ceiling(harness_env):
    """Two workloads sending the same requests with the same driver (blackhole's
    record and discard differ only in the server's environment) are
    calibrated once; the second refers to the first."""
    from dataclasses import replace
    rt, drivers, tmp = harness_env
    drivers["fake"].reference_factor = 1.5
    sc = _scenario(tmp, after_stop=False)
    sc.services.clear()
    w = sc.workloads[0]
    sc = replace(sc, workloads=[w, replace(w, name="w2", server_env={"MODE": "other"})])
    r = _runner(tmp, rt, sc, [_impl(tmp, "a")])
    r.run()
    data = load(tmp / "out")
    cal = data["ceilings"]["fake"]
    assert cal["w2"]["same_as"] == "w" and "same_as" not in cal["w"]
    assert cal["w2"]["max_rps"] == cal["w"]["max_rps"] and cal["w2"]["levels"] == cal["w"]["levels"]
    # and the second workload ran on a server of its own, with its environment
    modes = {i["mode"]: i for i in data["instances"]}
    assert set(modes) == {"", "modeother"} and modes["modeother"]["env"]["MODE"] == "other"
    assert modes["modeother"]["workloads"] == ["w2"] and modes[""]["workloads"] == ["w"]


def test_once_verify_own_server_levels_durations_and_gc_pauses(harness_env):
    """A slow verify step marked once runs on each implementation's first
    server run only; a workload with own_server gets a server run of its own,
    its own level kinds and duration; GC pauses in the server's log land in
    the measurement whose send window they fall in."""
    from dataclasses import replace
    rt, drivers, tmp = harness_env
    rt.gc_log = True
    drivers["ramp"] = RampDriver(rt)
    sc = _scenario(tmp, after_stop=False)
    sc.services.clear()
    d = sc.dir
    (d / "slow.py").write_text(
        "import json, sys\n"
        f"open({str(d / 'slow.count')!r}, 'a').write('x')\n"
        "print(json.dumps({'ok': True, 'checks': [{'name': 'slow', 'ok': True, 'detail': ''}]}))\n")
    w = sc.workloads[0]
    sc = replace(sc, verify=sc.verify + [VerifyStep("slow", [sys.executable, str(d / "slow.py")], 10.0, [], once=True)],
                 workloads=[replace(w, levels=("concurrency",)),
                            Workload("hold", "", "ramp", {}, own_server=True, levels=("connections",),
                                     durations={"quick": 0.4})],
                 profiles={"quick": ProfileLevels([1], [], 0.3, 0.0, {"connections": [100]})})
    r = _runner(tmp, rt, sc, [_impl(tmp, "a"), _impl(tmp, "b")], trials=2)
    r.run()
    data = load(tmp / "out")
    insts = data["instances"]
    assert sorted((i["implementation_id"], i["trial"], i["mode"]) for i in insts) == sorted(
        (f"fake/{n}", t, m) for n in "ab" for t in (1, 2) for m in ("", "hold"))
    assert (d / "slow.count").read_text() == "xx"                    # once per implementation
    for i in insts:
        slow = next(st for st in i["verify"]["steps"] if st["name"] == "slow")
        first = i["trial"] == 1 and i["mode"] == ""
        assert bool(slow.get("skipped")) != first, (i["key"], slow)
        assert i["verify"]["ok"]
    ms = data["measurements"]
    assert {(m["workload"], m["level"]["key"]) for m in ms} == {("w", "c1"), ("hold", "connections-100")}
    # the ramp's steps lasted its own duration (0.4 s: 0.2 s each), the others the profile's
    for m in ms:
        if m["workload"] == "hold":
            assert all(0.15 < st["t1"] - st["t0"] < 0.4 for st in m["steps"])
            assert m["steps"][1]["kb_per_connection"] == pytest.approx(0.0)   # 40 MB flat
    # one gctrace line per level, in its middle: each measurement has exactly its own
    for m in ms:
        gc = m["gc"]
        assert gc["source"] == "go gctrace" and gc["count"] == 2, (m["instance"], gc)
        assert gc["metrics"]["gc_pauses"]["value"] == 2
        assert 0 < gc["pauses"][0][0] < m["load"]["send_t1"] - m["load"]["send_t0"]
    assert all((i.get("gc") or {}).get("count") for i in insts)
    rows = flat_rows(data)
    assert all(r_["gc_pauses"] == 2 and r_["gc_pause_max_ms"] > 0 for r_ in rows)
