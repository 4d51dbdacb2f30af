"""ws-echo server: picows (Cython WebSocket framing) on uvloop.

picows parses frames in Cython and hands each one to a WSListener callback
(no coroutine, no task per connection); it answers pings itself and checks
masks, opcodes, lengths and control frames, and closes 1009 for a frame over
max_frame_size. What it leaves to the application, EchoListener does: the
reassembly of fragmented messages (with the 1 MiB limit on the whole message,
1009), the UTF-8 check of text (1007), reserved bits (1002), the closing
handshake, the keep-alive (a ping every 5 s, the connection failed after 15 s
without a frame) and back-pressure (reading paused while the transport's
write buffer is over its high-water mark).

The HTTP routes are answered by the listener factory before the upgrade:
/healthz 200, /langbench-gc (gc.collect(), then 204), /connect the WebSocket
upgrade (400 when the upgrade headers are not valid), anything else 404.

CPython runs Python code on one CPU per process, so the server starts
N = LANGBENCH_CPUS worker processes (default: the CPUs in its affinity set),
each a picows server on its own uvloop event loop, bound to HOST:PORT with
SO_REUSEPORT; the parent only supervises (forwards SIGTERM/SIGINT, exits 0
once every worker stopped). With N = 1 the worker runs in this process, no
supervisor.

Environment: HOST (default 127.0.0.1), PORT (required), LANGBENCH_CPUS.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from http import HTTPStatus

log = logging.getLogger("ws-echo")

MAX_MESSAGE = 1 << 20         # 1 MiB: a larger message (or frame) is closed with 1009
PING_INTERVAL_S = 5.0         # a ping every 5 s on every connection
IDLE_TIMEOUT_S = 15.0         # failed when no frame has arrived for this long
HANDSHAKE_TIMEOUT_S = 10.0    # TCP accept to the end of the upgrade request
CLOSE_TIMEOUT_S = 2.0         # after our close frame, the peer's close; then the TCP close
READ_BUFFER = 4 << 10         # picows' initial read buffer per connection (doubles when a frame needs it)
WRITE_LIMIT = (32 << 10, 8 << 10)   # transport write buffer: reading paused above 32 KiB until 8 KiB
COPY_ABOVE = 8192             # echo payloads above this are copied out of the read buffer (see echo)
BACKLOG = 1024                # listen() backlog
CORK = True                   # the echoes of one read go out together (see EchoListener.echo)
SHUTDOWN_S = 3.5              # after SIGTERM: close every connection (1001) within this
KILL_AFTER_S = 4.5            # the supervisor's hard limit for its workers
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s %(levelname)s [pid {os.getpid()}] %(name)s: %(message)s"))
    # picows logs every connection at INFO (off: its loggers at WARNING) and a
    # client's protocol error (a bad frame, a frame over the limit) at ERROR:
    # the client's doing, per connection, so those records are dropped (on the
    # handler: picows logs each connection on a child logger of its own).
    # Every other warning and error of picows (an exception in our listener,
    # a parser failure) stays.
    handler.addFilter(lambda record: not (record.name.startswith("picows.")
                                          and str(record.msg).startswith("WS parser error")))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("picows").setLevel(logging.WARNING)


def env_int(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}")
    if value < minimum:
        raise SystemExit(f"{name} must be >= {minimum}, got {value}")
    return value


def cpu_count() -> int:
    if os.environ.get("LANGBENCH_CPUS", "").strip():
        return env_int("LANGBENCH_CPUS", 1, 1)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def bind_address() -> tuple[str, int]:
    host = os.environ.get("HOST", "127.0.0.1")
    if not os.environ.get("PORT"):
        raise SystemExit("PORT is not set")
    return host, env_int("PORT", 0, 0)


# ---------------------------------------------------------------- worker

def run_worker(index: int, workers: int) -> int:
    """Serve until SIGTERM/SIGINT; runs in each worker process."""
    import uvloop
    from multidict import CIMultiDict
    from picows import (WSCloseCode, WSListener, WSMsgType, WSUpgradeResponse,
                        WSUpgradeResponseWithListener, ws_create_server)

    TEXT, BINARY, CONT = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION
    CLOSE = WSMsgType.CLOSE

    loop: asyncio.AbstractEventLoop      # set in main()
    connections: set[EchoListener] = set()
    stopping = False
    all_closed: asyncio.Event

    class EchoListener(WSListener):
        __slots__ = ("transport", "last_frame", "next_ping", "timer", "frag_type", "frag",
                     "close_timer", "sock", "corked")

        def on_ws_connected(self, transport) -> None:
            self.transport = transport
            self.frag_type = None       # the type of the fragmented message in progress
            self.frag = None            # its payload so far (bytearray)
            self.close_timer = None
            self.sock = transport.underlying_transport.get_extra_info("socket")
            self.corked = False
            transport.underlying_transport.set_write_buffer_limits(*WRITE_LIMIT)
            now = loop.time()
            self.last_frame = now
            self.next_ping = now + PING_INTERVAL_S
            self.timer = loop.call_at(self.next_ping, self.keepalive)
            connections.add(self)
            if stopping:                # accepted while the server was closing
                self.close(WSCloseCode.GOING_AWAY)

        def on_ws_disconnected(self, transport) -> None:
            self.timer.cancel()
            if self.close_timer is not None:
                self.close_timer.cancel()
            self.frag = None
            connections.discard(self)
            if stopping and not connections:
                all_closed.set()

        def on_ws_frame(self, transport, frame) -> None:
            self.last_frame = loop.time()
            if frame.rsv1 or frame.rsv2 or frame.rsv3:     # no extension was negotiated
                return self.fail(WSCloseCode.PROTOCOL_ERROR, "reserved bits set")
            msg_type = frame.msg_type
            if msg_type is TEXT or msg_type is BINARY:
                if self.frag_type is not None:
                    return self.fail(WSCloseCode.PROTOCOL_ERROR, "new message inside a fragmented one")
                if frame.fin:
                    self.echo(msg_type, frame.get_payload_as_memoryview() if frame.payload_size <= COPY_ABOVE
                              else frame.get_payload_as_bytes())
                else:
                    self.frag_type = msg_type
                    self.frag = bytearray(frame.get_payload_as_memoryview())
            elif msg_type is CONT:
                if self.frag_type is None:
                    return self.fail(WSCloseCode.PROTOCOL_ERROR, "continuation without a message")
                if len(self.frag) + frame.payload_size > MAX_MESSAGE:
                    return self.fail(WSCloseCode.MESSAGE_TOO_BIG, "message over 1 MiB")
                self.frag += frame.get_payload_as_memoryview()
                if frame.fin:
                    msg_type, payload = self.frag_type, bytes(self.frag)
                    self.frag_type = self.frag = None
                    self.echo(msg_type, payload)
            elif msg_type is CLOSE:
                if transport.is_close_frame_sent:  # the answer to our close
                    transport.disconnect()
                    return
                code = frame.get_close_code()
                transport.send_close(WSCloseCode.OK if code is WSCloseCode.NO_INFO else code)
                transport.disconnect()
            # PONG: its arrival (last_frame) is all the keep-alive needs; PING is
            # answered by picows (enable_auto_pong) and never reaches here.

        def echo(self, msg_type, payload) -> None:
            # A payload of at most COPY_ABOVE bytes is copied into picows' own
            # write buffer, so a view of the read buffer is safe; a larger one
            # is handed to the transport as it is (writelines), so it must own
            # its bytes (the read buffer is reused once this callback returns).
            if msg_type is TEXT:
                try:
                    str(payload, "utf-8")
                except UnicodeDecodeError as exc:
                    return self.fail(WSCloseCode.INVALID_TEXT, f"invalid UTF-8 at {exc.start}")
            if CORK and not self.corked:
                self.cork()
            self.transport.send(msg_type, payload)

        def cork(self) -> None:
            """picows hands every frame to uvloop, which writes it at once
            (one send(2), and on loopback the peer's receive path, per echo).
            TCP_CORK holds the segments back until the echoes of the frames
            this read brought in are written; the uncork runs once picows has
            handed them all over (call_soon: after this read's callbacks) and
            sends them together."""
            try:
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            except OSError:
                return                  # the socket is closing: nothing to hold back
            self.corked = True
            loop.call_soon(self.uncork)

        def uncork(self) -> None:
            self.corked = False
            try:
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
            except OSError:
                pass

        def fail(self, code, reason: str) -> None:
            """Close frame with code, then the TCP close (picows' own way for
            the errors it finds: the close, and the disconnect a moment later)."""
            self.frag_type = self.frag = None
            self.transport.send_close(code, reason.encode())
            loop.call_later(0.01, self.transport.disconnect)

        def close(self, code) -> None:
            """Our closing handshake: close frame, the peer's answer awaited for
            CLOSE_TIMEOUT_S (on_ws_frame disconnects), then the TCP close."""
            if self.transport.is_close_frame_sent:
                return
            self.transport.send_close(code)
            self.close_timer = loop.call_later(CLOSE_TIMEOUT_S, self.transport.disconnect)

        def keepalive(self) -> None:
            now = loop.time()
            deadline = self.last_frame + IDLE_TIMEOUT_S
            if now >= deadline:
                # picows' own keep-alive closes with 1001 on a timeout
                self.fail(WSCloseCode.GOING_AWAY, "no frame for 15 s")
                return
            if now >= self.next_ping:
                self.transport.send_ping()
                self.next_ping += PING_INTERVAL_S
                if self.next_ping <= now:       # the loop was late by a whole interval
                    self.next_ping = now + PING_INTERVAL_S
            self.timer = loop.call_at(min(self.next_ping, deadline), self.keepalive)

        # Back-pressure: a client that does not read its echoes is not read.
        def pause_writing(self) -> None:
            self.transport.underlying_transport.pause_reading()

        def resume_writing(self) -> None:
            self.transport.underlying_transport.resume_reading()

    def no_content() -> WSUpgradeResponse:
        response = WSUpgradeResponse()
        response.version = b"HTTP/1.1"
        response.status = HTTPStatus.NO_CONTENT
        response.headers = CIMultiDict()
        response.body = None
        return response

    def route(request):
        path = request.path.partition(b"?")[0]
        if path == b"/connect":
            # RFC 6455 4.2.1: Connection is a token list that must include
            # "Upgrade" (browsers send "keep-alive, Upgrade"); picows accepts
            # only the exact value, so a list with the token is narrowed to it
            conn = request.headers.get("connection", "")
            if "," in conn and "upgrade" in (t.strip().lower() for t in conn.split(",")):
                request.headers["Connection"] = "upgrade"
            return EchoListener()       # the upgrade (400 when not a valid one)
        if path == b"/healthz":
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_ok_response(b"ok\n"), None)
        if path == b"/langbench-gc":
            gc.collect()                # all generations, run to its end before the answer
            return WSUpgradeResponseWithListener(no_content(), None)
        return None                     # picows answers 404

    host, port = bind_address()

    async def main() -> None:
        nonlocal loop, stopping, all_closed
        loop = asyncio.get_running_loop()
        all_closed = asyncio.Event()
        stop = loop.create_future()
        for sig in HANDLED_SIGNALS:
            loop.add_signal_handler(
                sig, lambda s=sig: stop.done() or stop.set_result(signal.Signals(s).name))

        server = await ws_create_server(
            route, host, port,
            websocket_handshake_timeout=HANDSHAKE_TIMEOUT_S,
            enable_auto_ping=False,     # EchoListener.keepalive instead (see above)
            enable_auto_pong=True,
            max_frame_size=MAX_MESSAGE,
            read_buffer_init_size=READ_BUFFER,
            reuse_port=workers > 1,
            backlog=BACKLOG,
            use_aiofastnet=False,       # uvloop's own transports (see the tuning)
        )
        log.info("worker %d serving on %s:%d (picows, uvloop)", index, host, port)

        signame = await stop
        log.info("%s: closing %d connections (1001)", signame, len(connections))
        stopping = True
        server.close()
        for conn in list(connections):
            conn.close(WSCloseCode.GOING_AWAY)
        if connections:
            try:
                await asyncio.wait_for(all_closed.wait(), SHUTDOWN_S)
            except TimeoutError:
                log.warning("%d connections still open after %.1f s; exiting anyway",
                            len(connections), SHUTDOWN_S)
        log.info("stopped")

    uvloop.run(main())
    return 0


# ------------------------------------------------------------ supervisor

def supervise(n: int) -> int:
    """Start n workers, forward stop signals, exit once they have stopped
    (0, or 1 when one failed or had to be killed)."""
    watched = set(HANDLED_SIGNALS) | {signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)

    try:
        import ctypes
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        prctl = None

    def in_child() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, watched)
        if prctl is not None:
            prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG: die with the supervisor

    argv = [sys.executable, os.path.abspath(__file__), "--worker"]
    workers: dict[int, subprocess.Popen] = {}
    for i in range(n):
        p = subprocess.Popen(argv, env=dict(os.environ, WSECHO_WORKER=str(i), WSECHO_WORKERS=str(n)),
                             preexec_fn=in_child)
        workers[p.pid] = p
    host, port = bind_address()
    log.info("supervisor started %d workers on %s:%d", n, host, port)

    stopping, failed, deadline = False, False, None

    def stop_all() -> None:
        nonlocal stopping, deadline
        stopping, deadline = True, time.monotonic() + KILL_AFTER_S
        for p in workers.values():
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

    while workers:
        for pid, p in list(workers.items()):
            rc = p.poll()
            if rc is None:
                continue
            del workers[pid]
            if rc != 0 or not stopping:
                log.error("worker %d exited with code %s", pid, rc)
                failed = True
                if not stopping:
                    stop_all()
        if not workers:
            break
        timeout = 1.0 if deadline is None else deadline - time.monotonic()
        if timeout <= 0:
            log.warning("%d worker(s) still running after %.1f s; killing", len(workers), KILL_AFTER_S)
            for p in workers.values():
                p.kill()
                p.wait()
            failed = True
            break
        info = signal.sigtimedwait(watched, timeout)
        if info is not None and info.si_signo != signal.SIGCHLD and not stopping:
            log.info("%s: stopping workers", signal.Signals(info.si_signo).name)
            stop_all()

    log.info("stopped")
    return 1 if failed else 0


def main() -> int:
    setup_logging()
    if "--worker" in sys.argv[1:]:
        return run_worker(env_int("WSECHO_WORKER", 0, 0), env_int("WSECHO_WORKERS", 1, 1))
    n = cpu_count()
    if n == 1:
        return run_worker(0, 1)
    return supervise(n)


if __name__ == "__main__":
    sys.exit(main())
