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

from . import gclog, recovery, sampling
from .calibrate import ceiling_note, ceiling_of
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
# the phases in order; the last two run for every server that was started, whatever happened
PHASES = ("before", "start", "ready", "verify", "interop", "idle", "load", "stop", "after_stop")
ALWAYS = ("stop", "after_stop")


class PhaseFailed(Exception):
    """A phase failed: the implementation fails at `stage` with this message."""

    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage


@dataclass
class Node:
    """One node of a server run (the only one for a [run] implementation)."""

    name: str
    spec: LaunchSpec
    readiness: object
    base_key: str = ""                          # spec.key before any restart (-r1, -r2... after)
    handle: ServerHandle | None = None
    sampler: sampling.Sampler | None = None    # its own, for the per-node figures (several nodes only)
    startup_ms: float | None = None
    record: dict | None = None                  # its entry under the instance's "nodes"
    cpu_base: float = 0.0                       # CPU of its earlier processes (restarted by a fault)
    restarts: int = 0
    start_mono: float | None = None             # when its main process started (monotonic; GC log times)

    @property
    def port(self) -> int:
        return self.spec.port


class NodesView:
    """All nodes of a server run seen as one server: CPU, CFS counters and
    memory summed over the nodes' current processes (plus the CPU of the
    processes a fault replaced), so that the window arithmetic and the noise
    analysis see every node as the server."""

    def __init__(self, nodes: dict[str, Node]):
        self.nodes = nodes
        # one node: memory is read here; several: each node's own sampler reads it
        self.with_memory = len(nodes) == 1

    def cpu_seconds(self) -> float:
        total = 0.0
        for n in self.nodes.values():
            total += n.cpu_base
            if n.handle is not None:
                total += n.handle.cpu_seconds()
        return total

    def throttling(self) -> dict | None:
        parts = [n.handle.throttling() for n in self.nodes.values() if n.handle is not None]
        if not parts or any(p is None for p in parts):
            return None
        return {k: sum(p[k] for p in parts) for k in ("nr_periods", "nr_throttled", "throttled_s")}

    def main_pid(self) -> int | None:
        """One node: its main process (the probe reads its network
        namespace's sockstat); several: None (their namespaces may differ)."""
        if len(self.nodes) != 1:
            return None
        h = next(iter(self.nodes.values())).handle
        return h.main_pid() if h is not None else None

    def memory_bytes(self) -> int | None:
        handles = [n.handle for n in self.nodes.values() if n.handle is not None]
        if not self.with_memory or not handles:
            return None
        return sum(h.memory_bytes() for h in handles)


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
    nodes: dict[str, Node]         # in start order; the entry node is scenario.entry
    probe: Probe | None = None
    sampler: sampling.Sampler | None = None
    t_start: float = 0.0           # monotonic time sampling began (phase times are relative to it)
    stop_result: object | None = None
    phase: str = "before"          # the phase running now (recorded as failed_phase when one fails)

    @property
    def handle(self) -> ServerHandle | None:
        """The entry node's process or container (the server, with one node)."""
        return self.entry.handle

    @property
    def multi(self) -> bool:
        return len(self.nodes) > 1

    @property
    def entry(self) -> Node:
        return self.nodes[self.scenario.entry]

    def alive(self) -> tuple[bool, str]:
        """All nodes running; else which one is not and why."""
        for n in self.nodes.values():
            if n.handle is None or not n.handle.alive():
                code = n.handle.exit_code() if n.handle is not None else None
                tail = n.handle.log_tail() if n.handle is not None else ""
                who = f"node {n.name}" if self.multi else "server"
                return False, f"{who} exit code {code}; log: {tail}"
        return True, ""

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
            for name in PHASES:
                if name not in ALWAYS:
                    ctx.phase = name
                    getattr(self, name)(ctx)
        except (PhaseFailed, ServerError) as exc:
            stage = exc.stage if isinstance(exc, PhaseFailed) else "run"
            ctx.record["error"] = f"verification failed: {exc}" if stage == "verify" else str(exc)
            ctx.record["failed_phase"] = ctx.phase
            ctx.record["crashed"] = self._crashed(ctx)
            r.fail(ctx.impl, stage, str(exc))
        finally:
            self._end_sampling(ctx)
            for name in ALWAYS:
                ctx.phase = name
                getattr(self, name)(ctx)
            self._tidy_folder(ctx)
            r.store.save()
        return ctx

    def _new_instance(self) -> Instance:
        r, sc, impl, trial = self.run_, self.item.scenario, self.item.impl, self.item.trial
        host = r.runtime.address("server")
        names = sc.node_names
        ports = {n: r.runtime.free_port("server") for n in names}
        port = ports[sc.entry]
        mode = f"-{self.item.mode}" if self.item.mode else ""
        key = f"{r.run_id}-{sc.name}-{impl.name}-t{trial}{mode}"
        ph = r.placeholders(impl, port)
        ph["instance"] = f"{impl.name}-t{trial}{mode}-{uuid.uuid4().hex[:6]}"
        for n in names:
            ph.update({f"node.{n}.host": host, f"node.{n}.port": str(ports[n]),
                       f"node.{n}.target": f"{host}:{ports[n]}"})
        # the instance's own writable folder: the same path in both runtimes
        folder = r.out_dir / "instances" / f"{sc.name}-{impl.name}-t{trial}{mode}"
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o777)          # container users (65532...) write here too
        ph["instance_dir"] = str(folder)
        if r.services is not None:
            ph.update(r.services.placeholders())
        nodes: dict[str, Node] = {}
        for n in names:
            ns = impl.node(n)
            nph = {**ph, "port": str(ports[n]), "target": f"{host}:{ports[n]}", "node": n}
            if ns.owner is not None:
                nph["impl_dir"] = str(ns.owner.dir)
            env = {"HOST": host, "PORT": str(ports[n]), "LANGBENCH_CPUS": str(len(r.layout.server)),
                   "LANGBENCH_INSTANCE_DIR": str(folder), "LANGBENCH_NODE": n}
            env.update({k: expand(v, nph) for k, v in sc.env.items()})
            env.update({k: expand(v, nph) for k, v in ns.env.items()})
            env.update(self.item.server_env)            # the workloads' server_env (RECORD=0...)
            suffix = f"-{n}" if len(names) > 1 else ""
            spec = LaunchSpec(run_id=r.run_id, key=key + suffix, impl=ns.owner or impl, scenario=sc, host=host,
                              port=ports[n],
                              cpus=r.layout.server,
                              cpu_quota=sc.topology.node_quota(r.profile.server_cpu_quota) if sc.topology
                              else r.profile.server_cpu_quota, env=env,
                              command=[expand(a, nph) for a in ns.command],
                              log_path=r.logs / f"server-{sc.name}-{impl.name}-t{trial}{mode}{suffix}.log",
                              labels={"langbench.run": r.run_id, "langbench.impl": impl.id, "langbench.node": n},
                              cfs_period_us=r.profile.cfs_period_us, mounts={str(folder): "rw"},
                              nofile=nofile_target(), role="server",
                              image_command=[expand(a, nph) for a in ns.container_command]
                              if ns.container_command else None)
            readiness = sc.topology.readiness[n] if sc.topology else sc.readiness
            nodes[n] = Node(n, spec, readiness, base_key=spec.key)
        entry = nodes[sc.entry].spec
        # {env.NAME}: the entry node's environment, for the scenario's checks
        ph.update({f"env.{k}": v for k, v in entry.env.items()})
        record = {"key": key, "scenario": sc.name, "implementation_id": impl.id, "trial": trial,
                  "mode": self.item.mode, "server_env": dict(self.item.server_env),
                  "workloads": [w.name for w in sc.workloads],
                  "port": port, "command": entry.command, "env": entry.env, "log": str(entry.log_path),
                  "startup_ms": None, "verify": None, "idle": None, "shutdown": None,
                  "crashed": False, "error": None, "phases": [], "timeseries": None,
                  "instance_tag": ph["instance"], "ok_total": 0, "instance_dir": str(folder),
                  "nofile": entry.nofile, "after_stop": None}
        if len(names) > 1:
            record["topology"] = sc.topology.to_json()
            record["nodes"] = {}
            for n, node in nodes.items():
                node.record = {"port": node.port, "command": node.spec.command, "env": node.spec.env,
                               "implementation": node.spec.impl.id,
                               "log": str(node.spec.log_path), "startup_ms": None, "shutdown": None,
                               "restarts": 0, "timeseries": None}
                record["nodes"][n] = node.record
        r.store.add_instance(record)
        return Instance(sc, impl, trial, key, host, port, folder, ph, record, nodes)

    @staticmethod
    def _crashed(ctx: Instance) -> bool:
        return any(n.handle is not None and not n.handle.alive() for n in ctx.nodes.values())

    def _sample_node(self, node: Node) -> None:
        if node.sampler is not None:
            node.sampler.stop()
        h = node.handle
        node.sampler = sampling.Sampler(sampling.counters_of(h), h.memory_bytes, self.run_.profile.sample_hz,
                                        memory_every=MEMORY_EVERY).start()

    @staticmethod
    def _mark_nodes(ctx: Instance) -> None:
        """A reading of every node's own sampler now (a window's edge)."""
        if ctx.multi:
            for node in ctx.nodes.values():
                if node.sampler is not None:
                    node.sampler.mark()

    def _per_node(self, ctx: Instance, t0: float, t1: float) -> dict:
        """Each node's CPU and memory over [t0, t1] from its own sampler (None
        where a fault replaced its process inside the window)."""
        out = {}
        for name, node in ctx.nodes.items():
            ns = node.sampler.snapshot() if node.sampler is not None else []
            cpu = sampling.delta(ns, sampling.SERVER_CPU, t0, t1) if ns else None
            mem = sampling.memory_stats(sampling.window(ns, t0, t1))
            out[name] = {"cpu_s": cpu, "cpu_cores": cpu / (t1 - t0) if cpu is not None and t1 > t0 else None,
                         "rss_mb": mem["mean_mb"], "rss_peak_mb": mem["peak_mb"], "samples": mem["n"]}
        return out

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
        """Start the nodes in order; each but the last is waited for before the
        next starts (a node may connect to the one started before it)."""
        nodes = list(ctx.nodes.values())
        for i, node in enumerate(nodes):
            self._start_node(ctx, node)
            quota = self._check_applied_quota(node.handle)
            if node.record is not None:
                node.record["quota"] = quota
            if node.name == ctx.scenario.entry:
                ctx.record["runtime"] = node.handle.describe()
                ctx.record["quota"] = quota
            if i < len(nodes) - 1:
                self._wait_node(ctx, node)

    def _start_node(self, ctx: Instance, node: Node) -> Node:
        r = self.run_
        try:
            node.handle = r.runtime.start(node.spec)
        except (OSError, LangbenchError) as exc:
            who = f"node {node.name} " if ctx.multi else ""
            raise ServerError(f"could not start {who}{node.spec.command[0]}: {exc}") from None
        r.live[node.spec.key] = node.handle
        pid = node.handle.main_pid()
        node.start_mono = gclog.process_start_monotonic(pid) if pid else None
        if node.record is not None:
            node.record["runtime"] = node.handle.describe()
        return node

    def _wait_node(self, ctx: Instance, node: Node) -> float:
        h = node.handle
        who = f"node {node.name}: " if ctx.multi else ""
        try:
            s = wait_ready(node.readiness, ctx.host, node.port, h.alive,
                           lambda: f"{who}exit code {h.exit_code()}; log: {h.log_tail()}", h.started_at)
        except ServerError as exc:
            raise ServerError(f"{who}{exc}" if who and not str(exc).startswith(who) else str(exc)) from None
        node.startup_ms = s * 1000
        if node.record is not None:
            node.record["startup_ms"] = node.startup_ms
        return s

    def ready(self, ctx: Instance) -> None:
        sc = ctx.scenario
        last = list(ctx.nodes.values())[-1]
        self._wait_node(ctx, last)
        first = next(iter(ctx.nodes.values()))
        startup = (time.monotonic() - first.handle.started_at) if ctx.multi else last.startup_ms / 1000
        ctx.record["startup_ms"] = startup * 1000
        if sc.readiness.params.get("counts_as_ok"):
            ctx.count_ok(1)      # the probe's own successful request (an event, say)
        self._say(ctx, f"ready in {startup * 1000:.0f} ms" + (f" ({len(ctx.nodes)} nodes)" if ctx.multi else ""))

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
            done = r.__dict__.setdefault("verified_once", set())
            if step.once and (ctx.impl.id, step.name) in done:
                steps.append({"name": step.name, "ok": True, "skipped": True,
                              "detail": "passed on this implementation's first server run of this run (once = true)",
                              "checks": []})
                continue
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
            if step.once:
                done.add((ctx.impl.id, step.name))
        n = len(rec["verify"]["checks"])
        skipped = [st["name"] for st in steps if st.get("skipped")]
        rec["verify"].update(ok=True, detail=f"{n}/{n} checks passed"
                             + (f" ({', '.join(skipped)}: passed on an earlier server run)" if skipped else ""))
        r.store.save()
        self._say(ctx, f"verified ({rec['verify']['detail']})")

    def interop(self, ctx: Instance) -> None:
        r = self.run_
        if (ctx.trial == 1 and ctx.scenario.interop is not None and r.interop
                and ctx.scenario.interop_kind == "client"):
            r._interop_column(ctx.scenario, ctx.impl, ctx.port)

    def idle(self, ctx: Instance) -> None:
        """Start sampling; the idle window: the server started, verified and untouched."""
        r = self.run_
        view = NodesView(ctx.nodes)
        ctx.probe = Probe(view, r.layout.client, r.layout.server)
        ctx.sampler = sampling.Sampler(ctx.probe.counters, view.memory_bytes, r.profile.sample_hz,
                                       memory_every=MEMORY_EVERY).start()
        if ctx.multi:
            for node in ctx.nodes.values():
                self._sample_node(node)
        ctx.probe.mark, ctx.probe.add = ctx.sampler.mark, ctx.sampler.add
        ctx.t_start = time.monotonic()
        sa = r.services.marks() if r.services else {}
        self._mark_nodes(ctx)
        a = ctx.sampler.mark()
        time.sleep(r.profile.idle_s)
        b = ctx.sampler.mark()
        self._mark_nodes(ctx)
        sb = r.services.marks() if r.services else {}
        samples = ctx.sampler.snapshot()
        win = self._window(samples, a.t, b.t)
        ctx.record["idle"] = {"window_s": b.t - a.t, "cpu_cores": win["cpu_cores"],
                              "rss_mb": sampling.memory_stats(sampling.window(samples, a.t, b.t))["mean_mb"],
                              "noise": win["noise"], "client": win["client"]}
        if ctx.multi:
            per = self._per_node(ctx, a.t, b.t)
            ctx.record["idle"]["nodes"] = per
            ctx.record["idle"]["rss_mb"] = _sum(v["rss_mb"] for v in per.values())
        if sa:
            ctx.record["idle"]["services"] = r.services.window(sa, sb)
        ctx.mark_phase("idle", a.t, b.t)
        r.store.save()

    def load(self, ctx: Instance) -> None:
        for w in ctx.scenario.workloads:
            self.workload(ctx, w)

    def stop(self, ctx: Instance) -> None:
        """SIGTERM to every node, the last started first; the instance's
        shutdown is the entry node's (a single node: the server's)."""
        r = self.run_
        for node in reversed(list(ctx.nodes.values())):
            h = node.handle
            if h is None:
                continue
            crashed_before = not h.alive()
            res = h.stop(grace_s=5.0)
            r.live.pop(node.spec.key, None)
            shutdown = {"exit_code": res.exit_code, "shutdown_ms": res.shutdown_s * 1000,
                        "killed": res.killed, "was_running": not crashed_before}
            if node.record is not None:
                node.record["shutdown"] = shutdown
            if node.name == ctx.scenario.entry or not ctx.multi:
                ctx.stop_result = res
                ctx.record["shutdown"] = shutdown
            if not crashed_before:
                who = f"node {node.name} " if ctx.multi else ""
                self._say(ctx, f"{who}stopped in {res.shutdown_s * 1000:.0f} ms, "
                               f"exit {res.exit_code if not res.killed else 'killed after 5 s'}")
        if ctx.multi and ctx.record["shutdown"] is not None:
            # a clean stop only when every node was running until it was stopped
            ctx.record["shutdown"]["was_running"] = all(n.record["shutdown"] and n.record["shutdown"]["was_running"]
                                                        for n in ctx.nodes.values())
        self._gc_pauses(ctx)

    def _gc_pauses(self, ctx: Instance) -> None:
        """The entry node's GC pauses from its log (written in full once it
        stopped): on the instance (times from the start of sampling) and,
        per measurement, those in its send window (gclog.window)."""
        r = self.run_
        node = ctx.nodes.get(ctx.scenario.entry)
        if node is None or node.start_mono is None or node.restarts or not ctx.t_start:
            return
        try:
            text = node.spec.log_path.read_text(errors="replace")
        except OSError:
            return
        gc = gclog.pauses(text, node.start_mono)
        if gc is None:
            return
        ctx.record["gc"] = {"source": gc["source"], "clock": gc["clock"], "count": len(gc["pauses"]),
                            "pauses": [[round(t - ctx.t_start, 4), ms, what]
                                       for t, ms, what in gc["pauses"][:gclog.MAX_LISTED]]}
        for m in r.store.data["measurements"]:
            ld = m.get("load") or {}
            if m.get("instance") != ctx.key or ld.get("send_t0") is None or ld.get("send_t1") is None:
                continue
            m["gc"] = gclog.window(gc, ld["send_t0"], ld["send_t1"])
            r.store.declare_metrics(m["gc"]["metrics"], "the server's GC log")
        r.store.save()

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
        r.store.declare_metrics(v.metrics, f"after-stop check of {sc.name}")
        self._say(ctx, f"after-stop check {'passed' if v.ok else 'FAILED'}: {v.detail}")
        if not v.ok and ctx.record["error"] is None:
            ctx.record["error"] = f"check after stop failed: {v.detail}"
            r.fail(ctx.impl, "after-stop", v.detail)
        self._interop_files(ctx)

    def _interop_files(self, ctx: Instance) -> None:
        """Files interop: once per server (trial 1, the first of its runs
        that left files), every reader on the files it finalised."""
        r, sc = self.run_, ctx.scenario
        if sc.interop is None or sc.interop_kind != "files" or not r.interop or ctx.trial != 1:
            return
        if any(c["server"] == ctx.impl.language for c in r.store.data["interop"].get(sc.name, [])):
            return
        if not any(f.is_file() for f in ctx.folder.rglob("*")):
            return
        r._interop_files_column(sc, ctx.impl, ctx.folder)

    # ------------------------------------------------------------------ helpers
    def _end_sampling(self, ctx: Instance) -> None:
        r, s = self.run_, ctx.sampler
        for node in ctx.nodes.values():
            if node.sampler is not None:
                node.sampler.stop()
                ns = node.sampler.snapshot()
                if ns and node.record is not None:
                    node.record["timeseries"] = sampling.timeseries(ns, ctx.t_start)
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
        want, period = handle.spec.cpu_quota, r.profile.cfs_period_us
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
        return analyse(samples, t0, t1, len(layout.client), n_server=len(layout.server),
                       client_bound_share=p.client_bound_threshold,
                       noisy_foreign_cores=p.noisy_foreign_cores, noisy_steal_cores=p.noisy_steal_cores)

    def _driver_args(self, ctx: Instance, w: Workload, on_start) -> dict:
        return dict(target=ctx.target, scenario=ctx.scenario, workload=w, cpus=self.run_.layout.client,
                    on_start=on_start, instance_dir=ctx.folder)

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
        kinds = w.kinds(driver.level_kinds)
        if levels.warmup_s > 0 and "concurrency" in kinds and levels.concurrency:
            self.warmup(ctx, driver, w)
        for level in levels.levels(kinds):
            alive, why = ctx.alive()
            if not alive:
                raise ServerError(f"{'a node' if ctx.multi else 'server'} died during workload {w.name} ({why})")
            self.level(ctx, driver, w, level, w.duration_s(r.profile_name, levels.duration_s))

    def _act(self, ctx: Instance, fault: Fault) -> str:
        """Carry out one fault on a node of this server run or a scenario service."""
        t0 = time.monotonic()
        if fault.target in ctx.nodes:
            node = ctx.nodes[fault.target]
            if fault.action in ("stop", "kill", "restart"):
                self._stop_node(node, grace_s=0.0 if fault.action == "kill" else 5.0)
            if fault.action in ("start", "restart"):
                self._restart_node(ctx, node)
        else:
            svc = self.run_.services
            if svc is None or fault.target not in svc.running:
                raise ServerError(f"no running service or node '{fault.target}'")
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

    def _stop_node(self, node: Node, grace_s: float) -> None:
        h = node.handle
        if h is None:
            return
        try:
            # the summed counter carries on across the restart; what the process
            # spends between this reading and its exit (its shutdown) is not counted
            node.cpu_base += h.cpu_seconds()
        except (OSError, ValueError):
            pass
        node.handle = None
        h.stop(grace_s=grace_s)
        self.run_.live.pop(node.spec.key, None)

    def _restart_node(self, ctx: Instance, node: Node) -> None:
        if node.handle is not None:
            return
        node.restarts += 1
        node.spec.key = f"{node.base_key}-r{node.restarts}"      # a fresh container name
        self._start_node(ctx, node)
        self._wait_node(ctx, node)
        if node.record is not None:
            node.record["restarts"] = node.restarts
        if ctx.multi:
            self._sample_node(node)

    def level(self, ctx: Instance, driver, w: Workload, level: Level, duration_s: float) -> None:
        r, sc, impl, trial = self.run_, ctx.scenario, ctx.impl, ctx.trial
        sampler = ctx.sampler
        raw = r.out_dir / "raw" / f"{sc.name}-{impl.name}-t{trial}-{w.name}-{level.key}.json"
        raw.parent.mkdir(parents=True, exist_ok=True)
        m = {"scenario": sc.name, "implementation_id": impl.id, "instance": ctx.key, "trial": trial,
             "workload": w.name, "level": level.to_json(), "ok": False, "error": None,
             "load": None, "server": None}
        faults = FaultSchedule(w.faults, duration_s, lambda f: self._act(ctx, f)) if w.faults else None

        def on_start(event):
            ctx.probe.watch_tool(event)
            if faults is not None and isinstance(event, int):
                faults.arm()

        sa = r.services.marks() if r.services and not w.faults else {}
        self._mark_nodes(ctx)
        disk_a = _folder_bytes(ctx.folder)
        a = sampler.mark()
        try:
            res = driver.run(level=level, duration_s=duration_s, raw_path=raw, **self._driver_args(ctx, w, on_start))
        except ToolError as exc:
            res = None
            m["error"] = str(exc)
        b = sampler.mark()
        disk_b = _folder_bytes(ctx.folder)
        self._mark_nodes(ctx)
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
            cal = ((r.store.data.get("ceilings") or {}).get(sc.name) or {}).get(w.name)
            ceiling = ceiling_of(cal, level.key, res.rps)
            if ceiling is not None:
                m["ceiling"] = ceiling
            ctx.count_ok(res.ok_count)
            if m.get("faults") and res.send_t0 is not None and (res.detail or {}).get("per_second"):
                rec = recovery.recovery(res.detail["per_second"], res.send_t0,
                                        [dict(e, t=e["t"] + ctx.t_start) for e in m["faults"]], duration_s)
                if rec is not None:
                    m["recovery"] = dict(rec, metrics=recovery.metrics(rec))
                    r.store.declare_metrics(m["recovery"]["metrics"], "the harness: faults and the load tool's "
                                                                      "answers per second")
        cores = win["cpu_cores"]
        m["server"] = {"cpu_s": win["cpu_s"], "cpu_cores": cores, "window_s": win["window_s"],
                       "window_basis": basis, "rss_mb": mem["mean_mb"], "rss_peak_mb": mem["peak_mb"],
                       "samples": mem["n"], "throttling": win["throttling"],
                       "quota": ctx.record.get("quota")}
        # what the server wrote to its instance folder (recordings...): the
        # growth of its files' sizes over the tool's whole run
        m["server"]["disk"] = {"bytes": disk_b - disk_a, "window_s": b.t - a.t,
                               "mb_per_s": (disk_b - disk_a) / 1e6 / (b.t - a.t) if b.t > a.t else None,
                               "basis": "growth of the instance folder's file sizes over the tool's whole run"}
        if res is not None and res.steps:
            m["steps"] = self._steps(ctx, samples, res.steps, a.t, b.t)
        if ctx.multi:
            per = self._per_node(ctx, t0, t1)
            m["nodes"] = per
            m["server"]["rss_mb"] = _sum(v["rss_mb"] for v in per.values())
            m["server"]["rss_peak_mb"] = _sum(v["rss_peak_mb"] for v in per.values())
            m["server"]["samples"] = min(v["samples"] for v in per.values())
            m["server"]["summed_over_nodes"] = list(per)
        m["client"] = win["client"]
        m["noise"] = win["noise"]
        if getattr(r, "canary", None) is not None:
            hs = r.canary.window(t0, t1)
            m["host_speed"] = {"server": {c: hs[c] for c in map(str, r.layout.server) if c in hs},
                               "client": {c: hs[c] for c in map(str, r.layout.client) if c in hs}}
        if res is not None:
            m["server"]["cpu_s_per_1k"] = (win["cpu_s"] / res.ok_count * 1000
                                           if res.ok_count and win["cpu_s"] is not None else None)
            m["server"]["rps_per_cpu"] = res.rps / cores if cores else None
        if cores is None and m["error"] is None:
            m["error"] = "the server's CPU counter could not be read at the window's edges"
        alive, why = ctx.alive()
        if not alive:
            m["error"] = f"{'a node' if ctx.multi else 'server'} died under load ({why})"
        elif res is not None and res.ok_count == 0 and level.kind not in driver.quiet_level_kinds:
            m["error"] = "no successful answer: " + (", ".join(f"{k}: {v}" for k, v in
                                                              list(res.error_kinds.items())[:2]) or "?")
        elif res is not None and res.status_check and m["error"] is None:
            m["error"] = f"wrong mix of answers: {res.status_check}"
        elif res is not None and res.problem and m["error"] is None:
            m["error"] = res.problem
        if m["error"] is None and any(not e["ok"] for e in m.get("faults", [])):
            bad = next(e for e in m["faults"] if not e["ok"])
            m["error"] = f"fault '{bad['action']} {bad['target']}' failed: {bad['detail']}"
        if alive:
            check = self._after_load(ctx)
            if check is not None:
                m["after_load"] = check
                r.store.declare_metrics(check.get("metrics") or {}, f"after-load check of {sc.name}")
                if not check["ok"] and m["error"] is None:
                    m["error"] = f"check after load failed: {check['detail']}"
        m["ok"] = m["error"] is None
        r.store.add_measurement(m)
        self._report_level(ctx, w, level, res, m, win, mem, cores)
        if not alive:
            raise ServerError(m["error"])

    def _steps(self, ctx: Instance, samples, steps: list[dict], lo: float, hi: float) -> list[dict]:
        """A driver's step-wise results (a connection ramp) with the server's
        CPU and memory over each step; times made relative to sampling."""
        out = []
        for st in steps:
            t0, t1 = st.get("t0"), st.get("t1")
            row = {k: v for k, v in st.items() if k not in ("t0", "t1")}
            if isinstance(t0, (int, float)) and isinstance(t1, (int, float)) and lo <= t0 < t1 <= hi + 0.05:
                t1 = min(t1, hi)
                win = self._window(samples, t0, t1)
                mem = sampling.memory_stats(sampling.window(samples, t0, t1))
                if ctx.multi:
                    per = self._per_node(ctx, t0, t1)
                    mem = {"mean_mb": _sum(v["rss_mb"] for v in per.values()),
                           "peak_mb": _sum(v["rss_peak_mb"] for v in per.values()), "n": None}
                row.update(t0=t0 - ctx.t_start, t1=t1 - ctx.t_start, cpu_cores=win["cpu_cores"],
                           rss_mb=mem["mean_mb"], rss_peak_mb=mem["peak_mb"])
                # the kernel's TCP sockets and buffer memory in the server's
                # network namespace over the step (sampled with its memory)
                in_win = sampling.window(samples, t0, t1)
                socks = sampling.gauge_mean(in_win, sampling.NET_TCP_INUSE)
                tcp_mem = sampling.gauge_mean(in_win, sampling.NET_TCP_MEM)
                if socks is not None:
                    shared = getattr(ctx.probe, "netns_shared", None)
                    row.update(server_tcp_sockets=round(socks), server_tcp_buffers_mb=tcp_mem / 1e6,
                               server_netns="shared with the load tool (both ends of each connection)" if shared
                               else "the server's own (its ends only)")
                ctx.mark_phase(f"step {row.get('name', len(out) + 1)}", t0, t1)
            else:
                row["error"] = "step outside the tool's run: no server figures"
            out.append(row)
        # memory per connection: the slope from the previous step (a ramp)
        for prev, row in zip(out, out[1:]):
            dn = (row.get("connections") or 0) - (prev.get("connections") or 0)
            if dn > 0 and row.get("rss_mb") is not None and prev.get("rss_mb") is not None:
                row["kb_per_connection"] = (row["rss_mb"] - prev["rss_mb"]) * 1000 / dn
        return out

    def _faults_done(self, ctx: Instance, faults: FaultSchedule, w: Workload, level: Level) -> list[dict]:
        """Wait for the schedule; services left stopped by it are started again
        (the next level starts from the same state); times relative to sampling."""
        events = faults.finish()
        svc = self.run_.services
        for f in w.faults:
            node = ctx.nodes.get(f.target)
            if node is not None and node.handle is None:
                self._restart_node(ctx, node)
                events.append({"at": None, "action": "start", "target": f.target, "t": time.monotonic(),
                               "took_s": 0.0, "ok": True, "detail": "restored after the level"})
            elif svc is not None and f.target in svc.running and svc.running[f.target].handle is None:
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
        limited = (m.get("ceiling") or {}).get("client_limited")
        flags = [f for f, on in (("CLIENT-BOUND", res.client_bound), ("CLIENT-LIMITED", limited),
                                 ("NOISY", win["noise"]["noisy"])) if on]
        thr = win["throttling"] or {}
        r.progress(f"{ctx.impl.id} t{ctx.trial} {w.name} {level.key}: {res.rps:.0f} rps, "
                   f"p99 {res.latency_ms['p99'] or 0:.2f} ms, server {cores or 0:.2f} cores "
                   f"(throttled {(thr.get('throttled_share') or 0):.0%} of periods), "
                   f"{(m['server']['rss_mb'] or 0):.1f} MB, errors {res.errors}, "
                   f"client CPUs {(win['client']['busy_share'] or 0):.0%} busy"
                   f"{ceiling_note(m.get('ceiling'))}"
                   f"{', ' + ', '.join(flags) if flags else ''}"
                   f"{'' if m['ok'] else ' FAILED: ' + m['error']}")


def _folder_bytes(folder: Path) -> int:
    """Bytes of the files under a folder (files vanishing meanwhile skipped)."""
    total = 0
    for f in folder.rglob("*"):
        try:
            if f.is_file():
                total += f.stat().st_size
        except OSError:
            continue
    return total


def _sum(values) -> float | None:
    """A sum that is None when any part is unknown (never a partial total)."""
    total = 0.0
    for v in values:
        if v is None:
            return None
        total += v
    return total
