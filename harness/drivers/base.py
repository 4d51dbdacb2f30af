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
from functools import lru_cache
from pathlib import Path

from ..errors import ToolError
from ..limits import apply_nofile, nofile_target
from ..manifest import Level, Scenario, Workload

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = PROJECT_ROOT / "tools" / "bin"


@lru_cache(maxsize=16)
def tool_version(exe: str) -> str:
    """The last word of `exe --version` (grpcload, httpload, wsload, ws-null...)."""
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        raise ToolError(f"{exe}: {exc}") from None
    text = (out.stdout or out.stderr).strip()
    return text.split()[-1] if text else "unknown"


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
               env: dict[str, str] | None = None, on_start=None) -> ToolRun:
    """Run a tool pinned to `cpus`, return its output and its own CPU time.

    The CPU time comes from wait4's rusage of that very child (its whole life,
    start-up and drain included). `on_start("spawning")` is called right
    before the process is made (it has used no CPU before that moment),
    `on_start(pid)` once it runs,
    `on_start("exited")` once it has exited but before it is reaped (its
    final CPU times still readable), and `on_start(None)` at the end, so
    that a sampler can read the tool's CPU over its send window alone.
    """
    nofile = nofile_target()

    def pin() -> None:
        os.sched_setaffinity(0, cpus)
        apply_nofile(nofile)

    if on_start is not None:
        on_start("spawning")
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
    if on_start is not None:
        on_start(proc.pid)
    deadline = t0 + timeout_s
    status = rusage = None
    timed_out = False
    try:
        while True:
            # Exited but not yet reaped: its /proc/PID/stat still holds its
            # final CPU times, so the sampler can take a last reading of it.
            if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                if on_start is not None:
                    on_start("exited")
                pid, status, rusage = os.wait4(proc.pid, 0)
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
    finally:
        if on_start is not None:
            on_start(None)
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


def correct_coordinated_omission(begins_s: list[float], ends_s: list[float], rate: float) -> list[float]:
    """Latencies measured from each call's *intended* start at a fixed rate.

    A closed set of workers that falls behind a fixed schedule sends late, and
    the late part never shows in its own latency. The schedule is numbered
    over every call the tool made (errors and calls cut off at the end too,
    since each took a slot of the schedule), in the order they began: call i
    was due at t_first + i / rate, and its corrected latency is the time it
    ended minus that. Never smaller than the measured latency (end - begin).
    Both lists are absolute times in seconds, one entry per call.
    """
    if not begins_s:
        return []
    order = sorted(range(len(begins_s)), key=begins_s.__getitem__)
    t_first = begins_s[order[0]]
    out = [0.0] * len(begins_s)
    for i, idx in enumerate(order):
        intended = t_first + i / rate
        out[idx] = max(ends_s[idx] - begins_s[idx], ends_s[idx] - intended)
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
    tool_cpu_s: float = 0.0         # the tool's CPU over its whole life (rusage), start-up and drain included
    tool_cpu_cores: float = 0.0     # tool_cpu_s / wall_s; the runner replaces it with the send-window figure
    tool_cpus: list[int] = field(default_factory=list)
    client_bound: bool = False      # set by the runner from the client CPUs' busy share over the send window
    cut_off: int = 0                # calls in flight when a timed run ended (not errors)
    raw_file: str | None = None
    send_t0: float | None = None    # monotonic seconds: the first call began
    send_t1: float | None = None    # monotonic seconds: the last answer arrived
    late: int = 0                   # answers that came after the tool's timeout (wrk: not in its histogram)
    status_check: str | None = None # why the answers' mix of statuses is wrong (None: fine or not checked)
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)   # the driver's own metrics beyond the above (declared in metrics)
    # the driver's verdict that the level failed though the tool ran (an echo
    # that differed from what was sent, connections a ramp could not hold...)
    problem: str | None = None
    # what the tool reported beyond figures: counts by kind, time series
    # (kept in results.json, not tabulated)
    detail: dict = field(default_factory=dict)
    # step-wise results (a ramp): {"name", "t0", "t1" (monotonic seconds), and
    # the driver's figures of that step}; the runner adds the server's CPU and
    # memory over each step
    steps: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Param:
    """One workload parameter a driver accepts (scenario.toml [workloads.params])."""

    name: str
    kind: type | tuple            # str, int, float, bool, list, dict (int accepted for float)
    required: bool = False
    help: str = ""
    path: bool = False            # a file relative to the scenario folder that must exist
    min: float | None = None      # for numbers


