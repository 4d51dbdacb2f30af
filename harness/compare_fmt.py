"""Rendering compare verdicts as text, Markdown (a CI job summary) or JSON."""
from __future__ import annotations

import json

ICON = {"broken": "BROKEN", "missing": "MISSING", "regressed": "REGRESSED", "improved": "improved",
        "within noise": "within noise", "inconclusive": "inconclusive"}
# listing order: what breaks the change first
ORDER = {"broken": 0, "missing": 0, "regressed": 1, "improved": 2, "inconclusive": 3, "within noise": 4}
FAILING = ("broken", "missing", "regressed")      # verdicts that make `langbench compare` exit 1


def _pct(x) -> str:
    return "" if x is None else f"{x:+.1%}"


def _num(x) -> str:
    if x is None:
        return "–"
    return f"{x:,.1f}" if abs(x) >= 100 else f"{x:.3g}"


def render_compare(verdicts: list[dict], fmt: str, threshold: float, base: dict, cur: dict,
                   warnings: list[str] | None = None, fdr: str = "bh") -> str:
    warnings = list(warnings or [])
    counts: dict[str, int] = {}
    for v in sorted(verdicts, key=lambda v: ORDER[v["verdict"]]):
        counts[v["verdict"]] = counts.get(v["verdict"], 0) + 1
    if fmt == "json":
        return json.dumps({"base": base.get("run_id"), "current": cur.get("run_id"), "threshold": threshold,
                           "fdr": fdr, "tests": sum(1 for v in verdicts if v.get("p_value") is not None),
                           "warnings": warnings, "counts": counts, "verdicts": verdicts}, indent=1) + "\n"
    head = (f"langbench compare: base {base.get('run_id')} ({base.get('trials')} trials) vs current "
            f"{cur.get('run_id')} ({cur.get('trials')} trials), threshold {threshold:.0%}, "
            + (f"Benjamini-Hochberg q < 0.05 over {sum(1 for v in verdicts if v.get('p_value') is not None)} tests"
               if fdr == "bh" else "each test at p < 0.05 (no false-discovery control)"))
    tally = ", ".join(f"{n} {k}" for k, n in counts.items())
    rows = sorted(verdicts, key=lambda v: (ORDER[v["verdict"]], v["scenario"], v["implementation"],
                                           v["workload"], str(v["level"]), v["metric"]))
    if fmt == "markdown":
        out = [f"### {head}", ""]
        out += [f"> **Warning:** {w}" for w in warnings] + ([""] if warnings else [])
        out += [f"**{tally}**", "",
                "| verdict | scenario | implementation | workload | level | metric | base | current | change | 95% CI | why |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        for v in rows:
            ci = f"{_pct(v['ci_low'])}..{_pct(v['ci_high'])}" if v["ci_low"] is not None else ""
            verdict = f"**{ICON[v['verdict']]}**" if v["verdict"] in FAILING else ICON[v["verdict"]]
            reason = str(v["reason"]).replace("|", "\\|")
            out.append(f"| {verdict} | {v['scenario']} | {v['implementation']} | {v['workload']} | {v['level']} | "
                       f"{v['metric']} | {_num(v['base_median'])} | {_num(v['current_median'])} | "
                       f"{_pct(v['change'])} | {ci} | {reason} |")
        return "\n".join(out) + "\n"
    out = [head] + [f"WARNING: {w}" for w in warnings] + [tally]
    for v in rows:
        where = f"{ICON[v['verdict']]:<13} {v['scenario']}/{v['implementation']} {v['workload']} {v['level']}"
        if v["metric"] == "all":
            out.append(f"{where}: {v['reason']}")
            continue
        out.append(f"{where} {v['metric']}: {_num(v['base_median'])} -> {_num(v['current_median'])} "
                   f"({_pct(v['change'])}) {v['reason']}")
    return "\n".join(out) + "\n"
