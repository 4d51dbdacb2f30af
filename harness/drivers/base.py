"""The driver interface and what every driver shares: running a pinned tool
and measuring its own CPU, percentiles, coordinated-omission correction."""
from __future__ import annotations

import abc
import math
import os
import shutil
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import ToolError
from ..manifest import Level, Scenario, Workload

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = PROJECT_ROOT / "tools" / "bin"


def find_tool(name: str) -> str:
    local = TOOLS_BIN / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    if not found:
        raise ToolError(f"load tool '{name}' not found in {TOOLS_BIN} or on PATH "
                        f"(run ./setup.sh to install it)")
    return found


@dataclass
class ToolRun:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    cpu_s: float          # the tool's own user + system CPU time (rusage)


def run_pinned(argv: list[str], cpus: list[int], timeout_s: float, cwd: Path | None = None,
               env: dict[str, str] | None = None) -> ToolRun:
    """Run a tool pinned to `cpus`, return its output and its own CPU time.

    The CPU time comes from wait4's rusage of that very child, so it is exact
    and excludes the harness.
    """
    def pin() -> None:
        os.sched_setaffinity(0, cpus)

    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd,
                            stdin=subprocess.DEVNULL, preexec_fn=pin, start_new_session=True,
                            env={**os.environ, **env} if env else None)
    # Read the pipes in the background so a large output cannot block the tool.
    chunks: dict[str, bytes] = {}

    def drain(name: str, stream) -> None:
        chunks[name] = stream.read()

    readers = [threading.Thread(target=drain, args=("out", proc.stdout), daemon=True),
               threading.Thread(target=drain, args=("err", proc.stderr), daemon=True)]
    for r in readers:
        r.start()
    deadline = t0 + timeout_s
    status = rusage = None
    timed_out = False
    try:
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                timed_out = True
                os.killpg(proc.pid, 9)
                pid, status, rusage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
    except BaseException:
        try:
            os.killpg(proc.pid, 9)
            os.wait4(proc.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        raise
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    for r in readers:
        r.join(timeout=10)
    if timed_out:
        raise ToolError(f"{Path(argv[0]).name} did not finish within {timeout_s:.0f} s")
    return ToolRun(argv, proc.returncode, chunks.get("out", b"").decode(errors="replace"),
                   chunks.get("err", b"").decode(errors="replace"), wall,
                   rusage.ru_utime + rusage.ru_stime)


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(round(q * len(sorted_values) / 100, 9)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


PERCENTILES = {"p50": 50, "p90": 90, "p99": 99, "p999": 99.9}


def latency_summary(latencies_ms: list[float]) -> dict:
    s = sorted(latencies_ms)
    out = {k: percentile(s, q) for k, q in PERCENTILES.items()}
    out["max"] = s[-1] if s else None
    out["mean"] = sum(s) / len(s) if s else None
    return out


def correct_coordinated_omission(starts_s: list[float], latencies_s: list[float], rate: float) -> list[float]:
    """Latencies measured from each request's *intended* start at a fixed rate.

    A closed set of workers that falls behind a fixed schedule sends late, and
    the late part never shows in its own latency. Request i of an open-loop
    run at `rate` was due at t_first + i / rate; its corrected latency is its
    completion time minus that. Never smaller than the measured latency.
    """
    if not starts_s:
        return []
    order = sorted(range(len(starts_s)), key=starts_s.__getitem__)
    t_first = starts_s[order[0]]
    out = [0.0] * len(starts_s)
    for i, idx in enumerate(order):
        intended = t_first + i / rate
        done = starts_s[idx] + latencies_s[idx]
        out[idx] = max(latencies_s[idx], done - intended)
    return out


@dataclass
class LoadResult:
    tool: str
    tool_version: str
    command: list[str]
    level: dict
    duration_s: float
    wall_s: float
    count: int
    ok_count: int
    errors: int
    rps: float                      # answers with an expected status per second
    latency_ms: dict                # p50 p90 p99 p999 max mean (CO-corrected for rate levels)
    latency_uncorrected_ms: dict | None = None
    status_codes: dict = field(default_factory=dict)
    error_kinds: dict = field(default_factory=dict)
    tool_cpu_s: float = 0.0
    tool_cpu_cores: float = 0.0
    tool_cpus: list[int] = field(default_factory=list)
    client_bound: bool = False
    cut_off: int = 0                # calls in flight when a timed run ended (not errors)
    raw_file: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


class Driver(abc.ABC):
    name: str

    @abc.abstractmethod
    def version(self) -> str: ...

    @abc.abstractmethod
    def run(self, *, target: str, scenario: Scenario, workload: Workload, level: Level,
            duration_s: float, cpus: list[int], raw_path: Path | None,
            client_bound_threshold: float) -> LoadResult: ...

    def complete(self, result: LoadResult, run: ToolRun, cpus: list[int], duration_s: float,
                 raw_file: str | None, threshold: float) -> LoadResult:
        """Add what every driver records: tool version, exact command, the
        tool's own CPU, and the client-bound flag."""
        result.tool_version = self.version()
        result.command = run.argv
        result.duration_s = duration_s
        result.wall_s = run.wall_s
        result.tool_cpu_s = run.cpu_s
        result.tool_cpus = list(cpus)
        result.raw_file = raw_file
        result.tool_cpu_cores = result.tool_cpu_s / result.wall_s if result.wall_s > 0 else 0.0
        result.client_bound = result.tool_cpu_cores >= threshold * max(1, len(result.tool_cpus))
        return result
