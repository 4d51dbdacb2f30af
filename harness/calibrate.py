"""Driver ceilings: what a load tool can measure at all on this machine.

For every workload of a scenario, the workload's driver is run at each of
the profile's levels against a reference null server (Driver.reference():
grpc-null for the gRPC drivers, nginx for wrk), which answers in the
workload's declared shape and does no work. The reference runs where a
server under test runs: a native process pinned to the server CPUs under the
same CFS quota (`budget`). What the driver reaches there, level by level, is
the ceiling of that driver, shape and layout; `max_rps` is its highest.

Each level also says what bound it, from the same window analysis as a real
level: `client` (the client CPUs were saturated: the driver's own limit),
`reference` (the null server used its whole quota: the driver can do at
least this), or `neither` (latency-bound: few calls in flight). A real
level is then shown as a fraction of the ceiling at the same level, and is
flagged `client_limited` when its throughput is above half the driver's
maximum: there the tool's share of the machine already shapes the figure,
whether or not the client CPUs read as saturated.
"""
from __future__ import annotations

import socket
import time

from . import sampling
from .drivers import get_driver
from .errors import LangbenchError, ToolError
from .limits import nofile_target
from .manifest import Level, Scenario, Workload
from .probe import Probe, analyse
from .runtimes.base import LaunchSpec
from .runtimes.process import ProcessRuntime

CLIENT_LIMITED_SHARE = 0.5        # a result above this share of the driver's maximum is client-limited
REFERENCE_BUSY_SHARE = 0.9        # the reference used this share of its quota: it, not the driver, was the limit
READY_TIMEOUT_S = 15.0


