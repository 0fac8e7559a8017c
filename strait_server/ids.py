"""Prefixed, time-sortable identifiers: proj_, key_, job_, run_ (48-bit ms time + 80 random bits)."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def _encode(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def new_id(prefix: str) -> str:
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return f"{prefix}_{_encode(value, 26)}"


def new_ids(prefix: str, count: int) -> list[str]:
    return [new_id(prefix) for _ in range(count)]
