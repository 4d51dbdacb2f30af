"""Garbage-collection pauses from a server's own log, on the harness's clock.

Two formats, as the runtimes print them:

- Go, `GODEBUG=gctrace=1` (runtime package docs, "gctrace"): one line per
  cycle, `gc N @T s P%: A+B+C ms clock, ...`. T is the time since the
  program started at which the cycle began; A is the stop-the-world sweep
  termination at its start, B the concurrent mark, C the stop-the-world mark
  termination. Two pauses: A ms at T, and C ms at T + (A + B) / 1000.
- HotSpot unified logging, `-Xlog:gc:stderr:uptime`: `[U s] GC(N) Pause
  <kind> ... <D>ms`, written when the pause ended; U is the JVM's uptime.
  The pause began at U - D / 1000. Collections that are not pauses (ZGC's,
  Shenandoah's concurrent cycles) are not listed by this tag and not counted.

Times since start become time.monotonic() seconds with the server's main
process start time: /proc/PID/stat field 22 (clock ticks since boot,
CLOCK_BOOTTIME) less the current CLOCK_BOOTTIME - CLOCK_MONOTONIC offset.
The runtimes' clocks start a few milliseconds after the process does (the Go
runtime's init, the JVM's creation), and the field has 10 ms resolution: a
pause's place is known to about +-20 ms, its duration exactly as logged.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

GO_RE = re.compile(r"^gc (\d+) @(\d+(?:\.\d+)?)s \d+%: (\d+(?:\.\d+)?)\+(\d+(?:\.\d+)?)\+(\d+(?:\.\d+)?) ms clock")
JVM_RE = re.compile(r"^\[(\d+(?:\.\d+)?)s\].*?\bGC\((\d+)\) (Pause .*?)\s+(\d+(?:\.\d+)?)ms\s*$")
MAX_LISTED = 5000


def parse(text: str) -> tuple[str | None, list[tuple[float, float, str]]]:
    """(source, [(start in seconds since the runtime started, pause ms, what)])."""
    go, jvm = [], []
    for line in text.splitlines():
        line = line.strip()
        m = GO_RE.match(line)
        if m:
            n, t, a, b, c = m.group(1), float(m.group(2)), float(m.group(3)), float(m.group(4)), float(m.group(5))
            forced = " (forced)" if line.endswith("(forced)") else ""
            go.append((t, a, f"gc {n} sweep termination{forced}"))
            go.append((t + (a + b) / 1000, c, f"gc {n} mark termination{forced}"))
            continue
        m = JVM_RE.match(line)
        if m:
            end, ms = float(m.group(1)), float(m.group(4))
            kind = re.sub(r"\s+\S+->\S+$", "", m.group(3)).strip()
            jvm.append((max(0.0, end - ms / 1000), ms, f"GC({m.group(2)}) {kind}"))
    if go:
        return "go gctrace", go
    if jvm:
        return "jvm -Xlog:gc", jvm
    return None, []


def process_start_monotonic(pid: int) -> float | None:
    """When process `pid` started, in time.monotonic() seconds (None if unknown)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])          # field 22: starttime
    except (OSError, IndexError, ValueError):
        return None
    offset = time.clock_gettime(time.CLOCK_BOOTTIME) - time.monotonic()
    return ticks / os.sysconf("SC_CLK_TCK") - offset


def pauses(log_text: str, start_mono: float | None) -> dict | None:
    """The log's pauses on the monotonic clock: {"source", "clock", "pauses":
    [(t0 monotonic, ms, what)]}; None when the log has none or the start time
    is unknown."""
    source, found = parse(log_text)
    if source is None or start_mono is None:
        return None
    return {"source": source,
            "clock": "process start (/proc/PID/stat, 10 ms ticks) + the runtime's own time since start",
            "pauses": [(start_mono + t, ms, what) for t, ms, what in found]}


def window(gc: dict | None, t0: float, t1: float) -> dict | None:
    """The pauses that began in [t0, t1] (monotonic seconds): their count,
    sum and largest, pauses per second, and each one's offset from t0."""
    if gc is None:
        return None
    inside = [(t, ms, what) for t, ms, what in gc["pauses"] if t0 <= t <= t1]
    total = sum(ms for _, ms, _ in inside)
    span = t1 - t0
    return {"source": gc["source"], "count": len(inside), "total_ms": round(total, 3),
            "max_ms": max((ms for _, ms, _ in inside), default=0.0),
            "share": total / 1000 / span if span > 0 else None,
            "pauses": [[round(t - t0, 4), ms, what] for t, ms, what in inside[:MAX_LISTED]],
            "metrics": {"gc_pauses": {"value": len(inside), "unit": "count", "better": "lower",
                                      "description": "stop-the-world GC pauses in the send window (server's GC log)"},
                        "gc_pause_max_ms": {"value": max((ms for _, ms, _ in inside), default=0.0), "unit": "ms",
                                            "better": "lower",
                                            "description": "longest stop-the-world GC pause in the send window"},
                        "gc_pause_total_ms": {"value": round(total, 3), "unit": "ms", "better": "lower",
                                              "description": "stop-the-world GC time in the send window"}}}
