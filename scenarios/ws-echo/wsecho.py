"""ws-echo's conformance check (README.md, "Verification"): a WebSocket
client of our own on raw sockets (standard library only), so that it can
send what a library would refuse to (invalid UTF-8, oversized messages,
fragments with a ping between them) and see every frame the server sends
(pings included).

    python wsecho.py verify --target 127.0.0.1:8080

prints one JSON verdict {"ok", "checks": [{"name", "ok", "detail"}],
"produced"} and exits 0 when every check passed. Loopback targets only.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import ipaddress
import json
import os
import socket
import struct
import sys
import threading
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
LIMIT = 1 << 20                       # the contract's message size limit
PING_EVERY_S = 5.0
SILENT_CLOSE_S = (14.0, 20.0)         # closed this long after the last client frame (15 s + slack)


class WsError(Exception):
    pass


class Closed(WsError):
    """The server closed: code (None: no close frame, only the TCP close)."""

    def __init__(self, code: int | None, reason: str = ""):
        super().__init__(f"closed ({code if code is not None else 'no close frame'}) {reason}".strip())
        self.code = code


def accept_for(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def http_get(host: str, port: int, path: str, timeout: float = 10.0) -> int:
    """GET path on a fresh connection; the answer's status code."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        buf = b""
        while b"\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    parts = buf.split(b"\r\n", 1)[0].split(b" ")
    if len(parts) < 2 or not parts[1].isdigit():
        raise WsError(f"GET {path}: no HTTP answer ({buf[:60]!r})")
    return int(parts[1])


