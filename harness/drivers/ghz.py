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
omission from ghz's per-request details (the raw ones are kept too).
"""
from __future__ import annotations

import json
import subprocess
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from ..errors import InputError, ToolError
from ..manifest import Level, Scenario, Workload
from .base import (Driver, LoadResult, correct_coordinated_omission, find_tool,
                   latency_summary, run_pinned)


CUT_OFF_MESSAGES = ("the client connection is closing", "transport is closing")


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

    def run(self, *, target, scenario, workload, level, duration_s, cpus, raw_path,
            client_bound_threshold) -> LoadResult:
        import tempfile
        tmp = None
        if raw_path is None:
            tmp = tempfile.NamedTemporaryFile(suffix=".json", delete=False)
            raw_path = Path(tmp.name)
        argv = self.command(target=target, scenario=scenario, workload=workload, level=level,
                            duration_s=duration_s, out_file=raw_path)
        run = run_pinned(argv, cpus, timeout_s=duration_s + 60)
        if run.returncode != 0 or not raw_path.exists() or raw_path.stat().st_size == 0:
            raise ToolError(f"ghz exited with code {run.returncode}: {run.stderr.strip()[-300:]}")
        try:
            report = json.loads(raw_path.read_text())
        except json.JSONDecodeError as exc:
            raise ToolError(f"ghz wrote invalid JSON to {raw_path}: {exc}") from None
        if tmp:
            raw_path.unlink(missing_ok=True)
        return self.complete(self.parse(report, workload, level), run, cpus, duration_s,
                             None if tmp else str(raw_path), client_bound_threshold)

    @staticmethod
    def parse(report: dict, workload: Workload, level: Level) -> LoadResult:
        ok_status = set(workload.params.get("ok_status", ["OK"]))
        codes = {k: int(v) for k, v in (report.get("statusCodeDistribution") or {}).items()}
        count = int(report.get("count", 0))
        ok_count = sum(v for k, v in codes.items() if k in ok_status)
        # At the end of a timed run ghz closes its connections under the calls
        # still in flight; those (at most one per worker) are cut off by the
        # tool, not failed by the server, and are not counted as errors.
        workers = level.value if level.kind == "concurrency" else (level.concurrency or 16)
        cut = sum(int(v) for k, v in (report.get("errorDistribution") or {}).items()
                  if any(m in k for m in CUT_OFF_MESSAGES))
        cut_off = min(cut, workers)
        count -= cut_off
        errors = count - ok_count
        total_s = float(report.get("total", 0)) / 1e9
        details = report.get("details") or []
        good = [d for d in details if d.get("status", "OK") in ok_status and not
                (d.get("error") and d.get("status") not in ok_status)]
        lat_s = [float(d["latency"]) / 1e9 for d in good]
        raw = latency_summary([x * 1e3 for x in lat_s])
        corrected = None
        if level.kind == "rate" and good:
            starts = [_parse_ts(d["timestamp"]) for d in good]
            corrected = latency_summary([x * 1e3 for x in
                                         correct_coordinated_omission(starts, lat_s, level.value)])
        return LoadResult(
            tool="ghz", tool_version="", command=[], level=level.to_json(), duration_s=0.0,
            wall_s=total_s, count=count, ok_count=ok_count, errors=errors,
            rps=ok_count / total_s if total_s > 0 else 0.0,
            latency_ms=corrected or raw, latency_uncorrected_ms=raw if corrected else None,
            status_codes=codes,
            error_kinds={k: int(v) for k, v in (report.get("errorDistribution") or {}).items()
                         if not any(f"code = {c}" in k for c in ok_status)},
            cut_off=cut_off,
        )


DRIVER = Ghz()
