"""Exports of a run for other tools: pytest-benchmark's JSON format, CSV
through pandas, and the flat JSON table."""
from __future__ import annotations

import datetime as _dt
import json

from .summary import group, usable


def to_pytest_benchmark(data: dict, rows: list[dict]) -> dict:
    """A pytest-benchmark JSON document: one benchmark per scenario,
    implementation, workload and level.

    The timed quantity is seconds per correct answer (1 / rps) of each trial,
    so pytest-benchmark's `ops` is throughput; the other medians travel in
    `extra_info`. `pytest-benchmark compare` and benchmark-tracking CI actions
    read it as they read pytest-benchmark's own files.
    """
    from pytest_benchmark import __version__ as pb_version
    from pytest_benchmark.stats import Stats

    env = data.get("environment") or {}
    benchmarks = []
    for (scenario, impl, workload, level), rs in sorted(group(rows).items(), key=lambda kv: str(kv[0])):
        good = [r for r in rs if usable(r) and r["rps"]]
        if not good:
            continue
        st = Stats()
        for r in good:
            st.update(1.0 / r["rps"])
        stats = st.as_dict()
        stats["data"] = [1.0 / r["rps"] for r in good]
        stats["iterations"] = 1
        first = good[0]
        benchmarks.append({
            "group": f"{scenario} {workload} {level}",
            "name": f"{scenario}[{impl}-{workload}-{level}]",
            "fullname": f"langbench::{scenario}::{workload}::{level}::{impl}",
            "params": {"implementation": impl, "language": first["language"], "workload": workload,
                       "level": level},
            "param": f"{impl}-{workload}-{level}",
            "extra_info": {k: first.get(k) for k in ("runtime", "client_bound", "server_cpus", "client_cpus",
                                                      "cpu_quota")}
            | {f"{m}_trials": [r[m] for r in good] for m in ("rps", "p99_ms", "cpu_s_per_1k", "rss_mb")},
            "options": {"timer": "langbench (seconds per correct answer = 1 / rps per trial)",
                        "disable_gc": False, "min_rounds": 1, "max_time": None, "min_time": None,
                        "warmup": True},
            "stats": stats,
        })
    git = env.get("git") or {}
    return {
        "machine_info": {"node": env.get("hostname"), "processor": env.get("cpu_model"), "machine": "x86_64",
                         "python_version": env.get("python_harness"), "release": env.get("kernel"),
                         "system": "Linux", "cpu": {"brand_raw": env.get("cpu_model"), "count": env.get("cpu_count")},
                         "python_implementation": "CPython", "python_compiler": "",
                         "python_implementation_version": env.get("python_harness"), "python_build": []},
        "commit_info": {"id": git.get("commit"), "dirty": git.get("dirty"), "project": "langbench",
                        "branch": None, "time": data.get("started_at")},
        "benchmarks": benchmarks,
        "datetime": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "version": pb_version,
    }


def to_csv_pandas(rows: list[dict], columns: list[str]) -> str:
    import pandas as pd
    return pd.DataFrame(rows, columns=columns).to_csv(index=False)


def dumps(obj) -> str:
    return json.dumps(obj, indent=1) + "\n"
