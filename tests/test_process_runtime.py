from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from harness import sampling
from harness.manifest import discover
from harness.runtimes import LaunchSpec, get_runtime
from harness.runtimes import cgroups

from .conftest import add_impl

BUSY = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
child = os.fork()
if child == 0:
    while True:
        pass
print(sorted(os.sched_getaffinity(0)), flush=True)
while True:
    pass
"""


def spec_for(root, tmp_path, run_id="lbtestrun", quota=0.5):
    add_impl(root, "busy", 'language = "python"\nframework = "none"\n[run]\ncommand = ["python3", "busy.py"]\n'
             '[tuning]\nthreads = "2 busy processes"\n', {"busy.py": BUSY})
    cat = discover(root)
    impl = cat.implementations["notes-grpc"][0]
    return LaunchSpec(run_id=run_id, key=f"{run_id}-busy", impl=impl, scenario=cat.scenario("notes-grpc"),
                      host="127.0.0.1", port=0, cpus=[1], cpu_quota=quota, env={},
                      command=[sys.executable, "busy.py"], log_path=tmp_path / "busy.log")


def test_pinned_capped_measured_and_stopped(mini_root, tmp_path):
    rt = get_runtime("process")
    h = rt.start(spec_for(mini_root, tmp_path))
    try:
        time.sleep(0.5)
        pids = [p.pid for p in [psutil.Process(h.popen.pid)] + psutil.Process(h.popen.pid).children(True)]
        assert len(pids) == 2
        for pid in pids:
            assert psutil.Process(pid).cpu_affinity() == [1]
        s = sampling.Sampler(sampling.counters_of(h), h.memory_bytes, 20).start()
        a = s.mark()
        time.sleep(2.0)
        b = s.mark()
        s.stop()
        cores = sampling.cpu_cores(a, b)
        # two busy processes pinned to one CPU: never more than that CPU, and
        # with a cgroup never more than the half-core quota (other load on the
        # machine may leave them less, so only the cap is asserted)
        assert 0.02 < cores <= (0.6 if h.cgroup is not None else 1.1), cores
        assert h.memory_bytes() > 1_000_000
        # the quota in force, read back from the kernel, over the short period
        assert h.quota_applied() == (0.5, 10_000)
        thr = h.throttling()
        # two spinning processes against half a core: throttled in most 10 ms periods
        assert thr["nr_periods"] >= 100 and thr["nr_throttled"] >= 0.5 * thr["nr_periods"], thr
        assert thr["throttled_s"] > 0.5, thr
    finally:
        res = h.stop(grace_s=2.0)
    assert res.exit_code == 0 and not res.killed
    assert "[1]" in (tmp_path / "busy.log").read_text()
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_stop_kills_a_server_that_ignores_sigterm(mini_root, tmp_path):
    spec = spec_for(mini_root, tmp_path, quota=None)
    (spec.impl.dir / "busy.py").write_text("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                           "time.sleep(60)\n")
    h = get_runtime("process").start(spec)
    time.sleep(0.3)
    res = h.stop(grace_s=0.5)
    assert res.killed and res.exit_code is None
    assert h.popen.poll() is not None


def test_leftovers_of_a_killed_run_are_removed(mini_root, tmp_path):
    """A run killed with SIGKILL leaves its server; the next run removes it,
    but not while the harness that started it still runs."""
    spec = spec_for(mini_root, tmp_path, run_id="lbdeadrun")

    # start the server from a separate harness process that we then SIGKILL
    code = """
