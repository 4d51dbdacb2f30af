"""How fast each CPU is, sampled all through a run: a fixed piece of work, timed.

On a virtual machine the same instructions can take longer from one minute to
the next without the guest seeing any steal time (the host moves the virtual
CPU, a neighbour shares its core, the clock changes). On the 2-core machines
this project runs on, a pure-Python loop pinned to one CPU took 44-47 ns per
iteration for stretches of seconds to minutes and 70-78 ns for others, with
the machine otherwise idle. A server measured in a slow stretch does less
work per CPU-second although nothing about it changed.

The canary tells the two apart. One child process per CPU of the run, pinned
to it, runs the same integer loop (CANARY_N iterations, about 2-4 ms) every
CANARY_EVERY_S seconds for the whole run and prints the CPU time it took per
iteration (its own thread's CPU time: time spent waiting for the CPU is not
counted, so a busy CPU does not make the canary slow; a slow CPU does). Each
level records the samples inside its window, per CPU: the median, the 10th
and 90th percentiles. Cost: about 1% of each CPU.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time

CANARY_N = 50_000
CANARY_EVERY_S = 0.25

# The child: pinned to one CPU; one line per sample, "<monotonic ns> <ns per iteration>".
_CHILD = f"""
import os, sys, time
os.sched_setaffinity(0, {{int(sys.argv[1])}})
def once():
    c0 = time.thread_time_ns()
    acc = 0
    for i in range({CANARY_N}):
        acc = (acc + i * 7) & 0xFFFF
    return (time.thread_time_ns() - c0) / {CANARY_N}
once()
parent = os.getppid()
while os.getppid() == parent:      # the harness gone (even killed): stop
    t = time.monotonic_ns()
    x = once()
    sys.stdout.write(f"{{t}} {{x:.2f}}\\n")
    sys.stdout.flush()
    time.sleep({CANARY_EVERY_S})
"""


def parse_line(line: str) -> tuple[float, float] | None:
    """'<monotonic ns> <ns per iteration>' -> (monotonic seconds, ns); None if malformed."""
    parts = line.split()
    if len(parts) != 2:
        return None
    try:
        t, x = int(parts[0]) / 1e9, float(parts[1])
    except ValueError:
        return None
    return (t, x) if x > 0 else None


def summary(values: list[float]) -> dict | None:
    """n, median, and the 10th and 90th percentiles (nearest rank) of a CPU's samples."""
    xs = sorted(values)
    if not xs:
        return None

    def rank(q: float) -> float:
        return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]
    return {"n": len(xs), "median_ns": round(statistics.median(xs), 2), "p10_ns": round(rank(0.1), 2),
            "p90_ns": round(rank(0.9), 2)}


class Canary:
    """One sampling child per CPU; `window(t0, t1)` summarises each CPU's
    samples between two monotonic times."""

    def __init__(self, cpus: list[int]):
        self.cpus = sorted(set(cpus))
        self.samples: dict[int, list[tuple[float, float]]] = {c: [] for c in self.cpus}
        self._procs: dict[int, subprocess.Popen] = {}
        self._readers: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> "Canary":
        for cpu in self.cpus:
            try:
                p = subprocess.Popen([sys.executable, "-c", _CHILD, str(cpu)], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
            except OSError:
                continue
            self._procs[cpu] = p
            th = threading.Thread(target=self._read, args=(cpu, p), name=f"canary-{cpu}", daemon=True)
            th.start()
            self._readers.append(th)
        return self

    def _read(self, cpu: int, p: subprocess.Popen) -> None:
        for line in p.stdout:
            s = parse_line(line)
            if s is not None:
                with self._lock:
                    self.samples[cpu].append(s)

    def stop(self) -> None:
        for p in self._procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self._procs.values():
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for th in self._readers:
            th.join(timeout=2)

    def window(self, t0: float, t1: float) -> dict[str, dict]:
        """Per CPU (keys are the CPU numbers as strings, JSON-ready): the
        summary of the samples that started inside [t0, t1]."""
        with self._lock:
            per = {c: [x for t, x in self.samples[c] if t0 <= t <= t1] for c in self.cpus}
        return {str(c): s for c, xs in per.items() if (s := summary(xs)) is not None}

    def whole(self) -> dict[str, dict]:
        """Per CPU: the summary over the run so far."""
        return self.window(float("-inf"), float("inf"))


def wait_first(canary: Canary, timeout_s: float = 5.0) -> bool:
    """True once every CPU has given a sample (or False at the timeout)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        with canary._lock:
            if all(canary.samples[c] for c in canary._procs):
                return True
        time.sleep(0.05)
    return False
