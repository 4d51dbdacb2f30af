"""pipeline's checks (README.md, "Verification"); each prints one JSON verdict
as its last line and exits 0 only when it holds.

    python check.py conformance --target HOST:PORT --ledger FILE --rounds R --max-payload N
    python check.py ledger --instance-dir DIR --ledger FILE --rounds R --body-bytes N [--live]

conformance: the HTTP contract of node A, the digests of the test vectors,
de-duplication, the body limit, concurrent operations, and that each
acknowledged operation's ledger line is there when its 200 arrives.

ledger: every id the load tool saw acknowledged (DIR/acked/*.txt, one id per
line, written by httpload --acked-out) is in the ledger exactly once with
the digest recomputed from its id; no id is on two lines. With --live the
pipeline is running: a last line without its newline is an append in
progress and is left alone. Lines already verified are not hashed again
(DIR/.ledger-check.json keeps the verified prefix: the ledger is append-only).
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

LOAD_ID_RE = re.compile(r"^[0-9a-f]+-\d+-\d+$")       # httpload's ids: NONCE-CONN-N
LINE_RE = re.compile(r"^([A-Za-z0-9._:-]{1,128}) ([0-9a-f]{64})$")
STATE_FILE = ".ledger-check.json"

# README's test vectors (ROUNDS = 100)
VECTORS = {("op-1", b"hello pipeline"): "b557c49333ea56a32d7a54d1f2d05266a69da513c03344397489a899cfc2f89d",
           ("op-empty", b""): "55ff76d47192d3e6bfc7c6f63fe36278d8957943838b1f99395f05b0eb41adeb"}


# ---------------------------------------------------------------- the digest
def transform(x: bytes, rounds: int) -> bytes:
    """SHA-256 applied `rounds` times."""
    sha = hashlib.sha256
    for _ in range(rounds):
        x = sha(x).digest()
    return x


def digest(op_id: str, payload: bytes, rounds: int) -> str:
    """dC of an operation: T(T(T(id '\\n' payload))), lowercase hex."""
    d = transform(op_id.encode() + b"\n" + payload, rounds)
    return transform(transform(d, rounds), rounds).hex()


# ---------------------------------------------------------------- the ledger
def read_ledger(path: Path, start: int = 0) -> tuple[list[tuple[str, str, int]], bytes, int]:
    """The complete lines from byte `start` on: [(id, hex, end offset)], the
    incomplete tail (no newline), and the offset where the tail begins."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
    except FileNotFoundError:
        return [], b"", start
    lines, pos = [], 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            break
        lines.append((data[pos:nl], start + nl + 1))
        pos = nl + 1
    out = []
    for raw, end in lines:
        m = LINE_RE.match(raw.decode("utf-8", "replace"))
        out.append((m.group(1), m.group(2), end) if m else (None, raw.decode("utf-8", "replace")[:80], end))
    return out, data[pos:], start + pos


