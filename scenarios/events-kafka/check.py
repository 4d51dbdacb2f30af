"""Verification of an events-kafka service against a real broker.

    python check.py cases       --target HOST:PORT --bootstrap B --topic T [--instance I]
    python check.py broker-down --target HOST:PORT [--instance I]    (run while the broker is stopped)
    python check.py recovery    --target HOST:PORT [--bootstrap B --topic T --instance I]
                                                                     (run once the broker is back)
    python check.py events      --bootstrap B --topic T --expect-ok N

Each prints one JSON verdict {"ok", "checks": [...], "produced": n} and exits
0 only when every check passed; "produced" is how many 200 answers the check
itself caused (the harness adds them to the count the topic must match).

Late (phantom) events. A server that answers 503 while the broker is down and
still delivers the record once the broker is back breaks the contract (503
means no event). To catch it right after the broker-down/recovery steps, every
POST those two steps make carries a reason of its own, derived from the
server's instance name, the step and the attempt number
(`lb-<instance>-down-<n>`, `lb-<instance>-back-<n>`), so the recovery step can
recognise the broker-down step's requests without talking to it. What the
steps saw (the topic's end offset after the status cases, each broker-down
answer with its time) is kept in a small state file per instance in the
system's temporary folder (STATE_DIR); the recovery step reads it, removes it,
and works without it (from the topic's first offset, broker-down answers then
known only as non-200, since the step passed). After its own 200 the recovery
step waits LATE_EVENT_WAIT_S (past the producers' 5 s delivery timeout), reads
the topic and fails if an event of a request answered other than 200 (or never
answered) is there, or if a 200 answer has no event or more than one.
"""
from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

MAX_U64 = 2**64 - 1

# The contract's delivery timeout: a producer gives a record up (503) after it.
DELIVERY_TIMEOUT_S = 5.0
# How long the recovery step waits after its own 200 before it reads the topic
# for late events: the delivery timeout plus a margin (a correct producer has
# delivered or dropped every earlier record by then).
LATE_EVENT_WAIT_S = DELIVERY_TIMEOUT_S + 3.0
# How many requests the broker-down step makes (attempts 0..n-1).
BROKER_DOWN_ATTEMPTS = 2
# Where the steps of one server run leave what the recovery step needs.
STATE_DIR = Path(tempfile.gettempdir()) / "langbench-events-kafka"


class Checks:
    def __init__(self) -> None:
        self.items: list[dict] = []
        self.produced = 0

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self.items.append({"name": name, "ok": bool(ok), "detail": detail})
        return ok

    def verdict(self, **extra) -> int:
        ok = bool(self.items) and all(c["ok"] for c in self.items)
        print(json.dumps({"ok": ok, "checks": self.items, "produced": self.produced, **extra}))
        return 0 if ok else 1


def post(target: str, path: str, body: bytes, timeout: float = 10.0) -> tuple[int | None, bytes, float]:
    host, port = target.rsplit(":", 1)
    t0 = time.monotonic()
    try:
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, data, time.monotonic() - t0
    except (OSError, http.client.HTTPException) as exc:
        return None, str(exc).encode(), time.monotonic() - t0


