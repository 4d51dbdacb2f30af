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
    # chosen by hand (--client-cpus 0-2 --server-cpus 3): disjoint and available, or one-line errors
    from harness.errors import InputError
    from harness.profiles import parse_cpus
    assert parse_cpus("0-2,5", "--client-cpus") == [0, 1, 2, 5]
    lay = cpu_layout([0, 1, 2, 3], client=parse_cpus("0-2", "x"), server=[3])
    assert lay.client == [0, 1, 2] and lay.server == [3]
    with pytest.raises(InputError, match="overlap"):
        cpu_layout([0, 1, 2, 3], client=[0, 1], server=[1])
    with pytest.raises(InputError, match="not available"):
        cpu_layout([0, 1], client=[0], server=[7])
    with pytest.raises(InputError, match="go together"):
        cpu_layout([0, 1], client=[0])
    with pytest.raises(InputError, match="--server-cpus: 'a-b'"):
        parse_cpus("a-b", "--server-cpus")


def _s(t, cpu, mem=None, **more):
    return sampling.Sample(t, {sampling.SERVER_CPU: cpu, **more}, mem)


def test_cpu_cores_from_counter_deltas():
    a, b = _s(10.0, 3.0), _s(12.0, 4.0)
    assert sampling.cpu_cores(a, b) == pytest.approx(0.5)
    assert sampling.cpu_cores(a, _s(14.0, 2.0)) == 0.0  # counter never goes backwards
    with pytest.raises(ValueError):
        sampling.cpu_cores(a, a)
    assert sampling.cpu_cores(a, sampling.Sample(12.0, {})) is None   # a missing reading is no figure


def test_counter_interpolated_at_window_edges():
    # cumulative CPU grows 0.5 s per s from t=0 to t=10, sampled every 0.1 s
    s = [_s(i / 10, 0.05 * i) for i in range(101)]
    assert sampling.value_at(s, sampling.SERVER_CPU, 2.345) == pytest.approx(1.1725)
    assert sampling.delta(s, sampling.SERVER_CPU, 1.23, 8.77) == pytest.approx(0.5 * 7.54)
    assert sampling.value_at(s, sampling.SERVER_CPU, 11.0) is None     # outside the samples: unknown


def test_memory_and_series():
    s = [_s(t, t * 0.25, int(1e6 * (10 + t))) for t in range(6)]
    w = sampling.window(s, 1, 4)
    assert [x.t for x in w] == [1, 2, 3, 4]
    m = sampling.memory_stats(w)
    assert m["mean_mb"] == pytest.approx(12.5) and m["peak_mb"] == pytest.approx(14.0) and m["n"] == 4
    assert sampling.memory_stats([])["mean_mb"] is None
    series = sampling.cpu_series(s)
    assert len(series) == 5 and all(c == pytest.approx(0.25) for _, c in series)
    ts = sampling.timeseries(s, 0.0)
    assert ts["t_s"][0] == 1.0 and ts["rss_mb"][-1] == pytest.approx(15.0)
    # memory read at every third tick only (as the runner samples it): every
    # point carries the latest reading, none is left empty between readings,
    # whatever the thinning of the series
    sparse = [_s(t, t * 0.25, int(1e6 * (10 + t)) if t % 3 == 0 else None) for t in range(30)]
    ts = sampling.timeseries(sparse, 0.0)
    assert ts["rss_mb"][:6] == [10.0, 10.0, 13.0, 13.0, 13.0, 16.0]      # t = 1..6
    thin = sampling.timeseries(sparse, 0.0, max_points=9)               # every third point: t = 1, 4, 7, ...
    assert None not in thin["rss_mb"] and thin["rss_mb"][:3] == [10.0, 13.0, 16.0]


def test_sampler_collects_at_its_rate_and_measures_itself():
    counter = {"cpu": 0.0}

    def counters():
        counter["cpu"] += 0.01
        return {sampling.SERVER_CPU: counter["cpu"]}

    s = sampling.Sampler(counters, lambda: 5_000_000, hz=50).start()
    a = s.mark()
    time.sleep(0.5)
    b = s.mark()
    s.stop()
    snap = s.snapshot()
    assert [x.t for x in snap] == sorted(x.t for x in snap)     # marks join the series in order
    n = len(sampling.window(snap, a.t, b.t))
    assert 15 <= n <= 32, n
    assert s.wall_s > 0.4 and s.own_cpu_s >= 0.0
    assert s.overhead_cores() is not None and s.overhead_cores() < 0.5