class Verdict:
    def __init__(self):
        self.checks: list[dict] = []
        self.produced = 0
        self.metrics: dict = {}

    def add(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append({"name": name, "ok": bool(ok), "detail": detail})
        return ok

    def run(self, name: str, fn) -> None:
        try:
            ok, detail = fn()
        except Exception as exc:  # noqa: BLE001 - a check that raises failed, with the reason
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        self.add(name, ok, detail)

    def finish(self) -> int:
        ok = all(c["ok"] for c in self.checks)
        bad = [c for c in self.checks if not c["ok"]]
        detail = "all checks passed" if ok else "; ".join(f"{c['name']}: {c['detail']}" for c in bad[:3])
        print(json.dumps({"ok": ok, "detail": detail, "checks": self.checks, "produced": self.produced,
                          "metrics": self.metrics}))
        return 0 if ok else 1


# ---------------------------------------------------------------- conformance
class Client:
    def __init__(self, target: str, timeout: float = 30.0):
        host, _, port = target.rpartition(":")
        self.host, self.port, self.timeout = host, int(port), timeout
        self.conn: http.client.HTTPConnection | None = None
        self.retries = 0             # requests sent again on a fresh connection (counted in the verdict)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """One request; sent a second time only when a kept-alive connection
        turned out closed (a server may close an idle connection; a POST of the
        same id is safe to repeat, the contract makes it idempotent). A
        failure on a fresh connection is raised."""
        for attempt in (1, 2):
            fresh = self.conn is None
            if fresh:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body,
                                  headers={"Content-Type": "application/octet-stream"} if body is not None else {})
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.getheader("connection", "").lower() == "close":
                    self.close()
                return resp.status, data
            except (ConnectionError, http.client.HTTPException, OSError):
                self.close()
                if fresh or attempt == 2:
                    raise
                self.retries += 1
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def conformance(args) -> int:
    v = Verdict()
    c = Client(args.target)
    ledger = Path(args.ledger)
    rounds, limit = args.rounds, args.max_payload

    def post(op_id: str, payload: bytes, client: Client = c) -> tuple[int, str]:
        status, body = client.request("POST", f"/op/{op_id}", payload)
        if status == 200:
            v.produced += 1
        return status, body.decode("utf-8", "replace").strip()

    def committed() -> dict[str, list[str]]:
        seen: dict[str, list[str]] = {}
        for op_id, hexd, _ in read_ledger(ledger)[0]:
            if op_id is not None:
                seen.setdefault(op_id, []).append(hexd)
        return seen

    def healthz():
        status, _ = c.request("GET", "/healthz")
        return status == 200, f"GET /healthz -> {status}"
    v.run("GET /healthz answers 200", healthz)

    def vectors():
        bad = []
        for (op_id, payload), want in VECTORS.items():
            mine = digest(op_id, payload, rounds)
            if rounds == 100 and mine != want:
                return False, f"check.py's own digest of {op_id} disagrees with README's vector"
            status, got = post(op_id, payload)
            if status != 200 or got != mine:
                bad.append(f"{op_id}: {status} {got[:70]!r}, expected 200 {mine}")
                continue
            lines = committed().get(op_id, [])
            if lines != [mine]:
                bad.append(f"{op_id}: ledger has {lines} when its 200 arrived")
        return not bad, "; ".join(bad) or f"{len(VECTORS)} vectors: 200 with dC, ledger line present at the 200"
    v.run("test vectors: digest and a durable ledger line at the 200", vectors)

    def duplicates():
        op_id, payload = "op-1", b"hello pipeline"
        want = digest(op_id, payload, rounds)
        s1, d1 = post(op_id, payload)
        s2, d2 = post(op_id, b"another payload")
        lines = committed().get(op_id, [])
        ok = (s1, d1, s2, d2) == (200, want, 200, want) and lines == [want]
        return ok, (f"again: {s1} {d1[:16]}, other payload: {s2} {d2[:16]} (want 200 {want[:16]} both), "
                    f"ledger lines of {op_id}: {len(lines)}")
    v.run("a duplicate id is answered with the first digest and committed once", duplicates)

    def size_limit():
        nonce = os.urandom(4).hex()
        at, over = f"limit-{nonce}-at", f"limit-{nonce}-over"
        payload = os.urandom(limit)
        s1, d1 = post(at, payload)
        s2, _ = post(over, payload + b"x")
        c.close()                    # a server may close after a 413 without reading the body
        lines = committed()
        ok = s1 == 200 and d1 == digest(at, payload, rounds) and s2 == 413 and over not in lines
        return ok, (f"{limit} bytes -> {s1} (digest {'right' if d1 == digest(at, payload, rounds) else 'wrong'}), "
                    f"{limit + 1} bytes -> {s2} (want 413), over-limit id in ledger: {over in lines}")
    v.run(f"body limit: {limit} bytes accepted, one more refused with 413", size_limit)

    def statuses():
        cases = [("POST", "/op/bad%20id", b"x", {400}), ("POST", "/op/" + "x" * 129, b"x", {400}),
                 ("GET", "/op/op-1", None, {405}), ("PUT", "/op/op-1", b"x", {405}),
                 ("GET", "/nope", None, {404}), ("POST", "/nope/op-1", b"x", {404})]
        bad = []
        for method, path, body, want in cases:
            status, _ = c.request(method, path, body)
            if status not in want:
                bad.append(f"{method} {path[:24]} -> {status} (want {'/'.join(map(str, sorted(want)))})")
            c.close()
        return not bad, "; ".join(bad) or f"{len(cases)} requests answered 400/405/404 as specified"
    v.run("bad id 400, other method 405, other path 404", statuses)

    def concurrent():
        nonce = os.urandom(4).hex()
        ops = [(f"conf-{nonce}-{i}", os.urandom(64 + (i * 37) % 2000)) for i in range(300)]
        local = threading.local()
        clients: list[Client] = []
        lock = threading.Lock()

        def one(op):
            if not hasattr(local, "c"):
                local.c = Client(args.target)
                with lock:
                    clients.append(local.c)
            return post(op[0], op[1], local.c)
        with ThreadPoolExecutor(32) as ex:
            answers = list(ex.map(one, ops))
        for cl in clients:
            cl.close()
        v.metrics["client_retries"] = v.metrics.get("client_retries", 0) + sum(cl.retries for cl in clients)
        wrong = [(op[0], a) for op, a in zip(ops, answers) if a != (200, digest(op[0], op[1], rounds))]
        lines = committed()
        missing = [op[0] for op in ops if len(lines.get(op[0], [])) != 1]
        return not wrong and not missing, (f"300 operations on 32 connections: {300 - len(wrong)} answered 200 "
                                           f"with the right digest, {300 - len(missing)} once in the ledger"
                                           + (f"; first wrong: {wrong[0]}" if wrong else ""))
    v.run("300 concurrent operations, each answered and committed once", concurrent)

    def no_duplicate_lines():
        lines = committed()
        dup = [k for k, x in lines.items() if len(x) > 1]
        bad = [x for x in read_ledger(ledger)[0] if x[0] is None]
        return not dup and not bad, f"{len(lines)} ids, {len(dup)} on two lines, {len(bad)} malformed lines"
    v.run("ledger: well-formed lines, no id twice", no_duplicate_lines)
    c.close()
    v.metrics["client_retries"] = v.metrics.get("client_retries", 0) + c.retries
    return v.finish()


# ---------------------------------------------------------------- ledger check
def ledger_check(args) -> int:
    from harness.bodies import body_for   # the bodies httpload sent, regenerated from their ids
    v = Verdict()
    inst = Path(args.instance_dir)
    ledger = Path(args.ledger)
    state_path = inst / STATE_FILE
    t0 = time.monotonic()
    acked: set[str] = set()
    for f in sorted((inst / "acked").glob("*.txt")):
        acked.update(x for x in f.read_text().split("\n") if x)
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError):
        state = {}
    size = ledger.stat().st_size if ledger.exists() else 0
    verified_to = state.get("offset", 0) if state.get("offset", 0) <= size else 0
    lines, tail, _ = read_ledger(ledger)
    seen: dict[str, int] = {}
    malformed, wrong, checked, mine = [], [], 0, 0
    for op_id, hexd, end in lines:
        if op_id is None:
            malformed.append(hexd)
            continue
        seen[op_id] = seen.get(op_id, 0) + 1
        if LOAD_ID_RE.match(op_id):
            mine += 1
            if end > verified_to:
                checked += 1
                if digest(op_id, body_for(op_id, args.body_bytes), args.rounds) != hexd:
                    wrong.append(op_id)
    duplicated = sum(1 for n in seen.values() if n > 1)
    lost = [x for x in acked if x not in seen]
    complete_to = lines[-1][2] if lines else 0
    if not wrong and not malformed:
        try:
            state_path.write_text(json.dumps({"offset": complete_to}))
        except OSError:
            pass
    v.add("every acknowledged operation is in the ledger", not lost,
          f"{len(acked)} acknowledged, {len(lost)} missing" + (f" (e.g. {sorted(lost)[:3]})" if lost else ""))
    v.add("no id on two ledger lines", duplicated == 0, f"{duplicated} ids on more than one line")
    v.add("every digest is dC of what the load tool sent", not wrong,
          f"{checked} new lines of the load tool's operations hashed, {len(wrong)} wrong"
          + (f" (e.g. {wrong[:3]})" if wrong else ""))
    v.add("every line is '{id} {64 hex}'", not malformed,
          f"{len(malformed)} malformed" + (f" (first: {malformed[0]!r})" if malformed else ""))
    if not args.live:
        v.add("the ledger ends with a complete line", not tail, f"{len(tail)} bytes after the last newline")
    v.metrics = {
        "acked": {"value": len(acked), "unit": "ops", "better": "none",
                  "description": "operations the load tool saw answered 200, all levels of the server run so far"},
        "lost": {"value": len(lost), "unit": "ops", "better": "lower",
                 "description": "acknowledged operations missing from C's ledger (must be 0)"},
        "duplicated": {"value": duplicated, "unit": "ops", "better": "lower",
                       "description": "ids on more than one ledger line (must be 0)"},
        "wrong_digest": {"value": len(wrong), "unit": "ops", "better": "lower",
                         "description": "ledger lines whose digest is not dC of the operation sent (must be 0)"},
        "unacked_committed": {"value": sum(1 for k in seen if LOAD_ID_RE.match(k) and k not in acked),
                              "unit": "ops", "better": "none",
                              "description": "ledger lines of load operations the client did not see "
                                             "acknowledged (in flight at a fault or at a window's end)"},
    }
    v.checks.append({"name": "cost", "ok": True,
                     "detail": f"{len(lines)} ledger lines ({mine} of the load tool), "
                               f"{time.monotonic() - t0:.1f} s"})
    return v.finish()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("conformance")
    c.add_argument("--target", required=True)
    c.add_argument("--ledger", required=True)
    c.add_argument("--rounds", type=int, required=True)
    c.add_argument("--max-payload", type=int, required=True)
    g = sub.add_parser("ledger")
    g.add_argument("--instance-dir", required=True)
    g.add_argument("--ledger", required=True)
    g.add_argument("--rounds", type=int, required=True)
    g.add_argument("--body-bytes", type=int, required=True)
    g.add_argument("--live", action="store_true")
    args = ap.parse_args(argv)
    return conformance(args) if args.cmd == "conformance" else ledger_check(args)


if __name__ == "__main__":
    sys.exit(main())