def run_json_tool(name: str, make_argv, cpus: list[int], timeout_s: float, raw_path: Path | None,
                  on_start=None) -> tuple[dict, "ToolRun", str | None]:
    """Run a tool that writes its JSON result to a file (`make_argv(out_file)`
    gives its command line): the report, the run, and the raw file kept (None
    when no raw_path was asked for: a temporary file, removed)."""
    import json
    import tempfile
    tmp = None
    if raw_path is None:
        tmp = tempfile.NamedTemporaryFile(suffix=".json", delete=False)
        tmp.close()
        raw_path = Path(tmp.name)
    try:
        run = run_pinned(make_argv(raw_path), cpus, timeout_s=timeout_s, on_start=on_start)
        if run.returncode != 0 or not raw_path.exists() or raw_path.stat().st_size == 0:
            raise ToolError(f"{name} exited with code {run.returncode}: {run.stderr.strip()[-300:]}")
        try:
            report = json.loads(raw_path.read_text())
        except json.JSONDecodeError as exc:
            raise ToolError(f"{name} wrote invalid JSON to {raw_path}: {exc}") from None
    finally:
        if tmp:
            raw_path.unlink(missing_ok=True)
    return report, run, None if tmp else str(raw_path)


@dataclass
class Reference:
    """A reference null server: the fastest possible answer of a workload's
    shape, against which a driver's ceiling is measured (harness/calibrate.py).
    `command` is ready to run; `files` are written to its work folder first."""

    name: str
    version: str
    command: list[str]
    description: str                      # what it answers, e.g. "1 message of 397 bytes, grpc-status 0"
    files: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"name": self.name, "version": self.version, "command": self.command,
                "description": self.description}


@dataclass(frozen=True)
class Metric:
    """A figure a driver (or a check) produces, as results, compare and the report show it."""

    name: str
    unit: str
    better: str                   # higher | lower | none
    description: str = ""

    def to_json(self) -> dict:
        return asdict(self)


# What every request/response driver reports per level (LoadResult fields).
LOAD_METRICS = (
    Metric("rps", "req/s", "higher", "correct answers per second over the send window"),
    Metric("p50_ms", "ms", "lower", "median latency"),
    Metric("p90_ms", "ms", "lower", "90th percentile latency"),
    Metric("p99_ms", "ms", "lower", "99th percentile latency"),
    Metric("p999_ms", "ms", "lower", "99.9th percentile latency"),
    Metric("max_ms", "ms", "lower", "largest latency"),
    Metric("errors", "count", "lower", "failed calls (transport errors, timeouts, unexpected statuses)"),
)


def _type_ok(value, kind) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool):
        return bool in kinds
    if float in kinds and isinstance(value, int):
        return True
    return isinstance(value, kinds)


