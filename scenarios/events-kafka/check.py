"""Verification of an events-kafka service against a real broker.

    python check.py cases       --target HOST:PORT --bootstrap B --topic T
    python check.py broker-down --target HOST:PORT            (run while the broker is stopped)
    python check.py recovery    --target HOST:PORT            (run once the broker is back)
    python check.py events      --bootstrap B --topic T --expect-ok N

Each prints one JSON verdict {"ok", "checks": [...], "produced": n} and exits
0 only when every check passed; "produced" is how many 200 answers the check
itself caused (the harness adds them to the count the topic must match).
"""
from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
import uuid

MAX_U64 = 2**64 - 1


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
    return ch.verdict()


def cmd_broker_down(args) -> int:
    ch = Checks()
    nonce = uuid.uuid4().hex[:10]
    for i in range(2):
        status, data, took = post(args.target, f"/fire/{100 + i}", json.dumps({"reason": f"{nonce}-down{i}"}).encode(),
                                  timeout=15)
        ch.add(f"503 while the broker is stopped ({i + 1})", status == 503 and took <= 7.0,
               f"status {status} after {took:.1f} s")
    return ch.verdict()


def cmd_recovery(args) -> int:
    ch = Checks()
    nonce = uuid.uuid4().hex[:10]
    deadline = time.monotonic() + 60
    statuses = []
    while time.monotonic() < deadline:
        status, _, took = post(args.target, "/fire/200", json.dumps({"reason": f"{nonce}-back"}).encode(), timeout=15)
        statuses.append(status)
        if status == 200:
            ch.produced += 1
            break
        if status != 503:
            break
        time.sleep(0.5)
    ch.add("200 again once the broker is back", statuses[-1:] == [200],
           f"answers {statuses[:5]}{'...' if len(statuses) > 5 else ''} over {len(statuses)} tries")
    return ch.verdict()


def cmd_events(args) -> int:
    ch = Checks()
    low, high, msgs = read_topic(args.bootstrap, args.topic, timeout_s=120)
    n = high - low
    ch.add("count", n == args.expect_ok, f"{n} events in the topic, {args.expect_ok} answers 200")
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
        if name in ("cases", "events"):
            s.add_argument("--bootstrap", required=True)
            s.add_argument("--topic", required=True)
        if name == "events":
            s.add_argument("--expect-ok", type=int, required=True)
    args = ap.parse_args(argv)
    return {"cases": cmd_cases, "broker-down": cmd_broker_down, "recovery": cmd_recovery,
            "events": cmd_events}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
