"""ws-echo server: websockets (its asyncio implementation) on uvloop.

GET /connect upgrades to WebSocket and every text and binary message is
echoed with its type (websockets.asyncio.server.serve, the library's own
handshake, framing, UTF-8 check, size limit and closing handshake);
process_request answers the plain HTTP routes: /healthz 200, /langbench-gc
(gc.collect(), then 204), anything else 404.

Keep-alive as the contract has it: a ping every 5 s on every connection,
and a connection from which nothing has arrived for 15 s is failed (close
1011, as websockets does for its own keep-alive timeout). websockets' own
keep-alive differs (it sends the next ping only after the previous pong and
times the pong, not the silence), so EchoConnection, the library's
ServerConnection extended through serve()'s create_connection hook,
replaces its keepalive() task.

CPython runs Python code on one CPU per process, so the server starts
N = LANGBENCH_CPUS worker processes (default: the CPUs in its affinity set),
each a websockets server on its own uvloop event loop, bound to HOST:PORT
with SO_REUSEPORT; the parent only supervises (forwards SIGTERM/SIGINT,
exits 0 once every worker stopped). With N = 1 the worker runs in this
process, no supervisor.

Environment: HOST (default 127.0.0.1), PORT (required), LANGBENCH_CPUS.
"""
from __future__ import annotations

import asyncio
import gc
import http
import logging
import os
import signal
import socket
import subprocess
import sys
import time

log = logging.getLogger("ws-echo")

MAX_MESSAGE = 1 << 20         # 1 MiB: a larger message is closed with 1009
PING_INTERVAL_S = 5.0         # a ping every 5 s on every connection
PING_TIMEOUT_S = 10.0         # failed after PING_INTERVAL_S + PING_TIMEOUT_S of silence
CLOSE_TIMEOUT_S = 2.0         # the peer's share of a closing handshake, then the TCP close
OPEN_TIMEOUT_S = 10.0         # TCP accept to the end of the opening handshake
MAX_QUEUE = (16, 4)           # received frames not yet read by the handler: pause / resume reading
WRITE_LIMIT = (32 << 10, 8 << 10)   # transport write buffer: send() waits above 32 KiB until 8 KiB
BACKLOG = 1024                # listen() backlog
CORK = True                   # the echoes of one read go out together (see EchoConnection.cork)
SHUTDOWN_S = 3.5              # after SIGTERM: close every connection (1001) within this
KILL_AFTER_S = 4.5            # the supervisor's hard limit for its workers
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def setup_logging() -> None:
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO,
        format=f"%(asctime)s %(levelname)s [pid {os.getpid()}] %(name)s: %(message)s")
    # websockets logs every connection opened, closed or answered at INFO:
    # per connection, so only its warnings and errors are kept.
    logging.getLogger("websockets").setLevel(logging.WARNING)


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
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed
    from websockets.frames import CloseCode

    class EchoConnection(ServerConnection):
        """ServerConnection with the contract's keep-alive: a ping every
        ping_interval whether or not the last one was answered, and the
        connection failed once nothing (a frame of any kind, or a part of
        one) has arrived for ping_interval + ping_timeout."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.last_received = self.loop.time()
            self.corked = False

        def cork(self) -> None:
            """websockets hands every frame to uvloop, which writes it at once
            (one send(2), and on loopback the peer's receive path, per echo).
            TCP_CORK holds the segments back while the handler echoes the
            messages already received; the uncork runs once it waits for the
            next one (call_soon: after the handler's turn) and sends them
            together."""
            if self.corked:
                return
            sock = self.transport.get_extra_info("socket")
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            except OSError:
                return                  # the socket is closing: nothing to hold back
            self.corked = True
            self.loop.call_soon(self.uncork, sock)

        def uncork(self, sock) -> None:
            self.corked = False
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
            except OSError:
                pass

        def data_received(self, data: bytes) -> None:
            self.last_received = self.loop.time()
            super().data_received(data)

        async def keepalive(self) -> None:
            # Started by serve() once the handshake is done (start_keepalive);
            # cancelled by connection_lost().
            loop = self.loop
            idle_limit = self.ping_interval + self.ping_timeout
            next_ping = loop.time() + self.ping_interval
            try:
                while True:
                    now = loop.time()
                    if now >= self.last_received + idle_limit:
                        # What websockets' own keepalive does on a timeout:
                        # close frame 1011, then the TCP close.
                        async with self.send_context():
                            self.protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
                        return
                    if now >= next_ping:
                        # The pong is not awaited: any frame counts as life,
                        # and the library matches the pong to its ping.
                        await self.ping()
                        next_ping += self.ping_interval
                        if next_ping <= now:    # the loop was late by a whole interval
                            next_ping = now + self.ping_interval
                    await asyncio.sleep(min(next_ping, self.last_received + idle_limit) - now)
            except ConnectionClosed:
                pass

    async def echo(ws: ServerConnection) -> None:
        # recv() gives str for a text message (UTF-8 checked by the library:
        # close 1007 when it is not) and bytes for a binary one; send() sends
        # a str as text and bytes as binary, so the type is kept.
        try:
            async for message in ws:
                if CORK:
                    ws.cork()
                await ws.send(message)
        except ConnectionClosed:
            # A protocol error, a broken connection: the library has closed it
            # (with its status where it could); the client's doing, not logged.
            pass

    def route(connection: ServerConnection, request):
        path = request.path.partition("?")[0]
        if path == "/connect":
            return None                 # the WebSocket handshake (400/426 when not an upgrade)
        if path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "ok\n")
        if path == "/langbench-gc":
            gc.collect()                # all generations, run to its end before the answer
            response = connection.respond(http.HTTPStatus.NO_CONTENT, "")
            del response.headers["Content-Length"]   # a 204 has no content
            del response.headers["Content-Type"]
            return response
        return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")

    host, port = bind_address()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for sig in HANDLED_SIGNALS:
            loop.add_signal_handler(
                sig, lambda s=sig: stop.done() or stop.set_result(signal.Signals(s).name))

        server = await serve(
            echo, host, port,
            create_connection=EchoConnection,
            process_request=route,
            compression=None,           # no permessage-deflate: an offer is answered without it
            max_size=MAX_MESSAGE,
            ping_interval=PING_INTERVAL_S,
            ping_timeout=PING_TIMEOUT_S,
            close_timeout=CLOSE_TIMEOUT_S,
            open_timeout=OPEN_TIMEOUT_S,
            max_queue=MAX_QUEUE,
            write_limit=WRITE_LIMIT,
            reuse_port=workers > 1,
            backlog=BACKLOG,
        )
        log.info("worker %d serving on %s:%d (websockets, uvloop)", index, host, port)

        signame = await stop
        log.info("%s: closing %d connections (1001)", signame, len(server.connections))
        # Stops listening, closes every open connection with 1001 (each waits
        # at most CLOSE_TIMEOUT_S for the peer's close), waits for the handlers.
        server.close()
        try:
            await asyncio.wait_for(server.wait_closed(), SHUTDOWN_S)
        except TimeoutError:
            log.warning("connections still open after %.1f s; exiting anyway", SHUTDOWN_S)
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
