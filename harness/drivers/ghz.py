"""ghz, the gRPC load tool, with its JSON output.

Workload params (scenario.toml [workloads.params]):
  proto      path of the .proto, relative to the scenario folder (required)
  call       fully-qualified method, e.g. notes.Noticeboard.GetNoteByTitle (required)
  data_file  JSON request data, relative to the scenario folder; an array is
             sent round-robin (required)
  ok_status  status codes that count as a correct answer (default ["OK"])
  connections  HTTP/2 connections (default: min(concurrency, 8))

Closed-loop levels run `-c N -z duration`; an open-loop level runs `--rps R`
with enough workers, and its percentiles are corrected for coordinated
omission from ghz's per-call details (the raw ones are kept too).
  status_ratio  expected mix of answers, e.g. {OK = 200, NotFound = 10}
             (checked at every level; see base.check_status_ratio)
  null_messages, null_message_bytes  the reference null server's answer
             (tools/bin/grpc-null, shared with grpcload; `langbench calibrate`)
"""
from __future__ import annotations

import json
import subprocess
import time
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from ..errors import InputError, ToolError
from ..manifest import Level, Scenario, Workload
from .base import (Driver, LoadResult, correct_coordinated_omission, find_tool, latency_summary,
                   run_pinned)
from .grpcload import GRPC_PARAMS, grpc_null_reference


CUT_OFF_MESSAGES = ("the client connection is closing", "transport is closing")
CUT_OFF_CODES = ("Canceled", "Unavailable")
CUT_OFF_MARGIN_S = 0.05
GHZ_DETAILS_CAP = 1_000_000


def _parse_ts(ts: str) -> float:
    """RFC 3339 with up to nanoseconds -> epoch seconds (float)."""
    main, frac = ts, ""
    tz = ""
    if ts.endswith("Z"):
        main, tz = ts[:-1], "+00:00"
    else:
        for sign in ("+", "-"):
            pos = ts.rfind(sign)
            if pos > 10:
                main, tz = ts[:pos], ts[pos:]
                break
    if "." in main:
        main, frac = main.split(".", 1)
    base = datetime.fromisoformat(main + tz).timestamp()
    return base + (float("0." + frac) if frac else 0.0)


