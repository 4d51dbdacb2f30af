"""End to end: real builds, real servers, the real load tool (grpcload, with
its ceiling measured against grpc-null first), for all four languages."""
from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from harness import results

from ..conftest import langbench_processes, quick_run, run_cli

pytestmark = pytest.mark.e2e
LANGS = {"python", "go", "rust", "scala"}


@pytest.fixture(scope="module", name="quick_run")
def quick_run_fixture(tmp_path_factory):
    return quick_run(tmp_path_factory, "notes-grpc", "process")


def test_all_four_languages_verified_and_measured(quick_run):
    proc, out = quick_run
    data = results.load(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert data["status"] == "complete"
    impls = data["implementations"]
    assert {v["language"] for v in impls.values()} == LANGS
    for iid, rec in impls.items():
        assert rec["status"] == "ok", (iid, rec.get("failure"))
        assert rec["build"]["ok"] and rec["build"]["artifact_bytes"] > 0
    for inst in data["instances"]:
        assert inst["verify"]["ok"], inst["verify"]
        assert inst["startup_ms"] > 0
        assert inst["shutdown"]["exit_code"] == 0, (inst["key"], inst["shutdown"])
        assert len(inst["timeseries"]["cpu_cores"]) > 10
        assert inst["idle"]["rss_mb"] > 0
    rows = results.flat_rows(data)
    assert len(rows) == 4 * 2 * 3          # languages x workloads x levels (quick)
    for r in rows:
        assert r["ok"] and r["verified"], r
        assert r["rps"] > 0 and r["requests"] > 0
        assert r["cpu_cores"] > 0 and r["cpu_s_per_1k"] > 0
        assert r["rss_mb"] > 0 and r["rss_peak_mb"] >= r["rss_mb"]
        assert r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]
        assert r["server_cpus"] != r["client_cpus"]
        # the quota in force was read back from the kernel, and the level's
        # figures are over the tool's send window, with throttling, client
        # and noise figures beside them
        assert (r["cpu_quota_applied"], r["cfs_period_us"]) == (0.5, 10_000), r
        # closed loop: the D s of sending (the tests' short windows) plus the
        # last answers, none of which took longer than the slowest answer
        # (max_ms) after a send that began inside the D s; open loop: a
        # server that fell behind the rate
        # (python) has its backlog answered after the schedule ends, within
        # grpcload's 10 s timeout, and counted
        dur = data["overrides"]["duration_s"]
        if r["level_kind"] == "concurrency":
            assert 0 < r["window_s"] <= dur + r["max_ms"] / 1000 + 0.05, r
        else:
            assert 0 < r["window_s"] <= dur + 10.5 and r["cut_off"] == 0, r
        assert r["throttled_pct"] is not None
        assert 0 < r["client_busy_pct"] <= 100.5 and r["foreign_cores"] is not None
        assert r["warmup_s"] > 0
    for m in data["measurements"]:
        assert m["server"]["window_basis"] == "send window", m["server"]
        assert m["load"]["status_check"] is None, m["load"]
    assert data["quota"]["cpu_quota_applied"] == 0.5 and data["cpu_layout"]["harness_pinned_threads"] >= 1
    env = data["environment"]
    assert env["load_tools"]["grpcload"].startswith("0.")
    assert all(env["toolchains"][k] for k in ("go", "rustc", "java", "maven"))
    m = data["measurements"][0]
    assert m["load"]["command"][0].endswith("grpcload") and "--check-consistency" in m["load"]["command"]
    # every answer read to its status and checked against the first answer to the
    # same request; the answers' shape is the data's: 200 of 210 titles exist,
    # and the 62 authors hold 1,203 notes (19.40 a call over a round)
    for m in data["measurements"]:
        ex = m["load"]["extra"]
        assert ex["inconsistent"] == 0 and m["load"]["errors"] == 0, m["load"]
        if m["workload"] == "unary":
            assert ex["msgs_per_call"] == pytest.approx(200 / 210, abs=0.01), (m["implementation_id"], ex)
        else:
            assert ex["msgs_per_call"] == pytest.approx(1203 / 62, abs=0.1), (m["implementation_id"], ex)
        assert 55 <= ex["resp_bytes_per_msg"] <= 602
    # the tool's ceiling, measured against its null server before the servers ran
    for w in ("unary", "stream"):
        cal = data["ceilings"]["notes-grpc"][w]
        assert cal["error"] is None and cal["reference"]["name"] == "grpc-null", cal
        assert set(cal["levels"]) == {"c16", "c64", "r1000"}
        assert all(lv["bound"] in ("client", "reference", "neither") for lv in cal["levels"].values())
        assert cal["levels"]["r1000"]["rps"] == pytest.approx(1000, rel=0.02)
        assert cal["max_rps"] >= max(lv["rps"] for lv in cal["levels"].values())
    for m in data["measurements"]:
        c = m["ceiling"]
        assert c["max_rps"] > 0 and c["fraction_of_max"] == pytest.approx(m["load"]["rps"] / c["max_rps"])
        assert c["client_limited"] == (m["load"]["rps"] > 0.5 * c["max_rps"])


