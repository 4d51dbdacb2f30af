"""Run profiles: CPU layout, CPU budget, sampling rate, windows, trials.

The load levels themselves belong to each scenario (scenario.toml
[profiles.NAME]); this module holds what is the same for every scenario.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from .errors import InputError


@dataclass(frozen=True)
class Profile:
    name: str
    server_cpu_quota: float | None   # CPU time granted to a server, in cores (CFS quota)
    cfs_period_us: int               # the CFS period of that quota (short: see README, "CPU budget")
    sample_hz: float                 # sampling rate of server CPU and memory
    idle_s: float                    # idle window after verification
    trials: int
    client_bound_threshold: float    # client CPUs busier than this share over the send window -> client_bound
    noisy_foreign_cores: float       # foreign work on the server CPUs above this (cores) -> noisy
    noisy_steal_cores: float         # steal time above this (cores, all CPUs of the layout) -> noisy
    warmup_window_s: float           # warm-up runs in windows of this many seconds of load ...
    warmup_tolerance: float          # ... until three consecutive windows' throughput is within this share ...
    warmup_max_s: float              # ... or this cap is reached (the scenario's warmup_s is the minimum)

    def to_json(self) -> dict:
        return asdict(self)


_COMMON = dict(server_cpu_quota=0.5, cfs_period_us=10_000, sample_hz=10.0, client_bound_threshold=0.9,
               noisy_foreign_cores=0.10, noisy_steal_cores=0.05, warmup_tolerance=0.05)

PROFILES = {
    # A few seconds per level: a smoke run that still measures every dimension.
    "quick": Profile("quick", idle_s=2.0, trials=1, warmup_window_s=1.0, warmup_max_s=12.0, **_COMMON),
    # The default suite: three trials, so that every figure has an interval.
    "standard": Profile("standard", idle_s=3.0, trials=3, warmup_window_s=2.0, warmup_max_s=40.0, **_COMMON),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise InputError(f"unknown profile '{name}' (known: {', '.join(PROFILES)})")
    return PROFILES[name]


@dataclass(frozen=True)
class CpuLayout:
    """Which CPUs the load tool (and the harness) and the server get: always disjoint."""

    client: list[int]
    server: list[int]

    def to_json(self) -> dict:
        return {"client": self.client, "server": self.server}


def parse_cpus(text: str, what: str) -> list[int]:
    """'0-2,5' -> [0, 1, 2, 5]; an error names the option."""
    out: set[int] = set()
    try:
        for part in text.split(","):
            lo, sep, hi = part.strip().partition("-")
            a, b = int(lo), int(hi) if sep else int(lo)
            if a < 0 or b < a:
                raise ValueError
            out.update(range(a, b + 1))
    except ValueError:
        raise InputError(f"{what}: '{text}' is not a CPU list such as 0-2,5") from None
    return sorted(out)


def cpu_layout(available: list[int] | None = None, client: list[int] | None = None,
               server: list[int] | None = None) -> CpuLayout:
    """The lower half of the CPUs this process may use for the load tool and
    the harness, the upper half for the server; `client` and `server` (the
    --client-cpus and --server-cpus options) set them instead: disjoint, and
    within the CPUs this process may use."""
    cpus = sorted(available if available is not None else os.sched_getaffinity(0))
    if client is not None or server is not None:
        if client is None or server is None:
            raise InputError("--client-cpus and --server-cpus go together")
        if set(client) & set(server):
            raise InputError(f"--client-cpus {client} and --server-cpus {server} overlap: the load tool and the "
                             f"server must not share a CPU")
        outside = sorted((set(client) | set(server)) - set(cpus))
        if outside:
            raise InputError(f"--client-cpus/--server-cpus: CPU {outside} is not available to this process "
                             f"(it may use {cpus})")
        return CpuLayout(client=sorted(client), server=sorted(server))
    if len(cpus) < 2:
        raise InputError(f"langbench needs at least 2 CPUs to keep the load tool and the server apart "
                         f"(this process may use {len(cpus)})")
    half = len(cpus) // 2
    return CpuLayout(client=cpus[:half], server=cpus[half:])
