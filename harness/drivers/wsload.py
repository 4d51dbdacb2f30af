"""wsload, langbench's own WebSocket load generator (tools/grpcload, the
`wsload` binary; Rust on tokio), with its JSON output, and ws-null, the
reference echo server its ceiling is measured against.

Built by setup.sh into tools/bin. Why a tool of our own: no maintained
WebSocket load tool reachable from this machine's registries drives 10^5
messages/s from one core and checks every echo (k6 and artillery are
JavaScript-bound near 10^4 messages/s per core; tcpkali is not packaged for
Debian 12; websocat has no load mode).

Level kinds:
  concurrency  closed loop: that many connections, each with `inflight`
               messages in flight; every echo releases the next message
  rate         open loop: message i is due at t0 + i/rate on connection i mod
               N (N: the `connections` param, else the level's concurrency);
               latency counts from the due time
  connections  a ramp of idle connections: 0, then each of the `ramp` steps
               below the level's value, then the value itself. At each step
               the server is asked to collect garbage (GET `gc_path`), given
               `settle_s`, then held for the profile's duration while the
               harness samples its memory (the step's window)

Every echo is checked byte for byte and in order (messages are derived from
connection and sequence number); server pings are answered; close frames
are counted by code.
"""
from __future__ import annotations


from ..errors import ToolError
from ..manifest import Level, Workload
from .base import LOAD_METRICS, Driver, LoadResult, Metric, Param, Reference, find_tool, run_json_tool, tool_version

TIMEOUT_S = 10
CLOSE_WAIT_S = 2
DEFAULT_RAMP_CONNECTIONS = 1000
KINDS = ("text", "binary")




def ramp_steps(level_value: int, steps: list[int]) -> list[int]:
    """The ramp of a `connections` level: 0 (the idle server, the baseline),
    every declared step below the level's value, then the value."""
    return [0] + sorted({s for s in steps if 0 < s < level_value}) + [level_value]


