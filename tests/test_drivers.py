from __future__ import annotations

import json

import pytest

from harness.drivers import get_driver
from harness.drivers.base import correct_coordinated_omission, latency_summary, percentile, run_pinned
from harness.drivers.ghz import _parse_ts
from harness.errors import InputError
from harness.manifest import Level, Workload


def test_percentile_nearest_rank():
    values = list(range(1, 1001))
    assert percentile(values, 50) == 500
    assert percentile(values, 99) == 990
    assert percentile(values, 99.9) == 999
    assert percentile(values, 100) == 1000
    assert percentile([], 50) is None
    s = latency_summary([5.0, 1.0, 3.0])
    assert s["p50"] == 3.0 and s["max"] == 5.0 and s["mean"] == pytest.approx(3.0)


def test_coordinated_omission_correction():
    # 10 requests due every 0.1 s; the server stalls 1 s on the 3rd and the
    # closed-loop sender sends the rest late, each answered fast.
    starts = [0.0, 0.1, 0.2] + [1.2 + 0.001 * i for i in range(7)]
    lat = [0.001, 0.001, 1.0] + [0.001] * 7
    corr = correct_coordinated_omission(starts, lat, rate=10)
    assert corr[2] == pytest.approx(1.0)
    assert corr[3] == pytest.approx(1.2 + 0.001 - 0.3)   # due at 0.3, done at 1.201
    assert all(c >= l for c, l in zip(corr, lat))
    assert correct_coordinated_omission([], [], 10) == []


def test_parse_rfc3339_nanoseconds():
    a = _parse_ts("2026-11-23T09:00:00.123456789Z")
    b = _parse_ts("2026-11-23T10:00:00.623456789+01:00")
    assert b - a == pytest.approx(0.5, abs=1e-6)


def _report(details, codes, errs, total_ns=2_000_000_000):
    return {"count": len(details), "total": total_ns, "statusCodeDistribution": codes,
            "errorDistribution": errs, "details": details}


def test_ghz_parse_counts_expected_statuses_and_cut_off_calls():
    ghz = get_driver("ghz")
    w = Workload("unary", "", "ghz", {"ok_status": ["OK", "NotFound"]})
    details = ([{"timestamp": "2026-11-23T09:00:00Z", "latency": 1_000_000, "status": "OK", "error": ""}] * 90
               + [{"timestamp": "2026-11-23T09:00:00Z", "latency": 2_000_000, "status": "NotFound",
                   "error": "rpc error: code = NotFound desc = x"}] * 5
               + [{"timestamp": "2026-11-23T09:00:01Z", "latency": 9_000_000, "status": "Unavailable",
                   "error": "rpc error: code = Unavailable desc = transport is closing"}] * 3
               + [{"timestamp": "2026-11-23T09:00:01Z", "latency": 9_000_000, "status": "Internal",
                   "error": "rpc error: code = Internal desc = boom"}] * 2)
    rep = _report(details, {"OK": 90, "NotFound": 5, "Unavailable": 3, "Internal": 2},
                  {"rpc error: code = NotFound desc = x": 5,
                   "rpc error: code = Unavailable desc = transport is closing": 3,
                   "rpc error: code = Internal desc = boom": 2})
    r = ghz.parse(rep, w, Level("concurrency", 16))
    assert r.ok_count == 95 and r.cut_off == 3 and r.errors == 2 and r.count == 97
    assert r.rps == pytest.approx(95 / 2.0)
    assert r.latency_ms["max"] == pytest.approx(2.0) and r.latency_ms["p50"] == pytest.approx(1.0)
    assert "rpc error: code = Internal desc = boom" in r.error_kinds
    # cut-off calls beyond one per worker are real errors
    r = ghz.parse(rep, w, Level("concurrency", 1))
    assert r.cut_off == 1 and r.errors == 4


def test_ghz_rate_level_latency_is_corrected():
    ghz = get_driver("ghz")
    w = Workload("unary", "", "ghz", {})
    details = [{"timestamp": f"2026-11-23T09:00:0{i}Z", "latency": 1_000_000, "status": "OK", "error": ""}
               for i in range(5)]
    r = ghz.parse(_report(details, {"OK": 5}, {}), w, Level("rate", 10, concurrency=4))
    # due every 0.1 s but sent every 1 s: the last one is 3.6 s late
    assert r.latency_uncorrected_ms["max"] == pytest.approx(1.0)
    assert r.latency_ms["max"] == pytest.approx(3601.0)


def test_ghz_command_line(root):
    from harness.manifest import discover
    sc = discover(root).scenario("notes-grpc")
    ghz = get_driver("ghz")
    try:
        argv = ghz.command(target="127.0.0.1:1", scenario=sc, workload=sc.workload("unary"),
                           level=Level("rate", 500, concurrency=64), duration_s=3, out_file=root / "x.json")
    except Exception as exc:  # ghz not installed: the error must say how to get it
        assert "setup.sh" in str(exc)
        return
    assert argv[-1] == "127.0.0.1:1"
    assert argv[argv.index("--rps") + 1] == "500" and argv[argv.index("--concurrency") + 1] == "64"
    assert argv[argv.index("--format") + 1] == "json"
    bad = type(sc.workload("unary"))("x", "", "ghz", {"call": "a.B.C"})
    with pytest.raises(InputError, match="params.proto"):
        ghz.command(target="t", scenario=sc, workload=bad, level=Level("concurrency", 1), duration_s=1,
                    out_file=root / "x.json")


def test_unknown_driver():
    with pytest.raises(InputError):
        get_driver("nonexistent_tool")


def test_run_pinned_measures_the_tools_own_cpu():
    import sys
    prog = "import os,time\nt=time.process_time()\nwhile time.process_time()-t<0.3: pass\nprint(sorted(os.sched_getaffinity(0)))"
    run = run_pinned([sys.executable, "-c", prog], cpus=[0], timeout_s=30)
    assert run.returncode == 0
    assert json.loads(run.stdout) == [0]
    assert 0.25 <= run.cpu_s <= 1.5


def test_complete_flags_client_bound_from_the_tools_own_cpu():
    from harness.drivers.base import LoadResult, ToolRun
    ghz = get_driver("ghz")
    ghz.version = lambda: "vtest"       # unit test of one module: no real tool needed
    try:
        def result():
            return LoadResult(tool="ghz", tool_version="", command=[], level={}, duration_s=0, wall_s=0,
                              count=1, ok_count=1, errors=0, rps=1.0, latency_ms={})
        busy = ghz.complete(result(), ToolRun(["ghz", "x"], 0, "", "", 10.0, 9.5), [0], 10, None, 0.9)
        assert busy.client_bound and busy.tool_cpu_cores == pytest.approx(0.95) and busy.command == ["ghz", "x"]
        calm = ghz.complete(result(), ToolRun(["ghz"], 0, "", "", 10.0, 4.0), [0], 10, "raw.json", 0.9)
        assert not calm.client_bound and calm.raw_file == "raw.json" and calm.tool_version == "vtest"
        two = ghz.complete(result(), ToolRun(["ghz"], 0, "", "", 10.0, 9.5), [0, 1], 10, None, 0.9)
        assert not two.client_bound      # 0.95 cores of 2 CPUs
    finally:
        del ghz.version
