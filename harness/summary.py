"""Summaries over trials (one row per scenario, implementation, workload and
level), comparisons of two runs, and ranks: the statistics of stats.py
applied to the flat table."""
from __future__ import annotations

from collections import defaultdict

from . import stats

KEY = ("scenario", "implementation", "workload", "level")
SUMMARY_METRICS = ["rps", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "errors", "cpu_cores",
                   "cpu_s_per_1k", "rps_per_cpu", "rss_mb", "rss_peak_mb", "idle_cpu_cores", "idle_rss_mb",
                   "startup_ms", "throttled_pct", "throttled_ms_per_s", "client_busy_pct", "foreign_cores",
                   "steal_cores", "host_ns_server", "host_ns_client", "warmup_s", "disk_mb_s"]
# metric -> higher is better; the metrics compare gives a verdict for
COMPARED = {"rps": True, "rps_per_cpu": True, "p50_ms": False, "p90_ms": False, "p99_ms": False,
            "cpu_s_per_1k": False, "rss_mb": False}
STABILITY_METRICS = ("rps", "p50_ms", "p99_ms", "cpu_s_per_1k", "rss_mb")


def group(rows: list[dict]) -> dict[tuple, list[dict]]:
    g: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        g[tuple(r[k] for k in KEY)].append(r)
    return g


def usable(r: dict) -> bool:
    return bool(r["ok"] and r["verified"])


def summary_columns(extra: list[str] | tuple = ()) -> list[str]:
    cols = ["scenario", "implementation", "language", "runtime", "workload", "level", "level_kind",
            "level_value", "trials", "failed_trials", "verified", "client_bound", "client_limited", "noisy",
            "unstable", "host_ns_server_min", "host_ns_server_max"]
    for m in SUMMARY_METRICS + list(extra):
        cols += [f"{m}_median", f"{m}_ci_low", f"{m}_ci_high", f"{m}_cv"]
    return cols


def summary_rows(rows: list[dict], extra: list[str] | tuple = ()) -> list[dict]:
    """One row per scenario, implementation, workload and level; `extra`:
    declared metrics beyond the built-in ones (results.extra_metrics)."""
    out = []
    for key, rs in group(rows).items():
        good = [r for r in rs if usable(r)]
        first = rs[0]
        row = {k: first[k] for k in ("scenario", "implementation", "language", "runtime", "workload", "level",
                                     "level_kind", "level_value")}
        row.update(trials=len(good), failed_trials=len(rs) - len(good),
                   verified=all(r["verified"] for r in rs), client_bound=any(r["client_bound"] for r in rs),
                   client_limited=any(r.get("client_limited") for r in rs), noisy=any(r.get("noisy") for r in rs))
        unstable = []
        for m in SUMMARY_METRICS + list(extra):
            s = stats.summarize([r[m] for r in good if r.get(m) is not None])
            row[f"{m}_median"] = _r(s.median)
            row[f"{m}_ci_low"] = _r(s.ci_low)
            row[f"{m}_ci_high"] = _r(s.ci_high)
            row[f"{m}_cv"] = _r(s.cv, 4)
            if m in STABILITY_METRICS and s.unstable:
                unstable.append(m)
        row["unstable"] = ",".join(unstable)
        # the machine's speed over the trials' windows (harness/canary.py)
        host = [r["host_ns_server"] for r in good if r.get("host_ns_server")]
        row["host_ns_server_min"] = min(host) if host else None
        row["host_ns_server_max"] = max(host) if host else None
        out.append(row)
    return out


def _r(x, nd=4):
    return None if x is None else round(x, nd)


def _why_failed(rs: list[dict]) -> str:
    if rs and not any(r["verified"] for r in rs):
        return "not verified"
    errors = [r.get("error") for r in rs if not usable(r) and r.get("error")]
    return str(errors[0]).splitlines()[0] if errors else "failed"


FDR_METHODS = ("bh", "none")


