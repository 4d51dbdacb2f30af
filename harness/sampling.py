"""Sampling a server and the machine around it, and the arithmetic over windows.

Every sample holds cumulative counters (the server's CPU seconds, its CFS
throttling counters, busy and steal seconds of the server's and of the load
tool's CPUs, the load tool's own CPU seconds) and the server's memory at that
moment. A window's figure is the difference of a counter at the window's two
edges, divided by its length: never an average of percentages. The edges are
usually the load tool's send window, which the tool reports after the fact;
the counter at an edge is interpolated linearly between the two samples
around it (10 Hz: at most 100 ms apart; exact marks are also taken just
before the tool starts and just after it ends). The sampler measures its own
CPU time so the harness's overhead is a recorded figure.
"""
from __future__ import annotations

import bisect
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

# Names of the cumulative counters.
SERVER_CPU = "server_cpu"       # the server's CPU seconds (cgroup or process tree)
THR_PERIODS = "thr_periods"     # CFS periods with the server runnable
THR_THROTTLED = "thr_throttled" # of those, periods in which the quota ran out
THR_S = "thr_s"                 # seconds the server's runnable threads were held back
CLIENT_BUSY = "client_busy"     # busy seconds of the load tool's CPUs (anyone's work)
SERVER_BUSY = "server_busy"     # task seconds (user+nice+system) on the server's CPUs (anyone's tasks)
SERVER_IRQ = "server_irq"       # interrupt seconds (irq+softirq) on the server's CPUs
STEAL = "steal"                 # steal seconds of all CPUs of the layout
CLIENT_IDLE = "client_idle"     # idle + iowait seconds of the load tool's CPUs (exact under NOHZ)
SERVER_IDLE = "server_idle"     # ... of the server's CPUs
CLIENT_STEAL = "client_steal"   # steal seconds of the load tool's CPUs
SERVER_STEAL = "server_steal"   # ... of the server's CPUs
TOOL = "tool"                   # the load tool's own CPU seconds (while it runs)
TOOL_PID = "tool_pid"           # ... and which tool run that reading is of (its pid)
NET_TCP_INUSE = "net_tcp_inuse"     # gauge: TCP sockets (IPv4 + IPv6) in use in the server's network namespace
NET_TCP_MEM = "net_tcp_mem_bytes"   # gauge: ... and the kernel memory of their buffers (bytes)


def _sockstat_fields(text: str, prefix: str) -> dict[str, str] | None:
    """The `name value` pairs of one /proc/net/sockstat(6) line (`TCP:`,
    `TCP6:`); None without that line."""
    for line in text.splitlines():
        if line.startswith(prefix):
            f = line.split()[1:]
            return dict(zip(f[::2], f[1::2]))
    return None


def sockstat_tcp(text: str, page_bytes: int) -> tuple[int, int] | None:
    """(TCP sockets in use, TCP buffer memory in bytes) from a
    /proc/net/sockstat text: its line `TCP: inuse N orphan N tw N alloc N mem
    PAGES` (mem counts pages); None without that line."""
    kv = _sockstat_fields(text, "TCP:")
    try:
        return (int(kv["inuse"]), int(kv["mem"]) * page_bytes) if kv is not None else None
    except (KeyError, ValueError):
        return None


def sockstat6_tcp(text: str) -> int | None:
    """TCP6 sockets in use from a /proc/net/sockstat6 text (`TCP6: inuse N`;
    a JVM's sockets are IPv6 ones even on 127.0.0.1). The buffer memory of
    sockstat's TCP line covers both families."""
    kv = _sockstat_fields(text, "TCP6:")
    try:
        return int(kv["inuse"]) if kv is not None else None
    except (KeyError, ValueError):
        return None


def gauge_mean(samples: list["Sample"], key: str) -> float | None:
    """The mean of a gauge over the samples that have it."""
    vals = [s.counters[key] for s in samples if s.counters.get(key) is not None]
    return sum(vals) / len(vals) if vals else None


@dataclass(frozen=True)
class Sample:
    t: float                          # monotonic seconds
    counters: dict = field(default_factory=dict)
    mem_bytes: int | None = None

    @property
    def cpu_s(self) -> float | None:
        return self.counters.get(SERVER_CPU)


def cpu_cores(a: Sample, b: Sample, key: str = SERVER_CPU) -> float | None:
    """Average cores used between two exact counter readings."""
    dt = b.t - a.t
    if dt <= 0:
        raise ValueError("window of zero or negative length")
    if a.counters.get(key) is None or b.counters.get(key) is None:
        return None
    return max(0.0, b.counters[key] - a.counters[key]) / dt


def value_at(samples: list[Sample], key: str, t: float) -> float | None:
    """A cumulative counter at time t, interpolated linearly between the
    samples on either side (None when t is not bracketed by samples having it)."""
    pts = [(s.t, s.counters[key]) for s in samples if s.counters.get(key) is not None]
    if not pts:
        return None
    times = [p[0] for p in pts]
    i = bisect.bisect_left(times, t)
    if i < len(pts) and times[i] == t:
        return pts[i][1]
    if i == 0 or i == len(pts):
        return None
    (t0, v0), (t1, v1) = pts[i - 1], pts[i]
    return v0 + (v1 - v0) * (t - t0) / (t1 - t0)


