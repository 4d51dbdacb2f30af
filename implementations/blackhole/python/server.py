"""blackhole server: answer 200 to any request and record it (aiohttp + lz4).

Every request (any method, any path) is read in full (body limit 1 MiB, 413
above), encoded as one FlatBuffers `fbr.Request` (the generated code in fbr/,
runtime flatbuffers 23.5.26), handed to the recorder, and answered 200 with an
empty body. The recorder is one writer thread per worker process: the event
loop batches the encoded records (256 KiB or 5 ms) and hands each batch over a
queue; the writer joins it, LZ4-compresses it (python-lz4 releases the GIL
while compressing) and writes it to its current file.
The hand-off is bounded in bytes: when the writer is behind, requests wait for
room before they are answered (backpressure, nothing is dropped).

CPython runs Python code on one CPU per process, so the server starts
N = LANGBENCH_CPUS worker processes (default: the CPUs in its affinity set),
each an aiohttp server on its own uvloop event loop with its own writer thread
and file sequence, all bound to HOST:PORT with SO_REUSEPORT. The parent only
supervises (forwards SIGTERM/SIGINT, exits 0 once every worker stopped). With
N = 1 the worker runs in this process, no supervisor.

Environment: HOST (default 127.0.0.1), PORT (required), LANGBENCH_CPUS,
RECORD (1|0, default 1), BLACKHOLE_DIR (default LANGBENCH_INSTANCE_DIR, else
./recordings), BLACKHOLE_ROTATE_BYTES (default 128 MiB of uncompressed record
stream), BLACKHOLE_ROTATE_SECONDS (default 60).
"""
from __future__ import annotations

import logging
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
import time

log = logging.getLogger("blackhole")

MAX_BODY = 1 << 20            # 1 MiB, after de-chunking; 413 above
GRACE_S = 2.0                 # in-flight requests get this long after SIGTERM
KILL_AFTER_S = 4.5            # the supervisor's hard limit for its workers
FLUSH_S = 0.5                 # unflushed records are at most this old (compressor + file)
QUEUE_BYTES = 16 << 20        # records handed to the writer and not yet written, per worker
BATCH_BYTES = 256 << 10       # a batch goes to the writer once it holds this much,
BATCH_S = 0.005               # or this long after its first record
FILE_BUFFER = 1 << 20         # the file's user-space buffer (compressed bytes)
HANDLED_SIGNALS = {signal.SIGTERM, signal.SIGINT}
LEN = struct.Struct("<Q")     # the record's length prefix


def setup_logging() -> None:
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO,
        format=f"%(asctime)s %(levelname)s [pid {os.getpid()}] %(name)s: %(message)s")


