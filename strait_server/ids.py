"""Prefixed, time-sortable identifiers: proj_, key_, job_, run_ (48-bit ms time + 80 random bits).

The 128 bits are written in lower-case Crockford base32 (26 characters), so ids sort by creation time.
"""

from __future__ import annotations

import base64
import os
import time

# Standard base32 digits, value for value, to Crockford's (whose order matches ASCII order).
_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789abcdefghjkmnpqrstvwxyz")


def _encode(stamp: bytes, noise: bytes) -> str:
    return base64.b32encode(stamp + noise)[:26].translate(_TO_CROCKFORD).decode()


def new_id(prefix: str) -> str:
    stamp = int(time.time() * 1000).to_bytes(6, "big")
    return f"{prefix}_{_encode(stamp, os.urandom(10))}"


def new_ids(prefix: str, count: int) -> list[str]:
    stamp = int(time.time() * 1000).to_bytes(6, "big")
    noise = os.urandom(10 * count)
    return [f"{prefix}_{_encode(stamp, noise[i * 10:(i + 1) * 10])}" for i in range(count)]
