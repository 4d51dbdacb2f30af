"""Nodes B and C: the `pipeline.Stage` service on grpc.aio.

Each Forward stream this node serves has one reader task (context.read ->
the node's `take`) and its handler writing the stream's acknowledgements
(`Outbox.pump` -> context.write). The reader takes a permit of the node's
in-flight limit before it reads the next operation: at the limit it stops
reading, and HTTP/2 flow control pushes back on the upstream node."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc

import pipeline_pb2
import pipeline_pb2_grpc

from . import ledger as ledger_mod
from .config import Config, valid_id
from .downstream import Downstream, Entry
from .flow import Outbox
from .transform import make_transform

log = logging.getLogger("pipeline.stage")

SERVER_OPTIONS = [
    # One process per node: a second process on the same port is a mistake.
    ("grpc.so_reuseport", 0),
]
B_DRAIN_S = 3.0         # SIGTERM: B waits this long for C to acknowledge what B holds
C_DRAIN_S = 3.0         # SIGTERM: C's last batch gets this long to be synced
STOP_GRACE_S = 3.6      # server.stop grace: streams still open after it are cancelled

Ack = pipeline_pb2.Ack


class BadOperation(Exception):
    pass


class StageNode(pipeline_pb2_grpc.StageServicer):
    """What B and C share: streams, the in-flight limit, draining."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.transform = make_transform(cfg.rounds)
        self.limit = asyncio.Semaphore(cfg.max_inflight)
        self.draining = False
        self.outboxes: set[Outbox] = set()
        self.server: grpc.aio.Server | None = None

    # -- per stream and per operation (node-specific)
    def new_outbox(self) -> Outbox:
        return Outbox()

    def take(self, op: Any, box: Outbox) -> None:
        """Handle one received operation; it owns one permit of `limit`."""
        raise NotImplementedError

    # -- the service
    async def Forward(self, request_iterator, context):
        if self.draining:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "node is stopping")
        box = self.new_outbox()
        self.outboxes.add(box)
        # Headers now, so the upstream sees the stream established at once.
        await context.send_initial_metadata(())
        reader = asyncio.get_running_loop().create_task(self._read(context, box))
        try:
            await box.pump(context.write)
        finally:
            box.retire()
            self.outboxes.discard(box)
            reader.cancel()
        if reader.done() and not reader.cancelled():
            exc = reader.exception()
            if isinstance(exc, BadOperation):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            elif exc is not None:
                log.warning("stream ended: reading failed: %r", exc)

    async def _read(self, context, box: Outbox) -> None:
        acquire, release = self.limit.acquire, self.limit.release
        read = context.read
        take = self.take
        eof = grpc.aio.EOF
        while True:
            await acquire()
            if self.draining:       # SIGTERM: stop reading operations
                release()
                return
            try:
                op = await read()
            except asyncio.CancelledError:
                release()
                raise
            except Exception:
                release()
                box.finish()
                raise
            if op is eof:
                release()
                box.end_of_input()
                return
            box.received()
            try:
                take(op, box)
            except BadOperation as exc:
                release()
                log.error("stream ended: %s", exc)
                box.finish()
                raise

    # -- lifecycle
    async def start(self) -> None:
        server = grpc.aio.server(options=SERVER_OPTIONS)
        pipeline_pb2_grpc.add_StageServicer_to_server(self, server)
        address = self.cfg.grpc_address()
        if not server.add_insecure_port(address):
            raise SystemExit(f"cannot listen on {address}")
        await server.start()
        self.server = server

    def _stop_accepting(self) -> asyncio.Task:
        self.draining = True
        return asyncio.get_running_loop().create_task(self.server.stop(STOP_GRACE_S))

    def _end_streams(self) -> None:
        for box in list(self.outboxes):
            box.finish()

    async def stop(self) -> None:
        raise NotImplementedError


def check_op(op: Any) -> None:
    if len(op.digest) != 32:
        raise BadOperation(f"operation {op.id[:130]!r}: digest of {len(op.digest)} bytes, not 32")
    if not valid_id(op.id):
        raise BadOperation(f"operation id {op.id[:130]!r} is not 1-128 characters of [A-Za-z0-9._:-]")


# ------------------------------------------------------------------- B

