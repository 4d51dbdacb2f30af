"""notes-grpc server: the Noticeboard service on grpc.aio.

CPython runs Python code on one CPU per process, so the server starts
N = LANGBENCH_CPUS worker processes (default: the CPUs in its affinity set),
each an asyncio gRPC server bound to the same HOST:PORT with SO_REUSEPORT;
the kernel spreads incoming connections across them. The parent only
supervises: it forwards SIGTERM/SIGINT and exits 0 once every worker has
stopped. With N = 1 the single worker runs in this process, no supervisor.

Environment: HOST (default 127.0.0.1), PORT (required), NOTES_FILE (required),
LANGBENCH_CPUS (optional).
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

log = logging.getLogger("notes-grpc")

GRACE_S = 3.0          # in-flight RPCs get this long after SIGTERM
KILL_AFTER_S = 4.5     # the supervisor's hard limit for its workers
HANDLED_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def setup_logging() -> None:
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO,
        format=f"%(asctime)s %(levelname)s [pid {os.getpid()}] %(message)s")


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


def bind_address() -> str:
    host = os.environ.get("HOST", "127.0.0.1")
    port = os.environ.get("PORT")
    if not port:
        raise SystemExit("PORT is not set")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


# ---------------------------------------------------------------- worker

def run_worker() -> int:
    """Serve until SIGTERM/SIGINT; runs in each worker process."""
    import asyncio
    import gc
    import json

    import grpc

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))
    import notes_pb2
    import notes_pb2_grpc

    notes_file = os.environ.get("NOTES_FILE")
    if not notes_file:
        raise SystemExit("NOTES_FILE is not set")
    address = bind_address()

    def load_indexes(path: str):
        with open(path, encoding="utf-8") as f:
            records = json.load(f)
        by_title: dict[str, notes_pb2.Note] = {}
        by_mail: dict[str, list[notes_pb2.Note]] = {}
        for rec in records:
            author = rec["author"]
            note = notes_pb2.Note(
                title=rec["title"], content=rec["content"],
                author=notes_pb2.Author(nickname=author["nickname"], mail=author["mail"]))
            by_title[note.title] = note
            by_mail.setdefault(note.author.mail, []).append(note)
        return len(records), by_title, {mail: tuple(ns) for mail, ns in by_mail.items()}

    class Noticeboard(notes_pb2_grpc.NoticeboardServicer):
        def __init__(self, by_title, by_mail):
            self._by_title = by_title
            self._by_mail = by_mail

        async def GetNoteByTitle(self, request, context):
            note = self._by_title.get(request.title)
            if note is None:
                await context.abort(grpc.StatusCode.NOT_FOUND,
                                    f"no note titled {request.title!r}")
            return note

        async def ListNotesByAuthor(self, request, context):
            for note in self._by_mail.get(request.mail, ()):
                yield note

    async def serve() -> None:
        try:
            count, by_title, by_mail = load_indexes(notes_file)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"cannot load NOTES_FILE {notes_file}: {type(exc).__name__}: {exc}")
        # The indexes live as long as the process: keep them out of the
        # cyclic GC's generations so collections do not rescan them.
        gc.freeze()

        server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
        notes_pb2_grpc.add_NoticeboardServicer_to_server(Noticeboard(by_title, by_mail), server)
        server.add_insecure_port(address)  # raises if the address cannot be bound

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in HANDLED_SIGNALS:
            loop.add_signal_handler(sig, stop.set)

        await server.start()
        log.info("serving %d notes by %d authors on %s", count, len(by_mail), address)
        await stop.wait()
        log.info("stopping (grace %.1f s)", GRACE_S)
        await server.stop(GRACE_S)

    asyncio.run(serve())
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
    log.info("supervisor started %d workers on %s", n, bind_address())

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
