"""Running a scenario's verification command and an implementation's
conformance client; both print one JSON verdict and exit 0 when it is ok.

A verdict is one JSON object on the last line starting with "{":
  {"ok": true, "checks": [{"name": ..., "ok": ..., "detail": ...}],
   "produced": 3,                      # correct answers the check itself caused
   "metrics": {"records": 1200,        # figures the check measured: a number, or
               "recovery_s": {"value": 1.4, "unit": "s", "better": "lower"}}}
"""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Verdict:
    ok: bool
    detail: str
    checks: list
    command: list[str]
    produced: int = 0      # correct answers the check itself caused (counted towards totals)
    metrics: dict = field(default_factory=dict)   # name -> {"value", "unit", "better"}
    data: dict | None = None        # the JSON line as printed (readers' summaries...)

    def to_json(self) -> dict:
        return {"ok": self.ok, "detail": self.detail, "checks": self.checks, "command": self.command,
                "produced": self.produced, "metrics": self.metrics}


BETTER = ("higher", "lower", "none")


def parse_metrics(raw) -> tuple[dict, str | None]:
    """A verdict's "metrics": name -> number or {"value", "unit", "better"};
    returns the normalised map and an error naming the bad field, if any."""
    if raw is None:
        return {}, None
    if not isinstance(raw, dict):
        return {}, "metrics: expected an object"
    out = {}
    for name, v in raw.items():
        if not isinstance(name, str) or not name.replace("_", "").isalnum():
            return {}, f"metrics.{name}: a metric name is letters, digits and underscores"
        if isinstance(v, dict):
            value, unit, better = v.get("value"), v.get("unit", ""), v.get("better", "none")
        else:
            value, unit, better = v, "", "none"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            return {}, f"metrics.{name}: expected a number, got {value!r}"
        if better not in BETTER or not isinstance(unit, str):
            return {}, f"metrics.{name}: better must be one of {', '.join(BETTER)} and unit a string"
        out[name] = {"value": value, "unit": unit, "better": better}
        if isinstance(v, dict) and isinstance(v.get("description"), str):
            out[name]["description"] = v["description"]
    return out, None


def run_verdict(argv: list[str], cwd: Path, timeout_s: float, cpus: list[int] | None = None,
                env: dict | None = None) -> Verdict:
    import os

    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout_s,
                              preexec_fn=pin, stdin=subprocess.DEVNULL,
                              env={**os.environ, **(env or {})})
    except FileNotFoundError:
        return Verdict(False, f"command not found: {argv[0]}", [], argv)
    except subprocess.TimeoutExpired:
        return Verdict(False, f"no verdict within {timeout_s:g} s", [], argv)
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip().startswith("{")]
    try:
        data = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
        return Verdict(False, f"exit {proc.returncode}, no JSON verdict: {tail[0][:300]}", [], argv)
    checks = data.get("checks") or []
    ok = bool(data.get("ok")) and proc.returncode == 0
    failed = [c for c in checks if isinstance(c, dict) and not c.get("ok")]
    if ok:
        detail = f"{len(checks)}/{len(checks)} checks passed"
    elif failed:
        detail = "; ".join(f"{c.get('name')}: {c.get('detail')}" for c in failed)[:500]
    else:
        detail = f"verdict not ok (exit {proc.returncode})"
    produced = data.get("produced", 0)
    metrics, bad = parse_metrics(data.get("metrics"))
    if bad is not None:
        ok, detail = False, f"malformed verdict: {bad}"
    return Verdict(ok, detail, checks, argv, produced if isinstance(produced, int) else 0, metrics, data)
