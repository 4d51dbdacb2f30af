"""Node A: POST /op/{id} over HTTP/1.1 (aiohttp's low-level server), answered
200 with dC once C acknowledged the operation.

Each request takes a permit of the in-flight limit before its body is read
and gives it back when it is answered: at the limit no further bodies are
read (HTTP/1.1 answers in order on a connection, so those connections stop
there). dA = T(id || "\\n" || payload) is computed on the event loop and the
operation is handed to the Forward streams to B (`Downstream`); the handler
awaits a future that the stream reader resolves with C's digest. A request
for an id that A already holds waits for the same acknowledgement (C
commits an id once, the first commit wins)."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

import pipeline_pb2
import pipeline_pb2_grpc

from .config import Config, valid_id
from .downstream import Downstream, Entry
from .transform import make_transform

log = logging.getLogger("pipeline.entry")

WAIT_S = 4.0            # SIGTERM: operations held get this long to be acknowledged
CLEANUP_S = 4.6         # SIGTERM: the HTTP server's shutdown is bounded by this
BACKLOG = 4096          # listen backlog (capped by net.core.somaxconn)

Op = pipeline_pb2.Op
Response = web.Response


def _plain(status: int, text: str) -> web.Response:
    return Response(status=status, text=text)


def _not_allowed(allow: str) -> web.Response:
    return Response(status=405, text="method not allowed", headers={"Allow": allow})


async def _read_body(request: web.BaseRequest, limit: int) -> bytes | None:
    """The body, or None when it is longer than `limit` bytes."""
    length = request.content_length
    if length is not None:
        if length > limit:
            return None
        return await request.content.readexactly(length) if length else b""
    body = bytearray()      # chunked
    content = request.content
    while True:
        chunk = await content.readany()
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > limit:
            return None


class EntryNode:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.transform = make_transform(cfg.rounds)
        self.limit = asyncio.Semaphore(cfg.max_inflight)
        self.link = Downstream("B", cfg.next, cfg.streams, pipeline_pb2_grpc.StageStub,
                               self._on_ack)
        self.stopping = False       # SIGTERM: new requests are answered 503
        self.given_up = False       # SIGTERM + WAIT_S: what is still held is answered 503
        self.runner: web.ServerRunner | None = None

    @staticmethod
    def _on_ack(entry: Entry, ack: Any) -> None:
        digest = ack.digest
        for fut in entry.waiters:
            if not fut.done():
                fut.set_result(digest)

    def _give_up(self) -> None:
        """Answer 503 to every request still waiting for an acknowledgement."""
        self.given_up = True
        n = 0
        for entry in self.link.pending.values():
            for fut in entry.waiters:
                if not fut.done():
                    fut.set_result(None)
                    n += 1
        if n:
            log.warning("%d request(s) not acknowledged within %.1f s of SIGTERM: answered 503",
                        n, WAIT_S)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.raw_path
        query = path.find("?")
        if query >= 0:
            path = path[:query]
        if not path.startswith("/op/"):
            if path == "/healthz":
                if request.method in ("GET", "HEAD"):
                    return Response(text="ok")
                return _not_allowed("GET, HEAD")
            return _plain(404, "not found")

        if request.method != "POST":
            return _not_allowed("POST")
        op_id = path[4:]
        if not valid_id(op_id):
            return _plain(400, "the id must be 1 to 128 characters of A-Z a-z 0-9 . _ : -")
        limit = self.cfg.max_payload
        length = request.content_length
        if length is not None and length > limit:
            return _plain(413, f"the body is over {limit} bytes")
        if self.stopping:
            return _plain(503, "stopping")
        if "Expect" in request.headers and request.headers["Expect"].lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

        await self.limit.acquire()
        try:
            try:
                body = await _read_body(request, limit)
            except (asyncio.IncompleteReadError, ConnectionError):
                return _plain(400, "incomplete body")
            if body is None:
                return _plain(413, f"the body is over {limit} bytes")
            if self.given_up:
                return _plain(503, "stopping")
            fut = asyncio.get_running_loop().create_future()
            entry = self.link.pending.get(op_id)
            if entry is not None:
                entry.waiters.append(fut)
            else:
                digest = self.transform(b"%s\n%s" % (op_id.encode(), body))
                self.link.send(op_id, Op(id=op_id, payload=body, digest=digest), fut)
            digest = await fut
        finally:
            self.limit.release()
        if digest is None:
            return _plain(503, "stopping before the operation was acknowledged")
        return Response(body=digest.hex().encode(), content_type="text/plain")

    async def start(self) -> None:
        self.link.start()
        server = web.Server(self.handle, access_log=None)
        # shutdown_timeout bounds aiohttp's wait for running handlers; ours
        # answer by WAIT_S (503 at the latest), so it is only a backstop.
        self.runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=CLEANUP_S)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.cfg.host, self.cfg.port, backlog=BACKLOG)
        await site.start()      # raises if the address cannot be bound
        log.info("node a serving HTTP on %s:%d -> B at %s (rounds %d, max in flight %d, "
                 "max payload %d)", self.cfg.host, self.cfg.port, self.cfg.next,
                 self.cfg.rounds, self.cfg.max_inflight, self.cfg.max_payload)

    async def stop(self) -> None:
        """Stop listening, give held operations WAIT_S to be acknowledged and
        answered, answer 503 to the rest, close the streams to B."""
        self.stopping = True
        held = len(self.link.pending)
        give_up = asyncio.get_running_loop().call_later(WAIT_S, self._give_up)
        try:
            await asyncio.wait_for(self.runner.cleanup(), CLEANUP_S)
        except asyncio.TimeoutError:
            log.warning("HTTP server still busy %.1f s after SIGTERM", CLEANUP_S)
        give_up.cancel()
        await self.link.close()
        log.info("node a stopped (%d operation(s) held at SIGTERM; %d resent to B over its run)",
                 held, self.link.resent)