class Client:
    """One WebSocket connection, frame by frame."""

    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self.host, self.port = host, port
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.pings: list[float] = []        # when each server ping arrived (monotonic)
        self.last_sent = time.monotonic()

    def handshake(self, path: str = "/connect", extra: str = "", connection: str = "Upgrade") -> tuple[int, dict]:
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
                           f"Connection: {connection}\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                           f"{extra}\r\n").encode())
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise WsError("connection closed during the handshake")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if status == 101 and headers.get("sec-websocket-accept") != accept_for(key):
            raise WsError("wrong Sec-WebSocket-Accept")
        return status, headers

    def send(self, opcode: int, payload: bytes, fin: bool = True, rsv: int = 0) -> None:
        head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n <= 0xFFFF:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        key = os.urandom(4)
        # XOR with the key repeated, via one big integer (fast for 1 MiB)
        rep = (key * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(rep, "big")).to_bytes(n, "big") if n else b""
        self.sock.sendall(head + key + masked)
        self.last_sent = time.monotonic()

    def _need(self, n: int, deadline: float) -> None:
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame in time")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                raise TimeoutError("no frame in time") from None
            except ConnectionResetError:
                raise Closed(None, "(connection reset)") from None
            if not chunk:
                raise Closed(None)
            self.buf += chunk

    def frame(self, timeout: float = 10.0) -> tuple[bool, int, bytes]:
        deadline = time.monotonic() + timeout
        self._need(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        if b1 & 0x80:
            raise WsError("the server masked a frame")
        n, at = b1 & 0x7F, 2
        if n == 126:
            self._need(4, deadline)
            n, at = struct.unpack(">H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10, deadline)
            n, at = struct.unpack(">Q", self.buf[2:10])[0], 10
        self._need(at + n, deadline)
        payload, self.buf = self.buf[at:at + n], self.buf[at + n:]
        if b0 & 0x70:
            raise WsError("the server set reserved bits")
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def message(self, timeout: float = 10.0, pong: bool = True) -> tuple[int, bytes]:
        """The next data message (reassembled). Pings are answered (unless
        pong=False) and noted; a close frame raises Closed."""
        deadline = time.monotonic() + timeout
        op0, parts = None, []
        while True:
            fin, op, payload = self.frame(max(0.001, deadline - time.monotonic()))
            if op == OP_PING:
                self.pings.append(time.monotonic())
                if pong:
                    self.send(OP_PONG, payload)
                continue
            if op == OP_PONG:
                continue
            if op == OP_CLOSE:
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
                raise Closed(code, payload[2:].decode(errors="replace"))
            if op == OP_CONT:
                if op0 is None:
                    raise WsError("continuation frame without a message")
            elif op0 is not None:
                raise WsError("new message inside a fragmented one")
            else:
                op0 = op
            parts.append(payload)
            if fin:
                return op0, b"".join(parts)

    def expect_close(self, timeout: float = 10.0) -> int | None:
        """Waits for the close: its code (None when the TCP connection just closed)."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.message(max(0.001, deadline - time.monotonic()))
        except Closed as c:
            return c.code

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Checks:
    def __init__(self):
        self.items: list[dict] = []
        self.produced = 0

    def add(self, name: str, ok: bool, detail: str = "") -> None:
        self.items.append({"name": name, "ok": bool(ok), "detail": detail})

    @property
    def ok(self) -> bool:
        return all(i["ok"] for i in self.items)

    def run(self, name: str, fn) -> None:
        try:
            ok, detail = fn()
        except (OSError, WsError, TimeoutError, ValueError) as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        self.add(name, ok, detail)


def _payload(n: int, text: bool) -> bytes:
    if text:
        # multi-byte UTF-8 as well as ASCII, cut at a character boundary
        unit = "echo é € 😀 ".encode()
        out = (unit * (n // len(unit) + 1))[:n]
        while True:
            try:
                out.decode()
                break
            except UnicodeDecodeError:
                out = out[:-1]          # a character cut at the end: drop its bytes
        return out + b"a" * (n - len(out))
    return bytes((i * 7 + 3) & 0xFF for i in range(n)) if n < 70000 else os.urandom(n)


def verify(target: str, silent_check: bool = True, others: bool = True) -> int:
    host, _, port_s = target.rpartition(":")
    host = host.strip("[]")
    if not ipaddress.ip_address(socket.gethostbyname(host)).is_loopback:
        print(json.dumps({"ok": False, "checks": [], "error": f"{target}: not a loopback address"}))
        return 2
    port = int(port_s)
    c = Checks()

    # The silent connection first: it runs alongside every other check.
    silent: dict = {}

    def silent_conn():
        try:
            cl = Client(host, port, timeout=30)
            st, _ = cl.handshake()
            if st != 101:
                silent["error"] = f"handshake answered {st}"
                return
            t0 = time.monotonic()
            code = None
            try:
                while True:
                    cl.message(timeout=max(0.001, t0 + SILENT_CLOSE_S[1] + 5 - time.monotonic()), pong=False)
            except Closed as cd:
                code = cd.code
            except TimeoutError:
                silent["error"] = f"still open {SILENT_CLOSE_S[1] + 5:.0f} s after its last frame"
                return
            silent.update(after=time.monotonic() - t0, code=code, pings=[p - t0 for p in cl.pings])
            cl.close()
        except (OSError, WsError) as exc:
            silent["error"] = f"{type(exc).__name__}: {exc}"

    th = threading.Thread(target=silent_conn, daemon=True)
    if silent_check:
        th.start()

    if others:
        def routes():
            got = {p: http_get(host, port, p) for p in ("/healthz", "/langbench-gc", "/no-such-path")}
            want = {"/healthz": 200, "/langbench-gc": 204, "/no-such-path": 404}
            return got == want, ", ".join(f"{p}: {s}" for p, s in got.items())
        c.run("routes: /healthz 200, /langbench-gc 204, other 404", routes)

        def no_deflate():
            cl = Client(host, port)
            try:
                # as a browser sends it: Connection is a token list (RFC 6455 4.2.1)
                st, h = cl.handshake(extra="Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
                                     connection="keep-alive, Upgrade")
                return st == 101 and "sec-websocket-extensions" not in h, \
                    f"status {st}, extensions: {h.get('sec-websocket-extensions', 'none')}"
            finally:
                cl.close()
        c.run("upgrade on /connect with Connection: keep-alive, Upgrade; permessage-deflate offered, not taken",
              no_deflate)

        cl = Client(host, port)
        st, _ = cl.handshake()
        if st != 101:
            c.add("echo connection", False, f"handshake answered {st}")
        else:
            def sizes():
                bad = []
                for text in (True, False):
                    for n in (0, 1, 125, 126, 65535, 65536, LIMIT):
                        p = _payload(n, text)
                        cl.send(OP_TEXT if text else OP_BINARY, p)
                        op, got = cl.message(timeout=30)
                        c.produced += 1
                        if op != (OP_TEXT if text else OP_BINARY) or got != p:
                            bad.append(f"{'text' if text else 'binary'} {n} B: got type {op}, {len(got)} B")
                return not bad, "; ".join(bad) or "text and binary, 0 B to 1 MiB, unchanged and typed"
            c.run("echo of every length form (0, 1, 125, 126, 65535, 65536 B, 1 MiB)", sizes)

            def fragments():
                parts = [_payload(40, True), b"-middle-", _payload(33, True)]
                cl.send(OP_TEXT, parts[0], fin=False)
                cl.send(OP_PING, b"between")
                cl.send(OP_CONT, parts[1], fin=False)
                cl.send(OP_CONT, parts[2], fin=True)
                # the pong may come before the echo: read frames until both came
                seen_pong, echo = False, None
                deadline = time.monotonic() + 10
                op0, got = None, []
                while (not seen_pong or echo is None) and time.monotonic() < deadline:
                    fin, op, payload = cl.frame(deadline - time.monotonic())
                    if op == OP_PONG:
                        seen_pong = payload == b"between"
                    elif op == OP_PING:
                        cl.send(OP_PONG, payload)
                    elif op in (OP_TEXT, OP_BINARY, OP_CONT):
                        op0 = op0 if op == OP_CONT else op
                        got.append(payload)
                        if fin:
                            echo = (op0, b"".join(got))
                ok = seen_pong and echo == (OP_TEXT, b"".join(parts))
                return ok, f"pong {'seen' if seen_pong else 'missing'}, echo " + \
                    ("whole" if echo == (OP_TEXT, b"".join(parts)) else f"wrong: {echo!r:.80}")
            c.run("a message in three fragments with a ping between them", fragments)

            def pipelined():
                msgs = [f"msg {i:04d} ".encode() * (i % 7 + 1) for i in range(200)]
                for m in msgs:
                    cl.send(OP_TEXT, m)
                got = [cl.message()[1] for _ in msgs]
                c.produced += len(got)
                return got == msgs, f"{sum(a == b for a, b in zip(got, msgs))}/{len(msgs)} in order"
            c.run("200 messages written at once come back in order", pipelined)

            def ping():
                cl.send(OP_PING, b"ping-payload-123")
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    _, op, payload = cl.frame(deadline - time.monotonic())
                    if op == OP_PONG:
                        return payload == b"ping-payload-123", f"pong payload {payload!r}"
                return False, "no pong"
            c.run("ping answered with a pong of the same payload", ping)

            def close():
                cl.send(OP_CLOSE, struct.pack(">H", 1000) + b"bye")
                code = cl.expect_close()
                return code == 1000, f"close answered with {code}"
            c.run("our close (1000) answered with a close", close)
        cl.close()

        def bad_utf8():
            k = Client(host, port)
            try:
                k.handshake()
                k.send(OP_TEXT, b"valid then \xc3\x28 invalid")
                code = k.expect_close()
                return code == 1007, f"closed with {code}"
            finally:
                k.close()
        c.run("invalid UTF-8 in a text message: close 1007", bad_utf8)

        def too_big():
            k = Client(host, port)
            try:
                k.handshake()
                try:
                    k.send(OP_BINARY, _payload(LIMIT + 1, False))
                except (BrokenPipeError, ConnectionResetError):
                    pass                # the server may close before it has read it all
                code = k.expect_close()
                return code == 1009, f"closed with {code}"
            except Closed as cd:
                return cd.code == 1009, f"closed with {cd.code}"
            finally:
                k.close()
        c.run("a message of 1 MiB + 1 byte: close 1009", too_big)

    if silent_check:
        th.join(timeout=SILENT_CLOSE_S[1] + 15)
    if not silent_check:
        pass
    elif "error" in silent:
        c.add("a silent connection is pinged every 5 s and closed after 15 s", False, silent["error"])
    elif "after" not in silent:
        c.add("a silent connection is pinged every 5 s and closed after 15 s", False, "the check did not finish")
    else:
        pings, after = silent["pings"], silent["after"]
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        ok = SILENT_CLOSE_S[0] <= after <= SILENT_CLOSE_S[1] and len(pings) >= 2 and \
            all(PING_EVERY_S - 1.5 <= g <= PING_EVERY_S + 1.5 for g in gaps)
        c.add("a silent connection is pinged every 5 s and closed after 15 s", ok,
              f"closed {after:.1f} s after its last frame ({'close ' + str(silent['code']) if silent['code'] else 'no close frame'}); "
              f"pings at {', '.join(f'{p:.1f}' for p in pings)} s")
    print(json.dumps({"ok": c.ok, "checks": c.items, "produced": c.produced}))
    return 0 if c.ok else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verify", help="conformance check of a running server")
    v.add_argument("--target", required=True, help="host:port (loopback)")
    v.add_argument("--no-silent", action="store_true",
                   help="leave out the 20 s silent-connection check (the harness runs it as verify-idle)")
    vi = sub.add_parser("verify-idle", help="only the silent-connection check (about 20 s)")
    vi.add_argument("--target", required=True, help="host:port (loopback)")
    args = ap.parse_args(argv)
    if args.cmd == "verify":
        return verify(args.target, silent_check=not args.no_silent)
    if args.cmd == "verify-idle":
        return verify(args.target, silent_check=True, others=False)
    return 2


if __name__ == "__main__":
    sys.exit(main())
