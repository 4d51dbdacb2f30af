"""End to end: pipeline, quick profile. Under the process runtime the four
same-language pipelines and the scenario's rotation of mixed ones (each
language is B once), with the steady load and both fault workloads; in
containers the four same-language pipelines with B killed (SIGKILL). Each
runs the conformance check; a fault level stops B with SIGTERM or kills it
with SIGKILL at 40% of the window and starts it again at 60%; after every
level and after the stop the ledger check: every operation the load tool saw
acknowledged is in C's ledger exactly once with the right digest."""
from __future__ import annotations

import pytest

from ..conftest import langbench_processes, run_cli

pytestmark = pytest.mark.e2e
ORIGINALS = ("pipeline/go", "pipeline/rust", "pipeline/python", "pipeline/scala")
# 6 s levels: the fault workloads stop B at 2.4 s and start it at 3.6 s
WINDOWS = ("--duration", "6", "--warmup", "1")


def _run(tmp_path_factory, runtime: str, *extra: str):
    out = tmp_path_factory.mktemp(f"pipeline-{runtime}") / "run"
    proc = run_cli("run", "pipeline", "--runtime", runtime, "--profile", "quick", *WINDOWS, "--out", str(out),
                   *extra)
    print(proc.stderr[-8000:])
    return proc, out


@pytest.fixture(scope="module")
def pipe_run(tmp_path_factory):
    # httpload's ceiling is measured in blackhole's process run
    return _run(tmp_path_factory, "process", "--no-calibrate")


@pytest.fixture(scope="module")
def pipe_docker_run(tmp_path_factory, dclient):
    impls = [a for i in ORIGINALS for a in ("--impl", i)]
    # the fault case in containers (the steady level is the process run's)
    return _run(tmp_path_factory, "docker", "--no-calibrate", *impls, "--workload", "fault-kill")


def _check(proc, out, mixes: int) -> dict:
    from harness import results
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = results.load(out)
    impls = data["implementations"]
    pure = {k: v for k, v in impls.items() if v["language"] != "mixed"}
    mixed = {k: v for k, v in impls.items() if v["language"] == "mixed"}
    assert {v["language"] for v in pure.values()} == {"python", "go", "rust", "scala"}
    assert len(mixed) == mixes, sorted(mixed)
    assert all(v["status"] == "ok" for k, v in impls.items()), {k: v.get("failure") for k, v in impls.items()}
    assert sorted(i["implementation_id"] for i in data["instances"]) == sorted(impls)
    for inst in data["instances"]:
        assert inst["verify"]["ok"], inst["verify"]
        assert set(inst["nodes"]) == {"a", "b", "c"}
        # every node stopped cleanly at the end (B too, after its restarts)
        for n, node in inst["nodes"].items():
            assert node["shutdown"]["exit_code"] == 0 and not node["shutdown"]["killed"], (inst["key"], n, node)
        after = inst["after_stop"]
        assert after["ok"], (inst["key"], after)
        met = {k: v["value"] for k, v in after["metrics"].items()}
        assert met["acked"] > 0 and met["lost"] == 0 and met["duplicated"] == 0 and met["wrong_digest"] == 0, met
    # the rotation: in each mixed pipeline the three nodes come from three languages
    for iid in mixed:
        inst = next(i for i in data["instances"] if i["implementation_id"] == iid)
        langs = {impls[n["implementation"]]["language"] for n in inst["nodes"].values()}
        assert len(langs) == 3, (iid, langs)
    if mixed:
        bs = {impls[next(i for i in data["instances"] if i["implementation_id"] == iid)["nodes"]["b"]
                    ["implementation"]]["language"] for iid in mixed}
        assert bs == {"python", "go", "rust", "scala"}, bs
    for m in data["measurements"]:
        assert m["ok"], (m["instance"], m["workload"], m["error"])
        load = m["load"]
        assert load["ok_count"] > 0, (m["instance"], load["error_kinds"])
        check = {k: v["value"] for k, v in m["after_load"]["metrics"].items()}
        assert check["lost"] == 0 and check["duplicated"] == 0 and check["wrong_digest"] == 0, check
        assert set(m["nodes"]) == {"a", "b", "c"}
        if m["workload"] == "steady":
            assert load["errors"] == 0, (m["instance"], load["error_kinds"])
            assert not m.get("faults")
            continue
        # the fault: B stopped or killed at 40%, started again at 60%, both done
        action = {"fault-term": "stop", "fault-kill": "kill"}[m["workload"]]
        done = [(e["action"], e["target"], e["ok"]) for e in m["faults"] if e["at"] is not None]
        assert done == [(action, "b", True), ("start", "b", True)], m["faults"]
        rec = m["recovery"]
        assert rec["baseline_per_s"] > 0 and abs(rec["restart_s"] - 3.6) < 1.0, rec
        assert rec["fault_s"] < rec["restart_s"], rec
        # throughput per second from the load tool adds up to its ok count
        assert sum(load["detail"]["per_second"]) == load["ok_count"]
    assert not langbench_processes()
    return data


def test_pipeline_process_runtime(pipe_run):
    data = _check(*pipe_run, mixes=4)
    # the report shows the topologies and the fault series
    from harness.report import render
    html = render(data)
    assert "Topologies" in html and "correct answers per second around the fault" in html


def test_pipeline_docker_runtime(pipe_docker_run):
    data = _check(*pipe_docker_run, mixes=0)
    assert data["runtime"] == "docker"
