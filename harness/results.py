"""The results file: one per run, versioned schema, written atomically after
every step so that a crash or Ctrl-C keeps everything measured so far.

The schema is documented in results/README.md; `flat_rows` is the flat table
(one row per scenario, implementation, workload, level and trial) that
`langbench results` prints and CI scripts read.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .errors import InputError

SCHEMA = "langbench.results"
SCHEMA_VERSION = 2
# Versions this langbench reads. 2 added (all optional, absent in version 1
# files): nodes and topology, instance folders and after-stop checks, check
# metrics, open metric declarations, faults and steps per measurement.
READABLE_VERSIONS = (1, 2)
RESULTS_FILE = "results.json"


class ResultsStore:
    def __init__(self, out_dir: Path, header: dict):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / RESULTS_FILE
        self.data = {
            "schema": SCHEMA, "schema_version": SCHEMA_VERSION, **header,
            "status": "running", "started_at": _now(), "finished_at": None,
            "implementations": {}, "instances": [], "measurements": [],
            "interop": {}, "events": [],
        }
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        with tmp.open("w") as fh:
            json.dump(self.data, fh, indent=1, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def event(self, level: str, message: str, **context) -> None:
        self.data["events"].append({"time": _now(), "level": level, "message": message, **context})
        self.save()

    def implementation(self, impl_id: str, **fields) -> dict:
        rec = self.data["implementations"].setdefault(impl_id, {})
        rec.update(fields)
        self.save()
        return rec

    def add_instance(self, instance: dict) -> dict:
        self.data["instances"].append(instance)
        self.save()
        return instance

    def add_measurement(self, m: dict) -> None:
        self.data["measurements"].append(m)
        self.save()

    def declare_metrics(self, metrics: dict[str, dict], source: str) -> None:
        """Record what a metric means (unit, better direction, where from), once
        per name: report, summary and compare read these declarations."""
        decl = self.data.setdefault("metrics", {})
        for name, d in metrics.items():
            if name in BUILTIN_METRICS or name in decl:
                continue
            decl[name] = {"unit": d.get("unit", ""), "better": d.get("better", "none"),
                          "description": d.get("description", ""), "source": source}

    def set_interop(self, scenario: str, cells: list[dict]) -> None:
        self.data["interop"][scenario] = cells
        self.save()

    def finish(self, status: str) -> None:
        self.data["status"] = status
        self.data["finished_at"] = _now()
        self.save()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def load(path: Path) -> dict:
    """Read a results file (or a run folder holding one) and check its schema."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.exists():
        raise InputError(f"{path}: no such results file")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise InputError(f"{path}: field 'schema': not a langbench results file")
    version = data.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise InputError(f"{path}: field 'schema_version': {version!r} is not supported "
                         f"(this langbench reads {', '.join(map(str, READABLE_VERSIONS))})")
    for key, kind in (("implementations", dict), ("instances", list), ("measurements", list)):
        if not isinstance(data.get(key), kind):
            raise InputError(f"{path}: field '{key}': missing or not a {kind.__name__}")
    data["_path"] = str(path)
    return data


COLUMNS = [
    "run_id", "scenario", "implementation", "language", "runtime", "workload", "level",
    "level_kind", "level_value", "trial", "verified", "ok", "rps", "requests", "errors",
    "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "cpu_cores", "cpu_s_per_1k",
    "rps_per_cpu", "rss_mb", "rss_peak_mb", "idle_cpu_cores", "idle_rss_mb", "startup_ms",
    "shutdown_ms", "build_s", "artifact_mb", "image_mb", "client_bound", "client_limited", "ceiling_rps", "ceiling_pct", "ceiling_max_rps",
    "client_busy_pct", "tool_cpu_cores",
    "noisy", "foreign_cores", "steal_cores", "irq_cores", "host_ns_server", "host_ns_client",
    "throttled_pct", "throttled_ms_per_s", "server_cpus", "client_cpus", "cpu_quota", "cpu_quota_applied", "cfs_period_us", "window_s",
    "warmup_s", "warmup_steady", "cut_off", "late", "services_cpu_cores", "services_rss_mb", "nodes",
    "disk_mb_s", "code_lines", "comment_lines", "blank_lines", "code_files", "deps_direct", "deps_all",
    "download_mb", "cold_build_s", "warm_build_s", "error",
]
# Figures of the flat table that every run has (their meaning: results/README.md).
# Others come from drivers and checks, declared in results.json "metrics".
BUILTIN_METRICS = frozenset(COLUMNS)
NODE_COLUMNS = ["run_id", "scenario", "implementation", "workload", "level", "trial", "node", "ok",
                "cpu_cores", "cpu_s", "rss_mb", "rss_peak_mb"]


