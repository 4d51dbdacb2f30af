from __future__ import annotations

import pytest

from harness import stats, summary


def test_median_cv_and_bootstrap_interval():
    xs = [100.0, 102.0, 98.0, 101.0, 99.0]
    assert stats.median(xs) == 100.0
    assert stats.cv(xs) == pytest.approx(0.0158, abs=1e-3)
    lo, hi = stats.bootstrap_ci(xs)
    assert 98.0 <= lo <= 100.0 <= hi <= 102.0
    assert stats.bootstrap_ci([5.0]) == (5.0, 5.0)
    assert stats.bootstrap_ci([]) is None
    assert stats.cv([1.0]) is None
    assert stats.bootstrap_ci(xs) == stats.bootstrap_ci(xs)   # seeded: reproducible


def test_unstable_flag():
    assert stats.summarize([100, 130, 80]).unstable
    assert not stats.summarize([100, 101, 99]).unstable


def test_mann_whitney_exact_and_approximate():
    # completely separated samples of 4: exact two-sided p = 2 / C(8,4) = 0.0286
    assert stats.mann_whitney_p([1, 2, 3, 4], [5, 6, 7, 8]) == pytest.approx(2 / 70)
    assert stats.mann_whitney_p([1, 2, 3], [4, 5, 6]) == pytest.approx(0.1)
    assert stats.mann_whitney_p([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(1.0, abs=0.2)
    big = stats.mann_whitney_p(list(range(20)), [x + 100 for x in range(20)])
    assert big < 1e-6


def test_compare_verdicts():
    base = [1000.0, 1010.0, 990.0]
    same = stats.compare_samples(base, list(base), 0.10, higher_is_better=True)
    assert same.verdict == "within noise" and same.change == 0
    slower = stats.compare_samples(base, [600.0, 610.0, 590.0], 0.10, higher_is_better=True)
    assert slower.verdict == "regressed" and slower.change == pytest.approx(-0.4)
    faster = stats.compare_samples(base, [1500.0, 1490.0, 1510.0], 0.10, higher_is_better=True)
    assert faster.verdict == "improved"
    # for latency, higher is worse
    assert stats.compare_samples([1.0, 1.1, 0.9], [2.0, 2.1, 1.9], 0.10, higher_is_better=False).verdict == "regressed"
    # small change: significant maybe, but under the threshold
    assert stats.compare_samples(base, [960.0, 970.0, 950.0], 0.10, True).verdict == "within noise"
    # noisy: the intervals overlap the threshold
    assert stats.compare_samples([1000, 500, 1500], [800, 1400, 400], 0.10, True).verdict == "within noise"
    assert stats.compare_samples([1000.0], [500.0], 0.10, True).verdict == "inconclusive"


def test_rank_with_ties():
    r = stats.rank({"a": [100, 101, 99], "b": [100.5, 99.5, 100.2], "c": [50, 51, 49]})
    assert r["a"] == r["b"] == 1 and r["c"] == 3
    r = stats.rank({"a": [1.0, 1.1, 0.9], "b": [2.0, 2.1, 1.9]}, higher_is_better=False)
    assert r == {"a": 1, "b": 2}


def _row(impl, trial, rps, **kw):
    r = {"scenario": "s", "implementation": impl, "language": impl, "runtime": "process", "workload": "w",
         "level": "c16", "level_kind": "concurrency", "level_value": 16, "trial": trial, "ok": True,
         "verified": True, "client_bound": False, "rps": rps, "p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 3.0,
         "p999_ms": 4.0, "max_ms": 5.0, "errors": 0, "cpu_cores": 0.5, "cpu_s_per_1k": 500 / rps,
         "rps_per_cpu": rps / 0.5, "rss_mb": 10.0, "rss_peak_mb": 11.0, "idle_cpu_cores": 0.0,
         "idle_rss_mb": 9.0, "startup_ms": 10.0}
    r.update(kw)
    return r


def test_summary_rows_and_compare_and_ranks():
    rows = [_row("go", t, v) for t, v in enumerate([1000, 1020, 980], 1)]
    rows += [_row("py", t, v) for t, v in enumerate([300, 310, 290], 1)]
    rows += [_row("rs", 1, 2000, client_bound=True), _row("sc", 1, 100, ok=False)]
    srows = {r["implementation"]: r for r in summary.summary_rows(rows)}
    assert srows["go"]["trials"] == 3 and srows["go"]["rps_median"] == 1000
    assert srows["go"]["rps_ci_low"] <= 1000 <= srows["go"]["rps_ci_high"]
    assert srows["sc"]["trials"] == 0 and srows["sc"]["failed_trials"] == 1
    assert srows["rs"]["client_bound"] is True
    cols = summary.summary_columns()
    for m in ("rps", "p99_ms"):
        for suffix in ("median", "ci_low", "ci_high", "cv"):
            assert f"{m}_{suffix}" in cols
    ranks = summary.ranks(rows)[("s", "w", "c16")]
    assert ranks == {"go": 1, "py": 2}          # rs client-bound and sc failed: never ranked
    slow = [_row("go", t, v) for t, v in enumerate([600, 610, 590], 1)]
    verdicts = summary.compare(rows, slow, 0.10)
    go_rps = next(v for v in verdicts if v["implementation"] == "go" and v["metric"] == "rps")
    assert go_rps["verdict"] == "regressed"
    py_rps = next(v for v in verdicts if v["implementation"] == "py" and v["metric"] == "rps")
    assert py_rps["verdict"] == "inconclusive"    # missing from the current run
    same = summary.compare(rows, rows, 0.10)
    assert not [v for v in same if v["verdict"] in ("regressed", "improved")]
