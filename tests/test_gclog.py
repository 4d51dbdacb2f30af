"""GC pauses read from a server's log (harness/gclog.py): Go's gctrace and
HotSpot's unified GC log, placed on the monotonic clock, and per window."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from harness import gclog

GO_LOG = """\
2026/11/26 05:00:00 INFO listening addr=127.0.0.1:8080
gc 1 @0.012s 2%: 0.010+0.50+0.004 ms clock, 0.010+0.10/0.20/0.30+0.004 ms cpu, 4->4->0 MB, 4 MB goal, 0 MB stacks, 0 MB globals, 1 P
gc 2 @1.500s 1%: 0.020+1.25+0.300 ms clock, 0.020+0.5/0.5/0+0.300 ms cpu, 4->5->1 MB, 5 MB goal, 0 MB stacks, 0 MB globals, 1 P (forced)
"""

JVM_LOG = """\
[0.008s] Using Serial
[2.345s] GC(0) Pause Young (Allocation Failure) 34M->2M(123M) 1.234ms
[5.000s] GC(1) Pause Full (System.gc()) 10M->3M(123M) 12.500ms
[6.000s] GC(2) Pause Remark 20M->20M(256M) 0.800ms
"""


def test_go_gctrace_gives_both_stop_the_world_pauses_of_each_cycle():
    source, pauses = gclog.parse(GO_LOG)
    assert source == "go gctrace"
    assert [(round(t, 6), ms) for t, ms, _ in pauses] == [
        (0.012, 0.010), (0.012 + 0.000510, 0.004), (1.5, 0.020), (1.5 + 0.00127, 0.300)]
    assert pauses[2][2] == "gc 2 sweep termination (forced)" and pauses[3][2].startswith("gc 2 mark termination")


def test_jvm_unified_log_pause_begins_its_duration_before_the_line():
    source, pauses = gclog.parse(JVM_LOG)
    assert source == "jvm -Xlog:gc"
    assert [(round(t, 6), ms, what) for t, ms, what in pauses] == [
        (round(2.345 - 0.001234, 6), 1.234, "GC(0) Pause Young (Allocation Failure)"),
        (4.9875, 12.5, "GC(1) Pause Full (System.gc())"),
        (round(6.0 - 0.0008, 6), 0.8, "GC(2) Pause Remark")]


def test_a_log_without_gc_lines_has_no_source():
    assert gclog.parse("hello\nlistening on 8080\n") == (None, [])
    assert gclog.pauses("hello", 10.0) is None
    assert gclog.pauses(GO_LOG, None) is None


def test_window_counts_the_pauses_that_began_in_it():
    gc = gclog.pauses(JVM_LOG, 100.0)
    w = gclog.window(gc, 102.0, 105.5)          # the first two pauses (102.34, 104.99)
    assert w["count"] == 2 and w["max_ms"] == 12.5 and w["total_ms"] == pytest.approx(13.734)
    assert w["pauses"][0][0] == pytest.approx(0.343766, abs=1e-4) and w["share"] == pytest.approx(0.013734 / 3.5)
    assert w["metrics"]["gc_pauses"]["value"] == 2 and w["metrics"]["gc_pause_max_ms"]["better"] == "lower"
    empty = gclog.window(gc, 200.0, 201.0)
    assert empty["count"] == 0 and empty["max_ms"] == 0.0
    assert gclog.window(None, 0, 1) is None


def test_process_start_is_on_the_monotonic_clock():
    t0 = time.monotonic()
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        time.sleep(0.2)
        start = gclog.process_start_monotonic(p.pid)
        # /proc/PID/stat has clock-tick (10 ms) resolution
        assert t0 - 0.05 <= start <= time.monotonic(), (t0, start)
        assert abs(start - t0) < 0.2
    finally:
        p.kill()
        p.wait()
    assert gclog.process_start_monotonic(os.getpid()) < t0
    assert gclog.process_start_monotonic(2 ** 22 + 12345) is None
