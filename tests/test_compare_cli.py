from __future__ import annotations

import json
import subprocess
import sys

from harness import results

from .test_results_report import sample_run

CLI = [sys.executable, "-m", "harness.cli"]


def three_trials(tmp_path, name, factor=1.0):
    """A results file with 3 trials per implementation; rps scaled by factor for 'go'."""
    store = sample_run(tmp_path / name)
    data = store.data
    base = [m for m in data["measurements"] if m["load"] is not None]
    data["measurements"] = []
    data["trials"] = 3
    for trial, jitter in ((1, 1.0), (2, 1.02), (3, 0.98)):
        for m in base:
            m2 = json.loads(json.dumps(m))
            m2["trial"] = trial
            f = factor if m2["implementation_id"].endswith("/go") else 1.0
            m2["load"]["rps"] = m["load"]["rps"] * jitter * f
            m2["load"]["client_bound"] = False
            data["measurements"].append(m2)
    store.save()
    return store.dir


def test_compare_same_run_exits_0(tmp_path):
    run = three_trials(tmp_path, "a")
    proc = subprocess.run([*CLI, "compare", str(run), str(run), "--format", "json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["counts"].get("regressed", 0) == 0 and out["counts"]["within noise"] > 0


def test_compare_slowed_run_exits_1_with_markdown(tmp_path):
    base, slow = three_trials(tmp_path, "base"), three_trials(tmp_path, "slow", factor=0.5)
    proc = subprocess.run([*CLI, "compare", str(base), str(slow), "--format", "markdown", "--threshold", "10%"],
                          capture_output=True, text=True)
    assert proc.returncode == 1, proc.stdout
    assert proc.stdout.startswith("### langbench compare")
    line = next(ln for ln in proc.stdout.splitlines() if "**REGRESSED**" in ln and "| rps |" in ln)
    assert "| go |" in line and "-50.0%" in line
    assert not any("**REGRESSED**" in ln and "| rust |" in ln for ln in proc.stdout.splitlines())


def test_compare_bad_threshold_is_one_line(tmp_path):
    run = three_trials(tmp_path, "a")
    proc = subprocess.run([*CLI, "compare", str(run), str(run), "--threshold", "ten"], capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_summary_table_and_pytest_benchmark_export(tmp_path):
    run = three_trials(tmp_path, "a")
    proc = subprocess.run([*CLI, "results", str(run), "--summary", "--format", "json"], capture_output=True,
                          text=True, check=True)
    rows = json.loads(proc.stdout)
    go = next(r for r in rows if r["implementation"] == "go" and r["level"] == "c16")
    assert go["trials"] == 3 and go["rps_median"] == 250.0 and go["rps_ci_low"] < 250.0 < go["rps_ci_high"]
    out = tmp_path / "pb.json"
    subprocess.run([*CLI, "export", str(run), "--format", "pytest-benchmark", "-o", str(out)], check=True)
    doc = json.loads(out.read_text())
    assert len(doc["benchmarks"]) == 4
    b = next(b for b in doc["benchmarks"] if b["name"] == "notes-grpc[go-unary-c16]")
    assert b["stats"]["rounds"] == 3 and abs(b["stats"]["ops"] - 1 / b["stats"]["mean"]) < 1e-6
    # pytest-benchmark's own compare reads it
    from pathlib import Path
    proc = subprocess.run([str(Path(sys.executable).parent / "pytest-benchmark"), "compare", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "notes-grpc[go-unary-c16]" in proc.stdout


def test_report_with_baseline_shows_regressions(tmp_path):
    base, slow = three_trials(tmp_path, "base"), three_trials(tmp_path, "slow", factor=0.5)
    out = tmp_path / "r.html"
    subprocess.run([*CLI, "report", str(slow), "--baseline", str(base), "-o", str(out)], check=True,
                   capture_output=True)
    html = out.read_text()
    assert "Against baseline" in html and "REGRESSED" not in html  # the HTML says 'regressed' in its table
    assert "rps regressed -50.0%" in html
    assert results.load(slow)["trials"] == 3
