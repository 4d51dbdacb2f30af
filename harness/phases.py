"""One server run as an explicit sequence of phases over a typed context.

    before -> start -> ready -> verify -> interop -> idle -> load (per workload:
    warm-up, then every level, a fault schedule beside the driver, the
    after-load check) -> stop -> after-stop

`InstanceRun.run()` reads straight through that list. Each phase is a method
taking the `Instance` context; what it measures goes into `Instance.record`
(the instance's entry in results.json) and, for load levels, into one
measurement each. Correct answers are counted in one place
(`Instance.count_ok`). A phase that fails raises `PhaseFailed` (the
implementation is marked failed at that stage, the rest of the run goes on);
stop and after-stop always run for a server that was started.
"""
from __future__ import annotations

import shutil
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import sampling
from .checks import run_verdict
from .drivers import get_driver
from .errors import LangbenchError, QuotaError, ServerError, ToolError
from .limits import nofile_target
from .manifest import Fault, Implementation, Level, Scenario, Workload, expand
from .probe import Probe, analyse
from .readiness import wait_ready
from .runtimes import LaunchSpec, ServerHandle

if TYPE_CHECKING:  # pragma: no cover
    from .runner import PlanItem, Runner

WARMUP_STEADY_WINDOWS = 3
MEMORY_EVERY = 3          # memory at a third of the sampling rate: 3.3 Hz at 10 Hz
PHASES = ("before", "start", "ready", "verify", "interop", "idle", "load", "stop", "after-stop")


class PhaseFailed(Exception):
    """A phase failed: the implementation fails at `stage` with this message."""

    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage


@dataclass
class Instance:
    """Everything one server run knows while it runs."""

    scenario: Scenario
    impl: Implementation
    trial: int
    key: str                       # unique per server start
    host: str
    port: int
    folder: Path                   # the server's own writable folder
    placeholders: dict[str, str]
    record: dict                   # its entry in results.json (instances[])
    spec: LaunchSpec | None = None
    handle: ServerHandle | None = None
    probe: Probe | None = None
    sampler: sampling.Sampler | None = None
    t_start: float = 0.0           # monotonic time sampling began (phase times are relative to it)
    stop_result: object | None = None
    phase: str = "before"

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def count_ok(self, n: int) -> None:
        """Correct answers this server gave (probe, checks, warm-up, levels):
        what after-load and after-stop checks compare against."""
        self.record["ok_total"] += int(n)

    @property
    def ok_total(self) -> int:
        return self.record["ok_total"]

    def mark_phase(self, name: str, t0: float, t1: float) -> None:
        self.record["phases"].append({"name": name, "t0": t0 - self.t_start, "t1": t1 - self.t_start})


class FaultSchedule:
    """Stop, kill, start or restart a service at fractions of a load window,
    in a thread beside the driver. Armed when the load tool starts (its send
    window begins within milliseconds); every action is recorded with its
    time, and marked in the instance's time series."""

    def __init__(self, faults: list[Fault], duration_s: float, act, clock=time.monotonic):
        self.faults = sorted(faults, key=lambda f: f.at)
        self.duration_s = duration_s
        self.act = act                 # act(fault) -> str detail; raises on failure
        self.clock = clock
        self.events: list[dict] = []
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()

    def arm(self) -> None:
        if self._thread is not None or not self.faults:
            return
        t0 = self.clock()
        self._thread = threading.Thread(target=self._run, args=(t0,), daemon=True, name="langbench-faults")
        self._thread.start()

    def _run(self, t0: float) -> None:
        for f in self.faults:
            delay = t0 + f.at * self.duration_s - self.clock()
            if delay > 0 and self._cancel.wait(delay):
                return
            t = self.clock()
            try:
                detail = self.act(f)
                ok = True
            except Exception as exc:  # noqa: BLE001 - a failed fault is recorded, the level judges
                detail, ok = f"{type(exc).__name__}: {exc}", False
            self.events.append({"at": f.at, "action": f.action, "target": f.target, "t": t,
                                "took_s": self.clock() - t, "ok": ok, "detail": detail})

    def finish(self, timeout_s: float = 60.0) -> list[dict]:
        """Wait for actions still due (a restart after the tool ended is cancelled)."""
        if self._thread is not None:
            self._cancel.set()
            self._thread.join(timeout=timeout_s)
        return self.events