def compact(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def now_iso() -> str:
    """Wall-clock time for details: UTC, milliseconds."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ms_iso(ms: int | None) -> str | None:
    if not ms or ms <= 0:
        return None
    return (datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"))


# ---------------------------------------------------------------- pure logic (unit-tested)

def nonce_base(instance: str | None) -> str:
    """The prefix of every reason the broker-down and recovery steps send: derived
    from the server's instance name when given (so that the recovery step knows
    the broker-down step's reasons), random otherwise."""
    return f"lb-{instance}" if instance else f"lb-{uuid.uuid4().hex[:12]}"


def reason_for(base: str, step: str, attempt: int) -> str:
    """The reason of attempt `attempt` of step `step` ("down" or "back")."""
    return f"{base}-{step}-{attempt}"


def sent_record(reason: str, step: str, status: int | None, at: str | None, took: float | None,
                error: str | None = None) -> dict:
    """One request a step made, as the state file and the judgement see it."""
    return {"reason": reason, "step": step, "status": status, "at": at,
            "took": None if took is None else round(took, 3), "error": error}


def describe_answer(s: dict) -> str:
    """How a request was answered, for a failure's detail."""
    at = f" at {s['at']}" if s.get("at") else ""
    took = f" after {s['took']:.1f} s" if s.get("took") is not None else ""
    if s.get("status") is not None:
        return f"was answered {s['status']}{at}{took}"
    if s.get("error"):
        return f"was never answered ({s['error'][:80]}){at}{took}"
    return "was answered other than 200 (the broker-down step passed; its record is missing)"


def event_record(offset: int, value: bytes | None, timestamp_ms: int | None = None) -> dict:
    """One event read back: its offset, reason (None if the value is not the
    spec's JSON) and the record's timestamp."""
    reason = None
    try:
        obj = json.loads(value)
        if isinstance(obj, dict) and isinstance(obj.get("reason"), str):
            reason = obj["reason"]
    except (TypeError, ValueError):
        pass
    return {"offset": offset, "reason": reason, "time": ms_iso(timestamp_ms)}


def judge_delivery(sent: list[dict], events: list[dict], prefix: str, strict: bool) -> list[tuple[str, bool, str]]:
    """The late-event decision. `sent`: every request of the broker-down and
    recovery steps (sent_record); `events`: the topic's events from the offset
    noted before broker-down (or from its start, then `strict` is False),
    event_record. An event of a request answered other than 200 (or never
    answered) is a late event; each 200 answer has exactly one event; with
    `strict`, an event matching no request at all is unexpected too (only
    events whose reason starts with `prefix` otherwise). Returns the checks as
    (name, ok, detail)."""
    by_reason = {s["reason"]: s for s in sent}
    counts = Counter(e["reason"] for e in events)
    late, unexpected = [], []
    for e in events:
        s = by_reason.get(e["reason"])
        if s is None:
            if strict or (e["reason"] or "").startswith(prefix):
                unexpected.append(e)
        elif s.get("status") != 200:
            late.append((e, s))
    checks = []
    if late:
        e, s = late[0]
        when = f", written {e['time']}" if e.get("time") else ""
        more = "" if len(late) == 1 else (f"; {len(late) - 1} more late event(s): "
                                          + ", ".join(x["reason"] for x, _ in late[1:4])
                                          + (", ..." if len(late) > 4 else ""))
        detail = (f"late event: reason {s['reason']} {describe_answer(s)} (step {s['step']}) "
                  f"and reached the topic (offset {e['offset']}{when}){more}")
    else:
        n = sum(1 for s in sent if s.get("status") != 200)
        detail = f"none of the {n} requests answered other than 200 has an event in the topic"
    checks.append(("no late events", not late, detail))
    ok200 = [s for s in sent if s.get("status") == 200]
    wrong = [(s, counts[s["reason"]]) for s in ok200 if counts[s["reason"]] != 1]
    if wrong:
        s, n = wrong[0]
        detail = (f"reason {s['reason']} was answered 200 (step {s['step']}) and has {n} events in the topic"
                  + (f"; {len(wrong) - 1} more such answer(s)" if len(wrong) > 1 else ""))
    else:
        detail = f"{len(ok200)} answer(s) 200, each with exactly one event"
    checks.append(("one event per 200 answer", not wrong, detail))
    if unexpected:
        e = unexpected[0]
        what = f"reason {e['reason']!r}" if e["reason"] is not None else "a value that is not the spec's JSON"
        detail = (f"event at offset {e['offset']} with {what} matches no request of the broker-down and "
                  f"recovery steps" + (f"; {len(unexpected) - 1} more" if len(unexpected) > 1 else ""))
        checks.append(("no unexpected events", False, detail))
    return checks


def state_path(instance: str, state_dir: Path | None = None) -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in instance)
    return (state_dir or STATE_DIR) / f"{safe}.json"


