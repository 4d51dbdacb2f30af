from __future__ import annotations

import math
import random
import statistics

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
    # the p-value and interval are Welch's on logs: the interval is of the ratio of geometric means
    assert slower.p_value < 0.05 and slower.ci[0] < -0.4 < slower.ci[1] < 0


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
    py = [v for v in verdicts if v["implementation"] == "py"]
    assert [(v["verdict"], v["metric"]) for v in py] == [("missing", "all")]   # usable in the base, gone now
    same = summary.compare(rows, rows, 0.10)
    assert not [v for v in same if v["verdict"] in ("regressed", "improved", "broken", "missing")]


# ------------------------------------------------------------------ small-n significance (Welch on logs)

def test_t_distribution_matches_table_values():
    # two-sided 95% critical values of Student's t (any statistics table)
    for df, q in ((1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (5, 2.571), (10, 2.228), (30, 2.042)):
        assert stats.t_ppf(0.975, df) == pytest.approx(q, abs=1e-3)
    assert stats.t_ppf(0.95, 5) == pytest.approx(2.015, abs=1e-3)
    assert stats.t_ppf(0.995, 2) == pytest.approx(9.925, abs=1e-3)
    assert stats.t_ppf(0.025, 3) == pytest.approx(-3.182, abs=1e-3)
    assert stats.t_ppf(0.975, 1e9) == pytest.approx(1.960, abs=1e-3)
    assert stats.t_sf2(2.228, 10) == pytest.approx(0.05, abs=1e-4)
    assert stats.t_sf2(0.0, 3) == pytest.approx(1.0)
    assert stats.t_cdf(1.5, 3) + stats.t_cdf(-1.5, 3) == pytest.approx(1.0)
    # df = 1 is the Cauchy distribution: P(T <= t) = 1/2 + atan(t)/pi
    for t in (-3.0, 0.3, 2.0, 40.0):
        assert stats.t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
    # df = 2 has a closed form too (Welch's df is fractional; the same code serves both)
    for t in (0.5, 1.7, 9.0):
        assert stats.t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)
    for df in (2.5, 3.7, 7.2):
        assert stats.t_cdf(stats.t_ppf(0.975, df), df) == pytest.approx(0.975, abs=1e-12)


def test_welch_log_interval_by_hand():
    base = [100.0, 110.0, 121.0]                  # logs: equally spaced by ln 1.1
    cur = [x * 1.5 for x in base]                 # same spread: Welch's df is 2 (n - 1) = 4
    w = stats.welch_log(base, cur)
    assert w.df == pytest.approx(4.0)
    se = math.sqrt(2 * math.log(1.1) ** 2 / 3)
    assert w.change == pytest.approx(0.5)
    assert w.ci[0] == pytest.approx(1.5 * math.exp(-2.776 * se) - 1, abs=1e-3)
    assert w.ci[1] == pytest.approx(1.5 * math.exp(2.776 * se) - 1, abs=1e-3)
    assert w.p_value == pytest.approx(stats.t_sf2(math.log(1.5) / se, 4)) and w.p_value < 0.01
    assert stats.welch_log([1.0, 0.0, 2.0], [1.0, 2.0, 3.0]) is None       # no logarithm of 0


def _lognormal(rng, n, cv, scale=1000.0):
    s = math.sqrt(math.log(1 + cv * cv))
    return [scale * math.exp(rng.gauss(-s * s / 2, s)) for _ in range(n)]


def test_false_positive_rate_and_power_at_small_n():
    """Samples drawn from the same lognormal distribution (CV 5%) must not be
    called different more than about 5% of the time, at any number of trials;
    with threshold 0 the verdict is the significance test alone. The old
    percentile bootstrap called 32% (n=2) and 12% (n=3) of them different."""
    reps = 3000
    for n in (2, 3, 5):
        rng = random.Random(20261123 + n)
        for threshold in (0.0, 0.10):
            called = sum(stats.compare_samples(_lognormal(rng, n, 0.05), _lognormal(rng, n, 0.05), threshold, True)
                         .verdict in ("regressed", "improved") for _ in range(reps))
            assert called / reps <= 0.055, (n, threshold, called / reps)
    # a true 20% drop at CV 3% and 3 trials a side is found nearly always
    rng = random.Random(7)
    found = sum(stats.compare_samples(_lognormal(rng, 3, 0.03), _lognormal(rng, 3, 0.03, 800.0), 0.10, True)
                .verdict == "regressed" for _ in range(1000))
    assert found / 1000 >= 0.80
    # and a 20% latency rise likewise (lower is better)
    found = sum(stats.compare_samples(_lognormal(rng, 3, 0.03), _lognormal(rng, 3, 0.03, 1200.0), 0.10, False)
                .verdict == "regressed" for _ in range(1000))
    assert found / 1000 >= 0.80