class InstanceRun:
    """One server run of a plan item, phase by phase."""

    def __init__(self, run: "Runner", item: "PlanItem"):
        self.run_ = run
        self.item = item

    # ------------------------------------------------------------------ the sequence
    def run(self) -> Instance:
        r = self.run_
        ctx = self._new_instance()
        try:
            for name, phase in (("before", self.before), ("start", self.start), ("ready", self.ready),
                                ("verify", self.verify), ("interop", self.interop), ("idle", self.idle),
                                ("load", self.load)):
                ctx.phase = name
                phase(ctx)
        except PhaseFailed as exc:
            ctx.record["error"] = str(exc) if exc.stage != "verify" else f"verification failed: {exc}"
            ctx.record["crashed"] = ctx.handle is not None and not ctx.handle.alive()
            r.fail(ctx.impl, exc.stage, str(exc))
        except ServerError as exc:
            ctx.record["error"] = str(exc)
            ctx.record["crashed"] = ctx.handle is not None and not ctx.handle.alive()
            r.fail(ctx.impl, "run", str(exc))
        finally:
            self._end_sampling(ctx)
            ctx.phase = "stop"
            self.stop(ctx)
            ctx.phase = "after-stop"
            self.after_stop(ctx)
            self._tidy_folder(ctx)
            r.store.save()
        return ctx

    def _new_instance(self) -> Instance:
        r, sc, impl, trial = self.run_, self.item.scenario, self.item.impl, self.item.trial
        host = r.runtime.address("server")
        port = r.runtime.free_port("server")
        key = f"{r.run_id}-{sc.name}-{impl.name}-t{trial}"
        ph = r.placeholders(impl, port)
        ph["instance"] = f"{impl.name}-t{trial}-{uuid.uuid4().hex[:6]}"
        # the instance's own writable folder: the same path in both runtimes
        folder = r.out_dir / "instances" / f"{sc.name}-{impl.name}-t{trial}"
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o777)          # container users (65532...) write here too
        ph["instance_dir"] = str(folder)
        if r.services is not None:
            ph.update(r.services.placeholders())
        env = {"HOST": host, "PORT": str(port), "LANGBENCH_CPUS": str(len(r.layout.server)),
               "LANGBENCH_INSTANCE_DIR": str(folder)}
        env.update({k: expand(v, ph) for k, v in sc.env.items()})
        env.update({k: expand(v, ph) for k, v in impl.run_env.items()})
        spec = LaunchSpec(run_id=r.run_id, key=key, impl=impl, scenario=sc, host=host, port=port,
                          cpus=r.layout.server, cpu_quota=r.profile.server_cpu_quota, env=env,
                          command=[expand(a, ph) for a in impl.run],
                          log_path=r.logs / f"server-{sc.name}-{impl.name}-t{trial}.log",
                          labels={"langbench.run": r.run_id, "langbench.impl": impl.id},
                          cfs_period_us=r.profile.cfs_period_us, mounts={str(folder): "rw"},
                          nofile=nofile_target(), role="server")
        record = {"key": key, "scenario": sc.name, "implementation_id": impl.id, "trial": trial,
                  "port": port, "command": spec.command, "env": env, "log": str(spec.log_path),
                  "startup_ms": None, "verify": None, "idle": None, "shutdown": None,
                  "crashed": False, "error": None, "phases": [], "timeseries": None,
                  "instance_tag": ph["instance"], "ok_total": 0, "instance_dir": str(folder),
                  "nofile": spec.nofile, "after_stop": None}
        r.store.add_instance(record)
        return Instance(sc, impl, trial, key, host, port, folder, ph, record, spec=spec)

    def _say(self, ctx: Instance, msg: str) -> None:
        self.run_.progress(f"{ctx.impl.id} trial {ctx.trial}: {msg}")

    # ------------------------------------------------------------------ phases
    def before(self, ctx: Instance) -> None:
        """The scenario's hook before every server start (a fresh topic...)."""
        sc = ctx.scenario
        self._say(ctx, f"starting on {ctx.target}")
        if sc.before_instance is None:
            return
        argv = [expand(a, ctx.placeholders) for a in sc.before_instance.command]
        try:
            proc = subprocess.run(argv, cwd=sc.dir, capture_output=True, text=True,
                                  timeout=sc.before_instance.timeout_s, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ServerError(f"before_instance hook failed: {exc}") from None
        if proc.returncode != 0:
            tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or [""]
            raise ServerError(f"before_instance hook exited with code {proc.returncode}: {tail[0][:300]}")

    def start(self, ctx: Instance) -> None:
        r = self.run_
        try:
            ctx.handle = r.runtime.start(ctx.spec)
        except (OSError, LangbenchError) as exc:
            raise ServerError(f"could not start {ctx.spec.command[0]}: {exc}") from None
        r.live[ctx.key] = ctx.handle
        ctx.record["runtime"] = ctx.handle.describe()
        ctx.record["quota"] = self._check_applied_quota(ctx.handle)

    def ready(self, ctx: Instance) -> None:
        sc, h = ctx.scenario, ctx.handle
        startup = wait_ready(sc.readiness, ctx.host, ctx.port, h.alive,
                             lambda: f"exit code {h.exit_code()}; log: {h.log_tail()}", h.started_at)
        ctx.record["startup_ms"] = startup * 1000
        if sc.readiness.params.get("counts_as_ok"):
            ctx.count_ok(1)      # the probe's own successful request (an event, say)
        self._say(ctx, f"ready in {startup * 1000:.0f} ms")

    def verify(self, ctx: Instance) -> None:
        """Every verification step; services named by a step are stopped while it runs."""
        r, sc = self.run_, ctx.scenario
        rec = ctx.record
        if not sc.verify:
            rec["verify"] = {"ok": True, "detail": "scenario declares no verification", "checks": []}
            return
        steps: list[dict] = []
        rec["verify"] = {"ok": False, "detail": "", "checks": [], "steps": steps}
        for step in sc.verify:
            for name in step.stop_services:
                self._say(ctx, f"stopping service {name} for check '{step.name}'")
                r.services.stop(name)
            try:
                v = run_verdict([expand(a, ctx.placeholders) for a in step.command], sc.dir, step.timeout_s,
                                cpus=r.layout.client)
            finally:
                for name in step.stop_services:
                    r.services.restart(name)
            steps.append({"name": step.name, **v.to_json()})
            rec["verify"]["checks"] += v.checks
            ctx.count_ok(v.produced)
            r.store.save()
            if not v.ok:
                rec["verify"]["detail"] = f"{step.name}: {v.detail}"
                raise PhaseFailed("verify", rec["verify"]["detail"])
        n = len(rec["verify"]["checks"])
        rec["verify"].update(ok=True, detail=f"{n}/{n} checks passed")
        r.store.save()
        self._say(ctx, f"verified ({rec['verify']['detail']})")

    def interop(self, ctx: Instance) -> None:
        r = self.run_
        if ctx.trial == 1 and ctx.scenario.interop is not None and r.interop:
            r._interop_column(ctx.scenario, ctx.impl, ctx.port)

    def idle(self, ctx: Instance) -> None:
        """Start sampling; the idle window: the server started, verified and untouched."""
        r = self.run_
        ctx.probe = Probe(ctx.handle, r.layout.client, r.layout.server)
        ctx.sampler = sampling.Sampler(ctx.probe.counters, ctx.handle.memory_bytes, r.profile.sample_hz,
                                       memory_every=MEMORY_EVERY).start()
        ctx.probe.on_tool_exit = ctx.sampler.mark
        ctx.t_start = time.monotonic()
        sa = r.services.marks() if r.services else {}
        a = ctx.sampler.mark()
        time.sleep(r.profile.idle_s)
        b = ctx.sampler.mark()
        sb = r.services.marks() if r.services else {}
        samples = ctx.sampler.snapshot()
        win = self._window(samples, a.t, b.t)
        ctx.record["idle"] = {"window_s": b.t - a.t, "cpu_cores": win["cpu_cores"],
                              "rss_mb": sampling.memory_stats(sampling.window(samples, a.t, b.t))["mean_mb"],
                              "noise": win["noise"], "client": win["client"]}
        if sa:
            ctx.record["idle"]["services"] = r.services.window(sa, sb)
        ctx.mark_phase("idle", a.t, b.t)
        r.store.save()

    def load(self, ctx: Instance) -> None:
        for w in ctx.scenario.workloads:
            self.workload(ctx, w)

    def stop(self, ctx: Instance) -> None:
        r, h = self.run_, ctx.handle
        if h is None:
            return
        crashed_before = not h.alive()
        res = h.stop(grace_s=5.0)
        r.live.pop(ctx.key, None)
        ctx.stop_result = res
        ctx.record["shutdown"] = {"exit_code": res.exit_code, "shutdown_ms": res.shutdown_s * 1000,
                                  "killed": res.killed, "was_running": not crashed_before}
        if not crashed_before:
            self._say(ctx, f"stopped in {res.shutdown_s * 1000:.0f} ms, "
                           f"exit {res.exit_code if not res.killed else 'killed after 5 s'}")

    def after_stop(self, ctx: Instance) -> None:
        """The scenario's check once the server has stopped (files a clean
        SIGTERM finalises...), with the instance folder and the counts."""
        r, sc = self.run_, ctx.scenario
        if sc.after_stop is None or ctx.record["startup_ms"] is None or ctx.stop_result is None:
            return
        if not ctx.record["shutdown"]["was_running"]:
            return                  # it had crashed: no clean stop to check (the instance failed already)
        code = ctx.stop_result.exit_code
        values = {**ctx.placeholders, "ok_total": str(ctx.ok_total), "exit_code": "" if code is None else str(code)}
        v = run_verdict([expand(a, values) for a in sc.after_stop.command], sc.dir, sc.after_stop.timeout_s,
                        cpus=r.layout.client)
        ctx.record["after_stop"] = v.to_json()
        self._say(ctx, f"after-stop check {'passed' if v.ok else 'FAILED'}: {v.detail}")
        if not v.ok and ctx.record["error"] is None:
            ctx.record["error"] = f"check after stop failed: {v.detail}"
            r.fail(ctx.impl, "after-stop", v.detail)

    # ------------------------------------------------------------------ helpers
    def _end_sampling(self, ctx: Instance) -> None:
        r, s = self.run_, ctx.sampler
        if s is None:
            return
        s.stop()
        samples = s.snapshot()
        if samples:
            ctx.record["timeseries"] = sampling.timeseries(samples, samples[0].t)
        r.store.data["harness_overhead"].append(
            {"instance": ctx.key, "sampler_cpu_s": s.own_cpu_s, "wall_s": s.wall_s,
             "cores": s.overhead_cores(), "samples": len(samples), "hz": r.profile.sample_hz})

    def _tidy_folder(self, ctx: Instance) -> None:
        """Record what the server left in its folder; remove the folder unless
        the instance failed or the run keeps instance files."""
        files = [f for f in ctx.folder.rglob("*") if f.is_file()]
        kept = bool(files) and (self.run_.keep_instance_files or ctx.record["error"] is not None)
        ctx.record["instance_files"] = {"count": len(files), "bytes": sum(f.stat().st_size for f in files),
                                        "kept": kept}
        if not kept:
            shutil.rmtree(ctx.folder, ignore_errors=True)

    def _check_applied_quota(self, handle: ServerHandle) -> dict:
        """The quota the kernel holds for this server, read back; a quota the
        profile declares but that is not in force stops the run (exit 2)
        unless the user allowed running uncapped."""
        r = self.run_
        want, period = r.profile.server_cpu_quota, r.profile.cfs_period_us
        try:
            got = handle.quota_applied()
        except OSError:
            got = None
        applied, applied_period = got if got is not None else (None, None)
        ok = want is None or (applied is not None and abs(applied - want) < 0.01 and applied_period == period)
        if not ok and not r.allow_uncapped:
            raise QuotaError(f"the server's CPU quota is not in force: wanted {want} cores over {period} µs, "
                             f"the kernel holds {applied} cores over {applied_period} µs; pass --allow-uncapped "
                             f"to measure anyway (recorded in every row)")
        return {"cpu_quota_requested": want, "cpu_quota_applied": applied, "cfs_period_us": applied_period,
                "in_force": ok}

    def _after_load(self, ctx: Instance) -> dict | None:
        """The scenario's check after a load phase, told how many correct answers were counted."""
        sc = ctx.scenario
        if sc.after_load is None:
            return None
        v = run_verdict([expand(a, {**ctx.placeholders, "ok_total": str(ctx.ok_total)})
                         for a in sc.after_load.command],
                        sc.dir, sc.after_load.timeout_s, cpus=self.run_.layout.client)
        return v.to_json()

    def _window(self, samples, t0: float, t1: float) -> dict:
        p, layout = self.run_.profile, self.run_.layout
        return analyse(samples, t0, t1, len(layout.client), client_bound_share=p.client_bound_threshold,
                       noisy_foreign_cores=p.noisy_foreign_cores, noisy_steal_cores=p.noisy_steal_cores)

    def _driver_args(self, ctx: Instance, w: Workload, on_start) -> dict:
        return dict(target=ctx.target, scenario=ctx.scenario, workload=w, cpus=self.run_.layout.client,
                    on_start=on_start)

    # ------------------------------------------------------------------ load
    def warmup(self, ctx: Instance, driver, w: Workload) -> None:
        """Load at the top concurrency in windows until the last three windows'
        throughput lies within the profile's tolerance of each other (max/min;
        two windows are not enough: a JIT's ramp has plateaus), and the
        scenario's minimum warm-up has passed, or the cap is reached. The same
        rule for every implementation; what it took is recorded."""
        r = self.run_
        p = r.profile
        levels = ctx.scenario.profiles[r.profile_name]
        top = max(levels.concurrency or [16])
        window = p.warmup_window_s + driver.overhead_s(w)
        common = self._driver_args(ctx, w, ctx.probe.watch_tool)
        t0 = time.monotonic()
        rps: list[float] = []
        steady = False
        while True:
            try:
                res = driver.run(level=Level("concurrency", top), duration_s=window, raw_path=None, **common)
                ctx.count_ok(res.ok_count)
                rps.append(res.rps)
            except ToolError as exc:
                r.store.event("warning", f"warm-up window failed: {exc}", implementation=ctx.impl.id,
                              workload=w.name)
                rps.append(0.0)
            spent = time.monotonic() - t0
            last = rps[-WARMUP_STEADY_WINDOWS:]
            if len(last) == WARMUP_STEADY_WINDOWS and min(last) > 0 \
                    and max(last) / min(last) - 1 <= p.warmup_tolerance and spent >= levels.warmup_s:
                steady = True
                break
            if spent + window > max(p.warmup_max_s, levels.warmup_s):
                break
        spent = time.monotonic() - t0
        ctx.record.setdefault("warmup", {})[w.name] = {
            "seconds": spent, "windows": len(rps), "window_s": window, "concurrency": top,
            "rps": [round(x, 1) for x in rps], "steady": steady,
            "rule": f"{WARMUP_STEADY_WINDOWS} consecutive {p.warmup_window_s:g} s windows within "
                    f"{p.warmup_tolerance:.0%} of each other (max/min), "
                    f"at least {levels.warmup_s:g} s, at most {p.warmup_max_s:g} s"}
        r.progress(f"{ctx.impl.id} t{ctx.trial} {w.name}: warm-up "
                   f"{'steady' if steady else 'NOT steady (cap reached)'} after {spent:.1f} s "
                   f"({', '.join(f'{x:.0f}' for x in rps)} rps)")
        check = self._after_load(ctx)
        if check is not None and not check["ok"]:
            raise ServerError(f"check after the {w.name} warm-up failed: {check['detail']}")
        ctx.mark_phase(f"{w.name} warm-up", t0, time.monotonic())

    def workload(self, ctx: Instance, w: Workload) -> None:
        r = self.run_
        driver = get_driver(w.driver)
        levels = ctx.scenario.profiles[r.profile_name]
        if levels.warmup_s > 0 and "concurrency" in driver.level_kinds:
            self.warmup(ctx, driver, w)
        for level in levels.levels(driver.level_kinds):
            if not ctx.handle.alive():
                raise ServerError(f"server died during workload {w.name} "
                                  f"(exit code {ctx.handle.exit_code()}; log: {ctx.handle.log_tail()})")
            self.level(ctx, driver, w, level, levels.duration_s)

    def _act(self, fault: Fault) -> str:
        """Carry out one fault on a scenario service."""
        svc = self.run_.services
        if svc is None or fault.target not in svc.running:
            raise ServerError(f"no running service '{fault.target}'")
        t0 = time.monotonic()
        if fault.action == "stop":
            svc.stop(fault.target)
        elif fault.action == "kill":
            svc.stop(fault.target, grace_s=0.0)
        elif fault.action == "start":
            svc.restart(fault.target)
        elif fault.action == "restart":
            svc.stop(fault.target)
            svc.restart(fault.target)
        return f"{fault.action} {fault.target} took {time.monotonic() - t0:.2f} s"

    def level(self, ctx: Instance, driver, w: Workload, level: Level, duration_s: float) -> None:
        r, sc, impl, trial = self.run_, ctx.scenario, ctx.impl, ctx.trial
        handle, sampler = ctx.handle, ctx.sampler
        raw = r.out_dir / "raw" / f"{sc.name}-{impl.name}-t{trial}-{w.name}-{level.key}.json"
        raw.parent.mkdir(parents=True, exist_ok=True)
        m = {"scenario": sc.name, "implementation_id": impl.id, "instance": ctx.key, "trial": trial,
             "workload": w.name, "level": level.to_json(), "ok": False, "error": None,
             "load": None, "server": None}
        faults = FaultSchedule(w.faults, duration_s, self._act) if w.faults else None

        def on_start(event):
            ctx.probe.watch_tool(event)
            if faults is not None and isinstance(event, int):
                faults.arm()

        sa = r.services.marks() if r.services and not w.faults else {}
        a = sampler.mark()
        try:
            res = driver.run(level=level, duration_s=duration_s, raw_path=raw, **self._driver_args(ctx, w, on_start))
        except ToolError as exc:
            res = None
            m["error"] = str(exc)
        b = sampler.mark()
        if faults is not None:
            m["faults"] = self._faults_done(ctx, faults, w, level)
        samples = sampler.snapshot()
        # The send window: from the tool's first call to its last answer
        # (start-up, connection set-up, drain and report writing left out).
        if res is not None and res.send_t0 is not None and a.t <= res.send_t0 < res.send_t1 <= b.t + 0.05:
            t0, t1, basis = res.send_t0, min(res.send_t1, b.t), "send window"
        else:
            t0, t1, basis = a.t, b.t, "tool's whole run (no send window reported)"
        win = self._window(samples, t0, t1)
        if sa:
            m["services"] = r.services.window(sa, r.services.marks(), t0, t1)
        ctx.mark_phase(f"{w.name} {level.key}", t0, t1)
        mem = sampling.memory_stats(sampling.window(samples, t0, t1))
        if res is not None:
            if win["client"]["tool_cores"] is not None:
                res.tool_cpu_cores = win["client"]["tool_cores"]
                win["client"]["tool_cores_basis"] = "send window (/proc/PID/stat)"
            else:
                # the tool's counter was not sampled on both sides of an edge
                # (it exited right after its last answer): its whole life instead
                win["client"]["tool_cores_basis"] = "whole run (rusage), start-up and drain included"
            res.client_bound = win["client"]["saturated"]
            m["load"] = res.to_json()
            ctx.count_ok(res.ok_count)
        cores = win["cpu_cores"]
        m["server"] = {"cpu_s": win["cpu_s"], "cpu_cores": cores, "window_s": win["window_s"],
                       "window_basis": basis, "rss_mb": mem["mean_mb"], "rss_peak_mb": mem["peak_mb"],
                       "samples": mem["n"], "throttling": win["throttling"],
                       "quota": ctx.record.get("quota")}
        m["client"] = win["client"]
        m["noise"] = win["noise"]
        if res is not None:
            m["server"]["cpu_s_per_1k"] = (win["cpu_s"] / res.ok_count * 1000
                                           if res.ok_count and win["cpu_s"] is not None else None)
            m["server"]["rps_per_cpu"] = res.rps / cores if cores else None
        if cores is None and m["error"] is None:
            m["error"] = "the server's CPU counter could not be read at the window's edges"
        alive = handle.alive()
        if not alive:
            m["error"] = f"server died under load (exit code {handle.exit_code()}; log: {handle.log_tail()})"
        elif res is not None and res.ok_count == 0:
            m["error"] = "no successful answer: " + (", ".join(f"{k}: {v}" for k, v in
                                                              list(res.error_kinds.items())[:2]) or "?")
        elif res is not None and res.status_check and m["error"] is None:
            m["error"] = f"wrong mix of answers: {res.status_check}"
        if m["error"] is None and any(not e["ok"] for e in m.get("faults", [])):
            bad = next(e for e in m["faults"] if not e["ok"])
            m["error"] = f"fault '{bad['action']} {bad['target']}' failed: {bad['detail']}"
        if alive:
            check = self._after_load(ctx)
            if check is not None:
                m["after_load"] = check
                if not check["ok"] and m["error"] is None:
                    m["error"] = f"check after load failed: {check['detail']}"
        m["ok"] = m["error"] is None
        r.store.add_measurement(m)
        self._report_level(ctx, w, level, res, m, win, mem, cores)
        if not alive:
            raise ServerError(m["error"])

    def _faults_done(self, ctx: Instance, faults: FaultSchedule, w: Workload, level: Level) -> list[dict]:
        """Wait for the schedule; services left stopped by it are started again
        (the next level starts from the same state); times relative to sampling."""
        events = faults.finish()
        svc = self.run_.services
        for f in w.faults:
            if svc is not None and f.target in svc.running and svc.running[f.target].handle is None:
                svc.restart(f.target)
                events.append({"at": None, "action": "start", "target": f.target, "t": time.monotonic(),
                               "took_s": 0.0, "ok": True, "detail": "restored after the level"})
        out = []
        for e in events:
            e = dict(e, t=e["t"] - ctx.t_start)
            ctx.record["phases"].append({"name": f"fault: {e['action']} {e['target']}", "t0": e["t"],
                                         "t1": e["t"] + e["took_s"]})
            out.append(e)
        return out

    def _report_level(self, ctx, w, level, res, m, win, mem, cores) -> None:
        r = self.run_
        if res is None:
            r.progress(f"{ctx.impl.id} t{ctx.trial} {w.name} {level.key}: {m['error']}")
            return
        flags = [f for f, on in (("CLIENT-BOUND", res.client_bound), ("NOISY", win["noise"]["noisy"])) if on]
        thr = win["throttling"] or {}
        r.progress(f"{ctx.impl.id} t{ctx.trial} {w.name} {level.key}: {res.rps:.0f} rps, "
                   f"p99 {res.latency_ms['p99'] or 0:.2f} ms, server {cores or 0:.2f} cores "
                   f"(throttled {(thr.get('throttled_share') or 0):.0%} of periods), "
                   f"{(mem['mean_mb'] or 0):.1f} MB, errors {res.errors}, "
                   f"client CPUs {(win['client']['busy_share'] or 0):.0%} busy"
                   f"{', ' + ', '.join(flags) if flags else ''}"
                   f"{'' if m['ok'] else ' FAILED: ' + m['error']}")