class WsLoad(Driver):
    name = "wsload"
    level_kinds = ("concurrency", "rate", "connections")
    quiet_level_kinds = ("connections",)
    params = (
        Param("path", str, help="path of the opening handshake (default /connect)"),
        Param("size", int, min=1, help="bytes per message (default 2048)"),
        Param("kind", str, help='"text" (printable ASCII) or "binary" (default text)'),
        Param("inflight", int, min=1, help="closed loop: messages in flight per connection (default 1)"),
        Param("connections", int, min=1, help="open loop: connections carrying the rate (default: the level's concurrency)"),
        Param("max_inflight", int, min=1, help="open loop: in flight per connection before sends wait (default 256)"),
        Param("threads", int, min=1, help="client threads (default: one per client CPU)"),
        Param("ramp", list, help="connections levels: the steps below the level's value, e.g. [1000, 5000]"),
        Param("settle_s", float, min=0, help="connections levels: seconds between the GC request and the hold (default 2)"),
        Param("gc_path", str, help="connections levels: HTTP GET this path before each step's settle"),
        Param("max_message", int, min=1, help="largest frame accepted from the server (default 1 MiB)"),
    )
    metrics = (
        Metric("rps", "msg/s", "higher", "echoes checked (byte for byte, in order) per second over the send window"),
        *LOAD_METRICS[1:],
        Metric("server_closes", "count", "lower", "close frames the server began during the run"),
        Metric("handshake_p99_ms", "ms", "lower", "99th percentile of TCP connect + opening handshake"),
    )

    def version(self) -> str:
        return tool_version(find_tool("wsload"))

    def validate(self, params: dict, scenario_dir) -> list[tuple[str, str]]:
        problems = super().validate(params, scenario_dir)
        if isinstance(params.get("kind"), str) and params["kind"] not in KINDS:
            problems.append(("params.kind", f"'{params['kind']}' is not \"text\" or \"binary\""))
        ramp = params.get("ramp")
        if isinstance(ramp, list) and not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in ramp):
            problems.append(("params.ramp", "expected a list of positive integers"))
        return problems

    def command(self, *, target: str, workload: Workload, level: Level, duration_s: float, cpus: list[int],
                out_file) -> list[str]:
        p = workload.params
        threads = int(p.get("threads", len(cpus)))
        argv = [find_tool("wsload"), "--target", target, "--path", p.get("path", "/connect"),
                "--size", str(int(p.get("size", 2048))), "--kind", p.get("kind", "text"),
                "--timeout", str(TIMEOUT_S), "--out", str(out_file)]
        if "max_message" in p:
            argv += ["--max-message", str(int(p["max_message"]))]
        if level.kind == "connections":
            steps = ramp_steps(level.value, list(p.get("ramp", [])))
            argv += ["--ramp", ",".join(map(str, steps)), "--hold", f"{duration_s:g}",
                     "--settle", f"{float(p.get('settle_s', 2)):g}", "--threads", str(threads)]
            if p.get("gc_path"):
                argv += ["--gc-path", p["gc_path"]]
            return argv
        argv += ["--duration", f"{duration_s:g}"]
        if level.kind == "rate":
            conns = int(p.get("connections", level.concurrency or 1000))
            argv += ["--rate", str(level.value), "--connections", str(conns),
                     "--max-inflight", str(int(p.get("max_inflight", 256)))]
        else:
            conns = level.value
            argv += ["--connections", str(conns), "--inflight", str(int(p.get("inflight", 1)))]
        return argv + ["--threads", str(min(threads, conns))]

    def _timeout(self, workload: Workload, level: Level, duration_s: float) -> float:
        if level.kind == "connections":
            steps = ramp_steps(level.value, list(workload.params.get("ramp", [])))
            settle = float(workload.params.get("settle_s", 2))
            # each step: opening (bounded by the handshake timeout), GC, settle, hold
            return len(steps) * (duration_s + settle + 2 * TIMEOUT_S + 30) + CLOSE_WAIT_S + 60
        return duration_s + TIMEOUT_S + CLOSE_WAIT_S + 60

    def run(self, *, target, scenario, workload, level, duration_s, cpus, raw_path, on_start=None,
            instance_dir=None) -> LoadResult:
        report, run, raw = run_json_tool(
            "wsload", lambda out: self.command(target=target, workload=workload, level=level, duration_s=duration_s,
                                               cpus=cpus, out_file=out),
            cpus, self._timeout(workload, level, duration_s), raw_path, on_start)
        return self.complete(self.parse(report, level), run, cpus, duration_s, raw, workload)

    @staticmethod
    def parse(report: dict, level: Level) -> LoadResult:
        """wsload's JSON -> a LoadResult. send_t0/send_t1 and the steps' t0/t1
        are CLOCK_MONOTONIC seconds (time.monotonic()'s clock)."""
        try:
            ok, errors, count = int(report["ok"]), int(report["errors"]), int(report["count"])
            t0, t1 = report["send_t0"], report["send_t1"]
            lat = report["latency_ms"] or {}
            kinds = {str(k): int(v) for k, v in (report.get("error_kinds") or {}).items()}
            closes = {str(k): int(v) for k, v in (report.get("closes") or {}).items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise ToolError(f"wsload output lacks a field: {exc}") from None
        ramp = level.kind == "connections"
        if count == 0 and not ramp:
            raise ToolError("wsload sent no message: " + (", ".join(f"{k}: {v}" for k, v in kinds.items())
                                                          or "no connection"))
        window = (t1 - t0) if t0 is not None and t1 is not None else 0.0
        notes, problems = [], []
        wrong = sum(v for k, v in kinds.items() if k.startswith("echo:") or k.startswith("ws:"))
        if wrong:
            problems.append(f"{wrong} echoes were not what was sent, or broke the protocol "
                            f"({', '.join(k for k in kinds if k.startswith(('echo:', 'ws:')))})")
        if report.get("late"):
            notes.append(f"{report['late']} messages went out more than 1 ms after their due time "
                         f"(their latency counts from the due time)")
        if report.get("unsent"):
            notes.append(f"{report['unsent']} due messages were never sent (their connection was down)")
        if report.get("reconnects"):
            notes.append(f"{report['reconnects']} reconnects")
        steps = []
        if ramp:
            for st in report.get("steps") or []:
                n = int(st["connections"])
                row = {"name": f"{n} open", "t0": st["t0"], "t1": st["t1"], "connections": n,
                       "open": int(st["open"]), "failed": int(st["failed"]), "open_s": st["open_s"],
                       "gc": st.get("gc"),
                       # TCP sockets and their buffers' kernel memory in the
                       # load tool's network namespace (the harness adds the
                       # server's namespace: server_tcp_sockets, ..._buffers_mb)
                       "tcp_sockets": st.get("tcp_inuse"),
                       "tcp_buffers_mb": (st["tcp_mem_bytes"] / 1e6 if st.get("tcp_mem_bytes") is not None
                                          else None)}
                steps.append(row)
                if row["open"] < n:
                    problems.append(f"{n - row['open']} of {n} connections were not open at the end of the "
                                    f"{n}-connection step ({row['failed']} failed to open)")
                gc = st.get("gc")
                if gc is not None and not (isinstance(gc, str) and gc.startswith("2")):
                    problems.append(f"the GC request before the {n}-connection step was answered {gc}")
        hs = report.get("handshake_ms") or {}
        return LoadResult(
            tool="wsload", tool_version="", command=[], level=level.to_json(), duration_s=0.0,
            wall_s=window, count=count, ok_count=ok, errors=errors,
            rps=ok / window if window > 0 and not ramp else 0.0,
            latency_ms={k: (lat.get(k) if ok else None) for k in ("p50", "p90", "p99", "p999", "max", "mean")},
            latency_uncorrected_ms=report.get("latency_uncorrected_ms") if level.kind == "rate" else None,
            status_codes={}, error_kinds=kinds, cut_off=int(report.get("cut_off") or 0),
            late=int(report.get("late") or 0),
            send_t0=t0 if window > 0 else None, send_t1=t1 if window > 0 else None, notes=notes,
            problem="; ".join(problems) or None,
            extra={"server_closes": int(report.get("server_closes") or 0),
                   "handshake_p99_ms": hs.get("p99"),
                   "close_unanswered": int(report.get("close_unanswered") or 0),
                   "dropped": int(report.get("dropped") or 0), "pings": int(report.get("pings") or 0),
                   "unsent": int(report.get("unsent") or 0), "sent": int(report.get("sent") or 0),
                   "connects": int(report.get("connects") or 0), "reconnects": int(report.get("reconnects") or 0),
                   "bytes_sent": int(report.get("bytes_sent") or 0),
                   "bytes_received": int(report.get("bytes_received") or 0)},
            detail={"closes": closes, "handshake_ms": hs,
                    "per_second": report.get("per_second") or [],
                    "per_second_latency_ms": report.get("per_second_latency_ms") or []},
            steps=steps,
        )

    def reference(self, workload, scenario, *, host, port, workdir, threads) -> Reference:
        exe = find_tool("ws-null")
        return Reference(
            name="ws-null", version=tool_version(exe),
            command=[exe, "--listen", f"{host}:{port}", "--threads", str(threads)],
            description=f"echoes every frame as it came (hand-written, tokio, {threads} thread(s)); "
                        f"no UTF-8 check, no idle timeout, no GC")


DRIVER = WsLoad()
