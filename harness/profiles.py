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
    sample_hz: float                 # sampling rate of server CPU and memory
    idle_s: float                    # idle window after verification
    trials: int
    client_bound_threshold: float    # load tool busier than this share of its CPUs -> client_bound

    def to_json(self) -> dict:
        return asdict(self)


PROFILES = {
    # A few seconds per level: a smoke run that still measures every dimension.
    "quick": Profile("quick", server_cpu_quota=0.5, sample_hz=10.0, idle_s=2.0, trials=1,
                     client_bound_threshold=0.9),
    # The default suite.
    "standard": Profile("standard", server_cpu_quota=0.5, sample_hz=10.0, idle_s=5.0, trials=1,
                        client_bound_threshold=0.9),
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


def cpu_layout(available: list[int] | None = None) -> CpuLayout:
    cpus = sorted(available if available is not None else os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise InputError(f"langbench needs at least 2 CPUs to keep the load tool and the server apart "
                         f"(this process may use {len(cpus)})")
    half = len(cpus) // 2
    return CpuLayout(client=cpus[:half], server=cpus[half:])
