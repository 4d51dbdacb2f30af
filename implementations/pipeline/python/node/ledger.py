"""Node C's ledger: an append-only text file, one line per committed operation,
`{id} {dC as 64 lowercase hex}\\n`, with group commit.

Lines are collected on the event loop; one flusher task hands everything
collected so far to a single I/O thread, which appends it with one write (a
loop over os.write for partial writes) and one os.fdatasync; only then are
the batch's operations marked committed and acknowledged. Lines that arrive
while a sync runs form the next batch, so the batch size follows the load
(one sync per batch, never one per operation)."""
from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

log = logging.getLogger("pipeline.ledger")


class LedgerError(Exception):
    pass


def load(path: str) -> dict[str, bytes]:
    """Read the ledger (creating it if missing), cut a torn tail (a last line
    without its newline, left by a crash) and return the committed ids with
    their digests. A malformed complete line is corruption: refuse to start."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    created = not os.path.exists(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        data = b"".join(chunks)
        keep = data.rfind(b"\n") + 1
        if keep < len(data):
            log.warning("ledger %s: cutting a torn tail of %d bytes (%r)", path,
                        len(data) - keep, data[keep:keep + 80])
            os.ftruncate(fd, keep)
            os.fsync(fd)
        committed: dict[str, bytes] = {}
        for number, line in enumerate(data[:keep].splitlines(), 1):
            op_id, sep, hexd = line.partition(b" ")
            try:
                if not sep or not op_id or len(hexd) != 64:
                    raise ValueError("not '{id} {64 hex}'")
                digest = bytes.fromhex(hexd.decode("ascii"))
                key = op_id.decode("ascii")
            except ValueError as exc:
                raise LedgerError(f"ledger {path} line {number} is malformed ({exc}): {line[:200]!r}")
            committed.setdefault(key, digest)   # the first commit of an id wins
    finally:
        os.close(fd)
    if created:
        _fsync_dir(folder)
    return committed


def _fsync_dir(folder: str) -> None:
    """Make a new file's directory entry durable."""
    dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class Ledger:
    """Group commit: `append(line, item)` collects; after the batch's write and
    sync, `on_durable(items)` is called on the event loop with the batch's items."""

    def __init__(self, path: str, on_durable: Callable[[list], None]) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._on_durable = on_durable
        self._lines: list[bytes] = []
        self._items: list = []
        self._wake: asyncio.Future | None = None
        self._idle: asyncio.Future | None = None
        self._syncing = False
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-io")
        self._task: asyncio.Task | None = None
        self.batches = 0
        self.lines = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._flusher(), name="ledger-flusher")
        self._task.add_done_callback(self._flusher_ended)

    def _flusher_ended(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            # Nothing could be acknowledged any more: fail loudly, not silently.
            log.critical("ledger flusher failed; exiting", exc_info=task.exception())
            logging.shutdown()
            os._exit(70)

    def append(self, line: bytes, item: object) -> None:
        self._lines.append(line)
        self._items.append(item)
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def busy(self) -> bool:
        return self._syncing or bool(self._lines)

    async def idle(self, timeout: float) -> bool:
        """Wait until every collected line is durable and acknowledged."""
        if not self.busy():
            return True
        self._idle = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(self._idle, timeout)
            return True
        except asyncio.TimeoutError:
            return not self.busy()
        finally:
            self._idle = None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._io.shutdown(wait=True)
        os.close(self._fd)

    def _write_and_sync(self, data: bytes) -> None:      # the I/O thread
        fd = self._fd
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fdatasync(fd)

    async def _flusher(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._lines:
                idle = self._idle
                if idle is not None and not idle.done():
                    idle.set_result(None)
                self._wake = loop.create_future()
                try:
                    await self._wake
                finally:
                    self._wake = None
                continue
            lines, items = self._lines, self._items
            self._lines, self._items = [], []
            self._syncing = True
            try:
                await loop.run_in_executor(self._io, self._write_and_sync, b"".join(lines))
            except OSError:
                # Nothing of this batch may be acknowledged, and whether its
                # lines reached the file is unknown: stop the node (a restart
                # re-reads the ledger, and the upstream resends).
                log.critical("ledger %s: write/sync failed; exiting", self.path, exc_info=True)
                logging.shutdown()
                os._exit(70)
            self._syncing = False
            self.batches += 1
            self.lines += len(lines)
            self._on_durable(items)
