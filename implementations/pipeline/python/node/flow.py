"""Small event-loop primitives for the streams: a send queue shared by the
Forward streams to the next node, and the outbox of a stream this node serves.

Both are plain deques with futures for wake-ups: no lock (one event loop), no
task per operation, and no bound of their own, because what they hold is
bounded by the node's in-flight limit (every item is an operation the node
holds, or the acknowledgement of one)."""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Awaitable, Callable, Iterable

_END = object()


class SendQueue:
    """FIFO of operations waiting to be written to a stream to the next node;
    every stream's writer takes from it (whichever stream is free sends next).
    Operations to resend after a stream failed go to the front."""

    __slots__ = ("_items", "_getters")

    def __init__(self) -> None:
        self._items: deque = deque()
        self._getters: deque[asyncio.Future] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Any) -> None:
        self._items.append(item)
        if self._getters:
            self._wake(1)

    def put_front(self, items: Iterable[Any]) -> None:
        before = len(self._items)
        self._items.extendleft(reversed(list(items)))
        self._wake(len(self._items) - before)

    def _wake(self, n: int) -> None:
        getters = self._getters
        while n > 0 and getters:
            fut = getters.popleft()
            if not fut.done():
                fut.set_result(None)
                n -= 1

    async def get(self) -> Any:
        items = self._items
        while not items:
            fut = asyncio.get_running_loop().create_future()
            self._getters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                # A wake-up this getter got but cannot use goes to the next one.
                if fut.done() and not fut.cancelled() and items:
                    self._wake(1)
                raise
        return items.popleft()


class Outbox:
    """The acknowledgements to write back on one Forward stream this node
    serves (B and C). The stream's handler runs `pump`, writing them in the
    order they came; `finish` ends the stream once what is queued is written.
    `on_done`, if given, is called once per acknowledgement when it has been
    written, or dropped because the stream ended (C returns its permit then)."""

    __slots__ = ("_out", "_wake", "_on_done", "alive", "outstanding", "eof")

    def __init__(self, on_done: Callable[[], None] | None = None) -> None:
        self._out: deque = deque()
        self._wake: asyncio.Future | None = None
        self._on_done = on_done
        self.alive = True       # False once the stream ended: acks for it are dropped
        self.outstanding = 0    # operations received on it and not acknowledged yet
        self.eof = False        # the upstream half-closed its side

    def ack(self, ack: Any) -> None:
        """Queue the acknowledgement of an operation received on this stream."""
        if not self.alive:
            if self._on_done is not None:
                self._on_done()
            return
        self.outstanding -= 1
        self._out.append(ack)
        self._notify()

    def retire(self) -> None:
        """The stream ended: drop what was not written, and what comes later."""
        self.alive = False
        out, self._out = self._out, deque()
        if self._on_done is not None:
            for item in out:
                if item is not _END:
                    self._on_done()

    def received(self) -> None:
        self.outstanding += 1

    def end_of_input(self) -> None:
        """The upstream sent its last operation: end once they are all acknowledged."""
        self.eof = True
        self._notify()

    def finish(self) -> None:
        """End the stream once what is queued now has been written."""
        if self.alive:
            self._out.append(_END)
            self._notify()

    def _notify(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def pump(self, write: Callable[[Any], Awaitable[None]]) -> None:
        """Write the queued acknowledgements until `finish` (or end of input
        with nothing left to acknowledge)."""
        out = self._out
        on_done = self._on_done
        loop = asyncio.get_running_loop()
        while True:
            if not out:
                if self.eof and self.outstanding <= 0:
                    return
                self._wake = loop.create_future()
                try:
                    await self._wake
                finally:
                    self._wake = None
                continue
            ack = out.popleft()
            if ack is _END:
                return
            try:
                await write(ack)
            finally:
                if on_done is not None:
                    on_done()
