"""What is sampled around one running server, and what a window of it means.

`Probe.counters` is the sampler's source: the server's cumulative CPU and
CFS throttling counters (from its handle), busy and steal time of the
server's and of the load tool's CPUs (/proc/stat), and, while a load tool
runs, that tool's own CPU time. `analyse` turns two edges of a window into
the figures every level records:

- server CPU over the window (cores, CPU seconds);
- throttling: CFS periods, throttled periods and time (the quota at work);
- client CPUs: how busy they were whoever used them (load tool, harness,
  a broker pinned beside the tool) and the tool's own share. The level is
  client-bound when the client CPUs were saturated: the figure is then the
  client side's limit, not the server's;
- noise: task time on the server's CPUs that the server did not spend
  (another process, the container engine) and steal time; above the
  profile's thresholds the level is `noisy` and is never ranked. Interrupt
  time on the server's CPUs (irq, softirq: mostly the network work of the
  server's own traffic, charged to no cgroup on this kernel) is recorded
  apart, as `irq_cores`, and does not make a level noisy.
"""
from __future__ import annotations

import os
import time

from . import hostcpu
from .sampling import (CLIENT_BUSY, CLIENT_IDLE, CLIENT_STEAL, NET_TCP_INUSE, NET_TCP_MEM, SERVER_BUSY, SERVER_CPU,
                       SERVER_IDLE, SERVER_IRQ, SERVER_STEAL, STEAL, THR_PERIODS, THR_S, THR_THROTTLED, TOOL,
                       TOOL_PID, Sample, delta, sockstat6_tcp, sockstat_tcp)

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


class Probe:
    def __init__(self, handle, client_cpus: list[int], server_cpus: list[int]):
        self.handle = handle
        self.client = hostcpu.CpuSet(client_cpus)
        self.server = hostcpu.CpuSet(server_cpus)
        self.tool_pid: int | None = None
        self.mark = None                # set by the runner: the sampler's mark()
        self.add = None                 # ... and its add(sample)
        self._spawn_t: float | None = None
        self._sockstat: str | None = None   # /proc/PID/net/sockstat of the server's main process
        self.netns_shared: bool | None = None   # the server's network namespace is the harness's own

    def _server_sockstat(self) -> str | None:
        """The sockstat file of the server's network namespace (found once:
        a container has its own namespace, a native process shares ours)."""
        if self._sockstat is None:
            main_pid = getattr(self.handle, "main_pid", None)
            pid = main_pid() if main_pid is not None else None
            if not pid:
                return None
            try:
                self.netns_shared = os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino
            except OSError:
                return None
            self._sockstat = f"/proc/{pid}/net/sockstat"
        return self._sockstat

    def watch_tool(self, event) -> None:
        """A driver's on_start callback (drivers.base.run_pinned): "spawning"
        right before the tool's process is made, its pid once it runs, then
        "exited" when it has exited but is not yet reaped (a last reading,
        bracketing the end of the send window), None when it is gone.

        The tool's CPU counter is exactly 0 before its process exists, so
        the pid adds that reading at the spawning time: the counter brackets
        the start of the send window even when a busy machine delays the
        reading taken right after (a tool sends within milliseconds)."""
        if event == "spawning":
            self._spawn_t = time.monotonic()
            return
        if event == "exited":
            if self.mark is not None:
                self.mark()
            return
        self.tool_pid = event
        if event is None:
            return
        spawn_t, self._spawn_t = self._spawn_t, None
        if spawn_t is not None and self.add is not None:
            self.add(Sample(spawn_t, {TOOL: 0.0, TOOL_PID: event}))
        if self.mark is not None:
            self.mark()

    def counters(self) -> dict:
        d: dict = {}
        try:
            d[SERVER_CPU] = self.handle.cpu_seconds()
        except (OSError, ValueError):
            pass                                   # the sampler counts the missing reading
        try:
            thr = self.handle.throttling()
        except (OSError, ValueError, KeyError):
            thr = None
        if thr is not None:
            d[THR_PERIODS], d[THR_THROTTLED], d[THR_S] = thr["nr_periods"], thr["nr_throttled"], thr["throttled_s"]
        per = hostcpu.read_cpus()
        c, s = self.client.read(per), self.server.read(per)
        d[CLIENT_BUSY], d[SERVER_BUSY], d[SERVER_IRQ], d[STEAL] = c.busy_s, s.tasks_s, s.irq_s, c.steal_s + s.steal_s
        d[CLIENT_IDLE], d[SERVER_IDLE], d[CLIENT_STEAL], d[SERVER_STEAL] = c.idle_s, s.idle_s, c.steal_s, s.steal_s
        path = self._server_sockstat()
        if path is not None:
            try:
                with open(path) as f:
                    got = sockstat_tcp(f.read(), PAGE_BYTES)
                with open(path + "6") as f:
                    tcp6 = sockstat6_tcp(f.read())
            except OSError:
                got = tcp6 = None
                self._sockstat = None           # the server was restarted: find its process again
            if got is not None:
                d[NET_TCP_INUSE], d[NET_TCP_MEM] = got[0] + (tcp6 or 0), got[1]
        pid = self.tool_pid
        if pid:
            try:
                d[TOOL] = hostcpu.process_cpu_seconds(pid)
                d[TOOL_PID] = pid
            except (OSError, IndexError, ValueError):
                pass
        return d