class Driver(abc.ABC):
    """A load tool behind one interface. Declares the level kinds it accepts,
    the workload parameters it takes and the metrics it produces; the
    manifest loader calls validate() so that a bad parameter is an error
    (exit 2) before anything is built."""

    name: str
    level_kinds: tuple[str, ...] = ("concurrency",)
    quiet_level_kinds: tuple[str, ...] = ()     # levels that expect no answers (idle connections held)
    params: tuple[Param, ...] = ()
    metrics: tuple[Metric, ...] = LOAD_METRICS

    def validate(self, params: dict, scenario_dir: Path) -> list[tuple[str, str]]:
        """Problems with a workload's params: (field, message) pairs, the
        field relative to the workload ("params.proto")."""
        problems = []
        known = {p.name: p for p in self.params}
        for key in params:
            if key not in known:
                problems.append((f"params.{key}", f"unknown parameter of driver {self.name} "
                                                  f"(known: {', '.join(sorted(known)) or 'none'})"))
        for p in self.params:
            if p.name not in params:
                if p.required:
                    problems.append((f"params.{p.name}", f"missing (required by driver {self.name})"))
                continue
            v = params[p.name]
            if not _type_ok(v, p.kind):
                names = [k.__name__ for k in (p.kind if isinstance(p.kind, tuple) else (p.kind,))]
                problems.append((f"params.{p.name}", f"expected {' or '.join(names)}, got {type(v).__name__} {v!r}"))
                continue
            if p.min is not None and isinstance(v, (int, float)) and v < p.min:
                problems.append((f"params.{p.name}", f"must be at least {p.min:g}, got {v}"))
            if p.path and not (scenario_dir / str(v)).is_file():
                problems.append((f"params.{p.name}", f"no file '{v}' in the scenario folder"))
        return problems

    @abc.abstractmethod
    def version(self) -> str: ...

    @abc.abstractmethod
    def run(self, *, target: str, scenario: Scenario, workload: Workload, level: Level,
            duration_s: float, cpus: list[int], raw_path: Path | None, on_start=None,
            instance_dir: Path | None = None) -> LoadResult:
        """Drive one level. `on_start` is given the tool's pid when it runs (and
        None when it has exited). The result's send window (send_t0, send_t1)
        is in time.monotonic() seconds. `instance_dir` is the server run's own
        folder (None when there is no server run: calibration), where a tool
        may leave what the scenario's checks read (httpload's acknowledged ids)."""

    def complete(self, result: LoadResult, run: ToolRun, cpus: list[int], duration_s: float,
                 raw_file: str | None, workload: Workload) -> LoadResult:
        """Add what every driver records: tool version, exact command, the
        tool's own CPU, and the client-bound flag."""
        result.tool_version = self.version()
        result.command = run.argv
        result.duration_s = duration_s
        result.wall_s = run.wall_s
        result.tool_cpu_s = run.cpu_s
        result.tool_cpus = list(cpus)
        result.raw_file = raw_file
        result.tool_cpu_cores = result.tool_cpu_s / run.wall_s if run.wall_s > 0 else 0.0
        result.status_check = check_status_ratio(result, workload.params)
        return result

    def overhead_s(self, workload: Workload) -> float:
        """Seconds of each run that send nothing (a drain); a warm-up window adds them."""
        return 0.0

    def reference(self, workload: Workload, scenario: Scenario, *, host: str, port: int, workdir: Path,
                  threads: int) -> Reference | None:
        """The null server this driver's ceiling is measured against, answering
        in the workload's shape on host:port with `threads` threads (None: the
        driver has none; its levels then carry no ceiling)."""
        return None


def check_status_ratio(result: LoadResult, params: dict) -> str | None:
    """The mix of answers a workload expects, e.g. `status_ratio = {OK = 200,
    NotFound = 10}` for a data file of 200 known and 10 unknown titles sent
    round-robin: over N answers the count of each status may differ from
    N * share by at most one round of the data (the sum of the weights) plus
    the calls that got no answer or an error (each may have been any item)."""
    ratio = params.get("status_ratio")
    if not ratio:
        return None
    total_w = sum(ratio.values())
    answered = sum(result.status_codes.get(k, 0) for k in ratio)
    slack = total_w + result.errors + result.cut_off
    for status, w in ratio.items():
        expected = answered * w / total_w
        got = result.status_codes.get(status, 0)
        if abs(got - expected) > slack:
            return (f"{got} answers {status}, expected {expected:.0f} +- {slack} "
                    f"({w} in {total_w} of the workload's data)")
    return None
