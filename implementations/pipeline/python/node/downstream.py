"""The long-lived Forward streams from this node to the next one (A -> B, B -> C).

Every operation the node holds is an `Entry` in `pending` (by id) until the
next node acknowledges it. The node's streams share one `SendQueue`; each
stream has a writer task (queue -> call.write) and a reader task (call.read ->
acknowledgement -> the entry's waiters), so the hot path has no task per
operation. When a stream fails or the next node ends it, the entries last
sent on it that are still unacknowledged go back to the front of the queue
and another stream (or the same slot, reopened) sends them again; the next
node's de-duplication (C's ledger) makes a second delivery harmless.

Reconnection: the calls are made with wait_for_ready, so while the next node
is down a new stream waits for the channel to connect; the channel retries
every 80 ms (+-20% jitter), within the contract's 100 ms."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

import grpc

from .flow import SendQueue

log = logging.getLogger("pipeline.downstream")

# Client channel options (declared in langbench.toml [tuning]).
CHANNEL_OPTIONS = [
    # Reconnect quickly while the next node is down (library default: 1 s
    # growing to 120 s). Jitter is +-20%: 64-96 ms between attempts.
    ("grpc.initial_reconnect_backoff_ms", 80),
    ("grpc.max_reconnect_backoff_ms", 80),
]
REOPEN_PAUSE_S = 0.05    # between a stream's end and the next attempt on its slot
LOG_EVERY_S = 5.0        # stream failures are logged at most this often (plus a count)


class Entry:
    """An operation this node holds until the next node acknowledges it."""

    __slots__ = ("op", "waiters", "stream", "done")

    def __init__(self, op: Any, waiter: Any) -> None:
        self.op = op                # the message sent (kept for resending)
        self.waiters = [waiter]     # who gets the acknowledgement (node-specific)
        self.stream: object | None = None   # the stream it was last written to
        self.done = False           # acknowledged (no longer in pending)


class Downstream:
    """Forward streams to `target`; `on_ack(entry, ack)` is called on the event
    loop for the first acknowledgement of each entry."""

    def __init__(self, name: str, target: str, streams: int, stub_class: Any,
                 on_ack: Callable[[Entry, Any], None]) -> None:
        self.name = name
        self.target = target
        self.pending: dict[str, Entry] = {}
        self._streams = streams
        self._stub_class = stub_class
        self._on_ack = on_ack
        self._queue = SendQueue()
        self._channel: grpc.aio.Channel | None = None
        self._forward = None
        self._slots: list[asyncio.Task] = []
        self._idle: asyncio.Future | None = None
        self._failures = 0
        self._last_log = 0.0
        self.resent = 0

    # -- lifecycle
    def start(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        self._forward = self._stub_class(self._channel).Forward
        loop = asyncio.get_running_loop()
        self._slots = [loop.create_task(self._slot(i), name=f"{self.name}-stream-{i}")
                       for i in range(self._streams)]
        log.info("%d Forward stream(s) to %s (%s)", self._streams, self.name, self.target)

    async def close(self) -> None:
        """Cancel the streams (what is unacknowledged stays unacknowledged)."""
        for task in self._slots:
            task.cancel()
        await asyncio.gather(*self._slots, return_exceptions=True)
        self._slots = []
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def drained(self, timeout: float) -> bool:
        """Wait until nothing is pending (True) or `timeout` seconds (False)."""
        if not self.pending:
            return True
        self._idle = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(self._idle, timeout)
            return True
        except asyncio.TimeoutError:
            return not self.pending
        finally:
            self._idle = None

    # -- the hot path
    def send(self, op_id: str, op: Any, waiter: Any) -> Entry:
        """Hold `op` (whose id is not pending) until acknowledged; send it."""
        entry = Entry(op, waiter)
        self.pending[op_id] = entry
        self._queue.put(entry)
        return entry

    async def _write(self, call: Any, stream: object) -> None:
        get = self._queue.get
        write = call.write
        while True:
            entry = await get()
            if entry.done:
                continue
            entry.stream = stream
            await write(entry.op)

    async def _read(self, call: Any) -> None:
        read = call.read
        pending = self.pending
        on_ack = self._on_ack
        eof = grpc.aio.EOF
        while True:
            ack = await read()
            if ack is eof:
                return
            entry = pending.pop(ack.id, None)
            if entry is None:       # not waited for (any more): dropped
                continue
            entry.done = True
            on_ack(entry, ack)
            if not pending and self._idle is not None and not self._idle.done():
                self._idle.set_result(None)

    # -- one stream slot: open, run, and reopen after a failure
    async def _slot(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            stream = object()
            call = self._forward(wait_for_ready=True)
            writer = loop.create_task(self._write(call, stream))
            reader = loop.create_task(self._read(call))
            try:
                await asyncio.wait((writer, reader), return_when=asyncio.FIRST_COMPLETED)
            finally:
                writer.cancel()
                reader.cancel()
                call.cancel()
                outcome = await asyncio.gather(reader, writer, return_exceptions=True)
                self._requeue(stream)
            self._report(index, outcome)
            await asyncio.sleep(REOPEN_PAUSE_S)

    def _requeue(self, stream: object) -> None:
        """Entries sent on a stream that ended, still unacknowledged: send again."""
        again = [e for e in self.pending.values() if e.stream is stream]
        for e in again:
            e.stream = None
        if again:
            self._queue.put_front(again)
            self.resent += len(again)

    def _report(self, index: int, outcome: list) -> None:
        self._failures += 1
        now = time.monotonic()
        if now - self._last_log < LOG_EVERY_S:
            return
        reason = "ended by the peer"
        for result in outcome:
            if isinstance(result, grpc.aio.AioRpcError):
                reason = f"{result.code().name}: {result.details()}"
                break
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                reason = f"{type(result).__name__}: {result}"
                break
        log.warning("stream %d to %s %s; reopening (%d stream end(s) so far, %d pending, "
                    "%d resent so far)", index, self.name, reason, self._failures,
                    len(self.pending), self.resent)
        self._last_log = now
