"""Summaries over trials (one row per scenario, implementation, workload and
level), comparisons of two runs, and ranks: the statistics of stats.py
applied to the flat table."""
from __future__ import annotations

from collections import defaultdict

from . import stats

KEY = ("scenario", "implementation", "workload", "level")
SUMMARY_METRICS = ["rps", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "errors", "cpu_cores",
                   "cpu_s_per_1k", "rps_per_cpu", "rss_mb", "rss_peak_mb", "idle_cpu_cores", "idle_rss_mb",
                   "startup_ms"]
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


def summary_columns() -> list[str]:
    cols = ["scenario", "implementation", "language", "runtime", "workload", "level", "level_kind",
            "level_value", "trials", "failed_trials", "verified", "client_bound", "unstable"]
    for m in SUMMARY_METRICS:
        cols += [f"{m}_median", f"{m}_ci_low", f"{m}_ci_high", f"{m}_cv"]
    return cols


def summary_rows(rows: list[dict]) -> list[dict]:
    out = []
    for key, rs in group(rows).items():
        good = [r for r in rs if usable(r)]
        first = rs[0]
        row = {k: first[k] for k in ("scenario", "implementation", "language", "runtime", "workload", "level",
                                     "level_kind", "level_value")}
        row.update(trials=len(good), failed_trials=len(rs) - len(good),
                   verified=all(r["verified"] for r in rs), client_bound=any(r["client_bound"] for r in rs))
        unstable = []
        for m in SUMMARY_METRICS:
            s = stats.summarize([r[m] for r in good if r.get(m) is not None])
            row[f"{m}_median"] = _r(s.median)
            row[f"{m}_ci_low"] = _r(s.ci_low)
            row[f"{m}_ci_high"] = _r(s.ci_high)
            row[f"{m}_cv"] = _r(s.cv, 4)
            if m in STABILITY_METRICS and s.unstable:
                unstable.append(m)
        row["unstable"] = ",".join(unstable)
        out.append(row)
    return out


def _r(x, nd=4):
    return None if x is None else round(x, nd)


def compare(base_rows: list[dict], cur_rows: list[dict], threshold: float) -> list[dict]:
    """One verdict per scenario, implementation, workload, level and metric."""
    gb, gc = group(base_rows), group(cur_rows)
    out = []
    for key in sorted(set(gb) | set(gc), key=lambda k: tuple(str(x) for x in k)):
        b = [r for r in gb.get(key, []) if usable(r)]
        c = [r for r in gc.get(key, []) if usable(r)]
        client_bound = any(r["client_bound"] for r in gb.get(key, []) + gc.get(key, []))
        for metric, higher in COMPARED.items():
            vb = [r[metric] for r in b if r.get(metric) is not None]
            vc = [r[metric] for r in c if r.get(metric) is not None]
            entry = dict(zip(KEY, key), metric=metric, base_n=len(vb), current_n=len(vc),
                         base_median=_r(stats.median(vb)), current_median=_r(stats.median(vc)))
            if key not in gb or key not in gc:
                v = stats.Verdict("inconclusive", None, None, None,
                                  "only in the current run" if key not in gb else "missing from the current run")
            elif not vb or not vc:
                v = stats.Verdict("inconclusive", None, None, None, "no usable trial on one side (failed or unverified)")
            else:
                v = stats.compare_samples(vb, vc, threshold, higher)
                if client_bound and metric in ("rps", "rps_per_cpu") and v.verdict in ("regressed", "improved"):
                    v = stats.Verdict("inconclusive", v.change, v.ci, v.p_value,
                                      "client-bound: the load tool, not the server, set this throughput")
            entry.update(verdict=v.verdict, change=_r(v.change), ci_low=_r(v.ci[0]) if v.ci else None,
                         ci_high=_r(v.ci[1]) if v.ci else None, p_value=_r(v.p_value), reason=v.reason)
            out.append(entry)
    return out


def ranks(rows: list[dict], metric: str = "rps", higher_is_better: bool = True) -> dict[tuple, dict[str, int]]:
    """Per scenario, workload and level: implementation -> rank (ties share a rank).

    Failed, unverified and client-bound results are never ranked.
    """
    per_level: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    excluded: set[tuple] = set()
    for r in rows:
        k = (r["scenario"], r["workload"], r["level"])
        if not usable(r) or r["client_bound"]:
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
