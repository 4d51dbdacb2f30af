"""One benchmark run: plan -> build -> start -> ready -> verify -> interop ->
idle sample -> warm up -> load levels (drive + sample) -> stop -> store."""
from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import build as builder
from . import sampling
from .checks import run_verdict
from .drivers import get_driver
from .environment import fingerprint
from . import hostcpu
from .errors import LangbenchError, QuotaError, ServerError, ToolError
from .manifest import Implementation, Level, Scenario, expand
from .probe import Probe, analyse
from .profiles import CpuLayout, Profile
from .readiness import wait_ready
from .results import ResultsStore
from .runtimes import LaunchSpec, Runtime, ServerHandle
from .services import ServiceManager

HOST = "127.0.0.1"
WARMUP_STEADY_WINDOWS = 3
MEMORY_EVERY = 3          # memory at a third of the sampling rate: 3.3 Hz at 10 Hz


class Progress:
    """Progress lines on stderr, with the time since the run started."""

    def __init__(self, stream=None, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.t0 = time.monotonic()

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            print(f"[{time.monotonic() - self.t0:7.1f}s] {msg}", file=self.stream, flush=True)


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class PlanItem:
    scenario: Scenario
    impl: Implementation
    trial: int

    def to_json(self) -> dict:
        return {"scenario": self.scenario.name, "implementation": self.impl.name, "trial": self.trial}


def make_plan(selection: list[tuple[Scenario, list[Implementation]]], trials: int, seed: int) -> list[PlanItem]:
    """Scenarios in order; within each, trials interleaved across implementations
    in an order shuffled afresh for every trial with a recorded seed."""
    rng = random.Random(seed)
    plan = []
    for scenario, impls in selection:
        for trial in range(1, trials + 1):
            order = list(impls)
            rng.shuffle(order)
            plan += [PlanItem(scenario, impl, trial) for impl in order]
    return plan


class Interrupted(Exception):
    pass


class Eta:
    """A progress bar with an estimated time to the end, in the progress lines.

    The plan's estimate (levels x durations + overheads) is counted off level
    by level; the remaining estimate is scaled by how long the done part
    really took against its estimate."""

    WIDTH = 20

    def __init__(self, progress: Progress, total_est_s: float):
        self.progress = progress
        self.total = max(total_est_s, 1.0)
        self.done_est = 0.0
        self.t0 = time.monotonic()

    def advance(self, est_s: float) -> None:
        self.done_est = min(self.total, self.done_est + est_s)
        frac = self.done_est / self.total
        spent = time.monotonic() - self.t0
        left = spent / self.done_est * (self.total - self.done_est) if self.done_est > 0 else self.total
        bar = "#" * round(frac * self.WIDTH) + "." * (self.WIDTH - round(frac * self.WIDTH))
        self.progress(f"[{bar}] {frac:4.0%} done, {spent / 60:.1f} min so far, about {left / 60:.1f} min to go")


@dataclass
class Runner:
    root: Path
    selection: list[tuple[Scenario, list[Implementation]]]
    runtime: Runtime
    profile: Profile
    profile_name: str
    layout: CpuLayout
    out_dir: Path
    trials: int = 1
    seed: int | None = None
    interop: bool = True
    progress: Progress = field(default_factory=Progress)
    run_id: str = ""
    allow_uncapped: bool = False
    live: dict = field(default_factory=dict)
    builds: dict = field(default_factory=dict)
    failed: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.run_id:
            self.run_id = "lb" + time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4]
        if self.seed is None:
            self.seed = random.SystemRandom().randrange(2**31)
        self.cache_dir = self.root / ".langbench" / "build-cache"
        self.services: ServiceManager | None = None
        self.logs = self.out_dir / "logs"

    # ------------------------------------------------------------------ helpers
    def placeholders(self, impl: Implementation, port: int | None = None) -> dict[str, str]:
        d = {"impl_dir": str(impl.dir), "scenario_dir": str(self.scenario_of(impl).dir),
             "python": sys.executable, "cpus": str(len(self.layout.server)), "host": HOST}
        if port is not None:
            d.update(port=str(port), target=f"{HOST}:{port}")
        return d

    def scenario_of(self, impl: Implementation) -> Scenario:
        for sc, _ in self.selection:
            if sc.name == impl.scenario:
                return sc
        raise KeyError(impl.scenario)

    def fail(self, impl: Implementation, stage: str, message: str) -> None:
        self.failed.setdefault(impl.id, f"{stage}: {message}")
        self.progress(f"{impl.id}: FAILED at {stage}: {message}")
        self.store.event("error", message, implementation=impl.id, stage=stage)
        self.store.implementation(impl.id, status="failed", failure=self.failed[impl.id])

    # ------------------------------------------------------------------ the run
    def run(self) -> ResultsStore:
        drivers = {w.driver for sc, _ in self.selection for w in sc.workloads}
        tools = {}
        for d in sorted(drivers):
            try:
                tools[d] = get_driver(d).version()
            except LangbenchError as exc:
                tools[d] = f"unavailable: {exc}"
        plan = make_plan(self.selection, self.trials, self.seed)
        quota = self.runtime.check_quota(self.profile.server_cpu_quota, self.profile.cfs_period_us)
        self.eta = Eta(self.progress, sum(self._estimate(p) for p in plan))
        self.store = ResultsStore(self.out_dir, {
            "run_id": self.run_id, "runtime": self.runtime.name,
            "runtime_info": {**self.runtime.describe(),
                             "selected": getattr(self.runtime, "selected", "explicit")},
            "profile_name": self.profile_name,
            "profile": self.profile.to_json(), "trials": self.trials, "seed": self.seed,
            "cpu_layout": {**self.layout.to_json(),
                           "note": "load tool and harness on 'client', server under test on 'server'"},
            "quota": {**quota, "allow_uncapped": self.allow_uncapped},
            "scenarios": {sc.name: {"title": sc.title, "description": sc.description,
                                    "protocol": sc.protocol,
                                    "levels": [lv.to_json() for lv in sc.profiles[self.profile_name].levels()],
                                    "duration_s": sc.profiles[self.profile_name].duration_s,
                                    "warmup_s": sc.profiles[self.profile_name].warmup_s,
                                    "workloads": [{"name": w.name, "driver": w.driver,
                                                   "description": w.description} for w in sc.workloads]}
                          for sc, _ in self.selection},
            "plan": [p.to_json() for p in plan],
            "environment": fingerprint(self.root, tools),
            "harness_overhead": [],
        })
        self.progress(f"run {self.run_id}: runtime {self.runtime.name}, profile {self.profile_name}, "
                      f"{len(plan)} server runs, server CPUs {self.layout.server} "
                      f"(quota {self.profile.server_cpu_quota} cores), load tool CPUs {self.layout.client}")
        self.progress(f"results: {self.store.path}")
        old_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
        status = "complete"
        try:
            removed = self.runtime.cleanup_leftovers(self.run_id)
            for r in removed:
                self.store.event("warning", f"removed leftover of a killed run: {r}")
                self.progress(f"removed leftover of a killed run: {r}")
            for sc, impls in self.selection:
                for impl in impls:
                    self.store.implementation(impl.id, **self._impl_record(impl))
                    self._build(impl)
            # From here on the harness itself (main thread, sampler, pipe
            # readers, and every check or tool it starts) runs on the load
            # tool's CPUs: nothing of ours competes with the server under
            # test. (Builds, above, may use every CPU.)
            self.store.data["cpu_layout"]["harness_pinned_threads"] = hostcpu.pin_all_threads(self.layout.client)
            self.eta.t0 = time.monotonic()          # the estimate covers the server runs, not the builds
            for sc, impls in self.selection:
                if sc.interop is not None and self.interop:
                    self.store.set_interop(sc.name, [])
            for sc, impls in self.selection:
                self._scenario(sc, impls, [p for p in plan if p.scenario.name == sc.name])
            for sc, impls in self.selection:
                for impl in impls:
                    if impl.id not in self.failed:
                        self.store.implementation(impl.id, status="ok")
        except (KeyboardInterrupt, Interrupted):
            status = "interrupted"
            self.progress("interrupted: stopping servers, keeping what was measured")
            raise
        except LangbenchError as exc:
            status = "aborted"
            self.store.event("error", f"run aborted: {exc}")
            raise
        finally:
            self._stop_all()
            signal.signal(signal.SIGTERM, old_handler)
            self.store.finish(status)
        return self.store

    def _scenario(self, sc: Scenario, impls: list[Implementation], items: list[PlanItem]) -> None:
        """Start the scenario's services, run its server runs, stop the services."""
        todo = [p for p in items if p.impl.id not in self.failed]
        if not todo:
            for item in items:
                self.eta.advance(self._estimate(item))
            return
        self.services = None
        if sc.services:
            self.services = ServiceManager(sc, self.run_id, self.layout.client, self.out_dir,
                                           {"python": sys.executable, "scenario_dir": str(sc.dir), "host": HOST},
                                           free_port, self.profile.sample_hz, self.progress, self.runtime)
            self.store.data.setdefault("services", {})[sc.name] = self.services.describe()
            try:
                self.services.setup()
                self.services.start_all()
            except ServerError as exc:
                self.services.stop_all()
                for impl in impls:
                    self.fail(impl, "service", str(exc))
                self.services = None
                return
            self.store.data["services"][sc.name] = self.services.describe()
            self.store.save()
        try:
            for item in items:
                if item.impl.id not in self.failed:
                    self._instance(item)
                self.eta.advance(self._estimate(item))
        finally:
            if self.services is not None:
                self.services.stop_all()
                self.store.data["services"][sc.name] = self.services.describe()
                self.services = None

    def _estimate(self, item: PlanItem) -> float:
        """Rough seconds one server run takes (start, checks, idle, warm-up,
        levels); the ETA rescales it by what the run has really taken so far."""
        lv = item.scenario.profiles[self.profile_name]
        per_workload = max(lv.warmup_s, 2 * self.profile.warmup_window_s) + len(lv.levels()) * (lv.duration_s + 1.5)
        return 8.0 + self.profile.idle_s + len(item.scenario.workloads) * per_workload

    def _on_sigterm(self, *_):
        raise Interrupted()

    def _stop_all(self) -> None:
        if getattr(self, "services", None) is not None:
            self.services.stop_all()
        for key, handle in list(self.live.items()):
            try:
                handle.stop(grace_s=5.0)
            except Exception as exc:  # noqa: BLE001 - best effort at teardown
                self.store.event("warning", f"stopping {key}: {exc}")
            self.live.pop(key, None)

    def _impl_record(self, impl: Implementation) -> dict:
        return {"scenario": impl.scenario, "name": impl.name, "language": impl.language,
                "framework": impl.framework, "description": impl.description,
                "tuning": impl.tuning, "run_command": impl.run, "run_env": impl.run_env,
                "status": "pending"}

    # ------------------------------------------------------------------ build
    def _build(self, impl: Implementation) -> None:
        self.progress(f"{impl.id}: building")
        sc = self.scenario_of(impl)
        res = builder.build(impl, sc, self.cache_dir, self.logs / f"build-{impl.scenario}-{impl.name}.log",
                            self.placeholders(impl))
        self.builds[impl.id] = res
        self.store.implementation(impl.id, build=res.to_json())
        if not res.ok:
            self.fail(impl, "build", res.error or "build failed")
            return
        size = f"{res.artifact_bytes / 1e6:.1f} MB" if res.artifact_bytes else "n/a"
        self.progress(f"{impl.id}: built in {res.seconds or 0:.1f} s"
                      f"{' (cached)' if res.cached else ''}, artifact {size}")
        try:
            info = self.runtime.prepare(impl, sc, self.logs)
        except LangbenchError as exc:
            self.fail(impl, "prepare", str(exc))
            return
        if info:
            self.store.implementation(impl.id, **info)
            if "image" in info:
                im = info["image"]
                self.progress(f"{impl.id}: image {im['tag']} {im['size_mb']:.1f} MB "
                              f"on {im['base']['ref']}, built in {im['build_s']:.1f} s")

    # ------------------------------------------------------------------ one server run
    def _instance(self, item: PlanItem) -> None:
        sc, impl, trial = item.scenario, item.impl, item.trial
        port = free_port()
        key = f"{self.run_id}-{sc.name}-{impl.name}-t{trial}"
        ph = self.placeholders(impl, port)
        ph["instance"] = f"{impl.name}-t{trial}-{uuid.uuid4().hex[:6]}"
        if self.services is not None:
            ph.update(self.services.placeholders())
        env = {"HOST": HOST, "PORT": str(port), "LANGBENCH_CPUS": str(len(self.layout.server))}
        env.update({k: expand(v, ph) for k, v in sc.env.items()})
        env.update({k: expand(v, ph) for k, v in impl.run_env.items()})
        spec = LaunchSpec(run_id=self.run_id, key=key, impl=impl, scenario=sc, host=HOST, port=port,
                          cpus=self.layout.server, cpu_quota=self.profile.server_cpu_quota, env=env,
                          command=[expand(a, ph) for a in impl.run],
                          log_path=self.logs / f"server-{sc.name}-{impl.name}-t{trial}.log",
                          labels={"langbench.run": self.run_id, "langbench.impl": impl.id},
                          cfs_period_us=self.profile.cfs_period_us)
        inst = {"key": key, "scenario": sc.name, "implementation_id": impl.id, "trial": trial,
                "port": port, "command": spec.command, "env": env, "log": str(spec.log_path),
                "startup_ms": None, "verify": None, "idle": None, "shutdown": None,
                "crashed": False, "error": None, "phases": [], "timeseries": None,
                "instance_tag": ph["instance"], "ok_total": 0}
        self.store.add_instance(inst)
        self.progress(f"{impl.id} trial {trial}: starting on {HOST}:{port}")
        handle: ServerHandle | None = None
        sampler = None
        try:
            if sc.before_instance is not None:
                self._hook(sc.before_instance.command, ph, sc, sc.before_instance.timeout_s, "before_instance")
            try:
                handle = self.runtime.start(spec)
            except (OSError, LangbenchError) as exc:
                raise ServerError(f"could not start {spec.command[0]}: {exc}") from None
            self.live[key] = handle
            inst["runtime"] = handle.describe()
            inst["quota"] = self._check_applied_quota(handle)
            startup = wait_ready(sc.readiness, HOST, port, handle.alive,
                                 lambda: f"exit code {handle.exit_code()}; log: {handle.log_tail()}",
                                 handle.started_at)
            inst["startup_ms"] = startup * 1000
            if sc.readiness.params.get("counts_as_ok"):
                inst["ok_total"] += 1      # the probe's own successful request (an event, say)
            self.progress(f"{impl.id} trial {trial}: ready in {startup * 1000:.0f} ms")
            self._verify(sc, impl, trial, ph, inst)
            if trial == 1 and sc.interop is not None and self.interop:
                self._interop_column(sc, impl, port)
            probe = Probe(handle, self.layout.client, self.layout.server)
            sampler = sampling.Sampler(probe.counters, handle.memory_bytes, self.profile.sample_hz,
                                       memory_every=MEMORY_EVERY).start()
            probe.on_tool_exit = sampler.mark
            t_start = time.monotonic()
            sa = self.services.marks() if self.services else {}
            a = sampler.mark()
            time.sleep(self.profile.idle_s)
            b = sampler.mark()
            sb = self.services.marks() if self.services else {}
            samples = sampler.snapshot()
            idle = self._window(samples, a.t, b.t)
            inst["idle"] = {"window_s": b.t - a.t, "cpu_cores": idle["cpu_cores"],
                            "rss_mb": sampling.memory_stats(sampling.window(samples, a.t, b.t))["mean_mb"],
                            "noise": idle["noise"], "client": idle["client"]}
            if sa:
                inst["idle"]["services"] = self.services.window(sa, sb)
            inst["phases"].append({"name": "idle", "t0": a.t - t_start, "t1": b.t - t_start})
            self.store.save()
            for w in sc.workloads:
                self._workload(sc, impl, trial, key, w, port, handle, sampler, probe, inst, t_start, ph)
        except _VerifyFailed as exc:
            inst["error"] = f"verification failed: {exc}"
            self.fail(impl, "verify", str(exc))
        except ServerError as exc:
            inst["error"] = str(exc)
            inst["crashed"] = handle is not None and not handle.alive()
            self.fail(impl, "run", str(exc))
        finally:
            if sampler is not None:
                sampler.stop()
                samples = sampler.snapshot()
                if samples:
                    inst["timeseries"] = sampling.timeseries(samples, samples[0].t)
                self.store.data["harness_overhead"].append(
                    {"instance": key, "sampler_cpu_s": sampler.own_cpu_s, "wall_s": sampler.wall_s,
                     "cores": sampler.overhead_cores(), "samples": len(samples), "hz": self.profile.sample_hz})
            if handle is not None:
                crashed_before = not handle.alive()
                res = handle.stop(grace_s=5.0)
                self.live.pop(key, None)
                inst["shutdown"] = {"exit_code": res.exit_code, "shutdown_ms": res.shutdown_s * 1000,
                                    "killed": res.killed, "was_running": not crashed_before}
                if not crashed_before:
                    self.progress(f"{impl.id} trial {trial}: stopped in {res.shutdown_s * 1000:.0f} ms, "
                                  f"exit {res.exit_code if not res.killed else 'killed after 5 s'}")
            self.store.save()

    def _check_applied_quota(self, handle: ServerHandle) -> dict:
        """The quota the kernel holds for this server, read back; a quota the
        profile declares but that is not in force stops the run (exit 2)
        unless the user allowed running uncapped."""
        want, period = self.profile.server_cpu_quota, self.profile.cfs_period_us
        try:
            got = handle.quota_applied()
        except OSError:
            got = None
        applied, applied_period = got if got is not None else (None, None)
        ok = want is None or (applied is not None and abs(applied - want) < 0.01 and applied_period == period)
        if not ok and not self.allow_uncapped:
            raise QuotaError(f"the server's CPU quota is not in force: wanted {want} cores over {period} µs, "
                             f"the kernel holds {applied} cores over {applied_period} µs; pass --allow-uncapped "
                             f"to measure anyway (recorded in every row)")
        return {"cpu_quota_requested": want, "cpu_quota_applied": applied, "cfs_period_us": applied_period,
                "in_force": ok}

    def _hook(self, command: list[str], ph: dict, sc: Scenario, timeout_s: float, name: str) -> None:
        argv = [expand(a, ph) for a in command]
        try:
            proc = subprocess.run(argv, cwd=sc.dir, capture_output=True, text=True, timeout=timeout_s,
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ServerError(f"{name} hook failed: {exc}") from None
        if proc.returncode != 0:
            tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or [""]
            raise ServerError(f"{name} hook exited with code {proc.returncode}: {tail[0][:300]}")

    def _verify(self, sc: Scenario, impl: Implementation, trial: int, ph: dict, inst: dict) -> None:
        """Every verification step; services named by a step are stopped while it runs."""
        if not sc.verify:
            inst["verify"] = {"ok": True, "detail": "scenario declares no verification", "checks": []}
            return
        steps = []
        inst["verify"] = {"ok": False, "detail": "", "checks": [], "steps": steps}
        for step in sc.verify:
            for name in step.stop_services:
                self.progress(f"{impl.id} trial {trial}: stopping service {name} for check '{step.name}'")
                self.services.stop(name)
            try:
                v = run_verdict([expand(a, ph) for a in step.command], sc.dir, step.timeout_s,
                                cpus=self.layout.client)
            finally:
                for name in step.stop_services:
                    self.services.restart(name)
            steps.append({"name": step.name, **v.to_json()})
            inst["verify"]["checks"] += v.checks
            inst["ok_total"] += v.produced
            self.store.save()
            if not v.ok:
                inst["verify"]["detail"] = f"{step.name}: {v.detail}"
                raise _VerifyFailed(inst["verify"]["detail"])
        n = len(inst["verify"]["checks"])
        inst["verify"].update(ok=True, detail=f"{n}/{n} checks passed")
        self.store.save()
        self.progress(f"{impl.id} trial {trial}: verified ({inst['verify']['detail']})")

    def _after_load(self, sc: Scenario, ph: dict, inst: dict) -> dict | None:
        """The scenario's check after a load phase, told how many correct answers were counted."""
        if sc.after_load is None:
            return None
        v = run_verdict([expand(a, {**ph, "ok_total": str(inst["ok_total"])}) for a in sc.after_load.command],
                        sc.dir, sc.after_load.timeout_s, cpus=self.layout.client)
        return v.to_json()

    def _window(self, samples, t0: float, t1: float) -> dict:
        p = self.profile
        return analyse(samples, t0, t1, len(self.layout.client), client_bound_share=p.client_bound_threshold,
                       noisy_foreign_cores=p.noisy_foreign_cores, noisy_steal_cores=p.noisy_steal_cores)

    def _warmup(self, driver, w, levels, common: dict, inst: dict, ph: dict, sc, t_start: float) -> None:
        """Load at the top concurrency in windows until the last three windows'
        throughput lies within the profile's tolerance of each other (max/min;
        two windows are not enough: a JIT's ramp has plateaus), and the
        scenario's minimum warm-up has passed, or the cap is reached. The same
        rule for every implementation; what it took is recorded."""
        p = self.profile
        top = max(levels.concurrency or [16])
        window = p.warmup_window_s + driver.overhead_s(w)
        t0 = time.monotonic()
        rps: list[float] = []
        steady = False
        while True:
            try:
                res = driver.run(level=Level("concurrency", top), duration_s=window, raw_path=None, **common)
                inst["ok_total"] += res.ok_count
                rps.append(res.rps)
            except ToolError as exc:
                self.store.event("warning", f"warm-up window failed: {exc}", implementation=inst["implementation_id"],
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
        inst.setdefault("warmup", {})[w.name] = {
            "seconds": spent, "windows": len(rps), "window_s": window, "concurrency": top,
            "rps": [round(x, 1) for x in rps], "steady": steady,
            "rule": f"{WARMUP_STEADY_WINDOWS} consecutive {p.warmup_window_s:g} s windows within "
                    f"{p.warmup_tolerance:.0%} of each other (max/min), "
                    f"at least {levels.warmup_s:g} s, at most {p.warmup_max_s:g} s"}
        self.progress(f"{inst['implementation_id']} t{inst['trial']} {w.name}: warm-up "
                      f"{'steady' if steady else 'NOT steady (cap reached)'} after {spent:.1f} s "
                      f"({', '.join(f'{x:.0f}' for x in rps)} rps)")
        check = self._after_load(sc, ph, inst)
        if check is not None and not check["ok"]:
            raise ServerError(f"check after the {w.name} warm-up failed: {check['detail']}")
        inst["phases"].append({"name": f"{w.name} warm-up", "t0": t0 - t_start, "t1": time.monotonic() - t_start})

    def _workload(self, sc, impl, trial, key, w, port, handle, sampler, probe, inst, t_start, ph) -> None:
        driver = get_driver(w.driver)
        levels = sc.profiles[self.profile_name]
        target = f"{HOST}:{port}"
        common = dict(target=target, scenario=sc, workload=w, cpus=self.layout.client, on_start=probe.watch_tool)
        if levels.warmup_s > 0:
            self._warmup(driver, w, levels, common, inst, ph, sc, t_start)
        for level in levels.levels():
            if not handle.alive():
                raise ServerError(f"server died during workload {w.name} "
                                  f"(exit code {handle.exit_code()}; log: {handle.log_tail()})")
            raw = self.out_dir / "raw" / f"{sc.name}-{impl.name}-t{trial}-{w.name}-{level.key}.json"
            raw.parent.mkdir(parents=True, exist_ok=True)
            m = {"scenario": sc.name, "implementation_id": impl.id, "instance": key, "trial": trial,
                 "workload": w.name, "level": level.to_json(), "ok": False, "error": None,
                 "load": None, "server": None}
            sa = self.services.marks() if self.services else {}
            a = sampler.mark()
            try:
                res = driver.run(level=level, duration_s=levels.duration_s, raw_path=raw, **common)
            except ToolError as exc:
                res = None
                m["error"] = str(exc)
            b = sampler.mark()
            samples = sampler.snapshot()
            # The send window: from the tool's first call to its last answer
            # (start-up, connection set-up, drain and report writing left out).
            if res is not None and res.send_t0 is not None and a.t <= res.send_t0 < res.send_t1 <= b.t + 0.05:
                t0, t1, basis = res.send_t0, min(res.send_t1, b.t), "send window"
            else:
                t0, t1, basis = a.t, b.t, "tool's whole run (no send window reported)"
            win = self._window(samples, t0, t1)
            if sa:
                m["services"] = self.services.window(sa, self.services.marks(), t0, t1)
            inst["phases"].append({"name": f"{w.name} {level.key}", "t0": t0 - t_start, "t1": t1 - t_start})
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
                inst["ok_total"] += res.ok_count
            cores = win["cpu_cores"]
            m["server"] = {"cpu_s": win["cpu_s"], "cpu_cores": cores, "window_s": win["window_s"],
                           "window_basis": basis, "rss_mb": mem["mean_mb"], "rss_peak_mb": mem["peak_mb"],
                           "samples": mem["n"], "throttling": win["throttling"],
                           "quota": inst.get("quota")}
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
                m["error"] = (f"server died under load (exit code {handle.exit_code()}; "
                              f"log: {handle.log_tail()})")
            elif res is not None and res.ok_count == 0:
                m["error"] = "no successful answer: " + (", ".join(f"{k}: {v}" for k, v in
                                                                  list(res.error_kinds.items())[:2]) or "?")
            elif res is not None and res.status_check and m["error"] is None:
                m["error"] = f"wrong mix of answers: {res.status_check}"
            if alive:
                check = self._after_load(sc, ph, inst)
                if check is not None:
                    m["after_load"] = check
                    if not check["ok"] and m["error"] is None:
                        m["error"] = f"check after load failed: {check['detail']}"
            m["ok"] = m["error"] is None
            self.store.add_measurement(m)
            if res is not None:
                flags = [f for f, on in (("CLIENT-BOUND", res.client_bound), ("NOISY", win["noise"]["noisy"])) if on]
                thr = win["throttling"] or {}
                self.progress(f"{impl.id} t{trial} {w.name} {level.key}: {res.rps:.0f} rps, "
                              f"p99 {res.latency_ms['p99'] or 0:.2f} ms, server {cores or 0:.2f} cores "
                              f"(throttled {(thr.get('throttled_share') or 0):.0%} of periods), "
                              f"{(mem['mean_mb'] or 0):.1f} MB, errors {res.errors}, "
                              f"client CPUs {(win['client']['busy_share'] or 0):.0%} busy"
                              f"{', ' + ', '.join(flags) if flags else ''}"
                              f"{'' if m['ok'] else ' FAILED: ' + m['error']}")
            else:
                self.progress(f"{impl.id} t{trial} {w.name} {level.key}: {m['error']}")
            if not alive:
                raise ServerError(m["error"])

    # ------------------------------------------------------------------ interop
    def _interop_column(self, sc: Scenario, server: Implementation, port: int) -> None:
        """Every built client of the scenario against this server."""
        cells = self.store.data["interop"].setdefault(sc.name, [])
        for _, impls in self.selection:
            for client in impls:
                if client.scenario != sc.name:
                    continue
                if client.client is None:
                    cells.append({"client": client.language, "server": server.language, "ok": False,
                                  "detail": "implementation ships no client"})
                    continue
                if not self.builds.get(client.id) or not self.builds[client.id].ok:
                    cells.append({"client": client.language, "server": server.language, "ok": False,
                                  "detail": "client not built"})
                    continue
                ph = self.placeholders(client, port)
                v = run_verdict([expand(a, ph) for a in client.client], client.dir, sc.interop.timeout_s,
                                cpus=self.layout.client,
                                env={"LANGBENCH_CPUS": str(len(self.layout.client))})
                cells.append({"client": client.language, "server": server.language, "ok": v.ok,
                              "detail": v.detail, "client_impl": client.name, "server_impl": server.name})
        self.store.set_interop(sc.name, cells)
        mine = [c for c in cells if c["server"] == server.language]
        self.progress(f"{server.id}: interop {sum(c['ok'] for c in mine)}/{len(mine)} clients ok")

    def interop_only(self) -> list[dict]:
        """Build, start each server once, run every client against it (no load)."""
        self.profile = replace(self.profile, idle_s=0.0)
        self.selection = [(replace(sc, workloads=[]), impls) for sc, impls in self.selection]
        self.run()
        return [c for cells in self.store.data["interop"].values() for c in cells]


class _VerifyFailed(Exception):
    pass
