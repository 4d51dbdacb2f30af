from __future__ import annotations

import csv
import io
import json

import pytest

from harness import results, tables
from harness.errors import InputError
from harness.report import _fmt, render


def sample_run(tmp_path, evil: str = "<script>alert(1)</script>"):
    store = results.ResultsStore(tmp_path / "run", {
        "run_id": "lbtest", "runtime": "process", "runtime_info": {"name": "process"},
        "profile_name": "quick", "profile": {"server_cpu_quota": 0.5, "client_bound_threshold": 0.9},
        "trials": 1, "seed": 1, "cpu_layout": {"client": [0], "server": [1]},
        "scenarios": {"notes-grpc": {"title": "t", "description": "d", "protocol": "grpc",
                                     "duration_s": 1, "warmup_s": 0,
                                     "levels": [{"kind": "concurrency", "value": 4, "key": "c4"},
                                                {"kind": "concurrency", "value": 16, "key": "c16"},
                                                {"kind": "rate", "value": 100, "key": "r100", "concurrency": 16}],
                                     "workloads": [{"name": "unary", "driver": "ghz", "description": evil}]}},
        "plan": [], "environment": {"cpu_model": "x", "cpu_count": 2, "memory_gb": 1, "kernel": "k", "os": "o",
                                    "python_harness": "3.11", "toolchains": {"go": evil},
                                    "load_tools": {"ghz": "v0"}, "git": {"commit": "abc", "dirty": False},
                                    "load_average": [0, 0, 0]},
        "harness_overhead": [{"cores": 0.004}],
    })
    for lang in ("go", "rust"):
        iid = f"notes-grpc/{lang}"
        store.implementation(iid, scenario="notes-grpc", name=lang, language=lang, framework=evil,
                             tuning={"threads": evil}, run_command=["x"], status="ok",
                             build={"seconds": 1.5, "artifact_bytes": 2_000_000, "cached": False})
        key = f"k-{lang}"
        store.add_instance({"key": key, "scenario": "notes-grpc", "implementation_id": iid, "trial": 1,
                            "startup_ms": 12.0, "verify": {"ok": True, "detail": "3/3"},
                            "idle": {"cpu_cores": 0.001, "rss_mb": 9.0},
                            "shutdown": {"exit_code": 0, "shutdown_ms": 3.0},
                            "timeseries": {"t_s": [0.1, 0.2, 0.3], "cpu_cores": [0.1, 0.4, 0.5],
                                           "rss_mb": [9, 10, 11]}})
        for lv, rps in ((4, 100.0), (16, 250.0)):
            store.add_measurement({
                "scenario": "notes-grpc", "implementation_id": iid, "instance": key, "trial": 1,
                "workload": "unary", "level": {"kind": "concurrency", "value": lv, "key": f"c{lv}"},
                "ok": True, "error": None,
                "load": {"rps": rps, "count": 1000, "ok_count": 1000, "errors": 0,
                         "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "p999": 4.0, "max": 5.0},
                         "client_bound": lang == "rust", "tool_cpu_cores": 0.95, "command": ["ghz", evil]},
                "server": {"cpu_cores": 0.5, "cpu_s_per_1k": 2.0, "rss_mb": 10.0, "rss_peak_mb": 11.0,
                           "rps_per_cpu": rps / 0.5}})
    # a level where the server died: no load figures, an error
    store.add_measurement({"scenario": "notes-grpc", "implementation_id": "notes-grpc/go", "instance": "k-go",
                           "trial": 1, "workload": "unary", "level": {"kind": "rate", "value": 100, "key": "r100",
                                                                     "concurrency": 16},
                           "ok": False, "error": "server died under load " + evil, "load": None,
                           "server": {"cpu_cores": 0.1, "rss_mb": 5.0}})
    store.set_interop("notes-grpc", [{"client": c, "server": s, "ok": c != "rust" or s != "go",
                                      "detail": evil} for c in ("go", "rust") for s in ("go", "rust")])
    store.event("error", evil, implementation="notes-grpc/go")
    store.finish("complete")
    return store


def test_store_round_trip_and_flat_rows(tmp_path):
    store = sample_run(tmp_path)
    data = results.load(store.dir)
    assert data["status"] == "complete" and data["finished_at"]
    rows = results.flat_rows(data)
    assert len(rows) == 5
    dead = next(r for r in rows if r["level"] == "r100")
    assert dead["ok"] is False and dead["rps"] is None and "died" in dead["error"]
    rows = [r for r in rows if r["ok"]]
    for col in ("scenario", "implementation", "language", "runtime", "workload", "level", "trial", "verified",
                "rps", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "errors", "cpu_cores",
                "cpu_s_per_1k", "rss_mb", "rss_peak_mb", "idle_cpu_cores", "idle_rss_mb", "startup_ms",
                "build_s", "artifact_mb", "client_bound"):
        assert col in results.COLUMNS and col in rows[0]
    r = next(r for r in rows if r["implementation"] == "go" and r["level"] == "c16")
    assert r["rps"] == 250.0 and r["verified"] is True and r["artifact_mb"] == 2.0
    assert r["server_cpus"] == "1" and r["client_cpus"] == "0" and r["cpu_quota"] == 0.5
    assert next(r for r in rows if r["implementation"] == "rust")["client_bound"] is True
    assert not (store.dir / "results.json.tmp").exists()


