"""blackhole's tooling: the reference reader, replay, and the harness's checks.

    python blackhole.py read DIR [--records]
    python blackhole.py replay DIR --target HOST:PORT [--rate N] [--max N]
    python blackhole.py verify --target HOST:PORT --sent FILE
    python blackhole.py after-stop --dir DIR --sent FILE --expect-ok N --record 0|1 [--exit-code C]

The file format and the checks are the scenario contract (README.md). The
FlatBuffers code is generated from schema/request.fbs by gen.sh (flatc
23.5.26, the runtime version pinned in scenario.toml); LZ4 frames are read
with python-lz4's LZ4FrameDecompressor.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import ipaddress
import json
import socket
import struct
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "gen" / "python"))

import lz4.frame  # noqa: E402

from fbr.Request import Request  # noqa: E402

MAX_BODY = 1 << 20
LEN = struct.Struct("<Q")
U32 = struct.Struct("<I")
CHUNK = 1 << 20

# ---------------------------------------------------------------- bodies
# A request's body is derived from its id (README, "Workloads"); httpload
# and post.lua build the same bytes (harness/bodies.py).
from harness.bodies import LOAD_BODY, body_for  # noqa: E402


# ---------------------------------------------------------------- reading
class FormatError(Exception):
    pass


I32 = struct.Struct("<i")
HH = struct.Struct("<HH")
SLOTS = [struct.Struct(f"<{k}H") for k in range(6)]


def decode(buf: bytes) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    """One record's fields (id, method, uri, headers, body), read from the
    FlatBuffers wire format with every offset checked against the buffer
    first (the Python runtime has no verifier). The reads are the generated
    accessors' (vtable slot, uoffset, length-prefixed vector), done with
    struct directly: the after-stop check decodes millions of records, and the
    runtime's Table object costs about 3x as much per field.
    tests/test_blackhole.py checks both give the same fields."""
    n = len(buf)
    if n < 8:
        raise FormatError(f"buffer of {n} bytes")
    root = U32.unpack_from(buf, 0)[0]
    if root + 4 > n:
        raise FormatError("root offset out of the buffer")
    vt = root - I32.unpack_from(buf, root)[0]
    if vt < 0 or vt + 4 > n:
        raise FormatError("vtable out of the buffer")
    vt_len, obj_len = HH.unpack_from(buf, vt)
    if vt_len < 4 or vt + vt_len > n or root + obj_len > n:
        raise FormatError("vtable or table runs past the buffer")
    nf = min(5, (vt_len - 4) // 2)
    fields = []
    for i, o in enumerate(SLOTS[nf].unpack_from(buf, vt + 4)):
        if o == 0:
            fields.append(b"")
            continue
        if o + 4 > obj_len:
            raise FormatError(f"field {i} outside its table")
        pos = root + o
        target = pos + U32.unpack_from(buf, pos)[0]
        if target + 4 > n:
            raise FormatError(f"field {i} points past the buffer")
        start = target + 4
        length = U32.unpack_from(buf, target)[0]
        if start + length + (1 if i < 4 else 0) > n:
            raise FormatError(f"field {i} runs past the buffer")
        fields.append(buf[start:start + length])
    fields += [b""] * (5 - nf)
    if not fields[0]:
        raise FormatError("record without an id")
    return tuple(fields)


def decode_generated(buf: bytes) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    """The same through the generated class only (tests compare the two)."""
    r = Request.GetRootAs(buf, 0)
    body = bytes(r.Body(j) for j in range(r.BodyLength()))
    return (r.Id() or b"", r.Method() or b"", r.Uri() or b"", r.Headers() or b"", body)


def record_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.name.endswith(".lz4") or p.name.endswith(".lz4.tmp")),
                  key=lambda p: p.name.encode())


def iter_file(path: Path, stats: dict):
    """Yield the records of one file; a final file must decode to its end, a
    .tmp file may stop inside a frame or a record (counted in stats)."""
    tmp = path.name.endswith(".tmp")
    pending = bytearray()
    dec = lz4.frame.LZ4FrameDecompressor()
    in_frame = False
    with path.open("rb") as f:
        while True:
            data = f.read(CHUNK)
            if not data:
                break
            while data:
                try:
                    out = dec.decompress(data)
                except RuntimeError as exc:
                    if tmp:
                        stats["truncated_tmp"] += 1
                        return
                    raise FormatError(f"{path.name}: LZ4: {exc}") from None
                in_frame = True
                pending += out
                yield from _records(pending, path, stats)
                if dec.eof:             # a frame ended: the rest starts the next one
                    data = dec.unused_data
                    dec = lz4.frame.LZ4FrameDecompressor()
                    in_frame = bool(data)
                else:
                    data = b""
    incomplete_frame = in_frame and not dec.eof
    if incomplete_frame or pending:
        if tmp:
            stats["truncated_tmp"] += 1
            return
        what = "LZ4 frame" if incomplete_frame else f"record ({len(pending)} bytes left)"
        raise FormatError(f"{path.name}: file ends inside a {what}")


def _records(pending: bytearray, path: Path, stats: dict):
    pos = 0
    n = len(pending)
    while n - pos >= 8:
        size = LEN.unpack_from(pending, pos)[0]
        if size > 64 << 20:
            raise FormatError(f"{path.name}: record length {size} is not plausible")
        if n - pos - 8 < size:
            break
        buf = bytes(pending[pos + 8:pos + 8 + size])
        pos += 8 + size
        stats["stream_bytes"] += 8 + size
        try:
            yield decode(buf)
        except (FormatError, struct.error, IndexError) as exc:
            raise FormatError(f"{path.name}: {exc}") from None
    del pending[:pos]


def read_dir(folder: Path, each=None) -> dict:
    """The reader's summary line (README, "Readers"); `each(record)` sees
    every record."""
    stats = {"ok": True, "files": 0, "tmp_files": 0, "records": 0, "stream_bytes": 0, "file_bytes": 0,
             "truncated_tmp": 0, "digest": "", "error": None}
    h = hashlib.sha256()
    pack = U32.pack
    try:
        for path in record_files(folder):
            stats["tmp_files" if path.name.endswith(".tmp") else "files"] += 1
            stats["file_bytes"] += path.stat().st_size
            for rec in iter_file(path, stats):
                stats["records"] += 1
                for fld in rec:
                    h.update(pack(len(fld)))
                    h.update(fld)
                if each is not None:
                    each(rec)
    except (FormatError, OSError) as exc:
        stats.update(ok=False, error=str(exc))
    stats["digest"] = h.hexdigest()
    return stats


def cmd_read(args) -> int:
    folder = Path(args.dir)
    if not folder.is_dir():
        print(json.dumps({"ok": False, "error": f"{folder}: not a folder"}))
        return 1

    def show(rec):
        rid, method, uri, headers, body = rec
        print(json.dumps({"id": rid.decode(errors="replace"), "method": method.decode(errors="replace"),
                          "uri": uri.decode(errors="replace"), "headers": headers.decode(errors="replace"),
                          "body_bytes": len(body), "body_sha256": hashlib.sha256(body).hexdigest()}))

    stats = read_dir(folder, show if args.records else None)
    print(json.dumps(stats))
    return 0 if stats["ok"] else 1


# ---------------------------------------------------------------- replay
HOP = {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te", b"trailer", b"upgrade",
       b"content-length", b"host"}


def parse_headers(block: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    for line in block.split(b"\r\n"):
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            raise FormatError(f"header line without a colon: {line[:60]!r}")
        out.append((name.strip(), value.strip()))
    return out


def loopback_target(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = host == "localhost"
    if not ok:
        raise SystemExit(f"replay: target {target}: only loopback targets (127.0.0.0/8, ::1, localhost)")
    return host, int(port)


def cmd_replay(args) -> int:
    host, port = loopback_target(args.target)
    folder = Path(args.dir)
    sent = answered = 0
    statuses: dict[str, int] = {}
    conn = http.client.HTTPConnection(host, port, timeout=10)
    interval = 1.0 / args.rate
    t0 = time.monotonic()

    class Done(Exception):
        pass

    def send(rec):
        nonlocal sent, answered, conn
        if sent >= args.max:
            raise Done()
        due = t0 + sent * interval
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        rid, method, uri, headers, body = rec
        hdrs = [(k, v) for k, v in parse_headers(headers) if k.lower() not in HOP]
        conn.putrequest(method.decode("latin-1"), uri.decode("latin-1"), skip_host=False, skip_accept_encoding=True)
        for k, v in hdrs:
            conn.putheader(k.decode("latin-1"), v)
        if not any(k.lower() == b"x-request-id" for k, _ in hdrs):
            conn.putheader("X-Request-ID", rid)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        sent += 1
        resp = conn.getresponse()
        resp.read()
        statuses[str(resp.status)] = statuses.get(str(resp.status), 0) + 1
        answered += 1
        if resp.will_close:
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=10)

    try:
        stats = read_dir(folder, send)
    except Done:
        stats = {"ok": True, "error": None}
    except OSError as exc:
        stats = {"ok": False, "error": f"{args.target}: {exc}"}
    conn.close()
    ok = stats["ok"] and answered == sent
    print(json.dumps({"ok": ok, "sent": sent, "answered": answered, "status_counts": statuses,
                      "seconds": round(time.monotonic() - t0, 3), "error": stats.get("error")}))
    return 0 if ok else 1


# ---------------------------------------------------------------- checks
class Checks:
    def __init__(self) -> None:
        self.items: list[dict] = []

    def add(self, name: str, ok: bool, detail: str = "") -> bool:
        self.items.append({"name": name, "ok": bool(ok), "detail": detail})
        return ok

    @property
    def ok(self) -> bool:
        return all(c["ok"] for c in self.items)


class _Answer(bytes):
    """What came back; `reset`: the server reset the connection before a
    whole answer head was read (it answered, say 413, without reading the
    body and closed: with unread data the kernel sends a reset, and the
    answer may be lost with it)."""
    reset = False


def _raw(host: str, port: int, data: bytes, wait_answer: bool = True, timeout: float = 5.0) -> _Answer:
    """Send raw bytes on a fresh connection; return what came back (until the
    server closes or goes quiet)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        reset = False
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            reset = True
        if not wait_answer:
            return _Answer(b"")
        out = b""
        try:
            while b"\r\n\r\n" not in out:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except socket.timeout:
            pass
        except ConnectionResetError:
            reset = True
        ans = _Answer(out)
        ans.reset = reset
        return ans