def load_state(instance: str | None, state_dir: Path | None = None) -> dict:
    if not instance:
        return {}
    try:
        data = json.loads(state_path(instance, state_dir).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def save_state(instance: str | None, data: dict, state_dir: Path | None = None) -> None:
    """Best effort: a missing state file weakens the recovery step's details,
    never its verdict on the requests it can derive."""
    if not instance:
        return
    path = state_path(instance, state_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError as exc:
        print(f"check.py: cannot write {path}: {exc}", file=sys.stderr)


def drop_state(instance: str | None, state_dir: Path | None = None) -> None:
    if instance:
        try:
            state_path(instance, state_dir).unlink()
        except OSError:
            pass


def down_records(base: str, state: dict) -> list[dict]:
    """The broker-down step's requests: from its record, else derived (all
    answered other than 200, or the step would have failed)."""
    recorded = state.get("down")
    if isinstance(recorded, list) and recorded:
        return [r for r in recorded if isinstance(r, dict) and "reason" in r]
    return [sent_record(reason_for(base, "down", i), "broker-down", None, None, None)
            for i in range(BROKER_DOWN_ATTEMPTS)]


def end_offset(bootstrap: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"langbench-check-{uuid.uuid4().hex}",
                  "log_level": 0})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        c.close()


def read_topic(bootstrap: str, topic: str, timeout_s: float = 60.0, start: int | None = None):
    """Every message of the topic's single partition from `start` (default: the
    beginning) to the end offset."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"langbench-check-{uuid.uuid4().hex}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest", "log_level": 0})
    try:
        low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        if start is not None:
            low = max(low, start)
        msgs = []
        if high > low:
            c.assign([TopicPartition(topic, 0, low)])
            deadline = time.monotonic() + timeout_s
            while len(msgs) < high - low and time.monotonic() < deadline:
                for m in c.consume(num_messages=10000, timeout=1.0):
                    if m.error() is None:
                        msgs.append(m)
        return low, high, msgs
    finally:
        c.close()


def read_events(bootstrap: str, topic: str, start: int | None, timeout_s: float = 30.0):
    """(low, high, events): the topic's events from `start` (default: its
    first offset) to its end offset, as event_record dicts."""
    low, high, msgs = read_topic(bootstrap, topic, timeout_s=timeout_s, start=start)
    events = []
    for m in msgs:
        ts_type, ts = m.timestamp()
        events.append(event_record(m.offset(), m.value(), ts if ts_type else None))
    return low, high, events


def cmd_cases(args) -> int:
    ch = Checks()
    nonce = uuid.uuid4().hex[:10]
    accepted = {}
    start = end_offset(args.bootstrap, args.topic)   # events before these checks are not theirs
    cases = [
        ("200 plain", "42", {"reason": f"{nonce}-plain"}),
        ("200 max id, 1024-byte reason", str(MAX_U64), {"reason": (f"{nonce}-" + "x" * 1024)[:1024]}),
        ("200 UTF-8 reason, extra member", "7", {"reason": f"{nonce}-h\u00e9llo \u2713", "extra": 1}),
    ]
    for name, id_, body in cases:
        status, data, _ = post(args.target, f"/fire/{id_}", json.dumps(body).encode())
        if ch.add(name, status == 200 and data == b"", f"status {status}, body {data[:60]!r}"):
            ch.produced += 1
            accepted[body["reason"]] = (id_, body["reason"])
    bad400 = [
        ("400 invalid JSON", b'{"reason": '),
        ("400 missing reason", b'{"why": "x"}'),
        ("400 non-string reason", b'{"reason": 5}'),
        ("400 null reason", b'{"reason": null}'),
        ("400 not an object", b'["reason"]'),
        ("400 1025-byte reason", json.dumps({"reason": "y" * 1025}).encode()),
    ]
    for name, body in bad400:
        status, data, _ = post(args.target, "/fire/9", body)
        ch.add(name, status == 400, f"status {status}")
    for name, id_ in [("404 non-numeric id", "abc"), ("404 negative id", "-1"),
                      ("404 id 2^64", str(MAX_U64 + 1)), ("404 id with sign", "+5")]:
        status, data, _ = post(args.target, f"/fire/{id_}", json.dumps({"reason": f"{nonce}-{id_}"}).encode())
        ch.add(name, status == 404, f"status {status}")
    # The topic must hold exactly the accepted events, with exact keys and values.
    time.sleep(0.5)
    low, high, msgs = read_topic(args.bootstrap, args.topic, start=start)
    got = {}
    for m in msgs:
        try:
            got[json.loads(m.value())["reason"]] = m
        except (ValueError, KeyError, TypeError):
            pass
    ch.add("events: count", high - low == len(accepted),
           f"{high - low} events in topic {args.topic} for {len(accepted)} accepted requests")
    for reason, (id_, _) in accepted.items():
        m = got.get(reason)
        if m is None:
            ch.add("event present", False, f"no event for reason {reason[:40]!r}")
            continue
        value = m.value()
        ok = (json.loads(value) == {"id": int(id_), "reason": reason} and list(json.loads(value)) == ["id", "reason"]
              and m.key() == id_.encode())
        if reason.isascii():
            ok = ok and value == compact({"id": int(id_), "reason": reason})
        ch.add("event exact", ok, f"key {m.key()!r}, value {value[:80]!r}")
    # The offset before the broker-down step: the recovery step reads from it
    # (the later steps run only when this one passed; otherwise nothing is kept).
    if all(c["ok"] for c in ch.items):
        save_state(args.instance, {"offset": high, "noted_at": now_iso()})
    else:
        drop_state(args.instance)
    return ch.verdict()


def cmd_broker_down(args) -> int:
    ch = Checks()
    base = nonce_base(args.instance)
    down = []
    for i in range(BROKER_DOWN_ATTEMPTS):
        reason = reason_for(base, "down", i)
        status, data, took = post(args.target, f"/fire/{100 + i}", json.dumps({"reason": reason}).encode(),
                                  timeout=15)
        down.append(sent_record(reason, "broker-down", status, now_iso(), took,
                                None if status is not None else data.decode(errors="replace")))
        if status == 200:
            ch.produced += 1        # wrong here, but its event is in the topic: the count must know
        ch.add(f"503 while the broker is stopped ({i + 1})", status == 503 and took <= 7.0,
               f"status {status} after {took:.1f} s")
    # The broker cannot be read now: the recovery step checks these reasons
    # later (it runs only when this step passed; otherwise nothing is kept).
    if all(c["ok"] for c in ch.items):
        state = load_state(args.instance)
        state["down"] = down
        save_state(args.instance, state)
    else:
        drop_state(args.instance)
    return ch.verdict()


def cmd_recovery(args) -> int:
    ch = Checks()
    base = nonce_base(args.instance)
    deadline = time.monotonic() + 60
    sent = []
    while time.monotonic() < deadline:
        reason = reason_for(base, "back", len(sent))     # a reason of its own for every attempt
        status, data, took = post(args.target, "/fire/200", json.dumps({"reason": reason}).encode(), timeout=15)
        sent.append(sent_record(reason, "recovery", status, now_iso(), took,
                                None if status is not None else data.decode(errors="replace")))
        if status == 200:
            ch.produced += 1
            break
        if status != 503:
            break
        time.sleep(0.5)
    statuses = [s["status"] for s in sent]
    recovered = ch.add("200 again once the broker is back", statuses[-1:] == [200],
                       f"answers {statuses[:5]}{'...' if len(statuses) > 5 else ''} over {len(statuses)} tries")
    if recovered and args.bootstrap and args.topic:
        # Late events: wait past the producers' delivery timeout, then every
        # event since the offset noted before broker-down must be one of a 200.
        state = load_state(args.instance)
        offset = state.get("offset") if isinstance(state.get("offset"), int) else None
        down = down_records(base, state) if args.instance else []
        time.sleep(LATE_EVENT_WAIT_S)
        low, high, events = read_events(args.bootstrap, args.topic, start=offset)
        ch.add("events read back", len(events) == high - low,
               f"{len(events)} of {high - low} events from offset {low} read, {LATE_EVENT_WAIT_S:g} s after the 200"
               + ("" if offset is not None else " (no offset noted before broker-down: from the topic's start)"))
        for name, ok, detail in judge_delivery(down + sent, events, base, strict=offset is not None):
            ch.add(name, ok, detail)
    drop_state(args.instance)
    return ch.verdict()


def cmd_events(args) -> int:
    ch = Checks()
    low, high, msgs = read_topic(args.bootstrap, args.topic, timeout_s=120)
    n = high - low
    extra = ""
    if n > args.expect_ok:
        extra = (f": {n - args.expect_ok} event(s) without a 200 answer (a request answered 503 or cut off "
                 f"whose record was still delivered, or a duplicate)")
    elif n < args.expect_ok:
        extra = f": {args.expect_ok - n} answer(s) 200 without an event"
    ch.add("count", n == args.expect_ok, f"{n} events in the topic, {args.expect_ok} answers 200{extra}")
    ch.add("read", len(msgs) == n, f"{len(msgs)} of {n} events read back")
    bad, reasons, dup = 0, set(), 0
    first_bad = ""
    for m in msgs:
        try:
            obj = json.loads(m.value())
            ok = (isinstance(obj, dict) and list(obj) == ["id", "reason"] and isinstance(obj["id"], int)
                  and 0 <= obj["id"] <= MAX_U64 and isinstance(obj["reason"], str)
                  and m.key() == str(obj["id"]).encode())
        except (ValueError, TypeError):
            ok, obj = False, None
        if not ok:
            bad += 1
            first_bad = first_bad or repr(m.value()[:80])
            continue
        if obj["reason"] in reasons:
            dup += 1
        reasons.add(obj["reason"])
    ch.add("well-formed", bad == 0, f"{bad} malformed" + (f", first {first_bad}" if bad else ""))
    ch.add("no duplicates", dup == 0, f"{dup} duplicated reasons")
    return ch.verdict(events=n, expected=args.expect_ok)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("cases", "broker-down", "recovery", "events"):
        s = sub.add_parser(name)
        if name != "events":
            s.add_argument("--target", required=True)
            s.add_argument("--instance", help="the server run's instance name: reasons and state of the "
                                              "broker-down and recovery steps derive from it")
        if name in ("cases", "events"):
            s.add_argument("--bootstrap", required=True)
            s.add_argument("--topic", required=True)
        if name in ("broker-down", "recovery"):
            s.add_argument("--bootstrap", help="recovery: read the topic for late events (with --topic)")
            s.add_argument("--topic")
        if name == "events":
            s.add_argument("--expect-ok", type=int, required=True)
    args = ap.parse_args(argv)
    return {"cases": cmd_cases, "broker-down": cmd_broker_down, "recovery": cmd_recovery,
            "events": cmd_events}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
