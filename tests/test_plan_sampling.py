from __future__ import annotations

import time

import pytest

from harness import sampling
from harness.manifest import discover
from harness.profiles import cpu_layout
from harness.runner import make_plan


def test_plan_interleaves_trials_and_is_seeded(root):
    cat = discover(root)
    sel = cat.select(["notes-grpc"], None)
    plan = make_plan(sel, trials=3, seed=42)
    impls = sel[0][1]
    assert len(plan) == 3 * len(impls)
    # each trial holds every implementation once, before the next trial starts
    for t in range(3):
        chunk = plan[t * len(impls):(t + 1) * len(impls)]
        assert {p.trial for p in chunk} == {t + 1}
        assert sorted(p.impl.name for p in chunk) == sorted(i.name for i in impls)
    again = make_plan(sel, trials=3, seed=42)
    assert [p.to_json() for p in plan] == [p.to_json() for p in again]
    orders = {tuple(p.impl.name for p in make_plan(sel, 1, s)) for s in range(20)}
    assert len(orders) > 1, "the order must depend on the seed"


def test_cpu_layout_is_disjoint():
    lay = cpu_layout([0, 1])
    assert lay.client == [0] and lay.server == [1]
    lay = cpu_layout([0, 1, 2, 3])
    assert set(lay.client).isdisjoint(lay.server) and len(lay.server) == 2
    with pytest.raises(Exception):
        cpu_layout([0])


def test_cpu_cores_from_counter_deltas():
    a, b = sampling.Mark(10.0, 3.0), sampling.Mark(12.0, 4.0)
    assert sampling.cpu_cores(a, b) == pytest.approx(0.5)
    assert sampling.cpu_cores(a, sampling.Mark(14.0, 2.0)) == 0.0  # counter never goes backwards
    with pytest.raises(ValueError):
        sampling.cpu_cores(a, a)


def test_memory_and_series():
    s = [sampling.Sample(t, t * 0.25, int(1e6 * (10 + t))) for t in range(6)]
    w = sampling.window(s, 1, 4)
    assert [x.t for x in w] == [1, 2, 3, 4]
    m = sampling.memory_stats(w)
    assert m["mean_mb"] == pytest.approx(12.5) and m["peak_mb"] == pytest.approx(14.0) and m["n"] == 4
    assert sampling.memory_stats([])["mean_mb"] is None
    series = sampling.cpu_series(s)
    assert len(series) == 5 and all(c == pytest.approx(0.25) for _, c in series)
    ts = sampling.timeseries(s, 0.0)
    assert ts["t_s"][0] == 1.0 and ts["rss_mb"][-1] == pytest.approx(15.0)


def test_sampler_collects_at_its_rate_and_measures_itself():
    counter = {"cpu": 0.0}

    def cpu():
        counter["cpu"] += 0.01
        return counter["cpu"]

    s = sampling.Sampler(cpu, lambda: 5_000_000, hz=50).start()
    a = s.mark()
    time.sleep(0.5)
    b = s.mark()
    s.stop()
    n = len(sampling.window(s.snapshot(), a.t, b.t))
    assert 15 <= n <= 30, n
    assert s.wall_s > 0.4 and s.own_cpu_s >= 0.0
    assert s.overhead_cores() is not None and s.overhead_cores() < 0.5