def _r(x, nd=3):
    return None if x is None else round(x, nd)


def _pct(x):
    return None if x is None else 100 * x


def _host_ns(m: dict, side: str) -> float | None:
    """The CPU canary's median over the level's window (harness/canary.py),
    the mean over that side's CPUs: how fast those CPUs were, in ns of CPU
    time per canary iteration (lower is faster)."""
    per = ((m.get("host_speed") or {}).get(side) or {}).values()
    xs = [v["median_ns"] for v in per if v.get("median_ns")]
    return round(sum(xs) / len(xs), 2) if xs else None


def flat_rows(data: dict) -> list[dict]:
    """One row per measurement, joined with its implementation and instance."""
    impls = data["implementations"]
    instances = {i["key"]: i for i in data["instances"]}
    layout = data.get("cpu_layout", {})
    rows = []
    for m in data["measurements"]:
        impl = impls.get(m["implementation_id"], {})
        inst = instances.get(m["instance"], {})
        load_ = m.get("load") or {}
        lat = load_.get("latency_ms") or {}
        server = m.get("server") or {}
        idle = inst.get("idle") or {}
        build = impl.get("build") or {}
        level = m["level"]
        client = m.get("client") or {}
        noise = m.get("noise") or {}
        thr = server.get("throttling") or {}
        quota = inst.get("quota") or {}
        warm = (inst.get("warmup") or {}).get(m["workload"]) or {}
        ceil = m.get("ceiling") or {}
        # a check after the server stopped (files it finalised...) that failed
        # makes every level of that instance unusable
        stop_check = inst.get("after_stop") or {}
        stop_failed = bool(stop_check) and not stop_check.get("ok")
        rows.append({
            "run_id": data.get("run_id"),
            "scenario": m["scenario"],
            "implementation": impl.get("name", m["implementation_id"]),
            "language": impl.get("language"),
            "runtime": data.get("runtime"),
            "workload": m["workload"],
            "level": level["key"],
            "level_kind": level["kind"],
            "level_value": level["value"],
            "trial": m["trial"],
            "verified": bool((inst.get("verify") or {}).get("ok")),
            "ok": bool(m.get("ok")) and not stop_failed,
            "rps": _r(load_.get("rps"), 1),
            "requests": load_.get("count"),
            "errors": load_.get("errors"),
            "p50_ms": _r(lat.get("p50")), "p90_ms": _r(lat.get("p90")),
            "p99_ms": _r(lat.get("p99")), "p999_ms": _r(lat.get("p999")),
            "max_ms": _r(lat.get("max")),
            "cpu_cores": _r(server.get("cpu_cores"), 4),
            "cpu_s_per_1k": _r(server.get("cpu_s_per_1k"), 4),
            "rps_per_cpu": _r(server.get("rps_per_cpu"), 1),
            "rss_mb": _r(server.get("rss_mb")),
            "rss_peak_mb": _r(server.get("rss_peak_mb")),
            "disk_mb_s": _r((server.get("disk") or {}).get("mb_per_s"), 2),
            "idle_cpu_cores": _r(idle.get("cpu_cores"), 4),
            "idle_rss_mb": _r(idle.get("rss_mb")),
            "startup_ms": _r(inst.get("startup_ms"), 1),
            "shutdown_ms": _r((inst.get("shutdown") or {}).get("shutdown_ms"), 1),
            "build_s": _r(build.get("seconds"), 2),
            "artifact_mb": _r(build["artifact_bytes"] / 1e6, 2) if build.get("artifact_bytes") else None,
            "image_mb": _r((impl.get("image") or {}).get("size_mb"), 2),
            "client_bound": bool(load_.get("client_bound")),
            "client_limited": bool(ceil.get("client_limited")),
            "ceiling_rps": _r(ceil.get("level_rps"), 1),
            "ceiling_pct": _r(_pct(ceil.get("fraction")), 1),
            "ceiling_max_rps": _r(ceil.get("max_rps"), 1),
            "client_busy_pct": _r(_pct(client.get("busy_share")), 1),
            "tool_cpu_cores": _r(load_.get("tool_cpu_cores"), 3),
            "noisy": bool(noise.get("noisy")),
            "foreign_cores": _r(noise.get("foreign_cores"), 4),
            "steal_cores": _r(noise.get("steal_cores"), 4),
            "irq_cores": _r(noise.get("irq_cores"), 4),
            "host_ns_server": _host_ns(m, "server"), "host_ns_client": _host_ns(m, "client"),
            "throttled_pct": _r(_pct(thr.get("throttled_share")), 1),
            "throttled_ms_per_s": _r(thr.get("throttled_ms_per_s"), 1),
            "server_cpus": " ".join(map(str, layout.get("server", []))),
            "client_cpus": " ".join(map(str, layout.get("client", []))),
            "cpu_quota": (data.get("profile") or {}).get("server_cpu_quota"),
            "cpu_quota_applied": quota.get("cpu_quota_applied"),
            "cfs_period_us": quota.get("cfs_period_us"),
            "window_s": _r(server.get("window_s"), 3),
            "warmup_s": _r(warm.get("seconds"), 1),
            "warmup_steady": warm.get("steady"),
            "cut_off": load_.get("cut_off"),
            "late": load_.get("late"),
            "services_cpu_cores": _r(sum(v["cpu_cores"] or 0 for v in (m.get("services") or {}).values()), 4)
            if m.get("services") else None,
            "services_rss_mb": _r(sum(v["rss_mb"] or 0 for v in (m.get("services") or {}).values()))
            if m.get("services") else None,
            "nodes": len(m["nodes"]) if m.get("nodes") else 1,
            **_effort_columns(impl.get("effort") or {}),
            "error": m.get("error") or (f"check after stop failed: {stop_check.get('detail')}"
                                        if stop_failed else None),
        })
        # the open metrics: a driver's own, the after-load and after-stop checks'
        extra = dict(load_.get("extra") or {})
        for src in ((m.get("after_load") or {}).get("metrics") or {}, stop_check.get("metrics") or {},
                    (m.get("gc") or {}).get("metrics") or {}, (m.get("recovery") or {}).get("metrics") or {}):
            extra.update({k: v["value"] for k, v in src.items()})
        for k, v in extra.items():
            if k not in rows[-1]:
                rows[-1][k] = v
    return rows