def _tool_delta(samples: list[Sample], t0: float, t1: float) -> float | None:
    """The load tool's CPU over [t0, t1], from the readings of the one tool
    run that spans the window (the pid read first at or after t1): readings
    of the run before belong to another process, and interpolating across
    the two would be meaningless. None when that run's readings do not
    bracket the window."""
    after = [s for s in samples if s.t >= t1 and s.counters.get(TOOL_PID) is not None]
    if not after:
        return None
    pid = after[0].counters[TOOL_PID]
    return delta([s for s in samples if s.counters.get(TOOL_PID) == pid], TOOL, t0, t1)


def _div(a, b):
    return None if a is None or not b else a / b


def analyse(samples: list[Sample], t0: float, t1: float, n_client: int, *, client_bound_share: float,
            noisy_foreign_cores: float, noisy_steal_cores: float, n_server: int = 1) -> dict:
    """The figures of one window [t0, t1] (monotonic seconds)."""
    dt = t1 - t0
    if dt <= 0:
        raise ValueError("window of zero or negative length")

    def d(key):
        return delta(samples, key, t0, t1)

    cpu = d(SERVER_CPU)
    periods, throttled, thr_s = d(THR_PERIODS), d(THR_THROTTLED), d(THR_S)
    client_busy, server_busy, steal = d(CLIENT_BUSY), d(SERVER_BUSY), d(STEAL)
    # busy = the window minus idle and steal (exact), rather than the
    # tick-sampled sums (hostcpu's docstring), where both edges have them
    c_idle, s_idle = d(CLIENT_IDLE), d(SERVER_IDLE)
    irq_exact = d(SERVER_IRQ)
    if c_idle is not None:
        client_busy = max(0.0, n_client * dt - c_idle - (d(CLIENT_STEAL) or 0.0))
    if s_idle is not None:
        server_busy = max(0.0, n_server * dt - s_idle - (d(SERVER_STEAL) or 0.0) - (irq_exact or 0.0))
    tool = _tool_delta(samples, t0, t1)
    irq = d(SERVER_IRQ)
    foreign = None if server_busy is None or cpu is None else max(0.0, server_busy - cpu) / dt
    busy_share = _div(_div(client_busy, dt), n_client)
    out = {
        "window_s": dt, "cpu_s": cpu, "cpu_cores": _div(cpu, dt),
        "throttling": None if periods is None else {
            "periods": round(periods), "throttled_periods": round(throttled or 0),
            "throttled_share": _div(throttled, periods), "throttled_s": thr_s,
            "throttled_ms_per_s": _div((thr_s or 0) * 1000, dt)},
        "client": {"busy_cores": _div(client_busy, dt), "busy_share": busy_share,
                   "tool_cores": _div(tool, dt), "cpus": n_client,
                   "saturated": busy_share is not None and busy_share >= client_bound_share},
        "noise": {"foreign_cores": foreign, "steal_cores": _div(steal, dt), "irq_cores": _div(irq, dt)},
    }
    reasons = []
    if foreign is not None and foreign > noisy_foreign_cores:
        reasons.append(f"{foreign:.3f} cores of foreign work on the server CPUs (limit {noisy_foreign_cores})")
    st = out["noise"]["steal_cores"]
    if st is not None and st > noisy_steal_cores:
        reasons.append(f"{st:.3f} cores stolen by the hypervisor (limit {noisy_steal_cores})")
    out["noise"]["noisy"] = bool(reasons)
    out["noise"]["reasons"] = reasons
    return out
