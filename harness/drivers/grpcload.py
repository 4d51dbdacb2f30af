"""grpcload, langbench's own gRPC load generator (tools/grpcload, Rust on
tokio and h2), with its JSON output.

Built by setup.sh into tools/bin. Why a tool of our own: ghz spends about
20 µs of client CPU per unary call, so one client core tops out near 50k
calls/s, less than the fast servers reach on half a core (README, "Load-tool
headroom"). grpcload pre-frames every request once, reads every answer to its
grpc-status (trailers, or the headers of a trailers-only answer), counts the
answer's messages and bytes, and can check that the same request always gets
the same answer.

Workload params (scenario.toml [workloads.params]):
  proto, call, data_file, ok_status, connections, status_ratio: as for ghz
  consistent          every later answer to a request must equal the first
                      one (status, messages, bytes, a hash of the bytes);
                      a differing one is an error "inconsistent answer"
  threads             client threads (default: one per client CPU)
  null_messages       the reference null server's answer: messages per call
  null_message_bytes  ... and bytes per message (`langbench calibrate`)

Closed-loop levels: N workers over min(N, connections) connections, each
sending its next call when the last one is answered. Rate levels are open
loop: call i is due at t0 + i/rate and its latency is measured from that
time, so a server that falls behind shows it in full (no correction needed
afterwards); the latency from the actual send is kept too.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError, ToolError
from ..manifest import Level, Scenario, Workload
from .base import LOAD_METRICS, Driver, LoadResult, Metric, Param, Reference, find_tool, run_json_tool, tool_version

OPEN_LOOP_MAX_IN_FLIGHT = 4096
DEFAULT_CONNECTIONS = 8

GRPC_PARAMS = (
    Param("proto", str, required=True, path=True, help=".proto file, relative to the scenario folder"),
    Param("call", str, required=True, help="fully-qualified method, package.Service.Method"),
    Param("data_file", str, required=True, path=True, help="JSON request data (an array: round-robin)"),
    Param("ok_status", list, help="status codes that count as a correct answer (default [\"OK\"])"),
    Param("connections", int, min=1, help=f"HTTP/2 connections (default min(concurrency, {DEFAULT_CONNECTIONS}))"),
    Param("status_ratio", dict, help="expected mix of answers, e.g. {OK = 200, NotFound = 10}"),
    Param("null_messages", int, min=0, help="reference null server: messages per answer (default 1)"),
    Param("null_message_bytes", int, min=0, help="reference null server: bytes per message (default 100)"),
)


def grpc_null_reference(workload: Workload, *, host: str, port: int, threads: int) -> Reference:
    """tools/bin/grpc-null answering every call in the workload's declared shape."""
    p = workload.params
    msgs, size = int(p.get("null_messages", 1)), int(p.get("null_message_bytes", 100))
    exe = find_tool("grpc-null")
    return Reference(
        name="grpc-null", version=tool_version(exe),
        command=[exe, "--listen", f"{host}:{port}", "--messages", str(msgs), "--bytes", str(size),
                 "--threads", str(threads)],
        description=f"answers every call with {msgs} message(s) of {size} bytes and grpc-status 0 "
                    f"(hand-written HTTP/2, {threads} thread(s))")