def _effort_columns(eff: dict) -> dict:
    """The implementation's effort figures (harness/effort.py), the same in each of its rows."""
    code, deps, cold = eff.get("code") or {}, eff.get("deps") or {}, eff.get("cold_build") or {}
    dl = deps.get("download_bytes")
    return {"code_lines": code.get("code"), "comment_lines": code.get("comments"), "blank_lines": code.get("blanks"),
            "code_files": code.get("files"), "deps_direct": deps.get("direct"), "deps_all": deps.get("all"),
            "download_mb": None if dl is None else round(dl / 1e6, 2),
            "cold_build_s": cold.get("cold_s"), "warm_build_s": cold.get("warm_s")}


def extra_metrics(*runs: dict) -> dict[str, dict]:
    """The declared metrics beyond the built-in ones, over one or more runs."""
    out: dict[str, dict] = {}
    for data in runs:
        for name, d in (data.get("metrics") or {}).items():
            if name not in BUILTIN_METRICS:
                out.setdefault(name, d)
    return out


def columns(data: dict) -> list[str]:
    """The flat table's columns for this run: the built-in ones, then its
    declared metrics, `error` last."""
    return COLUMNS[:-1] + sorted(extra_metrics(data)) + ["error"]


def node_rows(data: dict) -> list[dict]:
    """One row per measurement and node, for implementations that run as
    several nodes (the flat table's server figures are their sum)."""
    impls = data["implementations"]
    out = []
    for m in data["measurements"]:
        for node, v in (m.get("nodes") or {}).items():
            impl = impls.get(m["implementation_id"], {})
            out.append({"run_id": data.get("run_id"), "scenario": m["scenario"],
                        "implementation": impl.get("name", m["implementation_id"]), "workload": m["workload"],
                        "level": m["level"]["key"], "trial": m["trial"], "node": node, "ok": bool(m.get("ok")),
                        "cpu_cores": _r(v.get("cpu_cores"), 4), "cpu_s": _r(v.get("cpu_s"), 4),
                        "rss_mb": _r(v.get("rss_mb")), "rss_peak_mb": _r(v.get("rss_peak_mb"))})
    return out
