"""The self-contained HTML report: jinja2, matplotlib charts as inline SVG.

No external assets: styles are inline, charts are SVG elements in the page,
nothing is fetched. All text from results files (implementation names,
tuning, error messages) is escaped by jinja2's autoescape; chart labels are
escaped by matplotlib's SVG writer.
"""
from __future__ import annotations

import io
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
        colour = _colour(lang, i)
        levels = sorted({x for x, _ in pts})
        medians = [stats_median([y for x, y in pts if x == lv]) for lv in levels]
        ax.plot(levels, medians, label=impl, color=colour)                          # the median over trials
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=12, color=colour)    # each trial
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrency (closed loop)")
    ax.set_ylabel("requests/s")
    ax.set_title(f"{workload}: throughput against concurrency (line: median, dots: trials)")
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


def latency_time_chart(data: dict, scenario: str, workload: str) -> str | None:
    """Per second of a level's send window (trial 1 of each implementation,
    its rate levels): the p99 and the largest latency of the answers that
    completed in that second, from the load tool, and the server's
    stop-the-world GC pauses from its own log (x: when the pause began; y:
    how long it lasted), on the same millisecond scale."""
    plt = _plt()
    impls = data["implementations"]
    sel = [m for m in data["measurements"]
           if m["scenario"] == scenario and m["workload"] == workload and m.get("ok") and m["trial"] == 1
           and m["level"]["kind"] == "rate"
           and ((m.get("load") or {}).get("detail") or {}).get("per_second_latency_ms")]
    if not sel:
        return None
    sel.sort(key=lambda m: (m["level"]["value"], impls.get(m["implementation_id"], {}).get("name", "")))
    fig, axes = plt.subplots(len(sel), 1, figsize=(10.4, 1.9 * len(sel) + 0.6), sharex=True, squeeze=False)
    for i, (ax, m) in enumerate(zip(axes[:, 0], sel)):
        imp = impls.get(m["implementation_id"], {})
        colour = _colour(imp.get("language", ""), i)
        secs = m["load"]["detail"]["per_second_latency_ms"]
        xs = [j + 0.5 for j, v in enumerate(secs) if v]
        ax.plot(xs, [v["p99"] for v in secs if v], color=colour, linewidth=1, label="p99 per second")
        ax.plot(xs, [v["max"] for v in secs if v], color=colour, linewidth=1, linestyle=":", label="max per second")
        gc = m.get("gc") or {}
        if gc.get("pauses"):
            ax.scatter([p[0] for p in gc["pauses"]], [max(p[1], 0.001) for p in gc["pauses"]], marker="x", s=14,
                       color="#c00000", linewidths=0.8,
                       label=f"GC pause ({gc['count']}, max {gc['max_ms']:.2f} ms, {gc['source']})")
        elif imp.get("language") != "rust":
            ax.text(0.99, 0.9, "no GC log read" if not gc else "no GC pause", transform=ax.transAxes,
                    ha="right", va="top", fontsize=8, color="#666")
        ax.set_yscale("log")
        ax.set_ylabel("ms (log)")
        ax.set_title(f"{imp.get('name', '?')} at {m['level']['key']} (trial 1)", fontsize=9, loc="left")
        ax.legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("seconds since the level's first message")
    height = fig.get_figheight()
    fig.suptitle(f"{workload}: latency over time and the server's GC pauses", fontsize=10,
                 y=1 - 0.08 / height)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / height))      # no blank band under the title
    return _svg(fig)


