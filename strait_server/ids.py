"""Prefixed, time-sortable identifiers: proj_, key_, job_, run_, disp_ (48-bit ms time + 72 random bits).

The 120 bits are written in lower-case Crockford base32 (24 characters), so ids sort by creation time.
120 bits is a whole number of base32 blocks, which lets a batch of ids be encoded in one call.
"""

from __future__ import annotations

import base64
import os
import time

# Standard base32 digits, value for value, to Crockford's (whose order matches ASCII order).
_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789abcdefghjkmnpqrstvwxyz")
_RAW = 15  # bytes per id
_TEXT = 24  # characters per id


def new_id(prefix: str) -> str:
    return new_ids(prefix, 1)[0]


def new_ids(prefix: str, count: int) -> list[str]:
    stamp = int(time.time() * 1000).to_bytes(6, "big")
    noise = os.urandom(9 * count)
    raw = b"".join(stamp + noise[i * 9:(i + 1) * 9] for i in range(count))
    text = base64.b32encode(raw).translate(_TO_CROCKFORD).decode()
    return [f"{prefix}_{text[i * _TEXT:(i + 1) * _TEXT]}" for i in range(count)]
