"""The `process` runtime: each server a native process tree on this machine.

Pinned with CPU affinity (inherited by every child), capped with a CFS quota
in a cgroup of its own, CPU read from the cgroup's cumulative counter (exact,
includes exited children), memory as the resident set summed over the tree.
Every server carries LANGBENCH_RUN_ID in its environment, so the processes of
a killed run can be found and removed by the next one.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil

from . import cgroups
from ..errors import QuotaError
from ..limits import apply_nofile
from .base import OWNER_ENV, LaunchSpec, Runtime, ServerHandle, StopResult, owner_alive, owner_tag

RUN_ENV = "LANGBENCH_RUN_ID"
STALE_EMPTY_CGROUP_S = 60.0     # an empty langbench cgroup younger than this may belong to a run starting up


def _mtime(path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


class ProcessHandle(ServerHandle):
    def __init__(self, spec: LaunchSpec, use_cgroups: bool, allow_uncapped: bool = False):
        self.spec = spec
        self.cgroup = cgroups.create(spec.key, spec.cpu_quota, spec.cfs_period_us) if use_cgroups else None
        if self.cgroup is None and spec.cpu_quota is not None and not allow_uncapped:
            raise QuotaError(f"the CPU quota of {spec.cpu_quota} cores could not be applied: no writable cgroup "
                             f"(cpu controller) under {cgroups.CGROUP_ROOT}; run as root, or pass --allow-uncapped "
                             f"to measure without a quota (recorded in every row)")
        env = dict(os.environ)
        env.update(spec.env)
        env[RUN_ENV] = spec.run_id
        env[OWNER_ENV] = owner_tag()       # a later run leaves this alone while we live
        cpus = list(spec.cpus)
        cg = self.cgroup

        nofile = spec.nofile

        def pin() -> None:  # runs in the child before exec
            os.sched_setaffinity(0, cpus)
            if nofile:
                apply_nofile(nofile)
            if cg is not None:
                cg.add(os.getpid())

        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = spec.log_path.open("ab")
        self.started_at = time.monotonic()
        try:
            self.popen = subprocess.Popen(
                spec.command, cwd=spec.cwd or spec.impl.dir, env=env, stdin=subprocess.DEVNULL,
                stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=pin,
            )
        except OSError:
            self._log.close()
            if cg is not None:
                cg.remove()
            raise
        self._proc = psutil.Process(self.popen.pid)
        self._cpu_fallback = 0.0   # psutil accounting: CPU of children seen and gone
        self._seen: dict[int, float] = {}
        self._procs: dict[int, psutil.Process] = {}   # psutil objects of the tree, kept between samples

    # -- state
    def alive(self) -> bool:
        return self.popen.poll() is None

    def main_pid(self) -> int | None:
        return self.popen.pid

    def exit_code(self) -> int | None:
        return self.popen.poll()

    def _tree(self) -> list[psutil.Process]:
        if self.cgroup is not None:
            procs = []
            for pid in self.cgroup.pids():
                p = self._procs.get(pid)
                if p is None:
                    try:
                        p = self._procs[pid] = psutil.Process(pid)
                    except psutil.Error:
                        continue
                procs.append(p)
            return procs
        try:
            return [self._proc] + self._proc.children(recursive=True)
        except psutil.Error:
            return []

    def cpu_seconds(self) -> float:
        if self.cgroup is not None:
            return self.cgroup.cpu_seconds()
        # Fallback: sum over live processes, keeping the last value of exited ones.
        for p in self._tree():
            try:
                t = p.cpu_times()
                self._seen[p.pid] = t.user + t.system
            except psutil.Error:
                pass
        return sum(self._seen.values())

    def memory_bytes(self) -> int:
        """Proportional set size summed over the tree: a page shared by the
        workers of a multi-process server counts once in all, not once each."""
        total = 0
        for p in self._tree():
            try:
                total += p.memory_full_info().pss
            except psutil.AccessDenied:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def throttling(self) -> dict | None:
        return self.cgroup.throttling() if self.cgroup is not None else None

    def quota_applied(self) -> tuple[float | None, int] | None:
        if self.cgroup is not None:
            return self.cgroup.quota()
        return (None, 0)

    def pids(self) -> list[int]:
        return [p.pid for p in self._tree()]

    # -- stop
    def stop(self, grace_s: float = 5.0) -> StopResult:
        t0 = time.monotonic()
        killed = False
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                killed = True
        shutdown_s = time.monotonic() - t0
        # Whatever is left of the tree (the main process after the grace
        # period, or orphaned children) is killed: nothing stays behind.
        self._kill_rest()
        code = self.popen.wait(timeout=10)
        self._log.close()
        if self.cgroup is not None:
            # killed children of the tree are orphans that init reaps: the
            # cgroup is busy until it has
            deadline = time.monotonic() + 5.0
            while not self.cgroup.remove() and time.monotonic() < deadline:
                time.sleep(0.05)
        return StopResult(exit_code=None if killed else code, shutdown_s=shutdown_s, killed=killed)

    def _kill_rest(self) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        rest = [p for p in self._tree() if p.pid != os.getpid()]
        for p in rest:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(rest, timeout=5)
        if self.cgroup is not None:
            deadline = time.monotonic() + 5
            while self.cgroup.pids() and time.monotonic() < deadline:
                time.sleep(0.05)

    def describe(self) -> dict:
        d = {"pid": self.popen.pid, "cpus": self.spec.cpus, "cpu_quota": self.spec.cpu_quota,
             "cpu_accounting": "cgroup" if self.cgroup else "psutil",
             "memory_accounting": "pss (proportional set size, psutil, summed over the process tree)"}
        if self.cgroup is not None:
            d.update(self.cgroup.describe())
        else:
            d["cpu_quota_applied"] = False
        return d


class ProcessRuntime(Runtime):
    name = "process"

    def __init__(self, use_cgroups: bool = True, allow_uncapped: bool = False):
        self.use_cgroups = use_cgroups and os.environ.get("LANGBENCH_NO_CGROUP", "") == ""
        self.allow_uncapped = allow_uncapped

    def available(self) -> tuple[bool, str]:
        return True, "native processes"

    def check_quota(self, quota: float | None, period_us: int) -> dict:
        """Try the quota on a cgroup of our own before any server starts."""
        if quota is None:
            return {"cpu_quota_applied": None, "cfs_period_us": None}
        cg = cgroups.create(f"lbcheck-{os.getpid()}", quota, period_us) if self.use_cgroups else None
        if cg is None:
            if self.allow_uncapped:
                return {"cpu_quota_applied": None, "cfs_period_us": None,
                        "note": "--allow-uncapped: no writable cgroup, servers run without a quota"}
            raise QuotaError(f"the CPU quota of {quota} cores (period {period_us} µs) cannot be applied: no "
                             f"writable cgroup with the cpu controller under {cgroups.CGROUP_ROOT}"
                             f"{' (LANGBENCH_NO_CGROUP is set)' if not self.use_cgroups else ''}; run as root, "
                             f"or pass --allow-uncapped to measure without one")
        try:
            applied, period = cg.quota()
        finally:
            cg.remove()
        return {"cpu_quota_applied": applied, "cfs_period_us": period}

    def start(self, spec: LaunchSpec) -> ProcessHandle:
        return ProcessHandle(spec, self.use_cgroups, self.allow_uncapped)

    def cleanup_leftovers(self, current_run: str | None = None) -> list[str]:
        """Kill what runs killed earlier left behind: processes carrying another
        run's id whose harness process is gone (a run still going in another
        harness, such as a CI job beside a user's run, is left alone), and
        langbench cgroups holding none of a live run's processes."""
        removed = []
        me = os.getpid()
        live_runs: set[str] = set()
        dead_runs: set[str] = set()       # runs whose processes this cleanup just killed
        for p in psutil.process_iter(["pid", "name"]):
            if p.pid == me:
                continue
            try:
                env = p.environ()
            except psutil.Error:
                continue
            run = env.get(RUN_ENV)
            if not run or run == current_run:
                continue
            if owner_alive(env.get(OWNER_ENV, "")):
                live_runs.add(run)
                continue
            try:
                p.kill()
                removed.append(f"process {p.pid} ({p.info['name']}) of run {run}")
                dead_runs.add(run)
            except psutil.Error:
                pass
        for cg in cgroups.leftovers():
            name = cg.cpu_dir.name
            if current_run and name.startswith(current_run):
                continue
            if any(name.startswith(r) for r in live_runs):
                continue
            pids = cg.pids()
            if not pids and time.time() - _mtime(cg.cpu_dir) < STALE_EMPTY_CGROUP_S \
                    and not any(name.startswith(r) for r in dead_runs):
                continue          # just made by a run that is about to start its server in it
            for pid in pids:
                try:
                    psutil.Process(pid).kill()
                    removed.append(f"process {pid} in cgroup {cg.cpu_dir}")
                except psutil.Error:
                    pass
            # a cgroup can only be removed once its processes are gone and
            # reaped: a killed run's server is an orphan that init reaps, which
            # on a busy machine (or a lazy init) takes a moment
            deadline = time.monotonic() + 10.0
            while not cg.remove() and time.monotonic() < deadline:
                time.sleep(0.05)
        return removed

    def describe(self) -> dict:
        found = cgroups.detect() if self.use_cgroups else None
        return {"name": self.name,
                "cpu_quota_mechanism": f"cgroup v{found[0]} CFS quota" if found else "none (no writable cgroup)",
                "cpu_accounting": "cgroup cumulative usage" if found else "psutil cpu_times",
                "memory": "proportional set size (PSS), summed over the process tree"}

RUNTIME = ProcessRuntime