def fault_chart(data: dict, scenario: str, workload: str) -> str | None:
    """A level with a fault schedule (trial 1 of each implementation): the
    correct answers per second from the load tool, the fault and the restart
    marked, and the second by which throughput was back (harness/recovery.py)."""
    plt = _plt()
    impls = data["implementations"]
    sel = [m for m in data["measurements"]
           if m["scenario"] == scenario and m["workload"] == workload and m["trial"] == 1 and m.get("faults")
           and ((m.get("load") or {}).get("detail") or {}).get("per_second")]
    if not sel:
        return None
    sel.sort(key=lambda m: (m["level"]["value"], impls.get(m["implementation_id"], {}).get("name", "")))
    fig, axes = plt.subplots(len(sel), 1, figsize=(10.4, 1.5 * len(sel) + 0.6), sharex=True, squeeze=False)
    for i, (ax, m) in enumerate(zip(axes[:, 0], sel)):
        imp = impls.get(m["implementation_id"], {})
        secs = m["load"]["detail"]["per_second"]
        ax.bar([j + 0.5 for j in range(len(secs))], secs, width=0.9, color=_colour(imp.get("language", ""), i))
        rec = m.get("recovery") or {}
        if rec:
            ax.axvline(rec["fault_s"], color="#c00000", linestyle=":", linewidth=1, label="fault")
            ax.axvline(rec["restart_s"], color="#2a7", linestyle=":", linewidth=1, label="restart")
            ax.axhline(rec["baseline_per_s"] * (1 - rec["tolerance"]), color="#888", linewidth=0.6,
                       linestyle="--", label=f"{1 - rec['tolerance']:.0%} of before")
        text = (f"recovered {rec['recovery_s']:.2f} s after the restart" if rec.get("recovery_s") is not None
                else "not recovered in the window" if rec else "no recovery figure")
        faults = ", ".join(f"{e['action']} {e['target']}" for e in m["faults"] if e.get("at") is not None)
        ax.set_title(f"{imp.get('name', '?')} at {m['level']['key']}: {faults}; {text}"
                     f"{'' if m.get('ok') else ' (FAILED)'}", fontsize=9, loc="left")
        ax.set_ylabel("ok/s")
        ax.legend(loc="lower left", fontsize=7)
    axes[-1, 0].set_xlabel("seconds since the load tool started")
    height = fig.get_figheight()
    fig.suptitle(f"{workload}: correct answers per second around the fault", fontsize=10, y=1 - 0.08 / height)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / height))
    return _svg(fig)


