"""Micro-benchmarks of the harness itself, with pytest-benchmark.

The default test run disables timing (--benchmark-disable in pyproject), so
these run once as plain tests and assert only correctness; time them with

    .venv/bin/python -m pytest tests/bench --benchmark-enable

No figure here is asserted: the README records what was measured.
"""
from __future__ import annotations

import os

import psutil

from harness import sampling, stats
from harness.report import render
from harness.results import load

from ..test_results_report import sample_run


def test_bench_one_sample_of_a_process_tree(benchmark):
    """What the sampler does 10 times a second: CPU counter + RSS of a tree."""
    proc = psutil.Process(os.getpid())

    def one_sample():
        t = proc.cpu_times()
        rss = sum(p.memory_info().rss for p in [proc] + proc.children(recursive=True))
        return t.user + t.system, rss

    cpu, rss = benchmark(one_sample)
    assert cpu > 0 and rss > 0


def test_bench_bootstrap_interval(benchmark):
    xs = [1000.0 + 7 * i % 13 for i in range(10)]
    lo, hi = benchmark(stats.bootstrap_ci, xs)
    assert lo <= stats.median(xs) <= hi


def test_bench_compare_samples(benchmark):
    v = benchmark(stats.compare_samples, [100.0, 101, 99], [60.0, 61, 59], 0.1, True)
    assert v.verdict == "regressed"


def test_bench_report_rendering(benchmark, tmp_path):
    data = load(sample_run(tmp_path).dir)
    html = benchmark(render, data)
    assert html.count("<svg") >= 4


def test_bench_window_arithmetic(benchmark):
    samples = [sampling.Sample(t * 0.1, {sampling.SERVER_CPU: t * 0.05}, 10_000_000 + t) for t in range(6000)]
    out = benchmark(lambda: sampling.memory_stats(sampling.window(samples, 100.0, 500.0)))
    assert out["n"] == 4001
