"""The CPU canary (harness/canary.py): its parsing and summary on known
samples, real children pinned to each CPU that stop with the harness, even
when the harness is killed, and its figures in the flat table and report."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from harness import canary
from harness.results import flat_rows


def test_parse_line_takes_only_well_formed_samples():
    assert canary.parse_line("2000000000 46.50\n") == (2.0, 46.5)
    for bad in ("", "12", "a b", "1 2 3", "100 0", "100 -3"):
        assert canary.parse_line(bad) is None, bad


def test_summary_nearest_rank_percentiles():
    s = canary.summary([float(x) for x in range(1, 12)])      # 1..11
    assert s == {"n": 11, "median_ns": 6.0, "p10_ns": 2.0, "p90_ns": 10.0}
    assert canary.summary([]) is None
    assert canary.summary([7.0])["median_ns"] == 7.0


def test_window_keeps_the_samples_inside_it():
    c = canary.Canary([0, 1])
    c.samples = {0: [(1.0, 40.0), (2.0, 80.0), (3.0, 42.0)], 1: [(1.5, 70.0)]}
    w = c.window(1.9, 3.1)
    assert w == {"0": {"n": 2, "median_ns": 61.0, "p10_ns": 42.0, "p90_ns": 80.0}}
    assert c.whole()["1"]["median_ns"] == 70.0


def test_real_children_sample_every_cpu_and_stop():
    cpus = sorted(os.sched_getaffinity(0))
    c = canary.Canary(cpus).start()
    try:
        assert canary.wait_first(c, timeout_s=10), "no sample from a canary child within 10 s"
        time.sleep(0.6)
        whole = c.whole()
        assert set(whole) == {str(x) for x in cpus}
        for s in whole.values():
            # tens of ns per iteration of an interpreted loop; a broken timer gives 0 or absurd values
            assert 1.0 < s["median_ns"] < 10_000.0, s
    finally:
        c.stop()
    assert all(p.poll() is not None for p in c._procs.values())


def test_children_stop_when_the_harness_is_killed():
    # a harness stand-in starts a canary, prints its children's pids, is SIGKILLed
    code = textwrap.dedent("""
        import sys, time
        from harness import canary
        c = canary.Canary([0]).start()
        canary.wait_first(c, 10)
        print(" ".join(str(p.pid) for p in c._procs.values()), flush=True)
        time.sleep(60)
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=root)
    try:
        pids = [int(x) for x in parent.stdout.readline().split()]
        assert pids
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 5
        alive = pids
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [p for p in pids if _alive(p)]
        assert not alive, f"canary children outlived their killed parent: {alive}"
    finally:
        if parent.poll() is None:
            parent.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_flat_table_and_report_carry_the_canary(tmp_path):
    from harness import results
    from harness.report import render
    from tests.test_results_report import sample_run
    m = {"scenario": "s", "implementation_id": "s/go", "instance": "i", "trial": 1, "workload": "w",
         "level": {"key": "c1", "kind": "concurrency", "value": 1}, "ok": True,
         "host_speed": {"server": {"1": {"n": 4, "median_ns": 70.0, "p10_ns": 45.0, "p90_ns": 77.0},
                                   "2": {"n": 4, "median_ns": 50.0, "p10_ns": 45.0, "p90_ns": 77.0}},
                        "client": {"0": {"n": 4, "median_ns": 46.0, "p10_ns": 45.0, "p90_ns": 47.0}}}}
    data = {"implementations": {"s/go": {"name": "go", "language": "go"}}, "instances": [], "measurements": [m]}
    row = flat_rows(data)[0]
    assert (row["host_ns_server"], row["host_ns_client"]) == (60.0, 46.0)
    del m["host_speed"]
    assert flat_rows(data)[0]["host_ns_server"] is None
    # the report's header states the run's spread per CPU, and only when measured
    store = sample_run(tmp_path)
    assert 'id="host-speed"' not in render(results.load(store.dir))
    store.data["host_speed"] = {"cpus": {"0": {"n": 9, "median_ns": 46.2, "p10_ns": 45.1, "p90_ns": 47.3},
                                         "1": {"n": 9, "median_ns": 71.4, "p10_ns": 45.6, "p90_ns": 77.9}},
                                "unit": "ns", "method": "m"}
    store.finish("complete")
    html = render(results.load(store.dir))
    assert 'id="host-speed"' in html
    assert "CPU 1 median 71.4 ns, 10th-90th percentile 45.6-77.9 ns (9 samples)" in html


def test_summary_and_report_mark_levels_whose_trials_ran_at_different_speeds():
    from harness.report import _fmt
    from harness.summary import summary_rows
    import jinja2
    from pathlib import Path
    base = {"scenario": "s", "implementation": "go", "language": "go", "runtime": "process", "workload": "w",
            "level": "c1", "level_kind": "concurrency", "level_value": 1, "verified": True, "ok": True,
            "client_bound": False, "rps": 100.0}
    rows = [dict(base, trial=t, host_ns_server=ns) for t, ns in ((1, 47.0), (2, 78.5), (3, 54.4))]
    s = summary_rows(rows)[0]
    assert (s["host_ns_server_min"], s["host_ns_server_max"]) == (47.0, 78.5)
    tpl = (Path(__file__).resolve().parents[1] / "harness/templates/report.html.j2").read_text()
    macro = tpl[tpl.index("{% macro host_varied"):tpl.index("{% endmacro %}") + len("{% endmacro %}")]
    env = jinja2.Environment(autoescape=True)
    render = env.from_string(macro + "{{ host_varied(r) }}")
    assert "machine speed varied between trials (canary 47.0-78.5 ns)" in render.render(r=s, fmt=_fmt)
    # within 15%: no mark; no canary: no mark
    s2 = summary_rows([dict(base, trial=t, host_ns_server=ns) for t, ns in ((1, 47.0), (2, 53.0))])[0]
    s3 = summary_rows([dict(base, trial=1)])[0]
    assert "machine speed" not in render.render(r=s2, fmt=_fmt) + render.render(r=s3, fmt=_fmt)
