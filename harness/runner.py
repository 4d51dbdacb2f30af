"""One benchmark run: plan -> build -> per scenario (services up) -> per
plan item one server run (phases.py: before, start, ready, verify, interop,
idle, load, stop, after-stop) -> services down -> store."""
from __future__ import annotations

import json
import random
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import build as builder
from . import hostcpu
from .calibrate import CLIENT_LIMITED_SHARE
from .canary import CANARY_EVERY_S, CANARY_N, Canary
from .checks import run_verdict
from .drivers import get_driver
from .environment import fingerprint
from .errors import LangbenchError, ServerError
from .manifest import Implementation, Scenario, expand
from .phases import InstanceRun
from .profiles import CpuLayout, Profile
from .results import ResultsStore
from .runtimes import Runtime
from .services import ServiceManager


class Progress:
    """Progress lines on stderr, with the time since the run started."""

    def __init__(self, stream=None, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.t0 = time.monotonic()

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            print(f"[{time.monotonic() - self.t0:7.1f}s] {msg}", file=self.stream, flush=True)


@dataclass
class PlanItem:
    scenario: Scenario          # with only the workloads of this server run
    impl: Implementation
    trial: int
    server_env: dict = field(default_factory=dict)    # the workloads' server_env ({}: none)
    mode: str = ""              # its short name ('' when the scenario has one kind of server run)

    def to_json(self) -> dict:
        d = {"scenario": self.scenario.name, "implementation": self.impl.name, "trial": self.trial}
        if self.mode:
            d.update(mode=self.mode, server_env=self.server_env,
                     workloads=[w.name for w in self.scenario.workloads])
        return d


def make_plan(selection: list[tuple[Scenario, list[Implementation]]], trials: int, seed: int) -> list[PlanItem]:
    """Scenarios in order; within each, trials interleaved across implementations
    in an order shuffled afresh for every trial with a recorded seed."""
    rng = random.Random(seed)
    plan = []
    for scenario, impls in selection:
        modes = scenario.modes()
        views = [(env, replace(scenario, workloads=[w for w in scenario.workloads if w.name in names]),
                  scenario.workload(names[0]).mode if names and len(modes) > 1 else "")
                 for env, names in modes]
        cap = scenario.topology.mix_trials if scenario.topology else None
        for trial in range(1, trials + 1):
            # a scenario may run its declared mixed topologies in fewer trials
            order = [i for i in impls if not (cap and trial > cap and i.language == "mixed")]
            rng.shuffle(order)
            plan += [PlanItem(view, impl, trial, env, mode) for impl in order for env, view, mode in views]
    return plan


# what a reader prints that must equal the reference reader's line
FILES_INTEROP_KEYS = ("files", "tmp_files", "records", "stream_bytes", "file_bytes", "digest")


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
    keep_instance_files: bool = False
    calibrate: bool = True          # measure each workload's driver ceiling before the scenario's servers
    calibrate_only: bool = False    # `langbench calibrate`: ceilings only, no implementation
    overrides: dict = field(default_factory=dict)   # windows set on the command line (--duration, --warmup)
    effort: bool = True             # code size and dependencies of every implementation built (effort.py)
    cold_build: bool = False        # --cold-build: also a cold build and a warm rebuild in a throwaway copy
    # run state, not configuration: filled while the run goes
    live: dict = field(default_factory=dict, init=False)      # key -> running handle (stopped on any exit)
    builds: dict = field(default_factory=dict, init=False)    # implementation id -> BuildResult
    failed: dict = field(default_factory=dict, init=False)    # implementation id -> "stage: why"
    canary: Canary | None = field(default=None, init=False)   # each CPU's speed, sampled through the run

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
        host = self.runtime.address("server")
        d = {"impl_dir": str(impl.dir), "scenario_dir": str(self.scenario_of(impl).dir),
             "python": sys.executable, "cpus": str(len(self.layout.server)), "host": host}
        if port is not None:
            d.update(port=str(port), target=f"{host}:{port}")
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
        from .calibrate import estimate_s  # noqa: PLC0415
        cal_est = sum(estimate_s(self, sc) for sc, _ in self.selection) if self.calibrate else 0.0
        self.eta = Eta(self.progress, sum(self._estimate(p) for p in plan) + cal_est)
        self.store = ResultsStore(self.out_dir, {
            "run_id": self.run_id, "runtime": self.runtime.name,
            "runtime_info": {**self.runtime.describe(),
                             "selected": getattr(self.runtime, "selected", "explicit")},
            "profile_name": self.profile_name,
            "profile": self.profile.to_json(), "overrides": self.overrides, "trials": self.trials,
            "seed": self.seed,
            "cpu_layout": {**self.layout.to_json(),
                           "note": "load tool and harness on 'client', server under test on 'server'"},
            "quota": {**quota, "allow_uncapped": self.allow_uncapped},
            "scenarios": {sc.name: {"title": sc.title, "description": sc.description,
                                    "protocol": sc.protocol,
                                    "levels": [lv.to_json() for lv in sc.profiles[self.profile_name].levels()],
                                    "duration_s": sc.profiles[self.profile_name].duration_s,
                                    "warmup_s": sc.profiles[self.profile_name].warmup_s,
                                    "workloads": [{"name": w.name, "driver": w.driver,
                                                   "description": w.description,
                                                   "params": w.params,
                                                   "faults": [f.to_json() for f in w.faults],
                                                   "levels": list(w.kinds(get_driver(w.driver).level_kinds)),
                                                   "duration_s": w.duration_s(
                                                       self.profile_name,
                                                       sc.profiles[self.profile_name].duration_s),
                                                   "own_server": w.own_server,
                                                   "server_env": w.server_env}
                                                  for w in sc.workloads],
                                    "topology": sc.topology.to_json() if sc.topology else None,
                                    "baseline": sc.report_baseline}
                          for sc, _ in self.selection},
            "plan": [p.to_json() for p in plan],
            "environment": fingerprint(self.root, tools),
            "harness_overhead": [],
            "calibration": {"enabled": self.calibrate, "client_limited_share": CLIENT_LIMITED_SHARE,
                            "rule": "a level whose throughput is above this share of its driver's measured "
                                    "maximum (ceilings) is client_limited and not ranked"},
        })
        for sc, _ in self.selection:
            for w in sc.workloads:
                try:
                    d = get_driver(w.driver)
                except LangbenchError:
                    continue
                self.store.declare_metrics({m.name: m.to_json() for m in d.metrics}, f"driver {d.name}")
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
            # every CPU's speed from now on (harness/canary.py), per level and for the run
            self.canary = Canary(list(self.layout.server) + list(self.layout.client)).start()
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
        if self.calibrate and (todo or self.calibrate_only):
            self._calibrate(sc)
        if not todo:
            for item in items:
                self.eta.advance(self._estimate(item))
            return
        self.services = None
        if sc.services:
            self.services = ServiceManager(sc, self.run_id, self.layout.client, self.out_dir,
                                           {"python": sys.executable, "scenario_dir": str(sc.dir),
                                            "host": self.runtime.address("server")},
                                           self.profile.sample_hz, self.progress, self.runtime)
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

    def _calibrate(self, sc: Scenario) -> None:
        """Each workload's driver against its reference null server (calibrate.py)."""
        from .calibrate import calibrate_workload, describe, estimate_s  # noqa: PLC0415
        store = self.store.data.setdefault("ceilings", {}).setdefault(sc.name, {})
        done: dict[str, str] = {}       # driver and params -> the workload measured with them
        for w in sc.workloads:
            same = done.get(key := json.dumps([w.driver, w.params], sort_keys=True, default=str))
            if same is not None:
                # the same tool sending the same requests to the same null
                # server: one ceiling, not two noisy measurements of it
                store[w.name] = {**store[same], "same_as": same}
                self.progress(f"{sc.name} {w.name}: same tool and requests as {same}: its ceiling applies")
                continue
            done[key] = w.name
            self.progress(f"{sc.name} {w.name}: measuring the ceiling of {w.driver} against its reference "
                          f"null server")
            try:
                cal = calibrate_workload(self, sc, w)
            except LangbenchError as exc:
                cal = {"driver": w.driver, "error": str(exc), "levels": {}, "max_rps": None}
                self.store.event("warning", f"calibration of {sc.name}/{w.name} failed: {exc}")
            store[w.name] = cal
            self.store.save()
            self.progress(f"{sc.name} {w.name}: ceiling of {w.driver}: {describe(cal)}")
        self.eta.advance(estimate_s(self, sc))

    def _estimate(self, item: PlanItem) -> float:
        """Rough seconds one server run takes (start, checks, idle, warm-up,
        levels); the ETA rescales it by what the run has really taken so far."""
        lv = item.scenario.profiles[self.profile_name]
        total = 8.0 + self.profile.idle_s
        for w in item.scenario.workloads:
            kinds = w.kinds(get_driver(w.driver).level_kinds)
            total += max(lv.warmup_s, 2 * self.profile.warmup_window_s) + len(lv.levels(kinds)) * \
                (w.duration_s(self.profile_name, lv.duration_s) + 1.5)
        return total

    def _on_sigterm(self, *_):
        raise Interrupted()

    def _stop_all(self) -> None:
        if self.canary is not None:
            self.canary.stop()
            self.store.data["host_speed"] = {
                "cpus": self.canary.whole(), "unit": "ns of CPU time per iteration of the canary loop",
                "method": f"harness/canary.py: {CANARY_N:,} iterations every {CANARY_EVERY_S:g} s per CPU"}
            self.canary = None
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
        if impl.parts:
            # a mixed topology: built when each of its parts is
            for part in impl.parts:
                if part.id not in self.builds:
                    self.store.implementation(part.id, **self._impl_record(part), role="part of " + impl.id)
                    self._build(part)
                    if part.id not in self.failed:
                        self.store.implementation(part.id, status="built")
            bad = [p.id for p in impl.parts if p.id in self.failed or not self.builds[p.id].ok]
            self.builds[impl.id] = self.builds[impl.parts[0].id]
            if bad:
                self.fail(impl, "build", f"part {', '.join(bad)} failed")
            return
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
        if self.effort:
            self._effort(impl, sc)
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

    def _effort(self, impl: Implementation, sc: Scenario) -> None:
        """Code size and dependencies (after the build: resolvers read the
        caches it filled), and with --cold-build the cold and warm builds."""
        from . import effort  # noqa: PLC0415
        scen = self.store.data["scenarios"].get(sc.name)
        if scen is not None and "shared_code" not in scen:
            scen["shared_code"] = effort.shared(sc, self.root)
        rec = effort.measure(impl, self.root)
        if self.cold_build:
            self.progress(f"{impl.id}: cold build in a temporary copy with empty caches")
            rec["cold_build"] = effort.cold_build(impl, sc, log=self.logs / f"cold-build-{sc.name}-{impl.name}.log")
        self.store.implementation(impl.id, effort=rec)
        code, deps, cold = rec.get("code") or {}, rec.get("deps") or {}, rec.get("cold_build") or {}
        for part, v in (("code size", code), ("dependencies", deps), ("cold build", cold)):
            if v.get("error"):
                self.store.event("warning", f"effort, {part}: {v['error']}", implementation=impl.id, stage="effort")
        self.progress(f"{impl.id}: {code.get('code', '?')} lines of code, dependencies {deps.get('direct', '?')} "
                      f"direct / {deps.get('all', '?')} in all"
                      + (f"; cold build {cold.get('cold_s')} s, warm rebuild {cold.get('warm_s')} s"
                         if self.cold_build else ""))

    # ------------------------------------------------------------------ one server run
    def _instance(self, item: PlanItem) -> None:
        """One server run, phase by phase (phases.py)."""
        InstanceRun(self, item).run()

    # ------------------------------------------------------------------ interop
    def _interop_column(self, sc: Scenario, server: Implementation, port: int) -> None:
        """Every built client of the scenario against this server."""
        def cell(client: Implementation) -> tuple[bool, str]:
            v = self._run_client(sc, client, self.placeholders(client, port))
            return v.ok, v.detail
        self._interop_cells(sc, server, cell, {}, "clients ok")

    def _interop_files_column(self, sc: Scenario, server: Implementation, folder: Path) -> None:
        """Every built reader of the scenario on this server's files, each
        compared with the scenario's reference reader (interop kind "files")."""
        ph = {**self.placeholders(server), "interop_dir": str(folder)}
        ref = run_verdict([expand(a, ph) for a in sc.interop.command], sc.dir, sc.interop.timeout_s,
                          cpus=self.layout.client)
        ref_line = ref.data or {}

        def cell(client: Implementation) -> tuple[bool, str]:
            if not ref.ok:
                return False, f"the reference reader failed: {ref.detail}"
            v = self._run_client(sc, client, {**self.placeholders(client), "interop_dir": str(folder)})
            got = v.data or {}
            differ = [k for k in FILES_INTEROP_KEYS if got.get(k) != ref_line.get(k)]
            if not v.ok:
                return False, v.detail if not got.get("error") else f"reader error: {got['error']}"
            if differ:
                return False, "; ".join(f"{k}: {got.get(k)!r}, reference {ref_line.get(k)!r}" for k in differ)[:500]
            return True, f"{got.get('records')} records in {got.get('files')} files, digest equal"
        self._interop_cells(sc, server, cell, {"kind": "files"}, "readers agree with the reference on its files")

    def _run_client(self, sc: Scenario, client: Implementation, placeholders: dict):
        return run_verdict([expand(a, placeholders) for a in client.client], client.dir, sc.interop.timeout_s,
                           cpus=self.layout.client, env={"LANGBENCH_CPUS": str(len(self.layout.client))})

    def _interop_cells(self, sc: Scenario, server: Implementation, cell, extra: dict, what: str) -> None:
        """One cell per implementation of the scenario as client of `server`:
        `cell(client)` -> (ok, detail) for the built ones."""
        cells = self.store.data["interop"].setdefault(sc.name, [])
        for _, impls in self.selection:
            for client in impls:
                if client.scenario != sc.name:
                    continue
                base = {"client": client.language, "server": server.language, **extra,
                        "client_impl": client.name, "server_impl": server.name}
                if client.client is None:
                    ok, detail = False, "implementation ships no client"
                elif not self.builds.get(client.id) or not self.builds[client.id].ok:
                    ok, detail = False, "client not built"
                else:
                    ok, detail = cell(client)
                cells.append({**base, "ok": ok, "detail": detail})
        self.store.set_interop(sc.name, cells)
        mine = [c for c in cells if c["server"] == server.language]
        self.progress(f"{server.id}: interop {sum(c['ok'] for c in mine)}/{len(mine)} {what}")

    def interop_only(self) -> list[dict]:
        """Build, start each server once, run every client against it (no load)."""
        self.profile = replace(self.profile, idle_s=0.0)
        self.selection = [(replace(sc, workloads=[]), impls) for sc, impls in self.selection]
        self.run()
        return [c for cells in self.store.data["interop"].values() for c in cells]


