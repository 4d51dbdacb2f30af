"""The node's settings, read once from the environment (see the scenario's README)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

# An operation id: 1 to 128 characters of A-Z a-z 0-9 . _ : -
valid_id = re.compile(r"[A-Za-z0-9._:\-]{1,128}").fullmatch


def _int(name: str, default: int | None, minimum: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        if default is None:
            raise SystemExit(f"{name} is not set")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}")
    if value < minimum:
        raise SystemExit(f"{name} must be >= {minimum}, got {value}")
    return value


def _target(name: str) -> str:
    raw = os.environ.get(name, "").strip()
    if not raw:
        raise SystemExit(f"{name} is not set (host:port of the next node)")
    return raw


@dataclass(frozen=True)
class Config:
    node: str               # "a", "b" or "c"
    host: str
    port: int
    rounds: int             # SHA-256 rounds of the transform
    max_inflight: int       # operations this node holds at once
    max_payload: int        # largest body node A accepts
    next: str | None        # A, B: host:port of the next node
    ledger: str | None      # C: the ledger's path
    streams: int            # A, B: Forward streams to the next node
    event_loop: str         # "uvloop" or "asyncio"

    @classmethod
    def from_env(cls) -> "Config":
        node = os.environ.get("LANGBENCH_NODE", "").strip().lower()
        if node not in ("a", "b", "c"):
            raise SystemExit(f"LANGBENCH_NODE must be a, b or c, got {node!r}")
        loop = os.environ.get("PIPELINE_EVENT_LOOP", "uvloop").strip() or "uvloop"
        if loop not in ("uvloop", "asyncio"):
            raise SystemExit(f"PIPELINE_EVENT_LOOP must be uvloop or asyncio, got {loop!r}")
        ledger = None
        if node == "c":
            ledger = os.environ.get("LEDGER_FILE", "").strip()
            if not ledger:
                raise SystemExit("LEDGER_FILE is not set")
        return cls(
            node=node,
            host=os.environ.get("HOST", "").strip() or "127.0.0.1",
            port=_int("PORT", None, 0),
            rounds=_int("ROUNDS", 100, 1),
            max_inflight=_int("MAX_INFLIGHT", 2000, 1),
            max_payload=_int("MAX_PAYLOAD", 65536, 0),
            next=_target("NEXT") if node in ("a", "b") else None,
            ledger=ledger,
            streams=_int("PIPELINE_STREAMS", 4, 1),
            event_loop=loop,
        )

    def grpc_address(self) -> str:
        host = self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.port}"