def _status(answer: bytes) -> int | None:
    try:
        return int(answer.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


def cmd_verify(args) -> int:
    """Conformance against the running server; what was sent goes to --sent."""
    host, port = loopback_target(args.target)
    nonce = "v" + uuid.uuid4().hex[:10]
    c = Checks()
    sent: list[dict] = []         # requests the server must have recorded
    absent: list[str] = []        # ids it must not have recorded
    noid: list[dict] = []         # recorded with an id of the server's
    produced = 0
    k = 0

    def rid() -> str:
        nonlocal k
        k += 1
        return f"{nonce}-0-{k}"

    refused_by_reset: list[str] = []   # over-limit requests the server reset before its 413 could be read

    def request(method: str, uri: str, size: int, extra=(), with_id=True, chunked=False) -> tuple[int, bytes]:
        nonlocal produced
        i = rid() if with_id else None
        body = body_for(i or f"{nonce}-9-{k}", size)
        headers = [("Host", f"{host}:{port}"), ("User-Agent", "langbench-blackhole-verify/1"), *extra]
        if i:
            headers.append(("X-Request-ID", i))
        if chunked:
            headers.append(("Transfer-Encoding", "chunked"))
            payload = b"".join(b"%x\r\n%s\r\n" % (len(part), part)
                               for part in (body[j:j + 700] for j in range(0, len(body), 700))) + b"0\r\n\r\n"
        else:
            headers.append(("Content-Length", str(size)))
            payload = body
        head = f"{method} {uri} HTTP/1.1\r\n" + "".join(f"{a}: {b}\r\n" for a, b in headers) + "\r\n"
        ans = _raw(host, port, head.encode() + (b"" if method == "HEAD" and not size else payload))
        st = _status(ans)
        if st is None and ans.reset:
            refused_by_reset.append(uri)
        hdr, _, rest = ans.partition(b"\r\n\r\n")
        entry = {"id": i, "method": method, "uri": uri, "headers": headers, "body_bytes": size, "body_id": i}
        if st == 200:
            produced += 1
            if i:
                sent.append(entry)
            else:
                noid.append({**entry, "body_id": f"{nonce}-9-{k}"})
        elif i:
            absent.append(i)
        return st, hdr

    def answered_empty(hdr: bytes) -> bool:
        low = hdr.lower()
        return b"content-length: 0" in low or (b"content-length" not in low and b"chunked" not in low)

    for method, uri, size in [("GET", "/", 0), ("POST", "/bh/0/1", 2048), ("PUT", "/a/b?x=1&y=%20z&x=2", 300),
                              ("DELETE", "/items/42", 0), ("PATCH", "/p", 17), ("OPTIONS", "*", 0),
                              ("PURGE", "/cache/key", 0), ("HEAD", "/h", 0), ("POST", "/", 1)]:
        st, hdr = request(method, uri, size)
        c.add(f"{method} {uri} -> 200, empty body", st == 200 and answered_empty(hdr),
              f"status {st}" + ("" if answered_empty(hdr) else ", body not empty"))
    st, hdr = request("POST", "/headers", 64, extra=[("X-Custom-Case", "Value With  Spaces"),
                                                   ("x-lower", "v1"), ("X-Dup", "one"), ("X-Dup", "two")])
    c.add("custom and repeated headers -> 200", st == 200, f"status {st}")
    st, _ = request("POST", "/chunked", 5000, chunked=True)
    c.add("chunked body of 5,000 bytes -> 200", st == 200, f"status {st}")
    st, _ = request("POST", "/max", MAX_BODY)
    c.add("body of exactly 1 MiB -> 200", st == 200, f"status {st}")
    # A server may answer 413 as soon as it knows and close without reading
    # the rest: the kernel then resets the connection, and a client still
    # sending can lose the answer with it. That is a refusal too (the
    # after-stop check proves the request was not recorded); it is said.
    for uri, chunked in (("/over", False), ("/over-chunked", True)):
        st, _ = request("POST", uri, MAX_BODY + 1, chunked=chunked)
        reset = uri in refused_by_reset
        c.add(f"{'chunked body' if chunked else 'body'} of 1 MiB + 1 -> 413, not recorded", st == 413 or reset,
              f"status {st}" if not reset else "connection reset before an answer (refused "
                                                "unread; the 413 was lost with the reset)")
    for j in range(2):
        st, _ = request("POST", f"/noid/{j}", 10, with_id=False)
        c.add(f"request {j + 1} without X-Request-ID -> 200", st == 200, f"status {st}")
    ans = _raw(host, port, b"THIS IS NOT HTTP\r\n\r\n")
    st = _status(ans)
    c.add("malformed request -> 400 or closed", st in (400, None) or (st is not None and 400 <= st < 500),
          f"status {st}" if st else "closed")
    i = rid()
    head = (f"POST /hangup HTTP/1.1\r\nHost: {host}\r\nX-Request-ID: {i}\r\nContent-Length: 4096\r\n\r\n").encode()
    _raw(host, port, head + body_for(i, 4096)[:1000], wait_answer=False)
    absent.append(i)
    time.sleep(0.2)
    st, _ = request("GET", "/after-bad-input", 0)
    c.add("still answering after bad input", st == 200, f"status {st}")
    Path(args.sent).write_text(json.dumps({"nonce": nonce, "sent": sent, "absent": absent, "noid": noid}))
    print(json.dumps({"ok": c.ok, "checks": c.items, "produced": produced}))
    return 0 if c.ok else 1


def _header_pairs(block: bytes) -> list[tuple[str, str]]:
    return [(k.decode("latin-1").lower(), v.decode("utf-8", errors="replace")) for k, v in parse_headers(block)]


def cmd_after_stop(args) -> int:
    folder = Path(args.dir)
    c = Checks()
    metrics: dict = {}
    sentinfo = json.loads(Path(args.sent).read_text()) if args.sent and Path(args.sent).exists() else None
    c.add("server exited 0 on SIGTERM", args.exit_code in ("0", None, ""), f"exit code {args.exit_code}")
    files = record_files(folder) if folder.is_dir() else []
    others = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    if args.record == "0":
        c.add("RECORD=0: no file written", not others, f"{len(others)} files: {others[:3]}")
        print(json.dumps({"ok": c.ok, "checks": c.items, "metrics": {}}))
        return 0 if c.ok else 1
    tmp = [p.name for p in files if p.name.endswith(".tmp")]
    c.add("every file finalised (no .tmp)", not tmp, f"{len(tmp)} .tmp files: {tmp[:3]}")
    stray = sorted(set(others) - {p.name for p in files})
    c.add("nothing but record files", not stray, f"{stray[:3]}")
    expected = {e["id"]: e for e in (sentinfo or {}).get("sent", [])}
    absent = set((sentinfo or {}).get("absent", []))
    noid_uris = {e["uri"] for e in (sentinfo or {}).get("noid", [])}
    seen: set[bytes] = set()
    dups, bad_body, bad_meta, unknown, present_absent, verified, noid_seen = 0, 0, 0, 0, 0, 0, 0
    examples: list[str] = []
    ready = 0

    def note(msg: str) -> None:
        if len(examples) < 5:
            examples.append(msg)

    def each(rec) -> None:
        nonlocal dups, bad_body, bad_meta, unknown, present_absent, verified, noid_seen, ready
        rid, method, uri, headers, body = rec
        if rid in seen:
            dups += 1
            note(f"duplicate id {rid[:60]!r}")
            return
        seen.add(rid)
        s = rid.decode("utf-8", errors="replace")
        hdr = dict(_header_pairs(headers))
        if s in expected:
            e = expected[s]
            verified += 1
            want_body = body_for(e["body_id"], e["body_bytes"])
            if body != want_body:
                bad_body += 1
                note(f"{s}: body differs ({len(body)} bytes, {len(want_body)} sent)")
            sent_h = [(a.lower(), b) for a, b in e["headers"] if a.lower() not in ("transfer-encoding",)]
            got = _header_pairs(headers)
            missing = [h for h in sent_h if h not in got]
            if method.decode() != e["method"] or uri.decode() != e["uri"] or missing:
                bad_meta += 1
                note(f"{s}: method/uri/headers differ: {method!r} {uri!r}, missing {missing[:2]}")
            return
        if s in absent:
            present_absent += 1
            note(f"{s}: recorded but must not be (413 or hung up)")
            return
        parts = s.rsplit("-", 2)
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit() and uri.startswith(b"/bh/"):
            want = body_for(s, LOAD_BODY)
            if body != want:
                bad_body += 1
                note(f"{s}: load body differs ({len(body)} bytes)")
            if (method != b"POST" or uri != f"/bh/{parts[1]}/{parts[2]}".encode()
                    or hdr.get("x-request-id") != s or hdr.get("content-length") != str(LOAD_BODY)):
                bad_meta += 1
                note(f"{s}: load request's method/uri/headers differ: {method!r} {uri!r}")
            return
        if uri.decode(errors="replace") in noid_uris:
            noid_seen += 1
            return
        if method == b"GET" and uri == b"/langbench-ready":
            ready += 1
            return
        unknown += 1
        note(f"unexpected record {s[:60]!r} {method!r} {uri[:60]!r}")

    stats = read_dir(folder, each) if folder.is_dir() else {"ok": False, "error": "no folder", "records": 0}
    c.add("every file decodes", stats["ok"], stats.get("error") or "")
    n = stats.get("records", 0)
    c.add("records == 200 answers", n == args.expect_ok, f"{n} records, {args.expect_ok} answers 200")
    c.add("no duplicate id", dups == 0, f"{dups} duplicates")
    c.add("every body as sent", bad_body == 0, f"{bad_body} bodies differ; {'; '.join(examples)}")
    c.add("method, URI and headers as sent", bad_meta == 0, f"{bad_meta} differ; {'; '.join(examples)}")
    if sentinfo is not None:
        c.add("every verification request recorded", verified == len(expected),
              f"{verified} of {len(expected)}")
        c.add("413 and hung-up requests not recorded", present_absent == 0, f"{present_absent} recorded")
        c.add("requests without X-Request-ID recorded with an id of the server's",
              noid_seen == len(noid_uris), f"{noid_seen} of {len(noid_uris)}")
    c.add("no unexpected record", unknown == 0, f"{unknown} unexpected; {'; '.join(examples)}")
    if stats.get("ok") and stats.get("file_bytes"):
        metrics = {
            "records": {"value": n, "unit": "", "better": "none",
                        "description": "records decoded from the server's files"},
            "files": {"value": stats["files"], "unit": "", "better": "none",
                      "description": "final .lz4 files"},
            "stream_mb": {"value": stats["stream_bytes"] / 1e6, "unit": "MB", "better": "none",
                          "description": "record stream before LZ4 (length prefixes and FlatBuffers)"},
            "file_mb": {"value": stats["file_bytes"] / 1e6, "unit": "MB", "better": "none",
                        "description": "the files on disk (after LZ4)"},
            "lz4_ratio": {"value": stats["file_bytes"] / stats["stream_bytes"] if stats["stream_bytes"] else None,
                          "unit": "x", "better": "none",
                          "description": "file bytes / stream bytes (random bodies hardly compress)"},
        }
    if sentinfo is not None and c.ok:
        Path(args.sent).unlink(missing_ok=True)
    print(json.dumps({"ok": c.ok, "checks": c.items, "metrics": metrics}))
    return 0 if c.ok else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("read", help="decode a folder of recordings (the reference reader)")
    s.add_argument("dir")
    s.add_argument("--records", action="store_true", help="print every record as a JSON line")
    s.set_defaults(func=cmd_read)
    s = sub.add_parser("replay", help="send recorded requests to a loopback target")
    s.add_argument("dir")
    s.add_argument("--target", required=True)
    s.add_argument("--rate", type=float, default=200.0, help="requests per second at most (default 200)")
    s.add_argument("--max", type=int, default=10_000, help="requests at most (default 10,000)")
    s.set_defaults(func=cmd_replay)
    s = sub.add_parser("verify", help="conformance against a running server")
    s.add_argument("--target", required=True)
    s.add_argument("--sent", required=True, help="where to write what was sent")
    s.set_defaults(func=cmd_verify)
    s = sub.add_parser("after-stop", help="check a stopped server's files")
    s.add_argument("--dir", required=True)
    s.add_argument("--sent", default=None)
    s.add_argument("--expect-ok", type=int, required=True)
    s.add_argument("--record", choices=("0", "1"), default="1")
    s.add_argument("--exit-code", default=None)
    s.set_defaults(func=cmd_after_stop)
    args = ap.parse_args(argv)
    if getattr(args, "rate", 1) <= 0 or getattr(args, "max", 1) < 0:
        ap.error("--rate must be > 0 and --max >= 0")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
