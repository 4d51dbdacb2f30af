"""events-kafka server: POST /fire/{id} produces a Kafka event (aiohttp + aiokafka).

CPython runs Python code on one CPU per process, so the server starts
N = LANGBENCH_CPUS worker processes (default: the CPUs in its affinity set),
each an aiohttp server on its own asyncio event loop with its own Kafka
producer, all bound to the same HOST:PORT with SO_REUSEPORT; the kernel
spreads incoming connections across them. The parent only supervises: it
forwards SIGTERM/SIGINT and exits 0 once every worker has stopped. With N = 1
the single worker runs in this process, no supervisor.

Environment: HOST (default 127.0.0.1), PORT (required), KAFKA_BOOTSTRAP
(default 127.0.0.1:9092), KAFKA_TOPIC (default testing-topic),
LANGBENCH_CPUS (optional).
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

log = logging.getLogger("events-kafka")

DELIVERY_TIMEOUT_S = 5.0   # no broker acknowledgement within this: 503
MAX_REASON_BYTES = 1024    # UTF-8 length of "reason"
U64_MAX = 2**64 - 1
GRACE_S = 2.5              # in-flight requests get this long after SIGTERM
FLUSH_S = 1.0              # then the producer gets this long to flush and close
KILL_AFTER_S = 4.5         # the supervisor's hard limit for its workers
RECONNECT_S = 1.0          # pause between attempts to reach the broker at start-up
REPORT_EVERY_S = 10.0      # delivery failures are logged as a count, not per request
HANDLED_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def setup_logging() -> None:
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO,
        format=f"%(asctime)s %(levelname)s [pid {os.getpid()}] %(name)s: %(message)s")


def cpu_count() -> int:
    env = os.environ.get("LANGBENCH_CPUS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            raise SystemExit(f"LANGBENCH_CPUS must be an integer, got {env!r}")
        if n < 1:
            raise SystemExit(f"LANGBENCH_CPUS must be >= 1, got {n}")
        return n
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def bind_address() -> tuple[str, int]:
    host = os.environ.get("HOST", "127.0.0.1")
    port = os.environ.get("PORT")
    if not port:
        raise SystemExit("PORT is not set")
    try:
        return host, int(port)
    except ValueError:
        raise SystemExit(f"PORT must be an integer, got {port!r}")


# ---------------------------------------------------------------- worker

def run_worker() -> int:
    """Serve until SIGTERM/SIGINT; runs in each worker process."""
    import asyncio

    import orjson
    import uvloop
    from aiohttp import web
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    host, port = bind_address()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    topic = os.environ.get("KAFKA_TOPIC", "testing-topic")

    class Kafka:
        """The worker's producer. Start-up does not need the broker: the
        producer is (re)started in the background until it reaches it, and
        requests wait for it within their own 5 s delivery deadline."""

        def __init__(self) -> None:
            self.producer: AIOKafkaProducer | None = None
            self.ready = asyncio.Event()
            self.failures = 0
            self._tasks: list[asyncio.Task] = []

        def new_producer(self) -> AIOKafkaProducer:
            return AIOKafkaProducer(
                bootstrap_servers=bootstrap,
                acks=1,
                compression_type=None,
                enable_idempotence=False,
                # The contract's linger for every implementation: 0, send at
                # once (records queued while a request is in flight form the
                # next batch).
                linger_ms=0,
                # Also the batch expiry in aiokafka: a batch not acknowledged
                # within it fails instead of being retried further.
                request_timeout_ms=int(DELIVERY_TIMEOUT_S * 1000),
            )

        def start(self) -> None:
            self._tasks = [asyncio.create_task(self._connect()),
                           asyncio.create_task(self._report())]

        async def _connect(self) -> None:
            attempt = 0
            while True:
                producer = self.new_producer()
                try:
                    await producer.start()
                except Exception as exc:  # KafkaConnectionError, mostly
                    if attempt % 30 == 0:
                        log.warning("Kafka at %s not reachable yet (%s); retrying every %.0f s",
                                    bootstrap, exc, RECONNECT_S)
                    attempt += 1
                    await producer.stop()
                    await asyncio.sleep(RECONNECT_S)
                    continue
                break
            self.producer = producer
            self.ready.set()
            log.info("Kafka producer connected to %s", bootstrap)
            try:  # fetch the topic's metadata now rather than on the first request
                await producer.partitions_for(topic)
            except KafkaError as exc:
                log.warning("no metadata for topic %r yet: %r", topic, exc)

        async def _report(self) -> None:
            while True:
                await asyncio.sleep(REPORT_EVERY_S)
                if self.failures:
                    log.warning("%d event(s) not delivered (503) in the last %.0f s",
                                self.failures, REPORT_EVERY_S)
                    self.failures = 0

        async def send(self, key: bytes, value: bytes) -> None:
            await self.ready.wait()
            await self.producer.send_and_wait(topic, value, key=key)

        async def close(self) -> None:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self.producer is not None:
                try:
                    await asyncio.wait_for(self.producer.stop(), FLUSH_S)
                except asyncio.TimeoutError:
                    log.warning("producer did not flush within %.1f s", FLUSH_S)

    kafka = Kafka()

    def bad_request(text: str) -> web.Response:
        return web.Response(status=400, text=text)

    async def fire(request: web.Request) -> web.Response:
        raw_id = request.match_info["id"]
        # Decimal digits only (no sign, no spaces, no other Unicode digits).
        if not (raw_id.isascii() and raw_id.isdigit()):
            return web.Response(status=404, text="id is not an unsigned 64-bit integer")
        try:
            event_id = int(raw_id)
        except ValueError:  # more digits than int() accepts
            event_id = U64_MAX + 1
        if event_id > U64_MAX:
            return web.Response(status=404, text="id is not an unsigned 64-bit integer")

        try:
            doc = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return bad_request("body is not valid JSON")
        if type(doc) is not dict:
            return bad_request("body is not a JSON object")
        reason = doc.get("reason")
        if type(reason) is not str:
            return bad_request("reason is missing or not a string")
        if len(reason.encode()) > MAX_REASON_BYTES:
            return bad_request(f"reason is longer than {MAX_REASON_BYTES} bytes")

        # orjson writes compact UTF-8 JSON in insertion order: {"id":..,"reason":..}
        value = orjson.dumps({"id": event_id, "reason": reason})
        try:
            async with asyncio.timeout(DELIVERY_TIMEOUT_S):
                await kafka.send(str(event_id).encode(), value)
        except (TimeoutError, KafkaError):
            kafka.failures += 1
            return web.Response(status=503, text="event not acknowledged by Kafka")
        return web.Response()

    async def serve() -> None:
        app = web.Application()
        app.router.add_post("/fire/{id}", fire)
        # No access log (aiohttp would log every request at INFO).
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               shutdown_timeout=GRACE_S)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_port=True, backlog=1024)
        await site.start()  # raises if the address cannot be bound

        kafka.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in HANDLED_SIGNALS:
            loop.add_signal_handler(sig, stop.set)
        log.info("serving POST /fire/{id} on %s:%d -> Kafka %s topic %r",
                 host, port, bootstrap, topic)

        await stop.wait()
        log.info("stopping (grace %.1f s, flush %.1f s)", GRACE_S, FLUSH_S)
        # Stop listening, let in-flight requests finish, then flush the producer.
        # aiohttp's shutdown_timeout applies twice (wait, then wait for the
        # cancelled handler), so the whole step is bounded here as well; any
        # handler still running is cancelled when the event loop closes.
        try:
            await asyncio.wait_for(runner.cleanup(), GRACE_S)
        except asyncio.TimeoutError:
            log.warning("requests still in flight after %.1f s; cancelling them", GRACE_S)
        await kafka.close()
        log.info("stopped")

    uvloop.run(serve())
    return 0


# ------------------------------------------------------------ supervisor

def supervise(n: int) -> int:
    """Start n workers, forward stop signals, exit once they have stopped."""
    # Signals are taken synchronously with sigtimedwait: block them here and
    # unblock them in each child before it execs.
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
        env = dict(os.environ, LANGBENCH_WORKER=str(i))
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
        # Reap whatever has exited.
        for pid, p in list(workers.items()):
            rc = p.poll()
            if rc is None:
                continue
            del workers[pid]
            if not stopping:
                log.error("worker %d exited unexpectedly (code %s); stopping", pid, rc)
                failed = True
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
    if "--worker" in sys.argv[1:]:
        return run_worker()
    n = cpu_count()
    if n == 1:
        return run_worker()
    return supervise(n)


if __name__ == "__main__":
    sys.exit(main())