class GrpcLoad(Driver):
    name = "grpcload"
    level_kinds = ("concurrency", "rate")
    params = GRPC_PARAMS + (
        Param("consistent", bool, help="the same request must always get the same answer"),
        Param("threads", int, min=1, help="client threads (default: one per client CPU)"),
    )
    metrics = LOAD_METRICS + (
        Metric("msgs_per_call", "msgs", "none", "answer messages per call (the workload's shape)"),
        Metric("resp_bytes_per_msg", "bytes", "none", "payload bytes per answer message"),
    )

    def version(self) -> str:
        return tool_version(find_tool("grpcload"))

    def command(self, *, target: str, scenario: Scenario, workload: Workload, level: Level,
                duration_s: float, cpus: list[int], out_file: Path) -> list[str]:
        p = workload.params
        for key in ("proto", "call", "data_file"):
            if key not in p:
                raise InputError(f"{scenario.manifest_path}: field 'workloads.{workload.name}.params.{key}': "
                                 f"missing (required by driver grpcload)")
        proto = scenario.dir / p["proto"]
        argv = [find_tool("grpcload"), "--target", target, "--proto", str(proto),
                "--import-path", str(proto.parent), "--call", p["call"],
                "--data-file", str(scenario.dir / p["data_file"]),
                "--duration", f"{duration_s:g}", "--timeout", "10",
                "--threads", str(int(p.get("threads", len(cpus)))),
                "--ok-status", ",".join(p.get("ok_status", ["OK"])), "--out", str(out_file)]
        if level.kind == "rate":
            conc = level.concurrency or OPEN_LOOP_MAX_IN_FLIGHT
            argv += ["--rate", str(level.value), "--concurrency", str(conc),
                     "--connections", str(int(p.get("connections", DEFAULT_CONNECTIONS)))]
        else:
            conc = level.value
            argv += ["--concurrency", str(conc),
                     "--connections", str(min(conc, int(p.get("connections", DEFAULT_CONNECTIONS))))]
        if p.get("consistent"):
            argv.append("--check-consistency")
        return argv

    def run(self, *, target, scenario, workload, level, duration_s, cpus, raw_path, on_start=None,
            instance_dir=None) -> LoadResult:
        report, run, raw = run_json_tool(
            "grpcload", lambda out: self.command(target=target, scenario=scenario, workload=workload, level=level,
                                                 duration_s=duration_s, cpus=cpus, out_file=out),
            cpus, duration_s + 60, raw_path, on_start)
        return self.complete(self.parse(report, level), run, cpus, duration_s, raw, workload)

    @staticmethod
    def parse(report: dict, level: Level) -> LoadResult:
        """grpcload's JSON -> a LoadResult. Its send_t0/send_t1 are
        CLOCK_MONOTONIC seconds (the clock of time.monotonic()): the first
        call sent (open loop: the first call due) and the last answer."""
        try:
            ok, errors, count = int(report["ok"]), int(report["errors"]), int(report["count"])
            t0, t1 = float(report["send_t0"]), float(report["send_t1"])
            lat = report["latency_ms"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ToolError(f"grpcload output lacks a field: {exc}") from None
        if count == 0:
            raise ToolError("grpcload made no call: " + ", ".join(f"{k}: {v}" for k, v in
                                                             (report.get("error_kinds") or {}).items()))
        window = t1 - t0
        uncorrected = report.get("latency_uncorrected_ms")
        msgs = int(report.get("messages") or 0)
        notes = []
        if report.get("delayed_by_cap"):
            notes.append(f"{report['delayed_by_cap']} calls waited for a free slot of the in-flight cap "
                         f"(their latency counts from their due time)")
        if report.get("reconnects"):
            notes.append(f"{report['reconnects']} reconnects")
        return LoadResult(
            tool="grpcload", tool_version="", command=[], level=level.to_json(), duration_s=0.0,
            wall_s=window, count=count, ok_count=ok, errors=errors,
            rps=ok / window if window > 0 else 0.0,
            latency_ms={k: (lat.get(k) if ok else None) for k in ("p50", "p90", "p99", "p999", "max", "mean")},
            latency_uncorrected_ms=uncorrected if level.kind == "rate" else None,
            status_codes={str(k): int(v) for k, v in (report.get("status_codes") or {}).items()},
            error_kinds={str(k): int(v) for k, v in (report.get("error_kinds") or {}).items()},
            cut_off=int(report.get("cut_off") or 0),
            send_t0=t0 if t1 > t0 else None, send_t1=t1 if t1 > t0 else None, notes=notes,
            extra={"msgs_per_call": round(msgs / count, 3) if count else None,
                   "resp_bytes_per_msg": round(int(report.get("response_bytes") or 0) / msgs, 1) if msgs else None,
                   "inconsistent": int(report.get("inconsistent") or 0),
                   "delayed_by_cap": int(report.get("delayed_by_cap") or 0),
                   "reconnects": int(report.get("reconnects") or 0)},
        )

    def reference(self, workload, scenario, *, host, port, workdir, threads) -> Reference:
        return grpc_null_reference(workload, host=host, port=port, threads=threads)


DRIVER = GrpcLoad()