def test_interop_matrix_is_16_of_16(quick_run):
    _, out = quick_run
    cells = results.load(out)["interop"]["notes-grpc"]
    assert len(cells) == 16
    assert {(c["client"], c["server"]) for c in cells} == {(a, b) for a in LANGS for b in LANGS}
    bad = [c for c in cells if not c["ok"]]
    assert not bad, bad


def test_report_and_table_from_the_run(quick_run, tmp_path):
    _, out = quick_run
    rep = tmp_path / "report.html"
    proc = run_cli("report", str(out), "-o", str(rep))
    assert proc.returncode == 0, proc.stderr
    html = rep.read_text()
    for lang in LANGS:
        assert f"<b>{lang}</b> ({lang})" in html
    assert html.count("<svg") >= 6 and "16/16 ok" in html
    proc = run_cli("results", str(out), "--format", "json")
    table = json.loads(proc.stdout)
    assert {r["language"] for r in table} == LANGS


def test_no_process_left_behind(quick_run):
    assert langbench_processes() == []


def test_interop_command(quick_run):
    proc = run_cli("interop", "notes-grpc", "--runtime", "process", "--format", "json",
                   "--out", str(Path(quick_run[1]).parent / "interop"))
    cells = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(cells) == 16 and all(c["ok"] for c in cells)
    assert set(cells[0]) == {"client", "server", "ok", "detail"}
    assert langbench_processes() == []


def test_server_killed_mid_run_is_failed_and_others_complete(tmp_path):
    out = tmp_path / "crash"
    victim = {"pid": None}

    def killer():
        deadline = time.time() + 600
        while time.time() < deadline:
            try:
                data = json.loads((out / "results.json").read_text())
            except (OSError, json.JSONDecodeError):
                time.sleep(0.2)
                continue
            if any(m["implementation_id"] == "notes-grpc/go" for m in data["measurements"]):
                for p in langbench_processes():
                    try:
                        if "notes-grpc/go" in " ".join(p.cmdline()) or "notes-grpc/go" in p.cwd():
                            victim["pid"] = p.pid
                            p.send_signal(signal.SIGKILL)
                    except psutil.Error:
                        pass
                if victim["pid"]:
                    return
            time.sleep(0.1)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    proc = run_cli("run", "notes-grpc", "--runtime", "process", "--profile", "quick", "--impl", "go",
                   "--impl", "python", "--no-interop", "--no-calibrate", "--seed", "1", "--out", str(out))
    t.join(timeout=5)
    assert victim["pid"], "the go server was never seen"
    assert proc.returncode == 1
    data = results.load(out)
    go, py = data["implementations"]["notes-grpc/go"], data["implementations"]["notes-grpc/python"]
    assert go["status"] == "failed" and "died" in go["failure"], go
    assert py["status"] == "ok"
    assert "FAILED notes-grpc/go" in proc.stderr
    py_rows = [r for r in results.flat_rows(data) if r["language"] == "python"]
    assert len(py_rows) == 6 and all(r["ok"] and r["rps"] > 0 for r in py_rows)
    go_rows = [r for r in results.flat_rows(data) if r["language"] == "go"]
    assert go_rows and not all(r["ok"] for r in go_rows)
    assert langbench_processes() == []