def test_too_few_trials_is_never_significant():
    v = stats.compare_samples([1000.0, 1010.0], [600.0, 605.0], 0.10, True)
    assert v.verdict == "inconclusive" and "too few trials" in v.reason and v.change == pytest.approx(-0.4, abs=0.01)
    assert stats.compare_samples([1000.0, 1010.0, 990.0], [600.0, 605.0], 0.10, True).verdict == "inconclusive"
    # not ranked apart below 3 trials a side, nor by a single value
    assert stats.rank({"a": [100.0, 101.0], "b": [50.0, 51.0]}) == {"a": 1, "b": 1}
    assert stats.rank({"a": [100.0], "b": [50.0]}) == {"a": 1, "b": 1}
    assert stats.rank({"a": [100.0, 101.0, 99.0], "b": [50.0, 51.0, 49.0]}) == {"a": 1, "b": 2}


def test_summary_interval_is_the_t_interval_of_the_geometric_mean():
    xs = [100.0, 102.0, 98.0]
    s = stats.summarize(xs)
    logs = [math.log(x) for x in xs]
    m, sd = sum(logs) / 3, statistics.stdev(logs)
    assert s.median == 100.0
    assert s.ci_low == pytest.approx(math.exp(m - 4.303 * sd / math.sqrt(3)), rel=1e-4)
    assert s.ci_high == pytest.approx(math.exp(m + 4.303 * sd / math.sqrt(3)), rel=1e-4)
    assert s.ci_low < 96 and s.ci_high > 104             # not just [min, max] at 3 trials
    one = stats.summarize([5.0])
    assert one.ci_low is None and one.ci_high is None   # no interval from one trial
    assert stats.geomean_ci([0.0, 0.0, 0.0]) == (0.0, 0.0)
    lo, hi = stats.geomean_ci([0.0, 1.0, 2.0])            # a zero: t interval of the arithmetic mean
    assert lo == pytest.approx(1 - 4.303 / math.sqrt(3), abs=1e-3) and hi == pytest.approx(1 + 4.303 / math.sqrt(3), abs=1e-3)


def _failed(impl, trial, error):
    r = _row(impl, trial, 1000.0, ok=False, error=error)
    r.update({m: None for m in ("rps", "p50_ms", "p90_ms", "p99_ms", "cpu_s_per_1k", "rps_per_cpu", "rss_mb")})
    return r


def test_compare_broken_missing_and_failed_in_base():
    base = [_row(impl, t, v) for impl in ("go", "py", "rs", "sc", "kt") for t, v in enumerate([1000, 1010, 990], 1)]
    base += [_failed("bad", t, "crashed") for t in (1, 2, 3)]
    cur = [_row("go", t, v) for t, v in enumerate([1000, 1010, 990], 1)]
    cur += [_failed("py", t, "server died under load\nsecond line") for t in (1, 2, 3)]
    cur += [_row("rs", t, v, verified=False) for t, v in enumerate([1000, 1010, 990], 1)]
    cur += [_row("kt", 1, 1000), _row("kt", 2, 1005), _failed("kt", 3, "cut short")]
    cur += [_failed("bad", t, "crashed") for t in (1, 2, 3)]
    # "sc" is missing: its build failed in the current run
    verdicts = summary.compare(base, cur, 0.10, current_failures={("s", "sc"): "build: cargo failed"})
    by = {}
    for v in verdicts:
        by.setdefault(v["implementation"], []).append(v)
    assert [v["verdict"] for v in by["py"]] == ["broken"]
    assert by["py"][0]["metric"] == "all" and "server died under load" in by["py"][0]["reason"]
    assert "second line" not in by["py"][0]["reason"]
    assert [v["verdict"] for v in by["rs"]] == ["broken"] and "not verified" in by["rs"][0]["reason"]
    assert [v["verdict"] for v in by["sc"]] == ["missing"] and "build: cargo failed" in by["sc"][0]["reason"]
    assert [v["verdict"] for v in by["kt"]] == ["broken"] and "1 of 3 trials failed" in by["kt"][0]["reason"]
    assert {v["verdict"] for v in by["bad"]} == {"inconclusive"}          # failed in the base too
    assert all("failed in the base" in v["reason"] for v in by["bad"])
    assert {v["verdict"] for v in by["go"]} == {"within noise"}
    # a failed trial where the base had failed trials too is compared on the usable ones
    base_flaky = base + [_failed("kt", 4, "cut short")]
    kt = [v for v in summary.compare(base_flaky, cur, 0.10) if v["implementation"] == "kt"]
    assert {v["verdict"] for v in kt} == {"inconclusive"} and "too few trials" in kt[0]["reason"]