import pickle, sys, time
from harness.runtimes import get_runtime
spec = pickle.loads(bytes.fromhex(sys.argv[1]))
h = get_runtime("process").start(spec)
print(h.popen.pid, flush=True)
time.sleep(60)
"""
    import pickle
    harness_proc = subprocess.Popen([sys.executable, "-c", code, pickle.dumps(spec).hex()],
                                    stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    server_pid = int(harness_proc.stdout.readline())
    # while that harness lives its run is going on (a CI job beside a user's
    # run): another run's cleanup must leave its server and cgroup alone
    spared = get_runtime("process").cleanup_leftovers(current_run="lbnewrun")
    assert not any(str(server_pid) in r or spec.key in r for r in spared), spared
    time.sleep(0.2)
    assert psutil.pid_exists(server_pid) and psutil.Process(server_pid).status() != psutil.STATUS_ZOMBIE
    if cgroups.detect() is not None:
        assert any(c.cpu_dir.name == spec.key for c in cgroups.leftovers())
    harness_proc.kill()
    harness_proc.wait()
    assert psutil.pid_exists(server_pid)
    removed = get_runtime("process").cleanup_leftovers(current_run="lbnewrun")
    assert any(str(server_pid) in r for r in removed), removed
    deadline = time.time() + 5
    while time.time() < deadline and psutil.pid_exists(server_pid) and \
            psutil.Process(server_pid).status() != psutil.STATUS_ZOMBIE:
        time.sleep(0.05)
    assert not psutil.pid_exists(server_pid) or psutil.Process(server_pid).status() == psutil.STATUS_ZOMBIE
    if cgroups.detect() is not None:
        assert not any(c.cpu_dir.name == spec.key for c in cgroups.leftovers())


def test_cgroup_lifecycle():
    assert cgroups.detect() is not None, "the process runtime needs a writable cgroup hierarchy here"
    cg = cgroups.create(f"lbtest-lifecycle-{os.getpid()}", 0.25, period_us=8_000)
    assert cg is not None
    try:
        if cg.version == 1:
            assert (cg.cpu_dir / "cpu.cfs_quota_us").read_text().strip() == "2000"
            assert (cg.cpu_dir / "cpu.cfs_period_us").read_text().strip() == "8000"
        assert cg.quota() == (0.25, 8_000)
        assert cg.cpu_seconds() >= 0
        # nothing ever ran in it, so nothing was throttled (the kernel may
        # still have opened a period or two while the directory was set up)
        th = cg.throttling()
        assert set(th) == {"nr_periods", "nr_throttled", "throttled_s"}
        assert th["nr_throttled"] == 0 and th["throttled_s"] == 0.0 and 0 <= th["nr_periods"] <= 2, th
    finally:
        cg.remove()
    assert not cg.cpu_dir.exists()


def test_a_quota_that_cannot_be_applied_is_an_error(mini_root, tmp_path, monkeypatch):
    """No writable cgroup: exit 2 with one line, unless the user opted out."""
    from harness.errors import QuotaError
    monkeypatch.setenv("LANGBENCH_NO_CGROUP", "1")
    rt = get_runtime("process")
    with pytest.raises(QuotaError, match="--allow-uncapped"):
        rt.check_quota(0.5, 10_000)
    with pytest.raises(QuotaError):
        rt.start(spec_for(mini_root, tmp_path))
    assert rt.check_quota(None, 10_000)["cpu_quota_applied"] is None       # no quota asked: nothing to apply
    rt = get_runtime("process", allow_uncapped=True)
    assert rt.check_quota(0.5, 10_000)["cpu_quota_applied"] is None
    h = rt.start(spec_for(mini_root, tmp_path))
    try:
        assert h.quota_applied() == (None, 0) and h.describe()["cpu_quota_applied"] is False
    finally:
        h.stop(grace_s=2.0)


def test_memory_is_pss_summed_over_the_tree(mini_root, tmp_path):
    """A parent and a forked child share their pages: PSS counts them once in
    all, RSS once per process."""
    h = get_runtime("process").start(spec_for(mini_root, tmp_path))
    try:
        time.sleep(0.5)
        procs = [psutil.Process(pid) for pid in h.pids()]
        assert len(procs) == 2
        rss = sum(p.memory_info().rss for p in procs)
        pss = h.memory_bytes()
        assert pss == pytest.approx(sum(p.memory_full_info().pss for p in procs), rel=0.05)
        assert pss < 0.9 * rss, (pss, rss)
    finally:
        h.stop(grace_s=2.0)
