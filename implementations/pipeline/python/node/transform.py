"""The contract's transform: T(x) = SHA-256 applied ROUNDS times."""
from __future__ import annotations

from hashlib import sha256
from itertools import repeat
from typing import Callable


def make_transform(rounds: int) -> Callable[[bytes], bytes]:
    """T(x): h1 = SHA-256(x), h(k+1) = SHA-256(h(k)); returns h(rounds) (32 bytes).

    CPU-bound and run on the event loop: hashlib only releases the GIL for
    inputs of 2 KiB and more, so a thread would not run it in parallel; the
    loop keeps the call overhead down (bound names, itertools.repeat)."""
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    more = rounds - 1

    def transform(data: bytes) -> bytes:
        d = sha256(data).digest()
        for _ in repeat(None, more):
            d = sha256(d).digest()
        return d

    return transform
