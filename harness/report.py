"""The self-contained HTML report: jinja2, matplotlib charts as inline SVG.

No external assets: styles are inline, charts are SVG elements in the page,
nothing is fetched. All text from results files (implementation names,
tuning, error messages) is escaped by jinja2's autoescape; chart labels are
escaped by matplotlib's SVG writer.
"""
from __future__ import annotations

import io
import re
from collections import defaultdict
from pathlib import Path

import jinja2

from .results import flat_rows, load

TEMPLATES = Path(__file__).parent / "templates"
COLOURS = {"python": "#3572A5", "go": "#00ADD8", "rust": "#DEA584", "scala": "#C22D40"}


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.grid": True,
                         "grid.alpha": 0.3, "figure.dpi": 96})
    return plt


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight",
                metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    _plt().close(fig)
    svg = buf.getvalue()
    # Drop the XML prolog and DOCTYPE: the element is inlined into HTML.
    return svg[svg.index("<svg"):]


def _colour(lang: str, i: int) -> str:
    palette = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"]
    return COLOURS.get(lang, palette[i % len(palette)])


def throughput_chart(rows: list[dict], workload: str) -> str | None:
    plt = _plt()
    closed = [r for r in rows if r["workload"] == workload and r["level_kind"] == "concurrency" and r["ok"]]
    if not closed:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    for i, impl in enumerate(sorted({r["implementation"] for r in closed})):
        pts = sorted((r["level_value"], r["rps"]) for r in closed if r["implementation"] == impl)
        lang = next(r["language"] for r in closed if r["implementation"] == impl)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=impl, color=_colour(lang, i))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrency (closed loop)")
    ax.set_ylabel("requests/s")
    ax.set_title(f"{workload}: throughput against concurrency")
    ax.set_ylim(bottom=0)
    ax.legend()
    return _svg(fig)


def latency_chart(rows: list[dict], workload: str, level: str) -> str | None:
    plt = _plt()
    sel = [r for r in rows if r["workload"] == workload and r["level"] == level and r["ok"]]
    if not sel:
        return None
    keys = [("p50_ms", "p50"), ("p90_ms", "p90"), ("p99_ms", "p99"), ("p999_ms", "p99.9"), ("max_ms", "max")]
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    impls = sorted({r["implementation"] for r in sel})
    width = 0.8 / max(1, len(impls))
    for i, impl in enumerate(impls):
        r = next(x for x in sel if x["implementation"] == impl)
        vals = [r[k] or 0 for k, _ in keys]
        ax.bar([j + i * width for j in range(len(keys))], vals, width, label=impl,
               color=_colour(r["language"], i))
    ax.set_xticks([j + width * (len(impls) - 1) / 2 for j in range(len(keys))])
    ax.set_xticklabels([k for _, k in keys])
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms, log)")
    ax.set_title(f"{workload} at {level}: latency percentiles")
    ax.legend()
    return _svg(fig)


def timeseries_chart(data: dict, scenario: str, field: str, ylabel: str) -> str | None:
    plt = _plt()
    insts = [i for i in data["instances"] if i["scenario"] == scenario and i.get("timeseries")
             and i["trial"] == 1]
    if not insts:
        return None
    fig, ax = plt.subplots(figsize=(10.4, 3.0))
    impls = data["implementations"]
    for i, inst in enumerate(insts):
        imp = impls.get(inst["implementation_id"], {})
        ts = inst["timeseries"]
        ax.plot(ts["t_s"], ts[field], label=imp.get("name", "?"), linewidth=1,
                color=_colour(imp.get("language", ""), i))
    ax.set_xlabel("seconds since sampling started (idle, then each workload and level)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper right")
    return _svg(fig)


def _fmt(v, nd=1):
    if v is None or v == "":
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        return f"{v:.{nd}f}" if abs(v) >= 1 else f"{v:.{max(nd, 3)}f}".rstrip("0").rstrip(".") or "0"
    return str(v)


