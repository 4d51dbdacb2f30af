"""pipeline node: plays A, B or C of the scenario's three-node pipeline,
chosen by LANGBENCH_NODE (see scenarios/pipeline/README.md).

  A  HTTP/1.1 (aiohttp) -> Forward streams to B
  B  pipeline.Stage (grpc.aio) -> Forward streams to C
  C  pipeline.Stage (grpc.aio) -> the ledger (group commit, fdatasync)

One process per node, one asyncio event loop (uvloop by default). CPython
runs Python code on one CPU at a time and the node's state (what it holds,
C's committed ids) lives in that process, so a node does not fork workers;
the harness gives each node one CPU's quota.

Environment: LANGBENCH_NODE, HOST, PORT, ROUNDS, MAX_INFLIGHT, MAX_PAYLOAD,
NEXT (A, B), LEDGER_FILE (C); optional PIPELINE_STREAMS (Forward streams to
the next node, default 4) and PIPELINE_EVENT_LOOP (uvloop | asyncio).
SIGTERM/SIGINT: the node's graceful stop (exit 0 within 5 s).
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "gen"))   # pipeline_pb2, pipeline_pb2_grpc

from node.config import Config  # noqa: E402

log = logging.getLogger("pipeline")


async def run(cfg: Config) -> int:
    if cfg.node == "a":
        from node.entry import EntryNode
        node = EntryNode(cfg)
    elif cfg.node == "b":
        from node.stage import MiddleNode
        node = MiddleNode(cfg)
    else:
        from node.stage import CommitNode
        node = CommitNode(cfg)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    await node.start()
    # What is loaded by now lives as long as the process (C: the committed
    # ids): keep it out of the cyclic GC's generations.
    gc.freeze()
    await stop.wait()
    log.info("node %s: stopping", cfg.node)
    await node.stop()
    return 0


def main() -> int:
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO,
        format=f"%(asctime)s %(levelname)s [node {os.environ.get('LANGBENCH_NODE', '?')} "
               f"pid {os.getpid()}] %(name)s: %(message)s")
    cfg = Config.from_env()
    if cfg.event_loop == "uvloop":
        import uvloop
        return uvloop.run(run(cfg))
    return asyncio.run(run(cfg))


if __name__ == "__main__":
    sys.exit(main())
