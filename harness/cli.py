"""The `langbench` command line."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

from . import __version__
from .errors import ExitCode, InputError, LangbenchError
from .runtimes import runtime_names
from .summary import FDR_METHODS
from .manifest import discover
from .profiles import PROFILES, cpu_layout, get_profile, parse_cpus


def project_root(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit).resolve()
    env = os.environ.get("LANGBENCH_ROOT")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for p in (here, *here.parents):
        if (p / "scenarios").is_dir() and (p / "implementations").is_dir():
            return p
    return Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ subcommands

def cmd_list(args) -> int:
    cat = discover(project_root(args.root))
    if args.format == "json":
        out = []
        for name, sc in sorted(cat.scenarios.items()):
            out.append({"scenario": name, "title": sc.title, "protocol": sc.protocol,
                        "workloads": [w.name for w in sc.workloads], "profiles": sorted(sc.profiles),
                        "implementations": [{"name": i.name, "language": i.language, "framework": i.framework}
                                            for i in cat.implementations.get(name, [])]})
            if sc.topology is not None:
                out[-1]["topology"] = sc.topology.to_json()
        print(json.dumps(out, indent=1))
        return ExitCode.OK
    for name, sc in sorted(cat.scenarios.items()):
        print(f"{name}: {sc.title} ({sc.protocol})")
        if sc.topology is not None:
            print(f"  nodes {' -> '.join(sc.topology.nodes)} (start order; entry {sc.topology.entry})")
        for w in sc.workloads:
            faults = "; faults " + ", ".join(f"{f.action} {f.target} at {f.at:.0%}" for f in w.faults) \
                if w.faults else ""
            print(f"  workload {w.name} [{w.driver}]: {w.description}{faults}")
        for i in cat.implementations.get(name, []):
            print(f"  implementation {i.name}: {i.language}, {i.framework}")
        if not cat.implementations.get(name):
            print("  (no implementations)")
    return ExitCode.OK


def choose_runtime(name: str):
    from .runtimes import get_runtime
    if name == "auto":
        try:
            docker_rt = get_runtime("docker")
            ok, why = docker_rt.available()
            if ok:
                docker_rt.selected = f"auto: a Docker daemon answers ({why})"
                return docker_rt
        except (LangbenchError, ImportError) as exc:
            why = str(exc)
        rt = get_runtime("process")
        rt.selected = f"auto: no Docker daemon ({why})"
        return rt
    rt = get_runtime(name)
    ok, why = rt.available()
    if not ok:
        raise LangbenchError(f"runtime '{name}' is not available here: {why}")
    rt.selected = f"--runtime {name}"
    return rt


def _new_out_dir(root: Path, out: str | None, run_id: str) -> Path:
    if out:
        return Path(out).resolve()
    return root / "results" / run_id


def _with_mix(cat, args):
    """--mix a=go --mix b=rust,c=scala: one mixed topology of one scenario
    (plus the implementations --impl names, if any)."""
    from .manifest import mix
    if len(args.scenarios or []) != 1:
        raise InputError("--mix: name exactly one scenario (the one whose topology is mixed)")
    sc = cat.scenario(args.scenarios[0])
    from .manifest import parse_assignment
    assignment: dict[str, str] = {}
    for item in args.mix:
        try:
            assignment.update(parse_assignment(item))
        except InputError as exc:
            raise InputError(f"--mix: {exc}") from None
    impls = cat.implementations.get(sc.name, [])
    chosen = [i for i in impls if args.impl and (i.name in args.impl or i.language in args.impl)]
    return [(sc, chosen + [mix(sc, impls, assignment)])]


def _with_windows(selection, profile_name: str, duration: float | None, warmup: float | None):
    """--duration / --warmup: the chosen profile's windows of every selected
    scenario replaced (workloads' own durations for that profile included)."""
    from dataclasses import replace as _replace
    if duration is not None and not 0.5 <= duration <= 3600:
        raise InputError(f"--duration: {duration:g} s is out of range (0.5 to 3,600)")
    if warmup is not None and not 0 <= warmup <= 3600:
        raise InputError(f"--warmup: {warmup:g} s is out of range (0 to 3,600)")
    out = []
    for sc, impls in selection:
        lv = sc.profiles[profile_name]
        lv = _replace(lv, duration_s=lv.duration_s if duration is None else duration,
                      warmup_s=lv.warmup_s if warmup is None else warmup)
        workloads = sc.workloads if duration is None else [
            _replace(w, durations={k: v for k, v in w.durations.items() if k != profile_name})
            for w in sc.workloads]
        out.append((_replace(sc, profiles={**sc.profiles, profile_name: lv}, workloads=workloads), impls))
    return out


def _with_driver(selection, overrides: list[str]):
    """--driver OLD=NEW: every selected workload driven by OLD is driven by NEW
    instead (the same levels); the params NEW does not take are dropped and
    recorded with the workload."""
    from dataclasses import replace as _replace
    from .drivers import get_driver
    pairs = {}
    for item in overrides:
        old, sep, new = item.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise InputError(f"--driver: '{item}' is not OLD=NEW (e.g. grpcload=ghz)")
        pairs[old.strip()] = get_driver(new.strip())
    out = []
    for sc, impls in selection:
        workloads = []
        for w in sc.workloads:
            new = pairs.get(w.driver)
            if new is None:
                workloads.append(w)
                continue
            known = {p.name for p in new.params}
            dropped = sorted(k for k in w.params if k not in known)
            params = {k: v for k, v in w.params.items() if k in known}
            kinds = {lv.kind for prof in sc.profiles.values() for lv in prof.levels()}
            if not kinds <= set(new.level_kinds):
                raise InputError(f"--driver {w.driver}={new.name}: {new.name} does not take the "
                                 f"{', '.join(sorted(kinds - set(new.level_kinds)))} levels of {sc.name}")
            problems = new.validate(params, sc.dir)
            if problems:
                field, msg = problems[0]
                raise InputError(f"{sc.manifest_path}: field 'workloads.{w.name}.{field}': {msg} "
                                 f"(with --driver {w.driver}={new.name})")
            note = f"driver {new.name} instead of {w.driver} (--driver)" + \
                   (f"; params it does not take dropped: {', '.join(dropped)}" if dropped else "")
            workloads.append(_replace(w, driver=new.name, params=params,
                                      description=f"{w.description} [{note}]"))
        out.append((_replace(sc, workloads=workloads), impls))
    return out


def cmd_calibrate(args) -> int:
    """The load tools' ceilings alone: `langbench calibrate [SCENARIO...]`."""
    args.impl, args.mix, args.no_report = None, None, True
    return cmd_run(args, calibrate_only=True)


def _print_ceilings(data: dict) -> int:
    ok = True
    for sc, wls in (data.get("ceilings") or {}).items():
        for w, cal in wls.items():
            ref = (cal.get("reference") or {})
            print(f"{sc} / {w}: {cal.get('driver')} {cal.get('tool_version', '')} against "
                  f"{ref.get('name', 'no reference')} {ref.get('version', '')} ({ref.get('description', '')})")
            for key, lv in (cal.get("levels") or {}).items():
                if lv.get("error"):
                    ok = False
                    print(f"  {key:>8}  FAILED: {lv['error']}")
                    continue
                lat = lv.get("latency_ms") or {}
                print(f"  {key:>8}  {lv['rps']:>10.0f}/s  bound: {lv['bound']:<9}  tool {lv['tool_cores'] or 0:.2f} "
                      f"cores ({lv.get('tool_us_per_call') or 0:.1f} µs/call), client CPUs {100 * (lv['client_busy_share'] or 0):.0f}% busy, null server "
                      f"{lv['reference_cores'] or 0:.2f} cores, p50 {lat.get('p50') or 0:.3f} ms, "
                      f"p99 {lat.get('p99') or 0:.3f} ms")
            if cal.get("max_rps"):
                print(f"  maximum {cal['max_rps']:.0f}/s at {cal['max_level']} (bound: {cal['max_bound']}); results "
                      f"above {cal['max_rps'] * 0.5:.0f}/s are client-limited")
            if cal.get("tool_capacity_est"):
                print(f"  the tool's CPUs could carry about {cal['tool_capacity_est']:.0f}/s at its cheapest "
                      f"measured CPU cost per call (estimate)")
            if cal.get("error"):
                ok = False
                print(f"  ERROR: {cal['error']}")
    return ExitCode.OK if ok and data.get("ceilings") else ExitCode.FAILURE


def cmd_run(args, interop_only: bool = False, calibrate_only: bool = False) -> int:
    from .runner import Progress, Runner
    root = project_root(args.root)
    cat = discover(root)
    selection = _with_mix(cat, args) if getattr(args, "mix", None) else cat.select(
        args.scenarios or None, args.impl or None, getattr(args, "workload", None) or None)
    if calibrate_only:
        selection = [(sc, []) for sc, _ in selection]
    if getattr(args, "driver", None):
        selection = _with_driver(selection, args.driver)
    profile_name = args.profile
    profile = get_profile(profile_name)
    if getattr(args, "cfs_period_us", None) is not None:
        from dataclasses import replace as _replace
        period = args.cfs_period_us
        quota = profile.server_cpu_quota
        if not 1000 <= period <= 1_000_000 or (quota is not None and quota * period < 1000):
            raise InputError(f"--cfs-period-us: {period} is out of range (1,000 to 1,000,000 µs, and the quota "
                             f"of {quota} cores over it must be at least 1,000 µs, the kernel's minimum)")
        profile = _replace(profile, cfs_period_us=period)
    for sc, _ in selection:
        if profile_name not in sc.profiles:
            raise InputError(f"{sc.manifest_path}: field 'profiles.{profile_name}': missing")
    duration, warmup = getattr(args, "duration", None), getattr(args, "warmup", None)
    if duration is not None or warmup is not None:
        selection = _with_windows(selection, profile_name, duration, warmup)
        if warmup is not None:
            from dataclasses import replace as _replace
            profile = _replace(profile, warmup_max_s=warmup)
    if interop_only:
        selection = [(sc, impls) for sc, impls in selection if sc.interop is not None]
        if not selection:
            raise InputError("none of the selected scenarios declares an interop matrix")
    from .deps import check_installed
    check_installed([sc for sc, _ in selection])
    runtime = choose_runtime(args.runtime)
    allow_uncapped = getattr(args, "allow_uncapped", False)
    runtime.allow_uncapped = allow_uncapped
    trials = args.trials or profile.trials
    if trials < 1:
        raise InputError("--trials must be at least 1")
    run_id = "lb" + time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4]
    out_dir = _new_out_dir(root, args.out, run_id)
    if (out_dir / "results.json").exists():
        raise InputError(f"{out_dir}: already holds a results.json; choose another --out")
    layout = cpu_layout(client=parse_cpus(args.client_cpus, "--client-cpus") if args.client_cpus else None,
                        server=parse_cpus(args.server_cpus, "--server-cpus") if args.server_cpus else None)
    runner = Runner(root=root, selection=selection, runtime=runtime, profile=profile,
                    profile_name=profile_name, layout=layout, out_dir=out_dir, trials=trials,
                    seed=args.seed, interop=not getattr(args, "no_interop", False),
                    progress=Progress(quiet=args.quiet), run_id=run_id, allow_uncapped=allow_uncapped,
                    keep_instance_files=getattr(args, "keep_instance_files", False),
                    calibrate=calibrate_only or not getattr(args, "no_calibrate", False),
                    calibrate_only=calibrate_only,
                    overrides={k: v for k, v in (("duration_s", duration), ("warmup_s", warmup)) if v is not None},
                    cold_build=getattr(args, "cold_build", False))
    try:
        if interop_only:
            cells = runner.interop_only()
        else:
            runner.run()
            cells = None
    except KeyboardInterrupt:
        print(f"interrupted; results so far kept in {out_dir}", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Exception as exc:  # noqa: BLE001
        from .runner import Interrupted
        if isinstance(exc, Interrupted):
            print(f"terminated; results so far kept in {out_dir}", file=sys.stderr)
            return ExitCode.INTERRUPTED
        raise
    data = runner.store.data
    if interop_only:
        return _print_interop(cells, args.format)
    if calibrate_only:
        print(f"results: {runner.store.path}", file=sys.stderr)
        return _print_ceilings(data)
    report_failed = False
    if not args.no_report:
        from .report import write_report
        report_path = root / "reports" / f"{run_id}.html"
        try:
            write_report(runner.store.path, report_path)
            print(f"report: {report_path}", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - the results are kept; say what failed
            if args.debug:
                raise
            report_failed = True
            print(f"langbench: error: the report could not be rendered ({type(exc).__name__}: {exc}); "
                  f"the results are kept in {runner.store.path}", file=sys.stderr)
    print(f"results: {runner.store.path}", file=sys.stderr)
    failed = {k: v.get("failure") for k, v in data["implementations"].items() if v.get("status") != "ok"}
    bad_interop = [c for cells in data["interop"].values() for c in cells if not c["ok"]]
    for k, why in failed.items():
        print(f"FAILED {k}: {why}", file=sys.stderr)
    for c in bad_interop:
        print(f"INTEROP FAILED client {c['client']} -> server {c['server']}: {c['detail']}", file=sys.stderr)
    bad_levels = [m for m in data["measurements"] if not m["ok"]]
    for m in bad_levels:
        print(f"LEVEL FAILED {m['implementation_id']} {m['workload']} {m['level']['key']} "
              f"trial {m['trial']}: {m['error']}", file=sys.stderr)
    return ExitCode.FAILURE if failed or bad_interop or bad_levels or report_failed else ExitCode.OK


def _print_interop(cells: list[dict], fmt: str) -> int:
    cells = [{"client": c["client"], "server": c["server"], "ok": c["ok"], "detail": c["detail"]} for c in cells]
    if fmt == "json":
        print(json.dumps(cells, indent=1))
    else:
        servers = sorted({c["server"] for c in cells})
        clients = sorted({c["client"] for c in cells})
        width = max([len(s) for s in servers + clients] + [6])
        print("client \\ server".ljust(16) + "".join(s.ljust(width + 2) for s in servers))
        by = {(c["client"], c["server"]): c for c in cells}
        for cl in clients:
            row = cl.ljust(16)
            for s in servers:
                cell = by.get((cl, s))
                row += ("ok" if cell and cell["ok"] else "FAIL" if cell else "-").ljust(width + 2)
            print(row)
        for c in cells:
            if not c["ok"]:
                print(f"FAIL {c['client']} -> {c['server']}: {c['detail']}")
        print(f"{sum(c['ok'] for c in cells)}/{len(cells)} ok")
    return ExitCode.OK if cells and all(c["ok"] for c in cells) else ExitCode.FAILURE


def cmd_images(args) -> int:
    from . import images
    root = project_root(args.root)
    log_dir = root / ".langbench" / "images"
    done = images.build_all(args.base or None, force=args.force, root_image=args.root_image, log_dir=log_dir)
    for d in done:
        state = "exists" if d.get("skipped") else f"built in {d.get('seconds', 0):.0f} s"
        print(f"{d['tag']}: {d['size_mb']:.1f} MB, {state} ({d.get('origin') or '?'})")
    return ExitCode.OK


def cmd_report(args) -> int:
    from .report import write_report
    from .results import load
    data = load(Path(args.dir))
    out = Path(args.output) if args.output else Path(data["_path"]).parent / "report.html"
    baseline = load(Path(args.baseline))["_path"] if args.baseline else None
    write_report(Path(data["_path"]), out, Path(baseline) if baseline else None, parse_threshold(args.threshold))
    print(out)
    return ExitCode.OK


def cmd_results(args) -> int:
    from .results import columns, extra_metrics, flat_rows, load
    from .tables import FORMATS
    data = load(Path(args.dir))
    rows = flat_rows(data)
    if sum(map(bool, (args.summary, args.nodes, args.effort))) > 1:
        raise InputError("--summary, --nodes and --effort: choose one")
    if args.effort:
        from .effort import EFFORT_COLUMNS, rows_from_results
        text = FORMATS[args.format](rows_from_results(data), EFFORT_COLUMNS)
    elif args.nodes:
        from .results import NODE_COLUMNS, node_rows
        text = FORMATS[args.format](node_rows(data), NODE_COLUMNS)
    elif args.summary:
        from .summary import summary_columns, summary_rows
        extra = sorted(extra_metrics(data))
        text = FORMATS[args.format](summary_rows(rows, extra), summary_columns(extra))
    else:
        text = FORMATS[args.format](rows, columns(data))
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return ExitCode.OK


def parse_threshold(text: str) -> float:
    t = text.strip()
    try:
        value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise InputError(f"--threshold: '{text}' is not a percentage such as 10%") from None
    if not 0 <= value < 10:
        raise InputError(f"--threshold: '{text}' is out of range")
    return value


def cmd_deps(args) -> int:
    from .deps import install, missing
    from .manifest import discover
    cat = discover(project_root(args.root))
    scenarios = list(cat.scenarios.values())
    for sc in scenarios:
        for req in sc.python_requires:
            print(f"{sc.name}: {req}")
    todo = missing(scenarios)
    if todo and args.install:
        install(todo)
        todo = missing(scenarios)
    for sc, req, why in todo:
        print(f"MISSING {sc}: {req} ({why})", file=sys.stderr)
    return ExitCode.FAILURE if todo else ExitCode.OK


def cmd_compare(args) -> int:
    from .compare_fmt import FAILING, render_compare
    from .results import extra_metrics, flat_rows, load
    from .summary import compare, incomparable
    threshold = parse_threshold(args.threshold)
    base, cur = load(Path(args.base)), load(Path(args.current))
    warnings = []
    diffs = incomparable(base, cur)
    if diffs:
        what = "the runs are not comparable: " + "; ".join(diffs)
        if not args.force:
            raise InputError(f"{what} (--force compares them anyway)")
        warnings.append(f"{what}; compared anyway (--force)")
        print(f"langbench: warning: {warnings[-1]}", file=sys.stderr)
    failures = {(v.get("scenario"), v.get("name")): " ".join(str(v.get("failure") or "failed").split())
                for v in cur.get("implementations", {}).values() if v.get("status") == "failed"}
    verdicts = compare(flat_rows(base), flat_rows(cur), threshold, current_failures=failures, fdr=args.fdr,
                       extra=extra_metrics(base, cur))
    sys.stdout.write(render_compare(verdicts, args.format, threshold, base, cur, warnings=warnings, fdr=args.fdr))
    return ExitCode.FAILURE if any(v["verdict"] in FAILING for v in verdicts) else ExitCode.OK


def cmd_export(args) -> int:
    from .exports import dumps, to_pytest_benchmark
    from .results import columns, flat_rows, load
    from .tables import to_csv, to_json
    data = load(Path(args.dir))
    rows = flat_rows(data)
    if args.format == "pytest-benchmark":
        text = dumps(to_pytest_benchmark(data, rows))
    elif args.format == "csv":
        text = to_csv(rows, columns(data))
    else:
        text = to_json(rows, columns(data))
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return ExitCode.OK


def _effort_text(rows: list[dict], shared: dict, summary: list[dict]) -> str:
    def f(v, nd=1):
        if v is None:
            return "–"
        return f"{v:,.{nd}f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)
    head = ["implementation", "files", "code", "comments", "blanks", "own-language code", "deps direct/all",
            "download MB", "artifact MB", "cold build s", "warm rebuild s", "cold download MB"]
    out = []
    for sc in sorted({r["scenario"] for r in rows}):
        sh = shared.get(sc) or {}
        out.append(f"{sc}  (the scenario's shared files: " + (f"{sh.get('files')} files, {sh.get('code'):,} code, "
                   f"{sh.get('comments'):,} comments, {sh.get('blanks'):,} blanks" if "code" in sh
                   else sh.get("error", "not counted")) + ")")
        table = [head] + [[f"{r['implementation']} ({r['language']})", f(r["files"]), f(r["code"]),
                           f(r["comments"]), f(r["blanks"]), f(r["main_code"]),
                           f"{f(r['deps_direct'])}/{f(r['deps_all'])}", f(r["download_mb"]), f(r["artifact_mb"]),
                           f(r["cold_build_s"]), f(r["warm_build_s"]), f(r["cold_download_mb"])]
                          for r in rows if r["scenario"] == sc]
        widths = [max(len(x[i]) for x in table) for i in range(len(head))]
        for line in table:
            out.append("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                        for i, (c, w) in enumerate(zip(line, widths))).rstrip())
        out += [f"  ! {r['implementation']}: {r['error']}" for r in rows if r["scenario"] == sc and r["error"]]
        out.append("")
    if summary:
        out.append("per language, across scenarios (code: summed; the rest: medians over the scenarios)")
        head = ["implementation", "scenarios", "code", "comments", "deps direct", "deps all", "download MB",
                "cold build s", "warm rebuild s"]
        table = [head] + [[f"{r['implementation']} ({r['language']})", f(r["scenarios"]), f(r["code"]),
                           f(r["comments"]), f(r["deps_direct_median"]), f(r["deps_all_median"]),
                           f(r["download_mb_median"]), f(r["cold_build_s_median"]), f(r["warm_build_s_median"])]
                          for r in summary]
        widths = [max(len(x[i]) for x in table) for i in range(len(head))]
        for line in table:
            out.append("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                        for i, (c, w) in enumerate(zip(line, widths))).rstrip())
    return "\n".join(out) + "\n"


def cmd_effort(args) -> int:
    """Code size, dependencies and (with --cold-build) build cost of each
    implementation, without running anything (harness/effort.py)."""
    from . import build as builder
    from . import effort
    from .tables import to_markdown
    root = project_root(args.root)
    cat = discover(root)
    selection = cat.select(args.scenarios or None, args.impl or None)
    if effort.counter_path(root) is None:
        raise InputError("the code counter scc is not installed (tools/bin/scc or PATH): run ./setup.sh")
    records, rows, shared = {}, [], {}
    log_dir = root / ".langbench" / "effort"
    for sc, impls in selection:
        shared[sc.name] = effort.shared(sc, root)
        for impl in impls:
            if impl.parts:
                continue
            rec = effort.measure(impl, root)
            if args.cold_build:
                print(f"{impl.id}: cold build in a temporary copy with empty caches...", file=sys.stderr)
                log_dir.mkdir(parents=True, exist_ok=True)
                rec["cold_build"] = effort.cold_build(impl, sc, log=log_dir / f"cold-{sc.name}-{impl.name}.log")
                cb = rec["cold_build"]
                print(f"{impl.id}: cold {cb.get('cold_s')} s, warm {cb.get('warm_s')} s"
                      f"{', ' + cb['error'] if cb.get('error') else ''}", file=sys.stderr)
            records[impl.id] = rec
            rows.append(effort.effort_row(sc.name, impl.name, impl.language, rec,
                                          artifact_bytes=builder.artifact_bytes(impl)))
    summary = effort.language_summary(rows)
    if args.format == "json":
        text = json.dumps({"counter": next(iter(records.values()))["counter"] if records else None,
                           "rule": effort.CODE_RULE, "shared": shared, "implementations": records,
                           "rows": rows, "summary": summary}, indent=1, default=str) + "\n"
    elif args.format == "markdown":
        text = to_markdown(rows, effort.EFFORT_COLUMNS) + "\n" + to_markdown(summary, effort.SUMMARY_COLUMNS)
    else:
        text = _effort_text(rows, shared, summary)
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    bad = [r for r in rows if r["error"]]
    return ExitCode.FAILURE if bad else ExitCode.OK


def cmd_new(args) -> int:
    from .scaffold import scaffold
    root = project_root(args.root)
    written = scaffold(root, args.name)
    for p in written:
        print(p.relative_to(root))
    discover(root)   # the new manifests load
    print(f"scaffolded scenario {args.name}: try `langbench run {args.name} --profile quick`", file=sys.stderr)
    return ExitCode.OK


# ------------------------------------------------------------------ parser

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="langbench", description="Compare implementations of the same "
                                "service across languages: build, verify, load, sample, report.")
    p.add_argument("--version", action="version", version=f"langbench {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks for known errors")
    p.add_argument("--root", help="project root (default: found from the current directory)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("list", help="scenarios, implementations and workloads found on disk")
    s.add_argument("--format", choices=["text", "json"], default="text")
    s.set_defaults(func=cmd_list)

    def cpu_opts(s) -> None:
        s.add_argument("--client-cpus", metavar="LIST",
                       help="CPUs of the load tool and the harness, e.g. 0-2 (default: the lower half); "
                            "with --server-cpus")
        s.add_argument("--server-cpus", metavar="LIST",
                       help="CPUs of the server under test, e.g. 3 (default: the upper half); disjoint from "
                            "--client-cpus")

    def run_opts(s, interop: bool) -> None:
        s.add_argument("scenarios", nargs="*" if not interop else "+", metavar="SCENARIO")
        s.add_argument("--impl", action="append", metavar="LANG",
                       help="implementation to include: a folder name (go), a language (every variant of it) "
                            "or an id (ws-echo/go-gorilla) (repeatable)")
        if not interop:
            s.add_argument("--workload", action="append", metavar="NAME",
                           help="workload to run (repeatable; default: all of each scenario)")
        s.add_argument("--runtime", choices=["auto", *runtime_names()], default="auto",
                       help="where servers run (auto: docker when a daemon answers, else process)")
        s.add_argument("--profile", choices=sorted(PROFILES), default="quick" if interop else "standard")
        s.add_argument("--out", metavar="DIR", help="results folder (default: a new folder under results/)")
        s.add_argument("--seed", type=int, help="seed of the randomised order (recorded)")
        s.add_argument("--quiet", action="store_true", help="no progress lines")
        s.add_argument("--trials", type=int, help="trials per implementation (fresh server each; "
                       "default: the profile's, 3 for standard)")
        s.add_argument("--cfs-period-us", type=int, metavar="US",
                       help="CFS period of the server's CPU quota (default: the profile's, 10000); recorded, and "
                            "compare refuses runs with different periods")
        s.add_argument("--allow-uncapped", action="store_true",
                       help="measure even when the profile's CPU quota cannot be applied (recorded in every row); "
                            "without it that is an error (exit 2)")
        s.add_argument("--mix", action="append", metavar="NODE=IMPL[,NODE=IMPL...]",
                       help="run one mixed-language topology of the scenario on purpose: each node from the "
                            "implementation named for it (repeatable)")
        s.add_argument("--driver", action="append", metavar="OLD=NEW",
                       help="drive the workloads of driver OLD with driver NEW instead, e.g. grpcload=ghz "
                            "(recorded; params NEW does not take are dropped; repeatable)")
        cpu_opts(s)
        s.add_argument("--keep-instance-files", action="store_true",
                       help="keep what servers wrote into their instance folders (default: kept only for a failed "
                            "instance; sizes are recorded either way)")

    s = sub.add_parser("run", help="build, verify and measure; write results and a report")
    run_opts(s, False)
    s.add_argument("--no-interop", action="store_true", help="skip the client x server matrix")
    s.add_argument("--no-report", action="store_true", help="do not render the HTML report")
    s.add_argument("--cold-build", action="store_true",
                   help="also build each implementation in a temporary copy with empty throwaway caches and "
                        "again after a one-line change (cold and warm build times, bytes downloaded; recorded)")
    s.add_argument("--no-calibrate", action="store_true",
                   help="skip measuring each load tool's ceiling against its reference null server "
                        "(no ceiling fractions, no client-limited flag)")
    s.add_argument("--duration", type=float, metavar="S",
                   help="every level's window (and a ramp step's hold) lasts S seconds instead of the profile's "
                        "(a smoke run; recorded)")
    s.add_argument("--warmup", type=float, metavar="S",
                   help="warm up for S seconds at most (0: none) instead of until steady; recorded, and a "
                        "warm-up cut short is reported as not steady")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("calibrate", help="each workload's load-tool ceiling against a reference null server "
                       "on the server CPUs and budget (no implementation runs)")
    s.add_argument("scenarios", nargs="*", metavar="SCENARIO")
    s.add_argument("--profile", choices=sorted(PROFILES), default="standard")
    s.add_argument("--out", metavar="DIR", help="results folder (default: a new folder under results/)")
    s.add_argument("--quiet", action="store_true", help="no progress lines")
    s.add_argument("--driver", action="append", metavar="OLD=NEW", help="as for run")
    s.add_argument("--allow-uncapped", action="store_true", help="as for run")
    cpu_opts(s)
    s.set_defaults(func=cmd_calibrate, runtime="process", seed=None, trials=1, cfs_period_us=None)

    s = sub.add_parser("interop", help="every client against every server of a scenario")
    run_opts(s, True)
    s.add_argument("--format", choices=["text", "json"], default="text")
    s.set_defaults(func=lambda a: cmd_run(a, interop_only=True), no_report=True)

    s = sub.add_parser("deps", help="the Python packages the scenarios' checks need (scenario.toml [python])")
    s.add_argument("--install", action="store_true", help="install the missing ones into this environment (pip)")
    s.set_defaults(func=cmd_deps)

    s = sub.add_parser("images", help="build the local base images for the docker runtime (from Debian packages)")
    s.add_argument("base", nargs="*", metavar="BASE", help="cc, python, java (default: all)")
    s.add_argument("--force", action="store_true", help="rebuild even when the tags exist")
    s.add_argument("--root-image", metavar="REF",
                   help="build on this image (e.g. debian:bookworm-slim from a registry) instead of a debootstrap root")
    s.set_defaults(func=cmd_images)

    s = sub.add_parser("report", help="render a run's self-contained HTML report")
    s.add_argument("dir", metavar="DIR", help="a run's results folder (or its results.json)")
    s.add_argument("-o", "--output", metavar="FILE")
    s.add_argument("--baseline", metavar="BASE", help="a run to compare against (verdicts in the report)")
    s.add_argument("--threshold", default="10%", help="with --baseline: smallest change that counts")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("results", help="a run's flat table: one row per measurement")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("--format", choices=["csv", "json", "markdown"], default="csv")
    s.add_argument("--nodes", action="store_true",
                   help="one row per measurement and node (implementations that run as several nodes)")
    s.add_argument("--summary", action="store_true",
                   help="one row per scenario, implementation, workload and level: medians, 95%% intervals, CV")
    s.add_argument("--effort", action="store_true",
                   help="one row per implementation: code size, dependencies, download, artifact and image size, "
                        "start-up, cold and warm build (when measured)")
    s.add_argument("-o", "--output", metavar="FILE")
    s.set_defaults(func=cmd_results)

    s = sub.add_parser("compare", help="verdicts between two runs; exit 1 on a significant regression or on "
                       "a level the current run broke, 2 when the runs are not comparable")
    s.add_argument("base", metavar="BASE", help="baseline run folder or results.json")
    s.add_argument("current", metavar="CURRENT", help="current run folder or results.json")
    s.add_argument("--threshold", default="10%", help="smallest change that counts (default 10%%)")
    s.add_argument("--format", choices=["text", "markdown", "json"], default="text")
    s.add_argument("--force", action="store_true",
                   help="compare runs that differ in runtime, profile, CPU quota or layout, or machine "
                        "(a warning instead of exit 2)")
    s.add_argument("--fdr", choices=list(FDR_METHODS), default="bh",
                   help="false-discovery control across the compare's tests: bh (Benjamini-Hochberg, q < 0.05; "
                        "the default) or none (each verdict its own test at 5%%)")
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("effort", help="code size, dependencies and (--cold-build) build cost of each "
                       "implementation: what it takes to write and ship it")
    s.add_argument("scenarios", nargs="*", metavar="SCENARIO")
    s.add_argument("--impl", action="append", metavar="LANG", help="as for run (repeatable)")
    s.add_argument("--cold-build", action="store_true",
                   help="also build each implementation in a temporary copy with empty throwaway caches (timed, "
                        "with the bytes downloaded), then again after a one-line change (warm rebuild)")
    s.add_argument("--format", choices=["text", "json", "markdown"], default="text")
    s.add_argument("-o", "--output", metavar="FILE")
    s.set_defaults(func=cmd_effort)

    s = sub.add_parser("new", help="scaffold a scenario and four implementation skeletons")
    s.add_argument("name", metavar="SCENARIO")
    s.set_defaults(func=cmd_new)

    s = sub.add_parser("export", help="a run for other tools: pytest-benchmark JSON, CSV, JSON")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("--format", choices=["pytest-benchmark", "csv", "json"], default="pytest-benchmark")
    s.add_argument("-o", "--output", metavar="FILE")
    s.set_defaults(func=cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except LangbenchError as exc:
        if args.debug:
            raise
        print(f"langbench: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except BrokenPipeError:
        return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