def test_window_analysis_client_bound_noise_and_throttling():
    from harness.probe import analyse
    S = sampling
    # 10 s: server used 0.5 core; its CPU was busy 0.62 core (0.12 foreign);
    # the client CPU busy 0.95 (tool 0.7 + harness/broker 0.25); quota throttled 400 of 1000 periods.
    a = S.Sample(0.0, {S.SERVER_CPU: 0, S.SERVER_BUSY: 0, S.CLIENT_BUSY: 0, S.STEAL: 0, S.TOOL: 0, S.TOOL_PID: 7,
                       S.THR_PERIODS: 0, S.THR_THROTTLED: 0, S.THR_S: 0})
    b = S.Sample(10.0, {S.SERVER_CPU: 5.0, S.SERVER_BUSY: 6.2, S.CLIENT_BUSY: 9.5, S.STEAL: 0.1, S.TOOL: 7.0, S.TOOL_PID: 7,
                        S.THR_PERIODS: 1000, S.THR_THROTTLED: 400, S.THR_S: 2.0})
    w = analyse([a, b], 0.0, 10.0, 1, client_bound_share=0.9, noisy_foreign_cores=0.05, noisy_steal_cores=0.05)
    assert w["cpu_cores"] == pytest.approx(0.5)
    assert w["client"]["saturated"] and w["client"]["busy_share"] == pytest.approx(0.95)
    assert w["client"]["tool_cores"] == pytest.approx(0.7)       # the tool alone is not saturated: others are
    assert w["noise"]["foreign_cores"] == pytest.approx(0.12) and w["noise"]["noisy"]
    assert w["throttling"]["throttled_share"] == pytest.approx(0.4)
    assert w["throttling"]["throttled_ms_per_s"] == pytest.approx(200.0)
    calm = S.Sample(10.0, {**b.counters, S.SERVER_BUSY: 5.1, S.CLIENT_BUSY: 6.0, S.STEAL: 0.0})
    w = analyse([a, calm], 0.0, 10.0, 1, client_bound_share=0.9, noisy_foreign_cores=0.05, noisy_steal_cores=0.05)
    assert not w["client"]["saturated"] and not w["noise"]["noisy"]


def test_busy_time_is_the_window_minus_exact_idle_not_the_tick_samples():
    """User and system in /proc/stat are tick samples: a bursty tool that used
    0.44 s of CPU showed as 0.02 s. Idle is exact (NOHZ): busy is the window
    minus idle and steal, task time that minus interrupt time."""
    from harness.probe import analyse
    S = sampling
    a = S.Sample(0.0, {S.SERVER_CPU: 0, S.SERVER_BUSY: 0, S.CLIENT_BUSY: 0, S.STEAL: 0, S.SERVER_IRQ: 0,
                       S.CLIENT_IDLE: 100.0, S.SERVER_IDLE: 200.0, S.CLIENT_STEAL: 0, S.SERVER_STEAL: 0})
    # 10 s: ticks saw 0.2 s busy on the client CPU and 9.0 s of task time on the
    # server CPU; exactly, the client CPU was idle 6 s, the server CPU 4.5 s,
    # with 0.1 s of interrupts, and the server's cgroup used 5.0 s
    b = S.Sample(10.0, {S.SERVER_CPU: 5.0, S.SERVER_BUSY: 9.0, S.CLIENT_BUSY: 0.2, S.STEAL: 0.0,
                        S.SERVER_IRQ: 0.1, S.CLIENT_IDLE: 106.0, S.SERVER_IDLE: 204.5, S.CLIENT_STEAL: 0.0,
                        S.SERVER_STEAL: 0.0})
    w = analyse([a, b], 0.0, 10.0, 1, client_bound_share=0.9, noisy_foreign_cores=0.1, noisy_steal_cores=0.05)
    assert w["client"]["busy_cores"] == pytest.approx(0.4)             # not the ticks' 0.02
    assert w["noise"]["foreign_cores"] == pytest.approx(0.04)          # (10 - 4.5 - 0.1 - 5.0) / 10, not 0.4
    assert not w["noise"]["noisy"] and not w["client"]["saturated"]
    # two server CPUs: the window counts twice
    w = analyse([a, b], 0.0, 10.0, 1, n_server=2, client_bound_share=0.9, noisy_foreign_cores=0.1,
                noisy_steal_cores=0.05)
    assert w["noise"]["foreign_cores"] == pytest.approx(1.04)


def test_tool_cpu_is_read_from_the_one_tool_run_of_the_window():
    """Two load-tool runs back to back (two processes, one counter key): the
    window of the second must not interpolate from the first's last reading
    (it did: 4.0 s of the first tool against 0.05 s of the second read as
    almost nothing). The second tool burns 0.8 core from t=10.0."""
    from harness.probe import analyse
    S = sampling
    samples = [S.Sample(9.0, {S.TOOL: 3.2, S.TOOL_PID: 100}),      # first tool, near its end
               S.Sample(9.5, {S.TOOL: 4.0, S.TOOL_PID: 100}),      # its exit reading
               S.Sample(9.8, {}),                                  # between the two runs
               S.Sample(10.0, {S.TOOL: 0.0, S.TOOL_PID: 200}),     # reading at the second tool's start
               S.Sample(12.0, {S.TOOL: 1.6, S.TOOL_PID: 200}),
               S.Sample(14.0, {S.TOOL: 3.2, S.TOOL_PID: 200})]
    w = analyse(samples, 10.5, 13.5, 1, client_bound_share=0.9, noisy_foreign_cores=1, noisy_steal_cores=1)
    assert w["client"]["tool_cores"] == pytest.approx(0.8)
    # no reading of the second run before the window's start: unknown, not a wrong figure
    w = analyse(samples[:3] + samples[4:], 10.5, 13.5, 1, client_bound_share=0.9, noisy_foreign_cores=1,
                noisy_steal_cores=1)
    assert w["client"]["tool_cores"] is None


