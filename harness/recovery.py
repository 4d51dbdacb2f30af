"""Recovery time of a load level with a fault: from the moment the stopped
node or service was started again to the first second whose throughput is
back within a tolerance of the throughput before the fault.

The load tool counts correct answers per second from its start
(`per_second[k]`: answers in [t0 + k, t0 + k + 1)), so the resolution is one
second and the figure is an upper bound: the end of the first recovered bin.
"""
from __future__ import annotations

DISRUPTIVE = ("stop", "kill", "restart")
TOLERANCE = 0.10


def recovery(per_second: list[int], t0: float, events: list[dict], window_s: float,
             tolerance: float = TOLERANCE) -> dict | None:
    """`events`: the fault actions with absolute monotonic times `t`, `action`,
    `ok`. None when the level had no disruptive action followed by a start
    (or a restart) inside the window, or no throughput before the fault to
    compare with."""
    evs = sorted((e for e in events if e.get("ok") and e.get("t") is not None), key=lambda e: e["t"])
    first = next((e for e in evs if e["action"] in DISRUPTIVE), None)
    if first is None:
        return None
    back = next((e for e in evs if e["t"] >= first["t"] and e["action"] in ("start", "restart")), None)
    if back is None or back["t"] - t0 >= window_s:
        return None
    fault_rel, back_rel = first["t"] - t0, back["t"] - t0
    full = int(window_s)                       # bins that lie wholly inside the window
    before = [per_second[k] for k in range(1, min(int(fault_rel), full, len(per_second)))]
    if not before:                             # a fault in the first two seconds: count the first bin too
        before = [per_second[k] for k in range(0, min(int(fault_rel), full, len(per_second)))]
    if not before:
        return None
    baseline = sum(before) / len(before)
    out = {"baseline_per_s": round(baseline, 1), "fault_s": round(fault_rel, 3), "restart_s": round(back_rel, 3),
           "tolerance": tolerance, "bin": None, "recovery_s": None,
           "rule": f"from the restart to the end of the first 1 s bin (counted from the load tool's start) "
                   f"with at least {1 - tolerance:.0%} of the mean answers per second before the fault "
                   f"(bins 1..{int(fault_rel) - 1}); upper bound, 1 s resolution"}
    for k in range(int(back_rel), min(full, len(per_second))):
        if per_second[k] >= (1 - tolerance) * baseline:
            out["bin"] = k
            out["recovery_s"] = round(max(0.0, k + 1 - back_rel), 3)
            break
    return out


def metrics(rec: dict | None) -> dict:
    """The verdict-style metrics of a recovery (recorded with the measurement)."""
    if rec is None or rec.get("recovery_s") is None:
        return {}
    return {"recovery_s": {"value": rec["recovery_s"], "unit": "s", "better": "lower",
                           "description": "from the restart to throughput back within 10% of before "
                                          "(upper bound, 1 s resolution)"}}
