"""Resource limits the harness gives servers and load tools.

Open files: a server holding 10,000 WebSocket connections, or a load tool
opening them, needs more descriptors than a shell's usual 1,024 (soft) or
20,000 (hard). Every server, service and load tool the harness starts gets
NOFILE as both soft and hard limit, or the most it may have: fs.nr_open,
and the current hard limit unless the harness holds CAP_SYS_RESOURCE
(root in a container often does not: then the hard limit the harness was
started with is the ceiling, for containers too, since the Docker daemon
runs with the same capabilities). The value is recorded with every instance.
"""
from __future__ import annotations

import os
import resource
from functools import lru_cache
from pathlib import Path

NOFILE = 1_048_576


@lru_cache(maxsize=1)
def nofile_target() -> int:
    """The open-file limit the harness sets for what it starts (read once)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
    except (OSError, ValueError):
        nr_open = NOFILE
    cap = min(NOFILE, nr_open)
    if can_raise_hard_limits():
        return cap
    return cap if hard == resource.RLIM_INFINITY else min(cap, hard)


CAP_SYS_RESOURCE = 24


def can_raise_hard_limits() -> bool:
    """Whether this process holds CAP_SYS_RESOURCE (effective set)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    except (OSError, ValueError):
        pass
    return os.geteuid() == 0


def apply_nofile(n: int) -> None:
    """Set the open-file limit of the calling process (in a child before exec)."""
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    except (ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