class _DropBadRequests(logging.Filter):
    """Malformed requests (answered 400 by aiohttp) are the client's fault and
    per request: not logged. Everything else aiohttp.server logs passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, HttpProcessingError)


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


def recording() -> bool:
    raw = os.environ.get("RECORD", "1").strip()
    if raw not in ("0", "1"):
        raise SystemExit(f"RECORD must be 0 or 1, got {raw!r}")
    return raw == "1"


def output_dir() -> str:
    return (os.environ.get("BLACKHOLE_DIR") or os.environ.get("LANGBENCH_INSTANCE_DIR")
            or "./recordings")


# ------------------------------------------------------------- recorder

def _utf8(raw: bytes) -> bytes:
    """Bytes as UTF-8: kept when they are UTF-8, else taken as ISO-8859-1."""
    try:
        raw.decode("utf-8")
        return raw
    except UnicodeDecodeError:
        return raw.decode("latin-1").encode("utf-8")


def header_block(raw_headers) -> bytes:
    """'Name: value\\r\\n' per header line, in the order and case received."""
    if not raw_headers:
        return b""
    block = b"\r\n".join(map(b": ".join, raw_headers)) + b"\r\n"
    if block.isascii():
        return block
    return b"".join(b"%s: %s\r\n" % (_utf8(n), _utf8(v)) for n, v in raw_headers)


def _make_encoder():
    """encode(rid, method, uri, headers, body) -> one record: the 8-byte
    little-endian length, then the finished FlatBuffers buffer (root
    fbr.Request, no size prefix, no file identifier), built with the
    generated code (fbr/Request.py) on the flatbuffers 23.5.26 runtime."""
    import flatbuffers
    from fbr import Request as R

    Builder = flatbuffers.Builder
    start, end = R.RequestStart, R.RequestEnd
    add_id, add_method, add_uri = R.RequestAddId, R.RequestAddMethod, R.RequestAddUri
    add_headers, add_body = R.RequestAddHeaders, R.RequestAddBody
    pack_into = LEN.pack_into

    def encode(rid: bytes, method: bytes, uri: bytes, headers: bytes, body: bytes) -> bytearray:
        # Sized so that the builder never grows and keeps >= 8 free bytes in
        # front of the finished buffer for the length prefix (no extra copy).
        b = Builder(len(body) + len(headers) + len(uri) + len(rid) + len(method) + 96)
        body_off = b.CreateByteVector(body) if body else 0
        headers_off = b.CreateString(headers)
        uri_off = b.CreateString(uri)
        method_off = b.CreateString(method)
        id_off = b.CreateString(rid)
        start(b)
        add_id(b, id_off)
        add_method(b, method_off)
        add_uri(b, uri_off)
        add_headers(b, headers_off)
        if body_off:
            add_body(b, body_off)
        b.Finish(end(b))
        buf, head = b.Bytes, b.Head()
        size = len(buf) - head
        if head >= 8:
            pack_into(buf, head - 8, size)
            return buf[head - 8:]
        return bytearray(LEN.pack(size)) + buf[head:]

    return encode


class Writer(threading.Thread):
    """Writes batches of records to a sequence of LZ4 files (one frame per
    file, flushed without ending the frame at least every FLUSH_S), renamed
    from NAME.lz4.tmp to NAME.lz4 when closed. Any error is fatal."""

    STOP = object()

    def __init__(self, folder: str, name_prefix: str, rotate_bytes: int, rotate_s: float,
                 on_written) -> None:
        super().__init__(name="blackhole-writer", daemon=True)
        import lz4.frame
        self._lz4 = lz4.frame
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self._folder = folder
        self._prefix = name_prefix
        self._rotate_bytes = rotate_bytes
        self._rotate_s = rotate_s
        self._on_written = on_written
        self._seq = 0
        self._f = None
        self._ctx = None
        self._tmp = self._final = ""
        self._stream = 0            # uncompressed bytes in the current file
        self._opened = 0.0          # monotonic time the current file was opened
        self._dirty_since = None    # monotonic time of the oldest unflushed record
        self.files = self.records = 0

    # -- the thread
    def run(self) -> None:
        try:
            self._loop()
        except BaseException:
            log.critical("recorder failed; exiting", exc_info=True)
            logging.shutdown()
            os._exit(70)

    def _loop(self) -> None:
        get, get_nowait = self.q.get, self.q.get_nowait
        while True:
            deadline = self._deadline()
            try:
                if deadline is None:
                    item = get()
                else:
                    item = get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                item = None
            stop = item is self.STOP
            written = 0
            while item is not None and not stop:
                written += self._write(item)
                try:
                    item = get_nowait()     # coalesce whatever queued meanwhile
                except queue.Empty:
                    item = None
                stop = item is self.STOP
            if written:
                self._on_written(written)
            if stop:
                if self._f is not None:
                    self._close()
                return
            self._tick(time.monotonic())

    def _deadline(self) -> float | None:
        if self._f is None:
            return None
        deadline = self._opened + self._rotate_s
        if self._dirty_since is not None:
            deadline = min(deadline, self._dirty_since + FLUSH_S)
        return deadline

    def _tick(self, now: float) -> None:
        if self._f is None:
            return
        if now - self._opened >= self._rotate_s:
            self._close()
        elif self._dirty_since is not None and now - self._dirty_since >= FLUSH_S:
            self._flush()

    # -- files
    def _open(self) -> None:
        self._seq += 1
        name = f"{self._prefix}-{self._seq:06d}.lz4"
        self._final = os.path.join(self._folder, name)
        self._tmp = self._final + ".tmp"
        self._f = open(self._tmp, "xb", buffering=FILE_BUFFER)
        lz = self._lz4
        self._ctx = lz.create_compression_context()
        self._f.write(lz.compress_begin(
            self._ctx, compression_level=0, block_size=lz.BLOCKSIZE_MAX64KB, block_linked=True,
            content_checksum=True, auto_flush=False))
        self._opened = time.monotonic()
        self.files += 1

    def _flush(self) -> None:
        self._f.write(self._lz4.compress_flush(self._ctx, end_frame=False))
        self._f.flush()
        self._dirty_since = None

    def _close(self) -> None:
        self._f.write(self._lz4.compress_flush(self._ctx, end_frame=True))
        self._f.close()
        os.rename(self._tmp, self._final)
        self._f = self._ctx = None
        self._dirty_since = None
        self._stream = 0

    def _append(self, records) -> None:
        if self._f is None:
            self._open()
        out = self._lz4.compress_chunk(self._ctx, b"".join(records))
        if out:
            self._f.write(out)
        if self._dirty_since is None:
            self._dirty_since = time.monotonic()

    def _write(self, batch: list) -> int:
        """Write one batch; close the file after the record that brings it to
        BLACKHOLE_ROTATE_BYTES. Returns the batch's bytes."""
        total = sum(map(len, batch))
        self.records += len(batch)
        if self._stream + total < self._rotate_bytes:
            self._append(batch)
            self._stream += total
            return total
        start = 0
        for i, rec in enumerate(batch):
            self._stream += len(rec)
            if self._stream >= self._rotate_bytes:
                self._append(batch[start:i + 1])
                self._close()
                start = i + 1
        if start < len(batch):
            self._append(batch[start:])
        return total