def delta(samples: list[Sample], key: str, t0: float, t1: float) -> float | None:
    a, b = value_at(samples, key, t0), value_at(samples, key, t1)
    if a is None or b is None:
        return None
    return max(0.0, b - a)


def window(samples: list[Sample], t0: float, t1: float) -> list[Sample]:
    return [s for s in samples if t0 <= s.t <= t1]


def memory_stats(samples: list[Sample]) -> dict:
    """Mean and peak memory in MB over the given samples (None when there are none)."""
    mem = [s.mem_bytes / 1e6 for s in samples if s.mem_bytes is not None]
    if not mem:
        return {"mean_mb": None, "peak_mb": None, "n": 0}
    return {"mean_mb": statistics.fmean(mem), "peak_mb": max(mem), "n": len(mem)}


def cpu_series(samples: list[Sample], key: str = SERVER_CPU) -> list[tuple[float, float]]:
    """(time, cores) for each interval between consecutive samples."""
    pts = [s for s in samples if s.counters.get(key) is not None]
    out = []
    for a, b in zip(pts, pts[1:]):
        dt = b.t - a.t
        if dt > 0.02:          # a mark right beside a sample is no interval of its own
            out.append((b.t, max(0.0, b.counters[key] - a.counters[key]) / dt))
    return out


def timeseries(samples: list[Sample], t0: float, max_points: int = 600) -> dict:
    """A compact series for the results file: t relative to t0, cores, MB.

    Memory is read at a fraction of the sampling rate (every MEMORY_EVERY-th
    tick): each point carries the latest memory reading at or before it
    (None before the first one), so that a point's memory is never missing
    just because it fell between readings or the series was thinned."""
    cores = cpu_series(samples)
    step = max(1, len(cores) // max_points)
    pts = cores[::step]
    held: dict[float, int | None] = {}
    last = None
    for s in samples:
        if s.mem_bytes is not None:
            last = s.mem_bytes
        held[s.t] = last
    return {"t_s": [round(t - t0, 3) for t, _ in pts],
            "cpu_cores": [round(c, 4) for _, c in pts],
            "rss_mb": [round(held[t] / 1e6, 3) if held.get(t) is not None else None for t, _ in pts]}


def counters_of(handle) -> Callable[[], dict]:
    """The simplest counters source: a handle's cumulative CPU alone (a
    service beside the server, a test); a reading that fails is left out."""
    def read() -> dict:
        try:
            return {SERVER_CPU: handle.cpu_seconds()}
        except (OSError, ValueError):
            return {}
    return read


class Sampler:
    """Samples one server and the CPUs around it at a fixed rate in a background thread.

    `counters_fn` returns the cumulative counters (it may leave out any it
    cannot read at that moment); `mem_fn` the server's memory in bytes.
    """

    def __init__(self, counters_fn: Callable[[], dict], mem_fn: Callable[[], int], hz: float,
                 memory_every: int = 1):
        self.counters_fn, self.mem_fn = counters_fn, mem_fn
        self.interval = 1.0 / hz
        self.memory_every = max(1, memory_every)   # memory at every Nth tick (PSS costs ~0.15 ms per process)
        self.samples: list[Sample] = []
        self.errors = 0
        self.own_cpu_s = 0.0        # the sampler thread's own CPU time
        self.wall_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="langbench-sampler", daemon=True)
        self._lock = threading.Lock()

    def _read(self, with_memory: bool) -> Sample:
        t = time.monotonic()
        counters = self.counters_fn()
        mem = None
        if with_memory:
            try:
                mem = self.mem_fn()
            except (OSError, ValueError):
                self.errors += 1
        if SERVER_CPU not in counters:
            self.errors += 1
        return Sample(t, counters, mem)

    def add(self, s: Sample) -> None:
        """A reading made elsewhere (e.g. a counter known to be 0 at a time)."""
        self._insert(s)

    def _insert(self, s: Sample) -> None:
        with self._lock:
            if not self.samples or self.samples[-1].t <= s.t:
                self.samples.append(s)
            else:
                bisect.insort(self.samples, s, key=lambda x: x.t)

    def mark(self) -> Sample:
        """Read every counter now (an exact window edge); it joins the series."""
        s = self._read(with_memory=False)
        self._insert(s)
        return s

    def _loop(self) -> None:
        c0, w0 = time.thread_time(), time.monotonic()
        next_t = w0
        tick = 0
        while not self._stop.is_set():
            self._insert(self._read(with_memory=tick % self.memory_every == 0))
            tick += 1
            next_t += self.interval
            delay = next_t - time.monotonic()
            if delay < 0:            # fell behind: skip, do not burst
                next_t = time.monotonic()
                delay = 0
            self._stop.wait(delay)
        self.own_cpu_s = time.thread_time() - c0
        self.wall_s = time.monotonic() - w0

    def start(self) -> "Sampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def snapshot(self) -> list[Sample]:
        with self._lock:
            return list(self.samples)

    def overhead_cores(self) -> float | None:
        return self.own_cpu_s / self.wall_s if self.wall_s > 0 else None
