"""The grpcload driver module alone: its command line, the parsing of the
tool's JSON, the ceiling arithmetic, and `--driver OLD=NEW`."""
from __future__ import annotations

from dataclasses import replace

import pytest

from harness.calibrate import bound_of, ceiling_of
from harness.drivers import get_driver
from harness.drivers.base import check_status_ratio
from harness.errors import InputError, ToolError
from harness.manifest import Level, discover

REPORT = {
    "tool": "grpcload", "version": "0.1.0", "mode": "closed", "connections": 8, "concurrency": 64,
    "send_t0": 100.0, "send_t1": 104.0, "count": 4200, "ok": 4190, "errors": 10, "cut_off": 0,
    "reconnects": 1, "status_codes": {"OK": 3990, "NotFound": 200, "Unavailable": 10},
    "error_kinds": {"Unavailable": 10},
    "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "p999": 4.0, "max": 9.0, "mean": 1.2},
    "latency_uncorrected_ms": None, "messages": 3990, "response_bytes": 3990 * 397, "request_bytes": 1,
    "inconsistent": 0, "delayed_by_cap": 0, "per_second": [1000, 1000, 1000, 1190], "cpu_s": 3.1,
}


def test_parse_counts_answers_over_the_send_window():
    res = get_driver("grpcload").parse(REPORT, Level("concurrency", 64))
    assert res.ok_count == 4190 and res.errors == 10 and res.count == 4200
    assert res.rps == pytest.approx(4190 / 4.0)
    assert res.send_t0 == 100.0 and res.send_t1 == 104.0
    assert res.latency_ms["p99"] == 3.0 and res.latency_uncorrected_ms is None
    assert res.extra["msgs_per_call"] == pytest.approx(3990 / 4200, abs=1e-3)
    assert res.extra["resp_bytes_per_msg"] == 397.0
    assert res.notes == ["1 reconnects"]
    # the status mix is checked against the workload's ratio as for ghz
    assert check_status_ratio(res, {"status_ratio": {"OK": 200, "NotFound": 10}}) is None
    assert "answers OK, expected" in check_status_ratio(res, {"status_ratio": {"OK": 100, "NotFound": 10}})


def test_parse_rate_level_keeps_both_latencies_and_refuses_an_empty_run():
    rep = dict(REPORT, mode="open", rate=1000,
               latency_uncorrected_ms={"p50": 0.5, "p90": 1, "p99": 1.5, "p999": 2, "max": 3, "mean": 0.6})
    res = get_driver("grpcload").parse(rep, Level("rate", 1000))
    assert res.latency_uncorrected_ms["p50"] == 0.5 and res.latency_ms["p50"] == 1.0
    with pytest.raises(ToolError, match="made no call"):
        get_driver("grpcload").parse(dict(REPORT, count=0, ok=0, errors=0,
                                          error_kinds={"connection refused": 5}), Level("concurrency", 1))
    with pytest.raises(ToolError, match="lacks a field"):
        get_driver("grpcload").parse({"count": 3}, Level("concurrency", 1))


def test_command_line(root, monkeypatch):
    import harness.drivers.grpcload as gl
    monkeypatch.setattr(gl, "find_tool", lambda name: f"/x/{name}")
    sc = discover(root).scenario("notes-grpc")
    d = get_driver("grpcload")
    w = sc.workload("unary")
    argv = d.command(target="127.0.0.1:1", scenario=sc, workload=w, level=Level("concurrency", 256),
                     duration_s=6, cpus=[0], out_file=root / "x.json")
    val = {a: argv[i + 1] for i, a in enumerate(argv[:-1]) if a.startswith("--")}
    assert val["--concurrency"] == "256" and val["--connections"] == "8" and val["--threads"] == "1"
    assert val["--call"] == "notes.Noticeboard.GetNoteByTitle" and val["--ok-status"] == "OK,NotFound"
    assert "--check-consistency" in argv and "--rate" not in argv
    argv = d.command(target="127.0.0.1:1", scenario=sc, workload=w, level=Level("concurrency", 4),
                     duration_s=6, cpus=[0, 1], out_file=root / "x.json")
    val = {a: argv[i + 1] for i, a in enumerate(argv[:-1]) if a.startswith("--")}
    assert val["--connections"] == "4" and val["--threads"] == "2"
    argv = d.command(target="t:1", scenario=sc, workload=w, level=Level("rate", 2000), duration_s=6, cpus=[0],
                     out_file=root / "x.json")
    val = {a: argv[i + 1] for i, a in enumerate(argv[:-1]) if a.startswith("--")}
    assert val["--rate"] == "2000" and val["--concurrency"] == "4096"
    with pytest.raises(InputError, match="params.proto"):
        d.command(target="t", scenario=sc, workload=replace(w, params={"call": "a.B.C"}),
                  level=Level("concurrency", 1), duration_s=1, cpus=[0], out_file=root / "x.json")
    assert d.validate({"proto": "notes.proto", "call": "x", "data_file": "data/titles.json", "consistent": "yes"},
                      sc.dir) == [("params.consistent", "expected bool, got str 'yes'")]


def test_ceiling_arithmetic_and_bounds():
    cal = {"max_rps": 100_000.0, "max_bound": "client",
           "levels": {"c1": {"rps": 20_000.0}, "c64": {"rps": 100_000.0}}}
    c = ceiling_of(cal, "c1", 15_000.0)
    assert c["fraction"] == pytest.approx(0.75) and c["fraction_of_max"] == pytest.approx(0.15)
    assert not c["client_limited"]
    c = ceiling_of(cal, "c64", 50_001.0)
    assert c["client_limited"] and c["fraction"] == pytest.approx(0.50001)
    assert not ceiling_of(cal, "c64", 50_000.0)["client_limited"]        # half is still fine
    assert ceiling_of(cal, "r2000", 2000.0)["fraction"] is None           # no ceiling at that level
    assert ceiling_of(None, "c1", 1.0) is None and ceiling_of({"max_rps": None}, "c1", 1.0) is None
    win = {"client": {"saturated": False}, "cpu_cores": 0.49, "throttling": {"throttled_share": 0.1}}
    assert bound_of(win, 0.5, 1) == "reference"
    assert bound_of(dict(win, cpu_cores=0.2), 0.5, 1) == "neither"
    assert bound_of(dict(win, client={"saturated": True}), 0.5, 1) == "client"
    assert bound_of(dict(win, cpu_cores=0.2), None, 1) == "neither"


def test_driver_override(root):
    from harness.cli import _with_driver
    cat = discover(root)
    sel = cat.select(["notes-grpc"], None)
    out = _with_driver(sel, ["grpcload=ghz"])
    sc = out[0][0]
    for w in sc.workloads:
        assert w.driver == "ghz" and "consistent" not in w.params and "proto" in w.params
        assert "driver ghz instead of grpcload" in w.description
    with pytest.raises(InputError, match="not OLD=NEW"):
        _with_driver(sel, ["ghz"])
    with pytest.raises(InputError, match="unknown load driver"):
        _with_driver(sel, ["grpcload=nosuch"])
    # wrk takes no rate levels: the override is refused with the reason
    with pytest.raises(InputError, match="rate"):
        _with_driver(sel, ["grpcload=wrk"])