def compare(base_rows: list[dict], cur_rows: list[dict], threshold: float,
            current_failures: dict[tuple, str] | None = None, fdr: str = "bh",
            extra: dict[str, dict] | None = None) -> list[dict]:
    """One verdict per scenario, implementation, workload, level and metric.

    All the tests one compare makes are one family: with `fdr` "bh" (the
    default) a change is significant only when its Benjamini-Hochberg q-value
    over every test of the compare is < 0.05, so that of the changes called,
    at most about 5% are expected to be chance. "none" tests each verdict on
    its own at 5%: of 40 unchanged figures about two are then called changed.
    `extra`: declared metrics (results.extra_metrics); those with a better
    direction get verdicts too.

    A (scenario, implementation, workload, level) usable in the base (at least
    one ok and verified trial) gets a single verdict, metric "all", when the
    current run broke it: "missing" (no trial of it in the current run),
    "broken" (no usable trial, or failed trials where the base had none).
    `current_failures` maps (scenario, implementation) to the current run's
    failure line for that implementation (build, start, verification).
    """
    if fdr not in FDR_METHODS:
        raise ValueError(f"unknown false-discovery method {fdr!r} (one of {', '.join(FDR_METHODS)})")
    gb, gc = group(base_rows), group(cur_rows)
    current_failures = current_failures or {}
    out = []
    tested: list[tuple[dict, list, list, bool, bool, bool]] = []   # second pass: decided over the family
    for key in sorted(set(gb) | set(gc), key=lambda k: tuple(str(x) for x in k)):
        rb, rc = gb.get(key, []), gc.get(key, [])
        b = [r for r in rb if usable(r)]
        c = [r for r in rc if usable(r)]
        failed_now = len(rc) - len(c)
        if b and (not c or (failed_now and len(b) == len(rb))):
            if not rc:
                verdict, why = "missing", "missing from the current run"
                impl_failure = current_failures.get((key[0], key[1]))
                if impl_failure:
                    why += f": {impl_failure}"
            elif not c:
                verdict, why = "broken", f"all {len(rc)} trials failed in the current run: {_why_failed(rc)}"
            else:
                verdict, why = "broken", (f"{failed_now} of {len(rc)} trials failed in the current run "
                                          f"(none in the base): {_why_failed(rc)}")
            out.append(dict(zip(KEY, key), metric="all", base_n=len(b), current_n=len(c), base_median=None,
                            current_median=None, verdict=verdict, change=None, ci_low=None, ci_high=None,
                            p_value=None, q_value=None, reason=why))
            continue
        client_bound = any(r["client_bound"] or r.get("client_limited") for r in rb + rc)
        noisy = any(r.get("noisy") for r in rb + rc)
        compared = dict(COMPARED)
        for name, d in (extra or {}).items():        # declared metrics with a better direction
            if d.get("better") in ("higher", "lower"):
                compared[name] = d["better"] == "higher"
        for metric, higher in compared.items():
            vb = [r[metric] for r in b if r.get(metric) is not None]
            vc = [r[metric] for r in c if r.get(metric) is not None]
            entry = dict(zip(KEY, key), metric=metric, base_n=len(vb), current_n=len(vc),
                         base_median=_r(stats.median(vb)), current_median=_r(stats.median(vc)))
            if key not in gb:
                v = stats.Verdict("inconclusive", None, None, None, "only in the current run")
            elif not b:
                why = ("failed in the base, missing from the current run" if not rc
                       else "failed in the base and in the current run" if not c
                       else "no usable trial in the base (failed or unverified)")
                v = stats.Verdict("inconclusive", None, None, None, why)
            elif not vb or not vc:
                v = stats.Verdict("inconclusive", None, None, None, f"no {metric} figure on one side")
            else:
                tested.append((entry, vb, vc, higher, client_bound and metric in ("rps", "rps_per_cpu"), noisy))
                out.append(entry)
                continue
            _fill(entry, v, None)
            out.append(entry)
    # the family: every comparison that produced a p-value
    first = [stats.compare_samples(vb, vc, threshold, higher) for _, vb, vc, higher, _, _ in tested]
    family = [i for i, v in enumerate(first) if v.p_value is not None]
    qs = dict(zip(family, stats.bh_adjust([first[i].p_value for i in family]))) if fdr == "bh" else {}
    for i, (entry, vb, vc, higher, bound, noisy) in enumerate(tested):
        q = qs.get(i)
        v = stats.compare_samples(vb, vc, threshold, higher, q_value=q, tests=len(family)) if q is not None else first[i]
        if bound and v.verdict in ("regressed", "improved"):
            v = stats.Verdict("inconclusive", v.change, v.ci, v.p_value,
                              "client-bound or client-limited (above half the load tool's measured "
                              "maximum): the load tool, not the server, may have set this throughput")
        elif noisy and v.verdict in ("regressed", "improved"):
            v = stats.Verdict("inconclusive", v.change, v.ci, v.p_value,
                              "noisy: other work on the server's CPUs or steal time during a trial")
        _fill(entry, v, q)
    return out


