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
    # 10 calls due every 0.1 s; the server stalls 1 s on the 3rd and the
    # closed-loop sender sends the rest late, each answered in 1 ms.
    begins = [0.0, 0.1, 0.2] + [1.2 + 0.001 * i for i in range(7)]
    lat = [0.001, 0.001, 1.0] + [0.001] * 7
    ends = [b + l for b, l in zip(begins, lat)]
    corr = correct_coordinated_omission(begins, ends, rate=10)
    assert corr[2] == pytest.approx(1.0)                 # on time: its own latency, not twice it
    assert corr[3] == pytest.approx(1.201 - 0.3)         # due at 0.3, ended at 1.201
    assert corr[9] == pytest.approx(1.207 - 0.9)
    assert all(c >= l - 1e-12 for c, l in zip(corr, lat))
    assert correct_coordinated_omission([], [], 10) == []


def test_coordinated_omission_schedule_counts_failed_calls():
    # Five calls exactly on a 10/s schedule; the middle one failed. Every call
    # was on time, so nothing is late: numbering only the successful calls
    # would make the 4th and 5th look 0.1 s late.
    begins = [0.0, 0.1, 0.2, 0.3, 0.4]
    ends = [b + 0.002 for b in begins]
    corr = correct_coordinated_omission(begins, ends, rate=10)
    assert corr == pytest.approx([0.002] * 5)


def test_parse_rfc3339_nanoseconds():
    a = _parse_ts("2026-11-23T09:00:00.123456789Z")
    b = _parse_ts("2026-11-23T10:00:00.623456789+01:00")
    assert b - a == pytest.approx(0.5, abs=1e-6)


def _report(details, total_ns=2_000_000_000):
    codes, errs = {}, {}
    for d in details:
        codes[d["status"]] = codes.get(d["status"], 0) + 1
        if d["error"]:
            errs[d["error"]] = errs.get(d["error"], 0) + 1
    return {"count": len(details), "total": total_ns, "statusCodeDistribution": codes,
            "errorDistribution": errs, "details": details}


T0 = 1_795_424_400.0     # 2026-11-23T09:00:00Z


