"""httpload, langbench's own HTTP/1.1 load generator (tools/grpcload, the
`httpload` binary; Rust on tokio), with its JSON output.

Built by setup.sh into tools/bin. Why a tool of our own: wrk builds each
request in Lua, and a unique 2 KB POST per request costs it so much client
CPU that one core stops near 40k requests/s, below what the fast servers
reach on half a core (README, "Load-tool headroom"). httpload builds request
n of connection c itself: the id `<nonce>-<c>-<n>` in a header and in the
path, and a body derived from that id (the id, a colon, and a slice of a
fixed 4 MiB xorshift32 pool: blackhole.py's body_for), reads every answer's
status, and counts exactly: every request is answered, failed, or cut off.

Workload params (scenario.toml [workloads.params]):
  method       request method (default POST)
  path         path template: {conn}, {n}, {id}, {nonce} (default /)
  id_header    header carrying the request id (default none)
  body         "pool" (derived from the id, as above) or "none" (default)
  body_bytes   body size for body = "pool" (default 2048)
  headers      extra header lines, ["Name: value", ...]
  ok_status    statuses that count as a correct answer (default ["200"])
  threads      client threads (default: one per client CPU)
  acked_ids    true: httpload writes the id of every request answered with an
               ok status to <instance folder>/acked/<nonce>.txt (--acked-out),
               for the scenario's checks (pipeline: every acknowledged
               operation is in the ledger exactly once)
  null_status, null_body_bytes  the reference null server's answer (nginx,
               as for wrk)

Closed-loop levels: N connections, one request in flight on each (wrk's -c
N). Rate levels are open loop: request i is due at t0 + i/rate on a pool of
connections (the level's concurrency) and its latency counts from that time.
"""
from __future__ import annotations

import uuid
from pathlib import Path

from ..errors import ToolError
from ..manifest import Level, Workload
from .base import Driver, LoadResult, Param, Reference, find_tool, run_json_tool, tool_version
from .wrk import DRIVER as WRK

TIMEOUT_S = 10
OPEN_LOOP_CONNECTIONS = 256