class Ghz(Driver):
    name = "ghz"
    level_kinds = ("concurrency", "rate")
    params = GRPC_PARAMS

    @lru_cache(maxsize=1)
    def version(self) -> str:
        exe = find_tool("ghz")
        # A `go install`ed ghz reports "dev"; the module version is in the binary.
        try:
            out = subprocess.run(["go", "version", "-m", exe], capture_output=True, text=True,
                                 timeout=30).stdout
            for line in out.splitlines():
                parts = line.split()
                if len(parts) >= 3 and parts[0] == "mod" and parts[1] == "github.com/bojand/ghz":
                    return parts[2]
        except (OSError, subprocess.SubprocessError):
            pass
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
        return (out.stdout or out.stderr).strip()

    def command(self, *, target: str, scenario: Scenario, workload: Workload, level: Level,
                duration_s: float, out_file: Path) -> list[str]:
        p = workload.params
        for key in ("proto", "call", "data_file"):
            if key not in p:
                raise InputError(f"{scenario.manifest_path}: field 'workloads.{workload.name}.params.{key}': "
                                 f"missing (required by driver ghz)")
        conc = level.value if level.kind == "concurrency" else (level.concurrency or 16)
        conns = int(p.get("connections", min(conc, 8)))
        argv = [find_tool("ghz"), "--insecure", "--proto", str(scenario.dir / p["proto"]),
                "--call", p["call"], "--data-file", str(scenario.dir / p["data_file"]),
                "--concurrency", str(conc), "--connections", str(conns),
                "--duration", f"{duration_s:g}s", "--timeout", "10s",
                "--format", "json", "--output", str(out_file)]
        if level.kind == "rate":
            argv += ["--rps", str(level.value)]
        return argv + [target]

    def run(self, *, target, scenario, workload, level, duration_s, cpus, raw_path, on_start=None,
            instance_dir=None) -> LoadResult:
        import tempfile
        tmp = None
        if raw_path is None:
            tmp = tempfile.NamedTemporaryFile(suffix=".json", delete=False)
            raw_path = Path(tmp.name)
        argv = self.command(target=target, scenario=scenario, workload=workload, level=level,
                            duration_s=duration_s, out_file=raw_path)
        run = run_pinned(argv, cpus, timeout_s=duration_s + 60, on_start=on_start)
        offset = wall_minus_monotonic()
        if run.returncode != 0 or not raw_path.exists() or raw_path.stat().st_size == 0:
            raise ToolError(f"ghz exited with code {run.returncode}: {run.stderr.strip()[-300:]}")
        try:
            report = json.loads(raw_path.read_text())
        except json.JSONDecodeError as exc:
            raise ToolError(f"ghz wrote invalid JSON to {raw_path}: {exc}") from None
        if tmp:
            raw_path.unlink(missing_ok=True)
        return self.complete(self.parse(report, workload, level, duration_s, offset), run, cpus, duration_s,
                             None if tmp else str(raw_path), workload)

    @staticmethod
    def parse(report: dict, workload: Workload, level: Level, duration_s: float,
              clock_offset: float = 0.0) -> LoadResult:
        """ghz's JSON report -> a LoadResult.

        Every figure comes from the per-call details: `timestamp` is when the
        call *ended* (ghz's stats handler stamps stats.End's EndTime) and
        `latency` is EndTime - BeginTime, so a call began at timestamp -
        latency. Wall-clock times become monotonic ones by `clock_offset`
        (time.time() - time.monotonic() read right after the run).
        """
        ok_status = set(workload.params.get("ok_status", ["OK"]))
        details = report.get("details") or []
        count = int(report.get("count", 0))
        workers = level.value if level.kind == "concurrency" else (level.concurrency or 16)
        if len(details) < count:
            # ghz keeps at most 1,000,000 details (runner/requester.go maxResult)
            # while its count goes on: figures from a prefix would be wrong.
            raise ToolError(f"ghz kept {len(details)} call details of {count} calls (its cap is "
                            f"{GHZ_DETAILS_CAP:,}); shorten the level or lower its rate")
        calls = []
        for d in details:
            end = _parse_ts(d["timestamp"]) - clock_offset
            lat = float(d["latency"]) / 1e9
            calls.append((end - lat, end, d.get("status") or "", d.get("error") or ""))
        if not calls:
            raise ToolError("ghz made no call")
        t_first = min(c[0] for c in calls)
        t_stop = t_first + duration_s
        ok_idx, err_idx, cut_idx = [], [], []
        for i, (b, e, st, err) in enumerate(calls):
            if st in ok_status and not (err and st not in ok_status):
                ok_idx.append(i)
            elif e >= t_stop - CUT_OFF_MARGIN_S and (st in CUT_OFF_CODES or any(m in err for m in CUT_OFF_MESSAGES)):
                # In flight when ghz's duration ran out: ghz closed the
                # connection under it. Cut off by the tool, not failed by the server.
                cut_idx.append(i)
            else:
                err_idx.append(i)
        notes = []
        if len(cut_idx) > workers:
            notes.append(f"{len(cut_idx)} calls cut off at the end with {workers} workers")
        kinds: dict[str, int] = {}
        for i in err_idx:
            k = calls[i][3] or calls[i][2]
            kinds[k] = kinds.get(k, 0) + 1
        codes: dict[str, int] = {}
        for i in ok_idx + err_idx:
            codes[calls[i][2] or "(none)"] = codes.get(calls[i][2] or "(none)", 0) + 1
        send_t0 = t_first
        send_t1 = max(calls[i][1] for i in ok_idx + err_idx) if ok_idx or err_idx else max(c[1] for c in calls)
        window = send_t1 - send_t0
        raw = latency_summary([(calls[i][1] - calls[i][0]) * 1e3 for i in ok_idx])
        corrected = None
        if level.kind == "rate":
            fixed = correct_coordinated_omission([c[0] for c in calls], [c[1] for c in calls], level.value)
            corrected = latency_summary([fixed[i] * 1e3 for i in ok_idx])
        return LoadResult(
            tool="ghz", tool_version="", command=[], level=level.to_json(), duration_s=0.0,
            wall_s=window, count=len(ok_idx) + len(err_idx), ok_count=len(ok_idx), errors=len(err_idx),
            rps=len(ok_idx) / window if window > 0 else 0.0,
            latency_ms=corrected or raw, latency_uncorrected_ms=raw if corrected else None,
            status_codes=codes, error_kinds=kinds, cut_off=len(cut_idx),
            send_t0=send_t0, send_t1=send_t1, notes=notes,
        )


    def reference(self, workload, scenario, *, host, port, workdir, threads):
        return grpc_null_reference(workload, host=host, port=port, threads=threads)


def wall_minus_monotonic() -> float:
    """time.time() - time.monotonic(), the smallest-gap reading of a few."""
    best = None
    for _ in range(5):
        a = time.monotonic()
        w = time.time()
        b = time.monotonic()
        if best is None or b - a < best[0]:
            best = (b - a, w - (a + b) / 2)
    return best[1]


DRIVER = Ghz()