# ------------------------------------------------------------------ false-discovery control (Benjamini-Hochberg)

def test_bh_adjust_by_hand():
    # sorted: 0.005 (k=1), 0.01 (2), 0.03 (3), 0.04 (4); p*m/k = 0.02, 0.02, 0.04, 0.04; running minimum from the top
    assert stats.bh_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    # all five at the edge: each q is 0.05 (R's p.adjust(c(.01,.02,.03,.04,.05), "BH") gives the same)
    assert stats.bh_adjust([0.01, 0.02, 0.03, 0.04, 0.05]) == pytest.approx([0.05] * 5)
    assert stats.bh_adjust([0.9, 0.8]) == pytest.approx([0.9, 0.9])
    assert stats.bh_adjust([0.6]) == [0.6] and stats.bh_adjust([]) == []
    assert max(stats.bh_adjust([0.5, 0.7, 0.99])) <= 1.0


def _family(marginal_cur):
    """One implementation, 20 levels: 19 unchanged with spread, one marginal change."""
    base, cur = [], []
    for lvl in range(20):
        b = [1000.0, 1030.0, 970.0]
        c = [1012.0, 985.0, 1003.0] if lvl else marginal_cur
        base += [_row("go", t, v, level=f"c{lvl}", cpu_s_per_1k=None, rps_per_cpu=None) for t, v in enumerate(b, 1)]
        cur += [_row("go", t, v, level=f"c{lvl}", cpu_s_per_1k=None, rps_per_cpu=None) for t, v in enumerate(c, 1)]
    return base, cur


def test_compare_controls_false_discoveries_across_the_family():
    marginal = [870.0, 905.0, 850.0]                  # -13%, p ~ 0.01 on its own
    base, cur = _family(marginal)
    p_alone = stats.compare_samples([1000.0, 1030.0, 970.0], marginal, 0.10, True).p_value
    assert 0.001 < p_alone < 0.05
    per_test = [v for v in summary.compare(base, cur, 0.10, fdr="none") if v["metric"] == "rps"]
    assert [v["level"] for v in per_test if v["verdict"] == "regressed"] == ["c0"]
    controlled = [v for v in summary.compare(base, cur, 0.10) if v["metric"] == "rps"]
    c0 = next(v for v in controlled if v["level"] == "c0")
    assert c0["verdict"] == "within noise" and c0["q_value"] > 0.05 and "over" in c0["reason"]
    # a large change survives the correction
    strong, _ = _family([500.0, 505.0, 495.0])
    _, strong_cur = _family([500.0, 505.0, 495.0])
    c0 = next(v for v in summary.compare(strong, strong_cur, 0.10) if v["metric"] == "rps" and v["level"] == "c0")
    assert c0["verdict"] == "regressed" and c0["q_value"] < 0.05
    with pytest.raises(ValueError):
        summary.compare(base, cur, 0.10, fdr="bonferroni")


def test_rank_family_is_controlled():
    # two clearly apart and one pair only marginally apart: alone at 5% the pair would be ranked apart
    a, b = [1000.0, 1030.0, 970.0], [870.0, 905.0, 850.0]
    assert stats.welch_log(b, a).p_value < 0.05
    assert stats.rank({"a": a, "b": b}) == {"a": 1, "b": 2}
    # eight more groups with wide spread: 45 pairs, none but a-b with a small p
    many = {"a": a, "b": b, **{f"n{i}": [700.0 + i, 1300.0, 1000.0] for i in range(8)}}
    r = stats.rank(many)
    assert r["b"] == 1 and r["a"] == 1          # the marginal pair no longer clears q < 0.05 over 45 tests