def test_table_formats(tmp_path):
    rows = results.flat_rows(results.load(sample_run(tmp_path).dir))
    parsed = list(csv.DictReader(io.StringIO(tables.to_csv(rows, results.COLUMNS))))
    assert len(parsed) == 5 and list(parsed[0]) == results.COLUMNS
    js = json.loads(tables.to_json(rows, results.COLUMNS))
    assert js[0]["scenario"] == "notes-grpc"
    md = tables.to_markdown(rows, results.COLUMNS).splitlines()
    assert md[0].startswith("| run_id | scenario") and len(md) == 7


def test_load_rejects_other_files(tmp_path):
    p = tmp_path / "results.json"
    p.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        results.load(p)
    p.write_text(json.dumps({"schema": "langbench.results", "schema_version": 99}))
    with pytest.raises(InputError, match="schema_version"):
        results.load(p)
    p.write_text(json.dumps({"schema": "something else"}))
    with pytest.raises(InputError, match="'schema'"):
        results.load(tmp_path)


def test_report_is_self_contained_and_escapes(tmp_path):
    store = sample_run(tmp_path)
    html = render(results.load(store.dir))
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html.lower()
    # nothing is fetched: no external src/href/url(), no stylesheet links
    import re
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html, re.I)
    assert "url(http" not in html and "<link" not in html.lower()
    assert html.count("<svg") >= 4        # throughput, latency, CPU and memory over time
    for lang in ("go", "rust"):
        assert f"<b>{lang}</b>" in html
    assert "3/4 ok" in html               # interop summary
    assert "client-bound" in html
    assert "server died under load &lt;script&gt;" in html or "failed" in html


def test_cli_results_and_report(tmp_path):
    import subprocess
    import sys
    store = sample_run(tmp_path)
    out = subprocess.run([sys.executable, "-m", "harness.cli", "results", str(store.dir), "--format", "csv"],
                         capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0].split(",") == results.COLUMNS and len(out.splitlines()) == 6
    rep = tmp_path / "r.html"
    subprocess.run([sys.executable, "-m", "harness.cli", "report", str(store.dir), "-o", str(rep)], check=True,
                   capture_output=True)
    assert rep.read_text().startswith("<!DOCTYPE html>")


def test_original_comparison_takes_a_workload_and_level_that_were_run():
    """'Under load' is the first rate level measured in workload order, else
    the first workload's highest concurrency: never a pair no workload ran
    (ws-echo's echo workloads are closed loop, its rate level is tail's)."""
    from harness.report import hackday_table
    data = {"implementations": {"s/go": {"scenario": "s", "name": "go", "language": "go", "status": "ok"}},
            "instances": [], "measurements": []}
    meta = {"workloads": [{"name": "echo-2k"}, {"name": "ramp"}, {"name": "tail"}],
            "levels": [{"key": "c100", "kind": "concurrency"}, {"key": "c400", "kind": "concurrency"},
                       {"key": "r2000", "kind": "rate"}, {"key": "n1000", "kind": "connections"}]}

    def row(w, lv, rps):
        return {"implementation": "go", "workload": w, "level": lv, "rps_median": rps, "idle_rss_mb_median": 1,
                "rss_mb_median": 2, "idle_cpu_cores_median": 0, "cpu_cores_median": 0.5}
    srows = [row("echo-2k", "c100", 10), row("echo-2k", "c400", 40), row("tail", "r2000", 2000)]
    got = hackday_table(data, "s", srows, meta)[0]
    assert (got["workload"], got["level"], got["rps"]) == ("tail", "r2000", 2000)
    got = hackday_table(data, "s", srows[:2], meta)[0]
    assert (got["workload"], got["level"], got["rps"]) == ("echo-2k", "c400", 40)
    assert hackday_table(data, "s", [], meta) == []
    # a workload with faults (pipeline's fault-term) is not 'under load' while
    # a workload without faults was measured, even at a rate level
    meta["workloads"] = [{"name": "steady"}, {"name": "fault-term", "faults": [{"at": 0.4}]}]
    srows = [row("steady", "c100", 10), row("steady", "c400", 40), row("fault-term", "r2000", 500)]
    got = hackday_table(data, "s", srows, meta)[0]
    assert (got["workload"], got["level"], got["rps"]) == ("steady", "c400", 40)
    got = hackday_table(data, "s", srows[2:], meta)[0]
    assert (got["workload"], got["level"]) == ("fault-term", "r2000")


def test_small_figures_keep_three_significant_digits():
    # CPU-s per 1k echoes of two servers: 0.00115 and 0.00147 must not both
    # print as 0.001.
    assert _fmt(0.00115, 3) == "0.00115"
    assert _fmt(0.00147, 3) == "0.00147"
    assert _fmt(0.0512) == "0.0512"
    assert _fmt(0.123456) == "0.123"
    assert _fmt(0.5) == "0.5"
    assert _fmt(0.0) == "0"
    assert _fmt(3.14159) == "3.1"
    assert _fmt(1234.5) == "1,234"