def _wait_port(host: str, port: int, handle, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not handle.alive():
            raise ToolError(f"the reference server exited with code {handle.exit_code()}: {handle.log_tail()}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise ToolError(f"the reference server did not accept connections on {host}:{port} within {timeout_s:.0f} s")


def bound_of(win: dict, quota: float | None, n_server_cpus: int) -> str:
    """What limited one calibration level (see the module docstring)."""
    if win["client"]["saturated"]:
        return "client"
    budget = quota if quota is not None else float(n_server_cpus)
    thr = (win.get("throttling") or {}).get("throttled_share") or 0.0
    if (win["cpu_cores"] or 0.0) >= REFERENCE_BUSY_SHARE * budget or thr >= 0.5:
        return "reference"
    return "neither"


def calibrate_workload(r, sc: Scenario, w: Workload) -> dict:
    """Drive the workload's reference null server at each level of the run's
    profile, under the server's budget (one pass, after a short warm-up).
    When the best of those levels was bound by the null server's budget, the
    driver can do more: its top level is run once more against the null
    server given the server CPUs uncapped, which measures the driver's own
    maximum. Returns the record stored in results.json
    `ceilings[scenario][workload]`."""
    driver = get_driver(w.driver)
    prof, layout = r.profile, r.layout
    levels = sc.profiles[r.profile_name]
    quota = prof.server_cpu_quota
    rec: dict = {"driver": driver.name, "tool_version": driver.version(), "reference": None,
                 "placement": "native process pinned to the server CPUs under the server's CPU quota",
                 "budget": {"server_cpus": list(layout.server), "cpu_quota": quota,
                            "cfs_period_us": prof.cfs_period_us, "client_cpus": list(layout.client)},
                 "levels": {}, "uncapped": None, "max_rps": None, "max_level": None, "max_bound": None,
                 "error": None}
    # levels that expect no answers (a ramp of idle connections) have no ceiling
    all_levels = [lv for lv in levels.levels(w.kinds(driver.level_kinds)) if lv.kind not in driver.quiet_level_kinds]
    if not all_levels:
        rec["error"] = "no level of this workload expects answers: nothing to calibrate"
        rec["skipped"] = True
        return rec
    workdir = r.out_dir / "calibration" / f"{sc.name}-{w.name}"
    workdir.mkdir(parents=True, exist_ok=True)
    host = r.runtime.address("server")
    port = r.runtime.free_port("server")
    ref = driver.reference(w, sc, host=host, port=port, workdir=workdir, threads=len(layout.server))
    if ref is None:
        rec["error"] = f"driver {driver.name} has no reference server"
        return rec
    rec["reference"] = ref.to_json()
    for name, text in ref.files.items():
        (workdir / name).write_text(text)
    try:
        rec["levels"] = _pass(r, sc, w, driver, ref, host, port, workdir, quota, all_levels, "capped")
    except LangbenchError as exc:
        rec["error"] = str(exc)
    closed = {k: v for k, v in rec["levels"].items() if v.get("kind") == "concurrency" and v.get("rps")}
    if not closed:
        return rec
    best = max(closed, key=lambda k: closed[k]["rps"])
    rec.update(max_rps=closed[best]["rps"], max_level=best, max_bound=closed[best]["bound"])
    if rec["max_bound"] == "reference" and quota is not None:
        top = [lv for lv in all_levels if lv.key == best]
        try:
            got = _pass(r, sc, w, driver, ref, host, port, workdir, None, top, "uncapped")[best]
        except LangbenchError as exc:
            got = {"error": str(exc)}
        rec["uncapped"] = dict(got, level=best)
        if got.get("rps") and got["rps"] > rec["max_rps"]:
            rec.update(max_rps=got["rps"], max_level=f"{best}, null server uncapped", max_bound=got["bound"])
    # What the tool's CPUs could carry at its cheapest measured CPU cost per
    # call (closed levels): an estimate, beside the measured maximum, for when
    # no null server on the server CPUs is fast enough to show the tool's limit.
    per_call = [v["tool_us_per_call"] for v in [*closed.values(), rec["uncapped"] or {}]
                if v.get("tool_us_per_call")]
    if per_call:
        rec["tool_capacity_est"] = round(len(r.layout.client) * 1e6 / min(per_call))
    return rec


def _pass(r, sc: Scenario, w: Workload, driver, ref, host: str, port: int, workdir, quota, todo: list[Level],
          tag: str) -> dict:
    """Start the reference under `quota`, warm up, drive each level, stop it."""
    prof, layout = r.profile, r.layout
    key = f"{r.run_id}-ref-{sc.name}-{w.name}-{tag}"
    spec = LaunchSpec(run_id=r.run_id, key=key, impl=None, scenario=sc, host=host, port=port,
                      cpus=list(layout.server), cpu_quota=quota, env={}, command=ref.command,
                      log_path=r.logs / f"reference-{sc.name}-{w.name}.log", cwd=workdir,
                      cfs_period_us=prof.cfs_period_us, role="server", nofile=nofile_target())
    rt = ProcessRuntime()
    rt.allow_uncapped = r.allow_uncapped
    handle = rt.start(spec)
    r.live[key] = handle
    sampler = None
    out: dict = {}
    try:
        _wait_port(host, port, handle, READY_TIMEOUT_S)
        probe = Probe(handle, layout.client, layout.server)
        sampler = sampling.Sampler(probe.counters, handle.memory_bytes, prof.sample_hz, memory_every=3).start()
        probe.mark, probe.add = sampler.mark, sampler.add
        args = dict(target=f"{host}:{port}", scenario=sc, workload=w, cpus=list(layout.client))
        closed = [lv.value for lv in todo if lv.kind == "concurrency"]
        if closed:
            try:
                driver.run(level=Level("concurrency", max(closed)), on_start=probe.watch_tool, raw_path=None,
                           duration_s=prof.warmup_window_s + driver.overhead_s(w), **args)
            except ToolError:
                pass                 # a real problem shows again at the first level
        levels = sc.profiles[r.profile_name]
        for level in todo:
            out[level.key] = _level(r, driver, probe, sampler, level, levels.duration_s, quota, args)
    finally:
        if sampler is not None:
            sampler.stop()
        handle.stop(grace_s=2.0)
        r.live.pop(key, None)
    return out


def _level(r, driver, probe: Probe, sampler, level: Level, duration_s: float, quota, args: dict) -> dict:
    a = sampler.mark()
    try:
        res = driver.run(level=level, duration_s=duration_s, raw_path=None, on_start=probe.watch_tool, **args)
    except ToolError as exc:
        return {"kind": level.kind, "value": level.value, "error": str(exc)}
    b = sampler.mark()
    if res.send_t0 is not None and a.t <= res.send_t0 < res.send_t1 <= b.t + 0.05:
        t0, t1 = res.send_t0, min(res.send_t1, b.t)
    else:
        t0, t1 = a.t, b.t
    p = r.profile
    win = analyse(sampler.snapshot(), t0, t1, len(r.layout.client), n_server=len(r.layout.server),
                  client_bound_share=p.client_bound_threshold,
                  noisy_foreign_cores=p.noisy_foreign_cores, noisy_steal_cores=p.noisy_steal_cores)
    thr = win["throttling"] or {}
    return {"kind": level.kind, "value": level.value, "rps": round(res.rps, 1), "ok": res.ok_count,
            "errors": res.errors, "latency_ms": res.latency_ms,
            "client_busy_share": win["client"]["busy_share"], "tool_cores": win["client"]["tool_cores"],
            "reference_cores": win["cpu_cores"], "reference_throttled_share": thr.get("throttled_share"),
            "tool_us_per_call": (win["client"]["tool_cores"] / res.rps * 1e6
                                 if win["client"]["tool_cores"] and res.rps else None),
            "noisy": win["noise"]["noisy"], "bound": bound_of(win, quota, len(r.layout.server)),
            "window_s": round(t1 - t0, 3)}


def ceiling_of(cal: dict | None, level_key: str, rps: float | None) -> dict | None:
    """A measured level against its workload's calibration: the ceiling at
    the same level, the driver's maximum, the fractions, client_limited."""
    if not cal or rps is None or not cal.get("max_rps"):
        return None
    same = (cal.get("levels") or {}).get(level_key) or {}
    lvl = same.get("rps")
    mx = cal["max_rps"]
    return {"level_rps": lvl, "fraction": rps / lvl if lvl else None,
            "max_rps": mx, "fraction_of_max": rps / mx, "max_bound": cal.get("max_bound"),
            "client_limited": rps > CLIENT_LIMITED_SHARE * mx}


def ceiling_note(ceiling: dict | None) -> str:
    """The progress line's words on a level's ceiling."""
    if not ceiling:
        return ""
    lvl = f"{ceiling['fraction']:.0%} of the tool's ceiling at this level, " if ceiling.get("fraction") else ""
    return f", {lvl}{ceiling['fraction_of_max']:.0%} of its maximum"


def estimate_s(r, sc: Scenario) -> float:
    """Rough seconds the calibration of one scenario takes."""
    levels = sc.profiles[r.profile_name]
    total = 0.0
    for w in sc.workloads:
        driver = get_driver(w.driver)
        kinds = [k for k in w.kinds(driver.level_kinds) if k not in driver.quiet_level_kinds]
        total += 2.0 + r.profile.warmup_window_s + len(levels.levels(tuple(kinds))) * (levels.duration_s + 1.0)
    return total


def describe(cal: dict) -> str:
    """One progress line for a workload's calibration."""
    if cal.get("error") and not cal.get("levels"):
        return f"no ceiling: {cal['error']}"
    parts = [f"{k} {v['rps']:.0f}/s ({v['bound']})" if v.get("rps") is not None else f"{k} failed"
             for k, v in cal["levels"].items()]
    return ", ".join(parts) + (f"; max {cal['max_rps']:.0f}/s" if cal.get("max_rps") else "")
