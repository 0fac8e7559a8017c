"""Prefixed, time-sortable identifiers: proj_, key_, job_, run_, disp_ (48-bit ms time + 72 random bits).

The 120 bits are written in lower-case Crockford base32 (24 characters), so ids sort by creation time.
"""

from __future__ import annotations

import os
import time

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford's base32, in ASCII order
# Ten bits at a time: 1,024 two-character strings. A batch of 1,000 ids is encoded in half the time
# base64.b32encode (pure Python) takes.
_PAIRS = [a + b for a in ALPHABET for b in ALPHABET]


def new_id(prefix: str) -> str:
    return new_ids(prefix, 1)[0]


def new_ids(prefix: str, count: int) -> list[str]:
    return encode(prefix, int(time.time() * 1000), os.urandom(9 * count))


def encode(prefix: str, stamp_ms: int, noise: bytes) -> list[str]:
    """One id per 9 bytes of `noise`, all stamped `stamp_ms`: bits 119-72 the stamp, 71-0 the noise."""
    p = _PAIRS
    # The first 40 bits (8 characters) are the stamp's alone; the next 80 are its low 8 bits and the noise.
    head = f"{prefix}_" + "".join(p[(stamp_ms >> shift) & 1023] for shift in (38, 28, 18, 8))
    low = (stamp_ms & 0xFF) << 72
    out = []
    for i in range(0, len(noise), 9):
        n = low | int.from_bytes(noise[i:i + 9], "big")
        out.append(head + p[n >> 70] + p[(n >> 60) & 1023] + p[(n >> 50) & 1023] + p[(n >> 40) & 1023]
                   + p[(n >> 30) & 1023] + p[(n >> 20) & 1023] + p[(n >> 10) & 1023] + p[n & 1023])
    return out