def test_probe_brackets_the_tool_start_even_when_its_first_reading_is_late():
    """run_pinned says "spawning" before the fork: the probe records the tool's
    counter as 0 at that moment, so a window starting before the first real
    reading (a busy machine) still has both edges."""
    import time as _time
    from harness.drivers.base import run_pinned
    from harness.probe import Probe

    class Handle:
        def cpu_seconds(self):
            return 0.0

        def throttling(self):
            return None

    probe = Probe(Handle(), [0], [1])
    s = sampling.Sampler(probe.counters, lambda: 0, 10.0)
    added = []
    probe.add = lambda smp: (added.append(smp), s.add(smp))
    probe.mark = None                       # no reading at the start: only the spawn reading brackets it
    t_before = _time.monotonic()
    # a child that burns CPU for ~0.3 s
    run = run_pinned(["python3", "-c", "import time\nt=time.time()\nwhile time.time()-t<0.3: pass"], [0],
                     timeout_s=20, on_start=probe.watch_tool)
    assert run.returncode == 0
    assert len(added) == 1 and added[0].counters[sampling.TOOL] == 0.0
    assert t_before <= added[0].t <= t_before + 0.5
    assert probe.tool_pid is None


def test_proc_stat_parsing():
    from harness import hostcpu
    text = ("cpu  100 0 50 1000 5 0 2 7 0 0\n"
            "cpu0 60 0 30 500 3 0 1 3 0 0\ncpu1 40 0 20 500 2 0 1 4 0 0\nintr 1 2 3\n")
    per = hostcpu.parse_proc_stat(text)
    hz = hostcpu.HZ
    assert per[0].busy_s == pytest.approx(91 / hz) and per[1].steal_s == pytest.approx(4 / hz)
    assert per[0].tasks_s == pytest.approx(90 / hz) and per[0].irq_s == pytest.approx(1 / hz)
    both = hostcpu.CpuSet([0, 1]).read(per)
    assert (both.busy_s, both.tasks_s, both.irq_s, both.steal_s) == (
        pytest.approx(152 / hz), pytest.approx(150 / hz), pytest.approx(2 / hz), pytest.approx(7 / hz))


def test_sockstat_tcp_line_and_gauge_mean():
    text = ("sockets: used 2130\nTCP: inuse 2012 orphan 0 tw 7 alloc 2015 mem 1234\n"
            "UDP: inuse 3 mem 2\n")
    assert sampling.sockstat_tcp(text, 4096) == (2012, 1234 * 4096)
    assert sampling.sockstat_tcp("UDP: inuse 3 mem 2\n", 4096) is None
    assert sampling.sockstat_tcp("TCP: inuse x mem 1\n", 4096) is None
    assert sampling.sockstat6_tcp("TCP6: inuse 1001\nUDP6: inuse 0\n") == 1001
    assert sampling.sockstat6_tcp("UDP6: inuse 0\n") is None
    ss = [sampling.Sample(0.0, {sampling.NET_TCP_INUSE: 10}), sampling.Sample(0.1, {}),
          sampling.Sample(0.2, {sampling.NET_TCP_INUSE: 20})]
    assert sampling.gauge_mean(ss, sampling.NET_TCP_INUSE) == 15
    assert sampling.gauge_mean(ss, sampling.NET_TCP_MEM) is None


def test_probe_reads_the_server_namespace_sockstat():
    """A server that is this very process: its namespace is ours, and the
    gauges count a listening socket opened here."""
    import os
    import socket

    from harness.probe import Probe

    class Me:
        def main_pid(self):
            return os.getpid()

        def cpu_seconds(self):
            return 0.0

        def throttling(self):
            return None

    p = Probe(Me(), [0], [0])
    before = p.counters()[sampling.NET_TCP_INUSE]
    socks = [socket.socket() for _ in range(20)] + [socket.socket(socket.AF_INET6) for _ in range(20)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0) if s.family == socket.AF_INET else ("::1", 0))
            s.listen()
        after = p.counters()
    finally:
        for s in socks:
            s.close()
    assert p.netns_shared is True
    # 20 IPv4 and 20 IPv6 sockets more (others may close a few meanwhile)
    assert after[sampling.NET_TCP_INUSE] >= before + 30 and after[sampling.NET_TCP_MEM] >= 0