def ramp_chart(data: dict, scenario: str, workload: str) -> str | None:
    """A connection ramp: the server's memory (median over trials) at each
    step against the connections open, one line per implementation; the
    slope is the memory per connection."""
    plt = _plt()
    impls = data["implementations"]
    pts: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    langs: dict[str, str] = {}
    for m in data["measurements"]:
        if m["scenario"] != scenario or m["workload"] != workload or not m.get("ok"):
            continue
        imp = impls.get(m["implementation_id"], {})
        name = imp.get("name", m["implementation_id"])
        langs[name] = imp.get("language", "")
        for st in m.get("steps") or []:
            if isinstance(st.get("connections"), int) and st.get("rss_mb") is not None:
                pts[name][st["connections"]].append(st["rss_mb"])
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    for i, name in enumerate(sorted(pts)):
        xs = sorted(pts[name])
        ax.plot(xs, [stats_median(pts[name][x]) for x in xs], marker="o", markersize=3, label=name,
                color=_colour(langs[name], i))
    ax.set_xlabel("idle connections open")
    ax.set_ylabel("server memory, PSS (MB)")
    ax.set_title(f"{workload}: memory against connections (median over trials)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
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
        colour = _colour(imp.get("language", ""), i)
        ys, last = [], None
        for y in ts[field]:
            # files written before memory was held between readings have gaps
            last = y if y is not None else last
            ys.append(last)
        # a scenario with several server runs per trial (recording off, a
        # ramp on its own): each run is its own line, named by its mode
        mode = inst.get("mode") or ""
        ax.plot(ts["t_s"], ys, label=imp.get("name", "?") + (f" ({mode})" if mode else ""), linewidth=1,
                color=colour, linestyle="--" if mode else "-")
        marked = False
        for ph in inst.get("phases") or []:
            if str(ph.get("name", "")).startswith("fault:"):
                ax.axvline(ph["t0"], linestyle=":", linewidth=0.8, color=colour,
                           label=None if marked else f"{imp.get('name', '?')}: faults")
                marked = True
    ax.set_xlabel("seconds since sampling started (idle, then each workload and level; dotted: faults)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper right")
    return _svg(fig)


def _rps_note(driver_name: str | None) -> str | None:
    """What the throughput column counts when it is not requests (its driver's
    own 'rps' metric, e.g. wsload: echoes per second)."""
    from .drivers import get_driver  # noqa: PLC0415
    try:
        d = get_driver(driver_name or "")
    except Exception:  # noqa: BLE001 - an unknown driver in an old results file
        return None
    m = next((m for m in d.metrics if m.name == "rps"), None)
    if m is None or m.unit == "req/s":
        return None
    return f"{m.unit}: {m.description}"


def _fmt(v, nd=1):
    if v is None or v == "":
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 1:
            return f"{v:.{nd}f}"
        # Below 1: at least three decimals, more (up to six) until three
        # significant digits show, so that 0.00115 CPU-s per 1k answers does
        # not print as 0.001 beside 0.00147.
        d = max(nd, 3)
        while d < 6 and v != 0 and abs(v) < 10 ** (2 - d):
            d += 1
        return f"{v:.{d}f}".rstrip("0").rstrip(".") or "0"
    return str(v)


# the growth of a server's instance folder per level (recordings...)
DISK_METRIC = {"unit": "MB/s", "better": "none", "source": "harness: the instance folder's file sizes",
               "description": "bytes the server's files grew by per second over the tool's run (on disk, "
                              "compressed where the server compresses)"}


STREAM_METRIC = {"unit": "MB/s", "better": "none", "source": "report: disk_mb_s / lz4_ratio",
                 "description": "the record stream before LZ4 per second, estimated as the level's growth on "
                                "disk over the compression ratio of the whole server run"}


def _cell(srow: dict | None, metric: str, nd: int = 1) -> dict:
    """Median with its 95% interval (when there are several trials) and the CV flag."""
    if srow is None or srow.get(f"{metric}_median") is None:
        return {"text": "–", "ci": "", "unstable": False, "cv": ""}
    med = srow[f"{metric}_median"]
    lo, hi, cv = srow[f"{metric}_ci_low"], srow[f"{metric}_ci_high"], srow[f"{metric}_cv"]
    ci = f"{_fmt(lo, nd)}–{_fmt(hi, nd)}" if srow["trials"] > 1 and lo is not None else ""
    return {"text": _fmt(med, nd), "ci": ci, "unstable": cv is not None and cv > 0.10,
            "cv": f"CV {cv:.1%}" if cv is not None else ""}


def hackday_table(data: dict, scenario: str, srows: list[dict], meta: dict) -> list[dict]:
    """The original write-up's comparison, measured: image size, memory idle and
    under load, CPU idle and under load, per language (medians over trials).
    'Under load' is the first fixed-rate level measured, in workload order
    (the same offered load for everyone), else the first workload's highest
    concurrency measured: a pair that was run (a workload may take only
    some of the profile's level kinds). A workload with faults is a last
    resort: its window holds a node or a service stopped on purpose."""
    wls = meta.get("workloads") or []
    groups = ([w["name"] for w in wls if not w.get("faults")], [w["name"] for w in wls if w.get("faults")])
    kinds = {lv["key"]: lv["kind"] for lv in meta.get("levels", [])}
    measured = {(r["workload"], r["level"]) for r in srows}
    pick = None
    for workloads in groups:
        for kind in ("rate", "concurrency"):
            for wn in workloads:
                keys = [k for k, kd in kinds.items() if kd == kind and (wn, k) in measured]
                if keys:
                    pick = (wn, keys[0] if kind == "rate" else keys[-1])
                    break
            if pick:
                break
        if pick:
            break
    if pick is None:
        return []
    w, level = pick
    out = []
    for iid, rec in sorted(data["implementations"].items()):
        if rec.get("scenario") != scenario:
            continue
        sr = next((r for r in srows if r["implementation"] == rec.get("name") and r["workload"] == w
                   and r["level"] == level), None)
        insts = [i for i in data["instances"] if i["implementation_id"] == iid and i.get("idle")]
        svc_idle = [sum((v.get("rss_mb") or 0) for v in (i["idle"].get("services") or {}).values())
                    for i in insts if i["idle"].get("services")]
        svc_idle_cpu = [sum(v["cpu_cores"] for v in (i["idle"].get("services") or {}).values())
                        for i in insts if i["idle"].get("services")]
        out.append({
            "language": rec.get("language"), "name": rec.get("name"), "status": rec.get("status"),
            "image_mb": (rec.get("image") or {}).get("size_mb"),
            "image_base": ((rec.get("image") or {}).get("base") or {}).get("ref"),
            "image_base_origin": ((rec.get("image") or {}).get("base") or {}).get("origin"),
            "startup_ms": stats_median([i.get("startup_ms") for i in insts]),
            "artifact_mb": ((rec.get("build") or {}).get("artifact_bytes") or 0) / 1e6 or None,
            "idle_rss": sr and sr["idle_rss_mb_median"], "load_rss": sr and sr["rss_mb_median"],
            "idle_cpu": sr and sr["idle_cpu_cores_median"], "load_cpu": sr and sr["cpu_cores_median"],
            "rps": sr and sr["rps_median"],
            "svc_idle_rss": stats_median(svc_idle), "svc_idle_cpu": stats_median(svc_idle_cpu),
            "svc_load_rss": None, "svc_load_cpu": None,
            "workload": w, "level": level,
        })
        rows = [m for m in data["measurements"] if m["implementation_id"] == iid and m["workload"] == w
                and m["level"]["key"] == level and m.get("services")]
        if rows:
            out[-1]["svc_load_cpu"] = stats_median([sum(v["cpu_cores"] for v in m["services"].values()) for m in rows])
            out[-1]["svc_load_rss"] = stats_median([sum(v["rss_mb"] or 0 for v in m["services"].values())
                                                    for m in rows])
    return out


def _warmup_text(insts: list[dict]) -> str:
    """Per workload: median seconds of warm-up over trials, and how many trials reached steady."""
    by_w: dict[str, list[dict]] = defaultdict(list)
    for i in insts:
        for w, rec in (i.get("warmup") or {}).items():
            by_w[w].append(rec)
    parts = []
    for w, recs in by_w.items():
        secs = stats_median([r.get("seconds") for r in recs])
        steady = sum(1 for r in recs if r.get("steady"))
        parts.append(f"{w} {secs:.0f} s ({steady}/{len(recs)} steady)" if secs is not None else w)
    return "; ".join(parts)


def stats_median(xs):
    from .stats import median
    return median([x for x in xs if x is not None])


def _step_table(data: dict, scenario: str, workload: str) -> dict | None:
    """A driver's step-wise results (a ramp): per implementation, level and
    step, the median over trials of every figure the steps carry (the
    driver's own, and the server's CPU and memory over the step)."""
    from .stats import median
    groups: dict[tuple, list[dict]] = defaultdict(list)
    impls = data["implementations"]
    for m in data["measurements"]:
        if m["scenario"] != scenario or m["workload"] != workload or not m.get("ok"):
            continue
        name = impls.get(m["implementation_id"], {}).get("name", m["implementation_id"])
        for i, st in enumerate(m.get("steps") or []):
            groups[(name, m["level"]["key"], i, str(st.get("name", i + 1)))].append(st)
    if not groups:
        return None
    keys: list[str] = []
    for sts in groups.values():
        for st in sts:
            for k, v in st.items():
                if k not in ("name", "t0", "t1", "error") and isinstance(v, (int, float)) \
                        and not isinstance(v, bool) and k not in keys:
                    keys.append(k)
    rows = []
    for (impl, level, _, step), sts in sorted(groups.items()):
        rows.append({"implementation": impl, "level": level, "step": step, "trials": len(sts),
                     "cells": [_fmt(median([st[k] for st in sts if isinstance(st.get(k), (int, float))]), 2)
                               for k in keys]})
    return {"keys": keys, "rows": rows}


def _node_table(data: dict, scenario: str) -> list[dict] | None:
    """Per implementation, workload, level and node: median CPU cores and
    memory over the trials (implementations with several nodes only)."""
    from .results import node_rows
    from .stats import median
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in node_rows(data):
        if r["scenario"] == scenario:
            groups[(r["implementation"], r["workload"], r["level"], r["node"])].append(r)
    if not groups:
        return None
    out = []
    for (impl, w, level, node), rs in groups.items():
        out.append({"implementation": impl, "workload": w, "level": level, "node": node, "trials": len(rs),
                    "cpu": median([r["cpu_cores"] for r in rs if r["cpu_cores"] is not None]),
                    "rss": median([r["rss_mb"] for r in rs if r["rss_mb"] is not None])})
    return out


def _topology_matrix(data: dict, scenario: str, meta: dict, s_rows: list[dict]) -> dict | None:
    """Scenarios with several nodes: one row per topology (same-language and
    mixed), which implementation runs each node, and per workload the median
    throughput at its top level with the checks' loss figures beside it."""
    topo = meta.get("topology")
    if not topo:
        return None
    impls = {i: d for i, d in data["implementations"].items() if d.get("scenario") == scenario}
    nodes = sorted(topo["nodes"])
    levels = [lv["key"] for lv in meta.get("levels", [])]
    cols = []
    for w in meta.get("workloads", []):
        keys = [r["level"] for r in s_rows if r["workload"] == w["name"]]
        if keys:
            top = max(keys, key=lambda k: levels.index(k) if k in levels else -1)
            cols.append((w["name"], top))
    rows = []
    for iid, d in sorted(impls.items(), key=lambda kv: (kv[1].get("language") == "mixed", kv[1].get("name", ""))):
        name = d.get("name", iid)
        by_node = {}
        for n in nodes:
            nd = next((i for i in data["instances"] if i["implementation_id"] == iid and (i.get("nodes") or {}).get(n)),
                      None)
            owner = ((nd or {}).get("nodes") or {}).get(n, {}).get("implementation") or iid
            by_node[n] = (data["implementations"].get(owner) or {}).get("name", owner.split("/")[-1])
        cells = []
        for w, top in cols:
            r = next((x for x in s_rows if x["implementation"] == name and x["workload"] == w and x["level"] == top), None)
            get = (lambda k, r=r: r.get(f"{k}_median") if r else None)
            cells.append({"rps": get("rps"), "lost": get("lost"), "dup": get("duplicated"),
                          "recovery": get("recovery_s"), "trials": r["trials"] if r else 0})
        rows.append({"name": name, "mixed": d.get("language") == "mixed", "nodes": by_node, "cells": cells,
                     "status": d.get("status")})
    if not any(r["mixed"] for r in rows) and len(rows) < 2:
        return None
    return {"nodes": nodes, "cols": [{"workload": w, "level": k} for w, k in cols], "rows": rows}


def _ceiling_table(data: dict, scenario: str, workload: str, wrows: list[dict]) -> dict | None:
    """The workload's calibration (calibrate.py): the driver against its
    reference null server, level by level, beside the fastest server's median."""
    cal = ((data.get("ceilings") or {}).get(scenario) or {}).get(workload)
    if not cal:
        return None
    rows = []
    levels = list((cal.get("levels") or {}).items())
    if cal.get("uncapped"):
        levels.append((cal["uncapped"].get("level"), cal["uncapped"]))
    for i, (key, lv) in enumerate(levels):
        best = max((r["rps_median"] for r in wrows if r["level"] == key and r.get("rps_median")), default=None)
        if i == len(cal.get("levels") or {}):
            key, best = f"{key}, null server uncapped", None
        rps = lv.get("rps")
        lat = lv.get("latency_ms") or {}
        rows.append({"level": key, "rps": rps, "bound": lv.get("bound"), "error": lv.get("error"),
                     "tool_cores": lv.get("tool_cores"), "us_call": lv.get("tool_us_per_call"), "busy": _pct(lv.get("client_busy_share")),
                     "ref_cores": lv.get("reference_cores"), "thr": _pct(lv.get("reference_throttled_share")),
                     "p50": lat.get("p50"), "p99": lat.get("p99"), "best": best,
                     "headroom": rps / best if rps and best and lv.get("kind") == "concurrency" else None})
    return {"cal": cal, "rows": rows, "limited_above": (data.get("calibration") or {}).get("client_limited_share")}


def _pct(x):
    return None if x is None else 100 * x


def build_context(data: dict, baseline: dict | None = None, threshold: float = 0.10) -> dict:
    from .results import extra_metrics
    from .summary import compare, ranks, summary_rows
    rows = flat_rows(data)
    extra = extra_metrics(data)
    srows = summary_rows(rows, sorted(extra))
    rank_rps = ranks(rows, "rps", True)
    verdicts = compare(flat_rows(baseline), rows, threshold,
                       extra=extra_metrics(baseline, data)) if baseline is not None else None
    vindex = {}
    for v in verdicts or []:
        vindex.setdefault((v["scenario"], v["implementation"], v["workload"], v["level"]), []).append(v)
    from .effort import language_summary, rows_from_results
    effort_rows = rows_from_results(data)
    scenarios = []
    scorecard = []
    for name, meta in (data.get("scenarios") or {}).items():
        s_rows = [r for r in srows if r["scenario"] == name]
        impls = {k: v for k, v in data["implementations"].items() if v.get("scenario") == name}
        insts = [i for i in data["instances"] if i["scenario"] == name]
        by_impl = defaultdict(list)
        for inst in insts:
            by_impl[inst["implementation_id"]].append(inst)
        impl_rows = []
        for iid, rec in sorted(impls.items()):
            first = (by_impl.get(iid) or [{}])[0]
            build = rec.get("build") or {}
            image = rec.get("image") or {}
            impl_rows.append({
                "id": iid, "name": rec.get("name"), "language": rec.get("language"),
                "framework": rec.get("framework"), "status": rec.get("status"),
                "failure": rec.get("failure"),
                "verified": bool(by_impl.get(iid)) and all((i.get("verify") or {}).get("ok") for i in by_impl[iid]),
                "verify_detail": (first.get("verify") or {}).get("detail"),
                "startup_ms": stats_median([i.get("startup_ms") for i in by_impl.get(iid, [])]),
                "shutdown_ms": stats_median([(i.get("shutdown") or {}).get("shutdown_ms") for i in by_impl.get(iid, [])]),
                "exit_codes": sorted({str((i.get("shutdown") or {}).get("exit_code")) for i in by_impl.get(iid, [])
                                      if i.get("shutdown")}),
                "build_s": build.get("seconds"), "build_cached": build.get("cached"),
                "artifact_mb": (build.get("artifact_bytes") or 0) / 1e6 or None,
                "image_mb": image.get("size_mb"), "image_base": (image.get("base") or {}).get("ref"),
                "idle_cpu": stats_median([(i.get("idle") or {}).get("cpu_cores") for i in by_impl.get(iid, [])]),
                "idle_rss": stats_median([(i.get("idle") or {}).get("rss_mb") for i in by_impl.get(iid, [])]),
                "tuning": rec.get("tuning") or {}, "run_command": rec.get("run_command"),
                "warmup": _warmup_text(by_impl.get(iid, [])),
                "quota": (first.get("quota") or {}),
            })
        workloads = []
        levels_meta = meta.get("levels", [])
        level_keys = [lv["key"] for lv in levels_meta]
        closed = [lv["key"] for lv in levels_meta if lv["kind"] == "concurrency"]
        rate_levels = [lv["key"] for lv in levels_meta if lv["kind"] == "rate"]
        for w in meta.get("workloads", []):
            wrows = [r for r in s_rows if r["workload"] == w["name"]]
            wrows.sort(key=lambda r: (level_keys.index(r["level"]) if r["level"] in level_keys else 99,
                                      -(r["rps_median"] or 0)))
            table = []
            base_lang = meta.get("baseline")
            base = {r["level"]: r["rps_median"] for r in wrows if base_lang and r["language"] == base_lang}
            for r in wrows:
                k = (name, w["name"], r["level"])
                b = base.get(r["level"])
                table.append({"r": r, "rank": rank_rps.get(k, {}).get(r["implementation"]),
                              "rps": _cell(r, "rps"), "p50": _cell(r, "p50_ms", 2), "p90": _cell(r, "p90_ms", 2),
                              "p99": _cell(r, "p99_ms", 2), "p999": _cell(r, "p999_ms", 2),
                              "max": _cell(r, "max_ms", 2), "cpu": _cell(r, "cpu_cores", 3),
                              "cpu1k": _cell(r, "cpu_s_per_1k", 3), "rpscpu": _cell(r, "rps_per_cpu"),
                              "rss": _cell(r, "rss_mb"), "peak": _cell(r, "rss_peak_mb"),
                              "thr": _cell(r, "throttled_pct", 0), "client": _cell(r, "client_busy_pct", 0),
                              "foreign": _cell(r, "foreign_cores", 3),
                              "ceil": _cell(r, "ceiling_pct", 0),
                              "errors": _cell(r, "errors", 0),
                              "ratio": {"text": _fmt(r["rps_median"] / b, 2) if b and r["rps_median"] else "–",
                                        "ci": "", "unstable": False, "cv": ""},
                              "verdicts": [v for v in vindex.get((name, r["implementation"], w["name"], r["level"]), [])
                                           if v["verdict"] in ("regressed", "improved")]})
            per_trial = [r for r in rows if r["scenario"] == name and r["workload"] == w["name"]]
            charts = [throughput_chart(per_trial, w["name"])]
            if closed:
                charts.append(latency_chart(per_trial, w["name"], closed[-1]))
            for lv in rate_levels:
                charts.append(latency_chart(per_trial, w["name"], lv))
            charts.append(latency_time_chart(data, name, w["name"]))
            charts.append(fault_chart(data, name, w["name"]))
            charts.append(ramp_chart(data, name, w["name"]))
            shown = [k for k in sorted(extra) if any(r.get(f"{k}_median") is not None for r in wrows)]
            if any(r.get("disk_mb_s_median") for r in wrows):
                shown.insert(0, "disk_mb_s")
                if "lz4_ratio" in shown:
                    # the stream before compression, per second: the level's
                    # growth on disk over the server run's compression ratio
                    shown.insert(1, "stream_mb_s_est")
                    for r in wrows:
                        d, q = r.get("disk_mb_s_median"), r.get("lz4_ratio_median")
                        r.update(stream_mb_s_est_median=d / q if d and q else None, stream_mb_s_est_ci_low=None,
                                 stream_mb_s_est_ci_high=None, stream_mb_s_est_cv=None)
            decl = {**extra, "disk_mb_s": DISK_METRIC, "stream_mb_s_est": STREAM_METRIC}
            other = {"metrics": [dict(decl[k], name=k) for k in shown],
                     "rows": [{"implementation": r["implementation"], "level": r["level"],
                               "cells": [_cell(r, k, 3) for k in shown]} for r in wrows]} if shown else None
            workloads.append({"baseline": base_lang if base else None, "rps_note": _rps_note(w.get("driver")),
                              "name": w["name"], "description": w.get("description", ""),
                              "driver": w.get("driver"), "table": table, "charts": [c for c in charts if c],
                              "other": other, "steps": _step_table(data, name, w["name"]),
                              "ceiling": _ceiling_table(data, name, w["name"], wrows)})
            if closed:
                head = closed[-1]
                ranked = sorted((t for t in table if t["r"]["level"] == head),
                                key=lambda t: (t["rank"] or 99, -(t["r"]["rps_median"] or 0)))
                scorecard.append({"scenario": name, "workload": w["name"], "level": head, "rows": ranked})
        interop = data.get("interop", {}).get(name)
        matrix = None
        if interop is not None:
            langs = sorted({c["client"] for c in interop} | {c["server"] for c in interop})
            cell = {(c["client"], c["server"]): c for c in interop}
            matrix = {"langs": langs, "cell": cell, "ok": sum(c["ok"] for c in interop), "n": len(interop),
                      "files": any(c.get("kind") == "files" for c in interop)}
        scenarios.append({
            "name": name, "meta": meta, "impls": impl_rows, "workloads": workloads, "interop": matrix,
            "hackday": hackday_table(data, name, s_rows, meta),
            "effort": [r for r in effort_rows if r["scenario"] == name],
            "shared_code": meta.get("shared_code"),
            "effort_counter": next((((v.get("effort") or {}).get("counter") or {}).get("version") or ""
                                    for v in impls.values() if v.get("effort")), ""),
            "services": (data.get("services") or {}).get(name),
            "nodes": _node_table(data, name),
            "topologies": _topology_matrix(data, name, meta, s_rows),
            "cpu_chart": timeseries_chart(data, name, "cpu_cores", "server CPU (cores)"),
            "mem_chart": timeseries_chart(data, name, "rss_mb", "server memory (MB)"),
        })
    overhead = [o["cores"] for o in data.get("harness_overhead", []) if o.get("cores") is not None]
    counts: dict[str, int] = {}
    for v in verdicts or []:
        counts[v["verdict"]] = counts.get(v["verdict"], 0) + 1
    eff_sum = language_summary(effort_rows)
    effort_summary = {"scenarios": sorted({r["scenario"] for r in effort_rows}), "rows": eff_sum} if eff_sum else None
    return {"d": data, "scenarios": scenarios, "scorecard": scorecard, "fmt": _fmt, "effort_summary": effort_summary,
            "events": data.get("events", []), "overhead": max(overhead) if overhead else None,
            "tools": (data.get("environment") or {}).get("load_tools", {}),
            "baseline": baseline, "verdict_counts": counts, "threshold": threshold,
            "regressions": [v for v in verdicts or [] if v["verdict"] in ("regressed", "broken", "missing")]}


def render(data: dict, baseline: dict | None = None, threshold: float = 0.10) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2").render(**build_context(data, baseline, threshold))


def write_report(results_path: Path, out: Path, baseline_path: Path | None = None,
                 threshold: float = 0.10) -> Path:
    data = load(results_path)
    html = render(data, load(baseline_path) if baseline_path else None, threshold)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(html)
    tmp.replace(out)
    return out
