"""The runtime interface: start a server, read its counters, stop it."""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path

from ..manifest import Implementation, Scenario, Service


@dataclass
class LaunchSpec:
    run_id: str
    key: str                      # unique per server start, e.g. "notes-grpc-go-t1"
    impl: Implementation | None   # None for a scenario's service (broker...)
    scenario: Scenario
    host: str
    port: int
    cpus: list[int]               # CPU affinity set
    cpu_quota: float | None       # cores of CPU time (CFS quota), None = no cap
    env: dict[str, str]           # full extra environment (HOST, PORT, scenario env...)
    command: list[str]            # expanded run command
    log_path: Path
    labels: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None       # working directory (default: the implementation's folder)
    mounts: dict[str, str] = field(default_factory=dict)   # containers: host path -> "rw"|"ro", same path inside
    cfs_period_us: int = 10_000   # the CFS period the quota is granted over (µs)
    role: str = "server"          # server | client | service: where a runtime places it
    nofile: int | None = None     # open-file limit (soft = hard); None: inherited
    image_command: list[str] | None = None   # a service's container command (expanded), None: the image's CMD


@dataclass
class StopResult:
    exit_code: int | None
    shutdown_s: float
    killed: bool                  # had to be killed after the grace period


class ServerHandle(abc.ABC):
    """One running server. CPU and memory cover its whole process tree."""

    spec: LaunchSpec
    started_at: float             # time.monotonic() when start was requested

    @abc.abstractmethod
    def alive(self) -> bool: ...

    @abc.abstractmethod
    def exit_code(self) -> int | None: ...

    @abc.abstractmethod
    def cpu_seconds(self) -> float:
        """Cumulative CPU time (user + system) of the whole server since it started."""

    @abc.abstractmethod
    def memory_bytes(self) -> int:
        """Memory now: PSS summed over the server's processes (process tree, or
        the container's cgroup; the cgroup's anonymous + mapped-file memory
        where the container's processes cannot be read)."""

    def main_pid(self) -> int | None:
        """The server's main process as this machine sees it (None: not visible here)."""
        return None

    def throttling(self) -> dict | None:
        """Cumulative CFS counters of the server's cgroup: nr_periods,
        nr_throttled, throttled_s (None where there is no cgroup to read)."""
        return None

    def quota_applied(self) -> tuple[float | None, int] | None:
        """The quota in force, read back from the kernel: (cores or None for no
        cap, period in µs); None when it cannot be read."""
        return None

    @abc.abstractmethod
    def stop(self, grace_s: float = 5.0) -> StopResult:
        """SIGTERM, wait up to grace_s, then kill; leaves nothing behind."""

    @abc.abstractmethod
    def describe(self) -> dict:
        """Facts for the results: pids or container id, pinning, accounting method."""

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.spec.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text[-lines:])


ROLES = ("server", "client", "service")
OWNER_ENV = "LANGBENCH_OWNER"     # pid:start time of the harness process that started a server


def owner_tag(pid: int | None = None) -> str:
    """Names a harness process for as long as it lives (pid and start time)."""
    import os  # noqa: PLC0415
    import psutil  # noqa: PLC0415
    p = psutil.Process(pid or os.getpid())
    return f"{p.pid}:{p.create_time():.2f}"


def owner_alive(owner: str) -> bool:
    """Whether the harness process named by an owner tag still runs (this
    process's own tag counts as gone: its leftovers are its own to clear)."""
    import os  # noqa: PLC0415
    import psutil  # noqa: PLC0415
    pid, _, started = (owner or "").partition(":")
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        return f"{psutil.Process(int(pid)).create_time():.2f}" == started
    except psutil.Error:
        return False


class Runtime(abc.ABC):
    """Where servers and services run. A runtime module
    `harness/runtimes/<name>.py` defines RUNTIME, its Runtime subclass, whose
    `name` is the module's name."""

    name: str

    @abc.abstractmethod
    def available(self) -> tuple[bool, str]:
        """Whether this runtime can run here, and why not."""

    def prepare(self, impl: Implementation, scenario: Scenario, log_dir: Path) -> dict:
        """Anything to do once per implementation before any start (image build...)."""
        return {}

    @abc.abstractmethod
    def start(self, spec: LaunchSpec) -> ServerHandle: ...

    # -- placement: the seam for hosts by role (one machine here)
    def address(self, role: str) -> str:
        """The address that what runs in `role` listens on, as others reach it."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        return "127.0.0.1"

    def free_port(self, role: str) -> int:
        """A free TCP port on the host of `role`."""
        import socket  # noqa: PLC0415
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((self.address(role), 0))
            return s.getsockname()[1]

    # -- scenario services (a broker...)
    def prepare_service(self, svc: Service, scenario: Scenario, log_dir: Path) -> dict | None:
        """Anything to do once per run before a service starts (an image...);
        None when the service runs as a native process here."""
        return None

    def start_service(self, spec: LaunchSpec, svc: Service, prepared: dict | None) -> ServerHandle:
        """Start one of a scenario's services; `prepared` is what
        prepare_service returned."""
        return self.start(spec)

    def check_quota(self, quota: float | None, period_us: int) -> dict:
        """Whether the CPU quota can be applied here; raises QuotaError when it
        cannot (unless the user allowed running uncapped). Returns what applies."""
        return {"cpu_quota_applied": quota, "cfs_period_us": period_us}

    @abc.abstractmethod
    def cleanup_leftovers(self, current_run: str | None = None) -> list[str]:
        """Remove servers left by a killed run; return what was removed."""

    def describe(self) -> dict:
        return {"name": self.name}
