from __future__ import annotations

import json
import subprocess
import sys

import pytest

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


def _edit(run, change):
    """Rewrite a run's results.json through `change(data)`."""
    path = run / "results.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _compare(base, cur, *extra):
    return subprocess.run([*CLI, "compare", str(base), str(cur), *extra], capture_output=True, text=True)


def test_compare_broken_implementation_exits_1_and_is_listed_first(tmp_path):
    base, cur = three_trials(tmp_path, "base"), three_trials(tmp_path, "cur")

    def break_go_c16(data):
        for m in data["measurements"]:
            if m["implementation_id"] == "notes-grpc/go" and m["level"]["key"] == "c16":
                m.update(ok=False, error="server died under load", load=None)
    _edit(cur, break_go_c16)
    proc = _compare(base, cur)
    assert proc.returncode == 1, proc.stdout
    lines = proc.stdout.splitlines()
    assert lines[1].startswith("1 broken")
    assert lines[2].startswith("BROKEN") and "notes-grpc/go unary c16" in lines[2]
    assert "all 3 trials failed in the current run: server died under load" in lines[2]
    md = _compare(base, cur, "--format", "markdown").stdout.splitlines()
    table = [ln for ln in md if ln.startswith("| ")][1:]
    assert table[0].startswith("| **BROKEN** | notes-grpc | go | unary | c16 | all |")
    out = json.loads(_compare(base, cur, "--format", "json").stdout)
    assert out["counts"]["broken"] == 1 and list(out["counts"])[0] == "broken"


def test_compare_missing_implementation_exits_1(tmp_path):
    base, cur = three_trials(tmp_path, "base"), three_trials(tmp_path, "cur")

    def drop_rust(data):
        data["measurements"] = [m for m in data["measurements"] if m["implementation_id"] != "notes-grpc/rust"]
        data["implementations"]["notes-grpc/rust"].update(status="failed", failure="build: cargo exited 101")
    _edit(cur, drop_rust)
    proc = _compare(base, cur, "--format", "json")
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    missing = [v for v in out["verdicts"] if v["verdict"] == "missing"]
    assert {(v["implementation"], v["level"]) for v in missing} == {("rust", "c4"), ("rust", "c16")}
    assert all("build: cargo exited 101" in v["reason"] for v in missing)
    assert out["counts"]["missing"] == 2


def test_compare_failed_in_base_too_stays_inconclusive(tmp_path):
    base, cur = three_trials(tmp_path, "base"), three_trials(tmp_path, "cur")

    def break_go_c4(data):
        for m in data["measurements"]:
            if m["implementation_id"] == "notes-grpc/go" and m["level"]["key"] == "c4":
                m.update(ok=False, error="server died under load", load=None)
    _edit(base, break_go_c4)
    _edit(cur, break_go_c4)
    proc = _compare(base, cur, "--format", "json")
    assert proc.returncode == 0, proc.stdout
    go_c4 = [v for v in json.loads(proc.stdout)["verdicts"] if v["implementation"] == "go" and v["level"] == "c4"]
    assert go_c4 and {v["verdict"] for v in go_c4} == {"inconclusive"}


NOT_COMPARABLE = {
    "runtime": (lambda d: d.update(runtime="docker"), "runtime 'process' vs 'docker'"),
    "profile": (lambda d: d.update(profile_name="standard"), "profile 'quick' vs 'standard'"),
    "quota": (lambda d: d["profile"].update(server_cpu_quota=1.0), "CPU quota 0.5 cores vs 1.0 cores"),
    "client cpus": (lambda d: d["cpu_layout"].update(client=[0, 1]), "load tool CPUs 0 vs CPUs 0,1"),
    "server cpus": (lambda d: d["cpu_layout"].update(server=[2]), "server CPUs 1 vs CPUs 2"),
    "cpu model": (lambda d: d["environment"].update(cpu_model="y"), "CPU model 'x' vs 'y'"),
    "cpu count": (lambda d: d["environment"].update(cpu_count=4), "CPU count 2 vs 4"),
    "memory": (lambda d: d["environment"].update(memory_gb=2), "memory 1 GB vs 2 GB"),
    "kernel": (lambda d: d["environment"].update(kernel="k2"), "kernel 'k' vs 'k2'"),
}


@pytest.mark.parametrize("what", sorted(NOT_COMPARABLE))
def test_compare_refuses_runs_that_are_not_comparable(tmp_path, what):
    change, phrase = NOT_COMPARABLE[what]
    base, cur = three_trials(tmp_path, "base"), three_trials(tmp_path, "cur")
    _edit(cur, change)
    proc = _compare(base, cur)
    assert proc.returncode == 2 and proc.stdout == ""
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "not comparable" in err[0] and phrase in err[0], err
    forced = _compare(base, cur, "--force", "--format", "markdown")
    assert forced.returncode == 0, forced.stdout
    warn = forced.stderr.strip().splitlines()
    assert len(warn) == 1 and warn[0].startswith("langbench: warning:") and phrase in warn[0]
    assert any(ln.startswith("> **Warning:**") and phrase in ln for ln in forced.stdout.splitlines())


def test_compare_cfs_period_only_when_both_runs_record_it(tmp_path):
    base, cur = three_trials(tmp_path, "base"), three_trials(tmp_path, "cur")
    _edit(cur, lambda d: d["profile"].update(cfs_period_us=100000))
    assert _compare(base, cur).returncode == 0          # absent in the base: unknown, not a difference
    _edit(base, lambda d: d["profile"].update(cfs_period_us=100000))
    assert _compare(base, cur).returncode == 0
    _edit(base, lambda d: d["profile"].update(cfs_period_us=10000))
    proc = _compare(base, cur)
    assert proc.returncode == 2 and "CFS period 10000 us vs 100000 us" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
