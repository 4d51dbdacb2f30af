"""Sampling a server's CPU and memory, and the arithmetic over windows.

CPU is read from cumulative counters: a window's CPU is the difference of the
counter read exactly at the window's start and end, divided by its length
(never an average of percentages). Memory is sampled as a time series; a
window reports its mean and peak. The sampler measures its own CPU time so
the harness's overhead is a recorded figure.
"""
from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Sample:
    t: float          # monotonic seconds
    cpu_s: float      # cumulative CPU seconds of the server
    mem_bytes: int


@dataclass(frozen=True)
class Mark:
    t: float
    cpu_s: float


def cpu_cores(a: Mark, b: Mark) -> float:
    """Average cores used between two exact counter readings."""
    dt = b.t - a.t
    if dt <= 0:
        raise ValueError("window of zero or negative length")
    return max(0.0, b.cpu_s - a.cpu_s) / dt


def window(samples: list[Sample], t0: float, t1: float) -> list[Sample]:
    return [s for s in samples if t0 <= s.t <= t1]


def memory_stats(samples: list[Sample]) -> dict:
    """Mean and peak memory in MB over the given samples (None when there are none)."""
    if not samples:
        return {"mean_mb": None, "peak_mb": None, "n": 0}
    mem = [s.mem_bytes / 1e6 for s in samples]
    return {"mean_mb": statistics.fmean(mem), "peak_mb": max(mem), "n": len(mem)}


def cpu_series(samples: list[Sample]) -> list[tuple[float, float]]:
    """(time, cores) for each interval between consecutive samples."""
    out = []
    for a, b in zip(samples, samples[1:]):
        dt = b.t - a.t
        if dt > 0:
            out.append((b.t, max(0.0, b.cpu_s - a.cpu_s) / dt))
    return out


def timeseries(samples: list[Sample], t0: float, max_points: int = 600) -> dict:
    """A compact series for the results file: t relative to t0, cores, MB."""
    cores = cpu_series(samples)
    step = max(1, len(cores) // max_points)
    pts = cores[::step]
    mem_by_t = {s.t: s.mem_bytes for s in samples}
    return {"t_s": [round(t - t0, 3) for t, _ in pts],
            "cpu_cores": [round(c, 4) for _, c in pts],
            "rss_mb": [round(mem_by_t[t] / 1e6, 3) for t, _ in pts]}


class Sampler:
    """Samples one server at a fixed rate in a background thread."""

    def __init__(self, cpu_fn: Callable[[], float], mem_fn: Callable[[], int], hz: float):
        self.cpu_fn, self.mem_fn = cpu_fn, mem_fn
        self.interval = 1.0 / hz
        self.samples: list[Sample] = []
        self.errors = 0
        self.own_cpu_s = 0.0        # the sampler thread's own CPU time
        self.wall_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="langbench-sampler", daemon=True)
        self._lock = threading.Lock()

    def mark(self) -> Mark:
        """Read the CPU counter now (exact window boundary)."""
        t = time.monotonic()
        return Mark(t, self.cpu_fn())

    def _take(self) -> None:
        t = time.monotonic()
        try:
            s = Sample(t, self.cpu_fn(), self.mem_fn())
        except (OSError, ValueError):
            self.errors += 1
            return
        with self._lock:
            self.samples.append(s)

    def _loop(self) -> None:
        c0, w0 = time.thread_time(), time.monotonic()
        next_t = w0
        while not self._stop.is_set():
            self._take()
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
