"""wrk, the HTTP load tool, driven by a scenario's Lua script that prints a
JSON summary from its done() callback.

Workload params (scenario.toml [workloads.params]):
  script     Lua script, relative to the scenario folder (required). It
             installs harness/drivers/lua/langbench_wrk.lua (on LUA_PATH) with
             a function making request n; that module sends for the given
             seconds, drains, counts statuses and prints the JSON summary.
  path       URL path appended to http://HOST:PORT (default "/")
  ok_status  HTTP statuses that count as a correct answer (default ["200"])
  drain_s    seconds at the end of each run without new requests (default 2)
  null_status, null_body_bytes  the reference null server's answer (nginx
             from Debian, `langbench calibrate`; default: the first ok_status,
             an empty body)

wrk is closed-loop only: a rate level on a wrk workload is a manifest error.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from functools import lru_cache
from pathlib import Path

from ..errors import InputError, ToolError
from .base import Driver, LoadResult, Param, Reference, find_tool, run_pinned

LUA_DIR = Path(__file__).resolve().parent / "lua"
TIMEOUT_S = 10


class Wrk(Driver):
    name = "wrk"
    level_kinds = ("concurrency",)       # closed loop only
    params = (
        Param("script", str, required=True, path=True, help="Lua script, relative to the scenario folder"),
        Param("path", str, help="URL path (default /)"),
        Param("ok_status", list, help="HTTP statuses that count as a correct answer (default [\"200\"])"),
        Param("drain_s", float, min=0, help="seconds at the end of each run without new requests (default 2)"),
        Param("null_status", str, help="reference null server: the status it answers (default: first ok_status)"),
        Param("null_body_bytes", int, min=0, help="reference null server: body bytes (default 0)"),
    )

    @lru_cache(maxsize=1)
    def version(self) -> str:
        out = subprocess.run([find_tool("wrk"), "-v"], capture_output=True, text=True, timeout=30)
        m = re.search(r"wrk\s+(\S+)", out.stdout + out.stderr)
        return m.group(1) if m else "unknown"

    def command(self, *, target, scenario, workload, level, duration_s, cpus, nonce) -> tuple[list[str], float]:
        p = workload.params
        if "script" not in p:
            raise InputError(f"{scenario.manifest_path}: field 'workloads.{workload.name}.params.script': "
                             f"missing (required by driver wrk)")
        if level.kind != "concurrency":
            raise InputError(f"{scenario.manifest_path}: field 'profiles': wrk is closed-loop only, "
                             f"level {level.key} of workload {workload.name} is a fixed rate")
        drain = float(p.get("drain_s", 2.0))
        fire = max(0.5, duration_s - drain)
        threads = max(1, min(len(cpus), level.value))
        argv = [find_tool("wrk"), "-t", str(threads), "-c", str(level.value), "-d", f"{fire + drain:g}s",
                "--timeout", f"{TIMEOUT_S}s", "-s", str(scenario.dir / p["script"]),
                f"http://{target}{p.get('path', '/')}", "--", nonce, f"{fire:g}"]
        return argv, fire

    def overhead_s(self, workload) -> float:
        return float(workload.params.get("drain_s", 2.0))

    def run(self, *, target, scenario, workload, level, duration_s, cpus, raw_path, on_start=None,
            instance_dir=None) -> LoadResult:
        nonce = uuid.uuid4().hex[:12]
        argv, fire = self.command(target=target, scenario=scenario, workload=workload, level=level,
                                  duration_s=duration_s, cpus=cpus, nonce=nonce)
        run = run_pinned(argv, cpus, timeout_s=duration_s + 60, env={"LUA_PATH": f"{LUA_DIR}/?.lua;;"},
                         on_start=on_start)
        lines = [ln for ln in run.stdout.strip().splitlines() if ln.startswith("{")]
        if run.returncode != 0 or not lines:
            raise ToolError(f"wrk exited with code {run.returncode}: "
                            f"{(run.stderr.strip() or run.stdout.strip())[-300:]}")
        try:
            report = json.loads(lines[-1])
        except json.JSONDecodeError as exc:
            raise ToolError(f"wrk script printed invalid JSON: {exc}") from None
        if raw_path is not None:
            raw_path.write_text(json.dumps({"command": argv, "stdout": run.stdout, "summary": report}, indent=1))
        return self.complete(self.parse(report, workload, level, fire), run, cpus, duration_s,
                             str(raw_path) if raw_path is not None else None, workload)

    @staticmethod
    def parse(report: dict, workload, level, fire_s: float) -> LoadResult:
        """The Lua module's summary -> a LoadResult.

        wrk counts a request as a timeout when its answer comes after
        --timeout (and, every 2 s, again while it is still pending) but still
        completes it and calls response() with its status; so a late 200 is
        an answer, counted once as ok, and the timeout counter is kept apart
        as `late` (those answers are missing from wrk's latency histogram,
        which stops at the timeout). Errors are answers with another status
        plus connect, read and write errors.
        """
        ok_status = {str(s) for s in workload.params.get("ok_status", ["200"])}
        codes = {str(k): int(v) for k, v in (report.get("status_counts") or {}).items()}
        answered = int(report.get("requests", 0))
        ok_count = sum(v for k, v in codes.items() if k in ok_status)
        errs = report.get("errors") or {}
        socket_errors = sum(int(errs.get(k, 0)) for k in ("connect", "read", "write"))
        window = float(report.get("window_s") or 0) or fire_s
        lat = report.get("latency_us") or {}
        latency = {k: (float(lat[k]) / 1000 if k in lat and ok_count else None)
                   for k in ("p50", "p90", "p99", "p999", "max", "mean")}
        kinds = {f"HTTP {k}": v for k, v in codes.items() if k not in ok_status}
        kinds.update({f"socket {k}": int(errs.get(k, 0)) for k in ("connect", "read", "write") if int(errs.get(k, 0))})
        late = int(errs.get("timeout", 0))
        t0, t1 = float(report.get("t0") or 0), float(report.get("t1") or 0)
        return LoadResult(
            tool="wrk", tool_version="", command=[], level=level.to_json(), duration_s=0.0, wall_s=window,
            count=answered, ok_count=ok_count, errors=answered - ok_count + socket_errors,
            rps=ok_count / window if window > 0 else 0.0, latency_ms=latency, status_codes=codes,
            # wrk calls request() once before the run to check the script (thread 0),
            # so `sent` counts one request that never went out.
            error_kinds=kinds, cut_off=max(0, int(report.get("sent", answered + 1)) - 1 - answered),
            send_t0=t0 if t1 > t0 > 0 else None, send_t1=t1 if t1 > t0 > 0 else None, late=late,
            notes=[f"{late} wrk timeout count(s): answers after {TIMEOUT_S} s are not in the latency "
                   f"percentiles"] if late else [],
        )

    def reference(self, workload, scenario, *, host, port, workdir, threads) -> Reference:
        """nginx answering every request with a fixed status and body, no
        access log, keep-alive for the whole run (wrk never reconnects)."""
        p = workload.params
        status = str(p.get("null_status") or (p.get("ok_status") or ["200"])[0])
        size = int(p.get("null_body_bytes", 0))
        exe = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(exe).is_file():
            raise ToolError("nginx not found (Debian package nginx-light; run ./setup.sh)")
        out = subprocess.run([exe, "-v"], capture_output=True, text=True, timeout=30)
        m = re.search(r"nginx/(\S+)", out.stdout + out.stderr)
        conf = NGINX_CONF.format(threads=threads, dir=workdir, host=host, port=port, status=status,
                                 body="x" * size)
        return Reference(
            name="nginx", version=m.group(1) if m else "unknown",
            command=[exe, "-p", str(workdir), "-c", str(workdir / "nginx.conf"), "-e", "stderr"],
            description=f"answers every request {status} with {size} body bytes "
                        f"(return directive, {threads} worker process(es), no access log)",
            files={"nginx.conf": conf})


NGINX_CONF = """# langbench reference null server (written by harness/drivers/wrk.py)
daemon off;
master_process on;
worker_processes {threads};
pid {dir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout 120s;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen {host}:{port};
        location / {{ return {status} "{body}"; }}
    }}
}}
"""


DRIVER = Wrk()