def build_context(data: dict) -> dict:
    rows = flat_rows(data)
    scenarios = []
    for name, meta in (data.get("scenarios") or {}).items():
        srows = [r for r in rows if r["scenario"] == name]
        impls = {k: v for k, v in data["implementations"].items() if v.get("scenario") == name}
        insts = [i for i in data["instances"] if i["scenario"] == name]
        by_impl = defaultdict(list)
        for inst in insts:
            by_impl[inst["implementation_id"]].append(inst)
        impl_rows = []
        for iid, rec in sorted(impls.items()):
            first = (by_impl.get(iid) or [{}])[0]
            build = rec.get("build") or {}
            impl_rows.append({
                "id": iid, "name": rec.get("name"), "language": rec.get("language"),
                "framework": rec.get("framework"), "status": rec.get("status"),
                "failure": rec.get("failure"), "verified": bool((first.get("verify") or {}).get("ok")),
                "verify_detail": (first.get("verify") or {}).get("detail"),
                "startup_ms": first.get("startup_ms"),
                "shutdown_ms": (first.get("shutdown") or {}).get("shutdown_ms"),
                "exit_code": (first.get("shutdown") or {}).get("exit_code"),
                "build_s": build.get("seconds"), "build_cached": build.get("cached"),
                "artifact_mb": (build.get("artifact_bytes") or 0) / 1e6 or None,
                "image_mb": (rec.get("image") or {}).get("size_mb"),
                "idle_cpu": (first.get("idle") or {}).get("cpu_cores"),
                "idle_rss": (first.get("idle") or {}).get("rss_mb"),
                "tuning": rec.get("tuning") or {}, "run_command": rec.get("run_command"),
            })
        workloads = []
        for w in meta.get("workloads", []):
            wrows = [r for r in srows if r["workload"] == w["name"]]
            levels = [lv["key"] for lv in meta.get("levels", [])]
            rate_levels = [lv["key"] for lv in meta.get("levels", []) if lv["kind"] == "rate"]
            closed = [lv["key"] for lv in meta.get("levels", []) if lv["kind"] == "concurrency"]
            charts = [throughput_chart(srows, w["name"])]
            if closed:
                charts.append(latency_chart(srows, w["name"], closed[-1]))
            for lv in rate_levels:
                charts.append(latency_chart(srows, w["name"], lv))
            workloads.append({"name": w["name"], "description": w.get("description", ""),
                              "driver": w.get("driver"), "levels": levels,
                              "rows": sorted(wrows, key=lambda r: (levels.index(r["level"])
                                                                   if r["level"] in levels else 99,
                                                                   r["implementation"], r["trial"])),
                              "charts": [c for c in charts if c]})
        interop = data.get("interop", {}).get(name)
        matrix = None
        if interop is not None:
            langs = sorted({c["client"] for c in interop} | {c["server"] for c in interop})
            cell = {(c["client"], c["server"]): c for c in interop}
            matrix = {"langs": langs, "cell": cell, "ok": sum(c["ok"] for c in interop), "n": len(interop)}
        scenarios.append({
            "name": name, "meta": meta, "impls": impl_rows, "workloads": workloads, "interop": matrix,
            "cpu_chart": timeseries_chart(data, name, "cpu_cores", "server CPU (cores)"),
            "mem_chart": timeseries_chart(data, name, "rss_mb", "server memory (MB)"),
        })
    overhead = [o["cores"] for o in data.get("harness_overhead", []) if o.get("cores") is not None]
    return {"d": data, "scenarios": scenarios, "fmt": _fmt, "events": data.get("events", []),
            "overhead": max(overhead) if overhead else None,
            "tools": (data.get("environment") or {}).get("load_tools", {})}


def render(data: dict) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2").render(**build_context(data))


def write_report(results_path: Path, out: Path) -> Path:
    data = load(results_path)
    html = render(data)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(html)
    tmp.replace(out)
    return out
