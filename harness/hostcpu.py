"""Cumulative CPU counters of the machine and of one process, for the windows
in which the server's own counter says nothing: who else ran on the server's
CPUs (foreign load), how busy the load tool's CPUs were (client saturation),
how much time the hypervisor took (steal), and the load tool's own CPU.

/proc/stat gives, per CPU, time in USER_HZ ticks (10 ms here) spent in each
state since boot. Busy is everything but idle, iowait and steal (guest time is
already inside user). Steal is time this virtual CPU wanted to run and the
hypervisor ran something else. Task time (user, nice, system) is kept apart
from interrupt time (irq, softirq): on a kernel without IRQ time accounting
(CONFIG_IRQ_TIME_ACCOUNTING unset, as here) softirq work that runs while a
CPU is otherwise idle, such as TCP timers and packet processing for the
server's own sockets, is charged to no cgroup.

User, system, irq and softirq are sampled at the scheduler tick: a task that
runs in short bursts between ticks (a load tool sending 2,000 calls/s from a
timer, a server answering them) is missed or over-counted, by a lot: a tool
that used 0.44 s of CPU in 5 s (its own precise counter) showed as 0.02 s of
user + system on its CPU. Idle and iowait, on a kernel with NOHZ, are kept
exactly (tick-sched's idle time). So busy time over a window is taken as the
window minus idle, iowait and steal (`idle_s`), and task time as that minus
interrupt time; the tick-sampled sums stay for where no idle time is read.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HZ = os.sysconf("SC_CLK_TCK")
PROC_STAT = Path("/proc/stat")


@dataclass(frozen=True)
class CpuTimes:
    busy_s: float       # every state but idle, iowait and steal
    tasks_s: float      # user + nice + system: time in some task's context
    irq_s: float        # irq + softirq: interrupt work (here mostly network)
    steal_s: float
    idle_s: float = 0.0  # idle + iowait: exact under NOHZ


def parse_proc_stat(text: str) -> dict[int, CpuTimes]:
    """Per-CPU busy and steal seconds from the text of /proc/stat."""
    out = {}
    for line in text.splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        parts = line.split()
        try:
            cpu = int(parts[0][3:])
        except ValueError:
            continue
        v = [int(x) for x in parts[1:]] + [0] * 10
        user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
        out[cpu] = CpuTimes((user + nice + system + irq + softirq) / HZ, (user + nice + system) / HZ,
                            (irq + softirq) / HZ, steal / HZ, (idle + iowait) / HZ)
    return out


def read_cpus() -> dict[int, CpuTimes]:
    return parse_proc_stat(PROC_STAT.read_text())


class CpuSet:
    """Sums over a set of CPUs."""

    def __init__(self, cpus: list[int]):
        self.cpus = list(cpus)

    def read(self, per_cpu: dict[int, CpuTimes]) -> CpuTimes:
        mine = [per_cpu[c] for c in self.cpus if c in per_cpu]
        return CpuTimes(sum(x.busy_s for x in mine), sum(x.tasks_s for x in mine), sum(x.irq_s for x in mine),
                        sum(x.steal_s for x in mine), sum(x.idle_s for x in mine))


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads, not its children)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text.rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / HZ


def pin_all_threads(cpus: list[int]) -> int:
    """Pin every thread of this process (not only the calling one) to `cpus`;
    threads started later inherit the creator's mask. Returns how many were pinned."""
    n = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
            n += 1
        except OSError:
            pass
    return n
