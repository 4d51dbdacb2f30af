"""Request bodies derived from a request id, shared by httpload (Rust,
tools/grpcload/src/http.rs `put_body`) and the scenarios' checks that
regenerate them (blackhole, pipeline): the id, a colon, and a slice of a
fixed 4 MiB pool of xorshift32 output at an offset derived from the id.
Byte-identical to httpload's bodies (tests/test_blackhole.py and the Rust
unit test `pool_and_bodies_match_blackhole_py` pin both to the same values).
"""
from __future__ import annotations

import array
import sys

POOL_BYTES = 4 << 20
POOL_SEED = 2463534242
LOAD_BODY = 2048
_pool: bytes | None = None


def pool() -> bytes:
    """4 MiB of xorshift32 output (Marsaglia's 13/17/5), little-endian words."""
    global _pool
    if _pool is None:
        words = array.array("I", bytes(POOL_BYTES))
        x, m = POOL_SEED, 0xFFFFFFFF
        for i in range(POOL_BYTES // 4):
            x ^= (x << 13) & m
            x ^= x >> 17
            x ^= (x << 5) & m
            words[i] = x
        if sys.byteorder != "little":
            words.byteswap()
        _pool = words.tobytes()
    return _pool


def body_for(rid: str, size: int) -> bytes:
    """The body of request `rid` (NONCE-THREAD-N) of `size` bytes: the id, a
    colon, and a slice of the pool at an offset derived from THREAD and N."""
    _, tid, n = rid.rsplit("-", 2)
    head = rid.encode() + b":"
    if size <= len(head):
        return head[:size]
    off = (int(n) * 4099 + int(tid) * 65537) % (POOL_BYTES - LOAD_BODY)
    rest = size - len(head)
    p = pool()
    out = p[off:off + rest]
    while len(out) < rest:                    # bodies over the pool's size (the 1 MiB case) wrap around
        out += p[:rest - len(out)]
    return head + out