class Recorder:
    """The event loop's side of the hand-off: records are batched and a batch
    goes to the writer thread once it holds BATCH_BYTES or BATCH_S after its
    first record (one thread wake-up per batch); at most QUEUE_BYTES are
    handed over (or batched) and not yet written, beyond that a request
    awaits `wait_room` before it is answered."""

    def __init__(self, loop, folder: str, name_prefix: str, rotate_bytes: int, rotate_s: float) -> None:
        self._loop = loop
        self._batch: list = []
        self._batch_bytes = 0
        self._timer = None
        self._lock = threading.Lock()
        self._inflight = 0              # bytes handed over (or batched), not yet written
        self._waiters: list = []        # futures of requests waiting for room
        self._wake_pending = False
        self.writer = Writer(folder, name_prefix, rotate_bytes, rotate_s, self._written)
        self.writer.start()

    def full(self) -> bool:
        return self._inflight >= QUEUE_BYTES or bool(self._waiters)

    async def wait_room(self) -> None:
        while True:
            with self._lock:
                if self._inflight < QUEUE_BYTES and not self._waiters:
                    return
                fut = self._loop.create_future()
                self._waiters.append(fut)
            await fut
            # Woken in FIFO order; whoever finds no room queues again.
            if self._inflight < QUEUE_BYTES:
                return

    def put(self, rec) -> None:
        self._batch.append(rec)
        self._batch_bytes += len(rec)
        with self._lock:
            self._inflight += len(rec)
        if self._batch_bytes >= BATCH_BYTES:
            self._submit()
        elif self._timer is None:
            self._timer = self._loop.call_later(BATCH_S, self._submit)

    def _submit(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._batch:
            batch, self._batch, self._batch_bytes = self._batch, [], 0
            self.writer.q.put(batch)

    def _written(self, nbytes: int) -> None:   # the writer thread
        with self._lock:
            self._inflight -= nbytes
            wake = bool(self._waiters) and not self._wake_pending and self._inflight < QUEUE_BYTES
            if wake:
                self._wake_pending = True
        if wake:
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:                   # the event loop
        with self._lock:
            self._wake_pending = False
            waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def close(self) -> None:
        """Hand over what is batched, let the writer drain its queue, finish
        and rename its file; blocks until it has."""
        self._submit()
        self.writer.q.put(Writer.STOP)
        self.writer.join()


# ---------------------------------------------------------------- worker

def run_worker(index: int) -> int:
    """Serve until SIGTERM/SIGINT; runs in each worker process."""
    import asyncio

    import uvloop
    from aiohttp import web
    from aiohttp.web_exceptions import HTTPRequestEntityTooLarge

    logging.getLogger("aiohttp.server").addFilter(_DropBadRequests())
    host, port = bind_address()
    record = recording()
    folder = output_dir()
    rotate_bytes = env_int("BLACKHOLE_ROTATE_BYTES", 128 << 20, 1)
    rotate_s = float(env_int("BLACKHOLE_ROTATE_SECONDS", 60, 1))
    start_ms = int(time.time() * 1000)
    pid = os.getpid()
    id_prefix = f"bh-{start_ms}-{pid}-"
    counter = 0
    encode = _make_encoder()
    Response = web.Response
    if record:
        os.makedirs(folder, exist_ok=True)

    async def serve() -> None:
        nonlocal counter
        loop = asyncio.get_running_loop()
        recorder = (Recorder(loop, folder, f"bh-{start_ms}-{pid}-{index}", rotate_bytes, rotate_s)
                    if record else None)

        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            nonlocal counter
            headers = request.headers
            if "Expect" in headers:     # what aiohttp's router does for web.Application
                if request.content_length is not None and request.content_length > MAX_BODY:
                    return Response(status=413)
                if headers["Expect"].lower() == "100-continue" and request.version >= (1, 1):
                    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            try:
                body = await request.read()
            except HTTPRequestEntityTooLarge:
                return Response(status=413)
            except Exception:           # the client hung up mid-body or sent a bad body
                return Response(status=400)
            if recorder is None:
                return Response()

            rid = headers.get("X-Request-ID")
            if rid:
                rid = rid.encode("utf-8", "surrogateescape")
                if not rid.isascii():
                    rid = _utf8(rid)
            else:
                counter += 1
                rid = f"{id_prefix}{counter}".encode()
            uri = request.raw_path.encode("utf-8", "surrogateescape")
            if not uri.isascii():
                uri = _utf8(uri)
            rec = encode(rid, request.method.encode(), uri, header_block(request.raw_headers), body)
            if recorder.full():
                await recorder.wait_room()
            recorder.put(rec)
            return Response()

        server = web.Server(handle, access_log=None, auto_decompress=False)
        runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=GRACE_S)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_port=True, backlog=1024)
        await site.start()  # raises if the address cannot be bound

        stop = asyncio.Event()
        for sig in HANDLED_SIGNALS:
            loop.add_signal_handler(sig, stop.set)
        log.info("worker %d serving on %s:%d; %s", index, host, port,
                 f"recording to {folder}" if record else "RECORD=0: not recording")

        await stop.wait()
        log.info("stopping (grace %.1f s)", GRACE_S)
        # Stop listening, let requests in flight finish; the writer keeps
        # writing meanwhile, so requests waiting for room get it.
        try:
            await asyncio.wait_for(runner.cleanup(), GRACE_S)
        except asyncio.TimeoutError:
            log.warning("requests still in flight after %.1f s; cancelling them", GRACE_S)
        if recorder is not None:
            recorder.close()
            log.info("recorder closed: %d records in %d files", recorder.writer.records,
                     recorder.writer.files)
        log.info("stopped")

    uvloop.run(serve())
    return 0