class HttpLoad(Driver):
    name = "httpload"
    level_kinds = ("concurrency", "rate")
    params = (
        Param("method", str, help="request method (default POST)"),
        Param("path", str, help="path template with {conn}, {n}, {id}, {nonce} (default /)"),
        Param("id_header", str, help="header that carries the request id <nonce>-<conn>-<n>"),
        Param("body", str, help='"pool" (derived from the id) or "none" (default)'),
        Param("body_bytes", int, min=0, help="body size with body = \"pool\" (default 2048)"),
        Param("headers", list, help="extra header lines, [\"Name: value\", ...]"),
        Param("ok_status", list, help="HTTP statuses that count as a correct answer (default [\"200\"])"),
        Param("threads", int, min=1, help="client threads (default: one per client CPU)"),
        Param("acked_ids", bool, help="write the ids answered with an ok status to <instance folder>/acked/"),
        Param("null_status", str, help="reference null server: the status it answers (default: first ok_status)"),
        Param("null_body_bytes", int, min=0, help="reference null server: body bytes (default 0)"),
    )

    def version(self) -> str:
        return tool_version(find_tool("httpload"))

    def validate(self, params: dict, scenario_dir: Path) -> list[tuple[str, str]]:
        problems = super().validate(params, scenario_dir)
        if isinstance(params.get("body"), str) and params["body"] not in ("pool", "none"):
            problems.append(("params.body", f"'{params['body']}' is not \"pool\" or \"none\""))
        return problems

    def command(self, *, target: str, workload: Workload, level: Level, duration_s: float, cpus: list[int],
                out_file: Path, nonce: str, acked_file: Path | None = None) -> list[str]:
        p = workload.params
        argv = [find_tool("httpload"), "--target", target, "--duration", f"{duration_s:g}",
                "--drain-timeout", str(TIMEOUT_S), "--threads", str(int(p.get("threads", len(cpus)))),
                "--method", p.get("method", "POST"), "--path", p.get("path", "/"),
                "--body", p.get("body", "none"), "--body-bytes", str(int(p.get("body_bytes", 2048))),
                "--nonce", nonce, "--ok-status", ",".join(str(s) for s in p.get("ok_status", ["200"])),
                "--out", str(out_file)]
        if p.get("id_header"):
            argv += ["--id-header", p["id_header"]]
        if acked_file is not None:
            argv += ["--acked-out", str(acked_file)]
        for h in p.get("headers", []):
            argv += ["--header", str(h)]
        if level.kind == "rate":
            argv += ["--rate", str(level.value), "--connections",
                     str(level.concurrency or OPEN_LOOP_CONNECTIONS)]
        else:
            argv += ["--connections", str(level.value)]
        return argv

    def run(self, *, target, scenario, workload, level, duration_s, cpus, raw_path, on_start=None,
            instance_dir=None) -> LoadResult:
        # the nonce is part of every request id: ids never repeat across levels
        nonce = uuid.uuid4().hex[:12]
        acked = None
        if workload.params.get("acked_ids") and instance_dir is not None:
            acked = Path(instance_dir) / "acked" / f"{nonce}.txt"
            acked.parent.mkdir(parents=True, exist_ok=True)
        report, run, raw = run_json_tool(
            "httpload", lambda out: self.command(target=target, workload=workload, level=level, duration_s=duration_s,
                                                 cpus=cpus, out_file=out, nonce=nonce, acked_file=acked),
            cpus, duration_s + TIMEOUT_S + 60, raw_path, on_start)
        return self.complete(self.parse(report, level), run, cpus, duration_s, raw, workload)

    @staticmethod
    def parse(report: dict, level: Level) -> LoadResult:
        """httpload's JSON -> a LoadResult. send_t0/send_t1 are CLOCK_MONOTONIC
        seconds (time.monotonic()'s clock): the first request written (open
        loop: the first one due) and the last answer read."""
        try:
            ok, errors, count = int(report["ok"]), int(report["errors"]), int(report["count"])
            t0, t1 = float(report["send_t0"]), float(report["send_t1"])
            lat = report["latency_ms"] or {}
        except (KeyError, TypeError, ValueError) as exc:
            raise ToolError(f"httpload output lacks a field: {exc}") from None
        if count == 0:
            raise ToolError("httpload made no request: " + ", ".join(
                f"{k}: {v}" for k, v in (report.get("error_kinds") or {}).items()))
        window = t1 - t0
        notes = []
        if report.get("delayed_by_cap"):
            notes.append(f"{report['delayed_by_cap']} requests waited for a free connection (their latency "
                         f"counts from their due time)")
        if report.get("reconnects"):
            notes.append(f"{report['reconnects']} reconnects")
        return LoadResult(
            tool="httpload", tool_version="", command=[], level=level.to_json(), duration_s=0.0,
            wall_s=window, count=count, ok_count=ok, errors=errors,
            rps=ok / window if window > 0 else 0.0,
            latency_ms={k: (lat.get(k) if ok else None) for k in ("p50", "p90", "p99", "p999", "max", "mean")},
            latency_uncorrected_ms=report.get("latency_uncorrected_ms") if level.kind == "rate" else None,
            status_codes={str(k): int(v) for k, v in (report.get("status_codes") or {}).items()},
            error_kinds={str(k): int(v) for k, v in (report.get("error_kinds") or {}).items()},
            cut_off=int(report.get("cut_off") or 0), late=int(report.get("late") or 0),
            send_t0=t0 if t1 > t0 else None, send_t1=t1 if t1 > t0 else None, notes=notes,
            extra={"reconnects": int(report.get("reconnects") or 0),
                   "delayed_by_cap": int(report.get("delayed_by_cap") or 0)},
            # answers with an ok status in each second after send_t0 (for a
            # fault's throughput series and recovery time)
            detail={"per_second": [int(x) for x in report.get("per_second") or []]},
        )

    def reference(self, workload, scenario, *, host, port, workdir, threads) -> Reference:
        """nginx, as for wrk: every request answered with the workload's status."""
        return WRK.reference(workload, scenario, host=host, port=port, workdir=workdir, threads=threads)


DRIVER = HttpLoad()