def _ts(t: float) -> str:
    from datetime import datetime, timezone
    whole = int(t)
    return datetime.fromtimestamp(whole, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{round((t - whole) * 1e9):09d}Z"


def _call(begin: float, latency_s: float, status="OK", error=""):
    # ghz's detail: `timestamp` is when the call ENDED, `latency` its duration.
    return {"timestamp": _ts(T0 + begin + latency_s), "latency": round(latency_s * 1e9), "status": status,
            "error": error}


def test_ghz_timestamp_is_the_end_of_the_call():
    # 20 calls on a 10/s schedule, each taking 50 ms: nothing is late, so the
    # corrected latency is 50 ms (taking the timestamp for the start would
    # add the latency twice: 100 ms).
    ghz = get_driver("ghz")
    w = Workload("unary", "", "ghz", {})
    details = [_call(i * 0.1, 0.05) for i in range(20)]
    r = ghz.parse(_report(details), w, Level("rate", 10, concurrency=4), duration_s=2.0, clock_offset=T0)
    assert r.latency_ms["max"] == pytest.approx(50.0, abs=0.01)
    assert r.latency_uncorrected_ms["max"] == pytest.approx(50.0, abs=0.01)
    # the send window runs from the first call's start to the last call's end, in monotonic time
    assert r.send_t0 == pytest.approx(0.0, abs=1e-6) and r.send_t1 == pytest.approx(1.95, abs=1e-6)
    assert r.rps == pytest.approx(20 / 1.95)


def test_ghz_rate_level_latency_is_corrected():
    ghz = get_driver("ghz")
    w = Workload("unary", "", "ghz", {})
    # due every 0.1 s, but a single worker only sent every 1 s: the 5th is 3.6 s late
    details = [_call(i * 1.0, 0.001) for i in range(5)]
    r = ghz.parse(_report(details), w, Level("rate", 10, concurrency=1), duration_s=5.0, clock_offset=T0)
    assert r.latency_uncorrected_ms["max"] == pytest.approx(1.0, abs=0.01)
    assert r.latency_ms["max"] == pytest.approx(3601.0, abs=0.01)


def test_ghz_parse_counts_statuses_and_classifies_cut_off_calls_by_time():
    ghz = get_driver("ghz")
    w = Workload("unary", "", "ghz", {"ok_status": ["OK", "NotFound"]})
    details = ([_call(0.01 * i, 0.001) for i in range(90)]
               + [_call(0.95, 0.002, "NotFound", "rpc error: code = NotFound desc = x")] * 5
               # failed in the middle of the run: real errors, whatever the message
               + [_call(1.0, 0.001, "Unavailable", "rpc error: code = Unavailable desc = transport is closing")]
               + [_call(1.1, 0.003, "Internal", "rpc error: code = Internal desc = boom")] * 2
               # in flight when the 2 s ran out: cut off by ghz
               + [_call(1.99, 0.02, "Canceled", "rpc error: code = Canceled desc = grpc: the client connection is closing")] * 3)
    r = ghz.parse(_report(details), w, Level("concurrency", 16), duration_s=2.0, clock_offset=T0)
    assert r.ok_count == 95 and r.cut_off == 3 and r.errors == 3 and r.count == 98
    assert r.error_kinds == {"rpc error: code = Unavailable desc = transport is closing": 1,
                             "rpc error: code = Internal desc = boom": 2}
    assert r.latency_ms["max"] == pytest.approx(2.0, abs=0.01)
    assert r.send_t1 == pytest.approx(1.103, abs=1e-6)     # cut-off calls are outside the send window


def test_ghz_refuses_truncated_details():
    from harness.errors import ToolError
    ghz = get_driver("ghz")
    rep = _report([_call(0.001 * i, 0.001) for i in range(10)])
    rep["count"] = 1_500_000           # ghz counts on past its 1,000,000 kept details
    with pytest.raises(ToolError, match="details"):
        ghz.parse(rep, Workload("u", "", "ghz", {}), Level("rate", 10), duration_s=1.0, clock_offset=T0)


def test_status_ratio_is_checked():
    from harness.drivers.base import LoadResult, check_status_ratio
    params = {"status_ratio": {"OK": 200, "NotFound": 10}}

    def res(ok, nf, errors=0):
        return LoadResult(tool="ghz", tool_version="", command=[], level={}, duration_s=0, wall_s=1, count=ok + nf,
                          ok_count=ok + nf, errors=errors, rps=0, latency_ms={}, status_codes={"OK": ok, "NotFound": nf})
    assert check_status_ratio(res(20000, 1000), params) is None
    assert check_status_ratio(res(19990, 1010), params) is None          # within one round of the data
    assert "expected 20000" in check_status_ratio(res(10500, 10500), params)   # half the hits answered NOT_FOUND
    assert check_status_ratio(res(100, 0), {}) is None


def test_wrk_late_answer_is_counted_once():
    wrk = get_driver("wrk")
    w = Workload("fire", "", "wrk", {"ok_status": ["200"]})
    # 1,000 answers, all 200; wrk's timeout counter says 3 (answers after --timeout, or pending ones counted again)
    rep = {"requests": 1000, "sent": 1001, "window_s": 2.0, "t0": 100.0, "t1": 102.0,
           "errors": {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 3},
           "status_counts": {"200": 1000}, "latency_us": {"p50": 100, "p90": 200, "p99": 300, "p999": 400,
                                                          "max": 500, "mean": 120.0}}
    r = wrk.parse(rep, w, Level("concurrency", 8), fire_s=2.0)
    assert r.ok_count == 1000 and r.errors == 0 and r.late == 3 and r.cut_off == 0
    assert (r.send_t0, r.send_t1) == (100.0, 102.0)
    rep["errors"]["read"] = 2
    rep["status_counts"] = {"200": 990, "503": 10}
    r = wrk.parse(rep, w, Level("concurrency", 8), fire_s=2.0)
    assert r.ok_count == 990 and r.errors == 12


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


def test_run_pinned_reports_the_pid_while_the_tool_runs():
    import sys
    seen = []
    run_pinned([sys.executable, "-c", "import time; time.sleep(0.2)"], cpus=[0], timeout_s=30, on_start=seen.append)
    assert len(seen) == 4 and seen[0] == "spawning" and isinstance(seen[1], int) and seen[2:] == ["exited", None]


def test_exited_tool_is_still_readable_before_it_is_reaped():
    import sys
    from harness import hostcpu
    readings = []
    pid = {}

    def hook(event):
        if isinstance(event, int):
            pid["p"] = event
        elif event == "exited":
            readings.append(hostcpu.process_cpu_seconds(pid["p"]))   # a zombie: final CPU times
    prog = "import time\nt=time.process_time()\nwhile time.process_time()-t<0.3: pass"
    run = run_pinned([sys.executable, "-c", prog], cpus=[0], timeout_s=30, on_start=hook)
    assert len(readings) == 1 and readings[0] == pytest.approx(run.cpu_s, abs=0.03)