# ------------------------------------------------------------ supervisor

def supervise(n: int) -> int:
    """Start n workers, forward stop signals, exit once they have stopped."""
    watched = HANDLED_SIGNALS | {signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)

    # Workers also get SIGTERM if the supervisor itself dies (Linux prctl).
    try:
        import ctypes
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        prctl = None

    def unblock() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, watched)
        if prctl is not None:
            prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG

    argv = [sys.executable, os.path.abspath(__file__), "--worker"]
    workers: dict[int, subprocess.Popen] = {}
    for i in range(n):
        env = dict(os.environ, BLACKHOLE_WORKER=str(i))
        p = subprocess.Popen(argv, env=env, preexec_fn=unblock)
        workers[p.pid] = p
    host, port = bind_address()
    log.info("supervisor started %d workers on %s:%d", n, host, port)

    stopping = False
    failed = False
    deadline = None

    def stop_all() -> None:
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
                if not failed:
                    log.error("worker %d exited with code %s; stopping", pid, rc)
                failed = True
            if not stopping:
                stopping = True
                deadline = time.monotonic() + KILL_AFTER_S
                stop_all()
        if not workers:
            break

        timeout = 1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        if deadline is not None and timeout == 0.0:
            log.warning("%d worker(s) still running after %.1f s; killing", len(workers), KILL_AFTER_S)
            for p in workers.values():
                p.kill()
            for p in workers.values():
                p.wait()
            workers.clear()
            failed = True
            break
        info = signal.sigtimedwait(watched, timeout)
        if info is not None and info.si_signo in HANDLED_SIGNALS and not stopping:
            log.info("received %s; stopping workers", signal.Signals(info.si_signo).name)
            stopping = True
            deadline = time.monotonic() + KILL_AFTER_S
            stop_all()

    log.info("stopped")
    return 1 if failed else 0


def main() -> int:
    setup_logging()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # fbr/
    if "--worker" in sys.argv[1:]:
        return run_worker(env_int("BLACKHOLE_WORKER", 0, 0))
    n = cpu_count()
    if n == 1:
        return run_worker(0)
    return supervise(n)


if __name__ == "__main__":
    sys.exit(main())