def _fill(entry: dict, v: stats.Verdict, q: float | None) -> None:
    entry.update(verdict=v.verdict, change=_r(v.change), ci_low=_r(v.ci[0]) if v.ci else None,
                 ci_high=_r(v.ci[1]) if v.ci else None, p_value=_r(v.p_value), q_value=_r(q), reason=v.reason)


def _shown(x) -> str:
    if x is None:
        return "unknown"
    if isinstance(x, (list, tuple)):
        return "CPUs " + (",".join(map(str, x)) or "none")
    if isinstance(x, str):
        return "'" + " ".join(x.split()) + "'"
    return str(x)


def incomparable(base: dict, cur: dict) -> list[str]:
    """What makes two runs' figures incomparable, one phrase per difference:
    runtime, profile, CPU quota, CFS period (only when both runs record it),
    CPU layout, machine (CPU model and count, memory, kernel)."""
    diffs = []

    def check(label: str, a, b, unit: str = "") -> None:
        if a != b:
            diffs.append(f"{label} {_shown(a)}{unit if a is not None else ''} vs {_shown(b)}"
                         f"{unit if b is not None else ''}")

    check("runtime", base.get("runtime"), cur.get("runtime"))
    check("profile", base.get("profile_name"), cur.get("profile_name"))
    pb, pc = base.get("profile") or {}, cur.get("profile") or {}
    check("CPU quota", pb.get("server_cpu_quota"), pc.get("server_cpu_quota"), " cores")
    if pb.get("cfs_period_us") is not None and pc.get("cfs_period_us") is not None:
        check("CFS period", pb["cfs_period_us"], pc["cfs_period_us"], " us")
    lb, lc = base.get("cpu_layout") or {}, cur.get("cpu_layout") or {}
    check("load tool", lb.get("client"), lc.get("client"))
    check("server", lb.get("server"), lc.get("server"))
    eb, ec = base.get("environment") or {}, cur.get("environment") or {}
    for field, label, unit in (("cpu_model", "CPU model", ""), ("cpu_count", "CPU count", ""),
                               ("memory_gb", "memory", " GB"), ("kernel", "kernel", "")):
        check(label, eb.get(field), ec.get(field), unit)
    return diffs


def ranks(rows: list[dict], metric: str = "rps", higher_is_better: bool = True) -> dict[tuple, dict[str, int]]:
    """Per scenario, workload and level: implementation -> rank (ties share a rank).

    Failed, unverified, client-bound, client-limited and noisy results are never ranked.
    """
    per_level: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    excluded: set[tuple] = set()
    for r in rows:
        k = (r["scenario"], r["workload"], r["level"])
        if not usable(r) or r["client_bound"] or r.get("client_limited") or r.get("noisy"):
            excluded.add(k + (r["implementation"],))
            continue
        if r.get(metric) is not None:
            per_level[k][r["implementation"]].append(r[metric])
    out = {}
    for k, groups in per_level.items():
        groups = {impl: v for impl, v in groups.items() if k + (impl,) not in excluded}
        if groups:
            out[k] = stats.rank(groups, higher_is_better)
    return out