class MiddleNode(StageNode):
    """B: dB = T(dA), forwarded to C on B's own streams; C's Ack relayed on
    the stream (or streams) the operation came in on. An id B already holds
    is not sent again: the new stream waits for the same acknowledgement."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.link = Downstream("C", cfg.next, cfg.streams, pipeline_pb2_grpc.StageStub,
                               self._on_ack)
        self._pending = self.link.pending

    def take(self, op: Any, box: Outbox) -> None:
        op_id = op.id
        entry = self._pending.get(op_id)
        if entry is not None:
            entry.waiters.append(box)
            self.limit.release()        # held once, by its entry
            return
        check_op(op)
        # The received message is forwarded as it is, with B's digest: the
        # payload is not copied again.
        op.digest = self.transform(op.digest)
        self.link.send(op_id, op, box)

    def _on_ack(self, entry: Entry, ack: Any) -> None:
        for box in entry.waiters:
            box.ack(ack)
        self.limit.release()

    async def start(self) -> None:
        self.link.start()
        await super().start()
        log.info("node b serving pipeline.Stage on %s -> C at %s (rounds %d, max in flight %d)",
                 self.cfg.grpc_address(), self.cfg.next, self.cfg.rounds, self.cfg.max_inflight)

    async def stop(self) -> None:
        stopped = self._stop_accepting()
        held = len(self._pending)
        drained = await self.link.drained(B_DRAIN_S)
        if not drained:
            log.warning("%d operation(s) still unacknowledged by C after %.1f s; "
                        "ending the streams (A resends them)", len(self._pending), B_DRAIN_S)
        self._end_streams()
        try:
            await asyncio.wait_for(stopped, STOP_GRACE_S + 0.3)
        except asyncio.TimeoutError:
            pass
        await self.link.close()
        log.info("node b stopped (%d held at SIGTERM, drained: %s; %d resent to C over its run)",
                 held, drained, self.link.resent)


# ------------------------------------------------------------------- C

class _Commit:
    """An operation whose ledger line waits for its batch's sync."""

    __slots__ = ("id", "digest", "waiters")

    def __init__(self, op_id: str, digest: bytes, box: Outbox) -> None:
        self.id = op_id
        self.digest = digest
        self.waiters = [box]


class CommitNode(StageNode):
    """C: dC = T(dB), appended to the ledger, acknowledged once synced; an id
    already committed is acknowledged at once (duplicate, nothing written),
    a copy of an id waiting for its sync is acknowledged after that sync."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.committed = ledger_mod.load(cfg.ledger)
        self.waiting: dict[str, _Commit] = {}
        self.ledger = ledger_mod.Ledger(cfg.ledger, self._on_durable)
        self.duplicates = 0

    def take(self, op: Any, box: Outbox) -> None:
        op_id = op.id
        digest = self.committed.get(op_id)
        if digest is not None:
            self.duplicates += 1
            box.ack(Ack(id=op_id, digest=digest, duplicate=True))
            return
        commit = self.waiting.get(op_id)
        if commit is not None:
            commit.waiters.append(box)
            return
        check_op(op)
        digest = self.transform(op.digest)
        commit = _Commit(op_id, digest, box)
        self.waiting[op_id] = commit
        self.ledger.append(f"{op_id} {digest.hex()}\n".encode(), commit)

    def new_outbox(self) -> Outbox:
        # C holds an operation until its Ack is written (or dropped with its stream).
        return Outbox(self.limit.release)

    def _on_durable(self, batch: list) -> None:
        committed, waiting = self.committed, self.waiting
        for commit in batch:
            op_id, digest = commit.id, commit.digest
            committed[op_id] = digest
            del waiting[op_id]
            waiters = commit.waiters
            waiters[0].ack(Ack(id=op_id, digest=digest))
            if len(waiters) > 1:        # copies that came while it waited for the sync
                dup = Ack(id=op_id, digest=digest, duplicate=True)
                for box in waiters[1:]:
                    box.ack(dup)
                self.duplicates += len(waiters) - 1

    async def start(self) -> None:
        self.ledger.start()
        await super().start()
        log.info("node c serving pipeline.Stage on %s; ledger %s with %d committed id(s) "
                 "(rounds %d, max in flight %d)", self.cfg.grpc_address(), self.cfg.ledger,
                 len(self.committed), self.cfg.rounds, self.cfg.max_inflight)

    async def stop(self) -> None:
        stopped = self._stop_accepting()
        synced = await self.ledger.idle(C_DRAIN_S)
        self._end_streams()
        try:
            await asyncio.wait_for(stopped, STOP_GRACE_S + 0.3)
        except asyncio.TimeoutError:
            pass
        await self.ledger.close()
        log.info("node c stopped (last batch synced: %s; %d lines in %d batches, %d duplicate(s) "
                 "acknowledged over its run)", synced, self.ledger.lines, self.ledger.batches,
                 self.duplicates)
