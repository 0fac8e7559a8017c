"""Page sizes and opaque, HMAC-signed keyset page tokens (AIP-158)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol, TypeVar

from strait_server.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument([FieldViolation("page_size", "must not be negative")])
    return DEFAULT_PAGE_SIZE if requested == 0 else min(requested, MAX_PAGE_SIZE)


class PageTokens:
    def __init__(self, key: str) -> None:
        self._key = hashlib.sha256(b"strait-page-token:" + key.encode()).digest()

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:16]

    def encode(self, create_time: datetime, item_id: str, filter_fingerprint: str) -> str:
        body = json.dumps([create_time.isoformat(), item_id, filter_fingerprint],
                          separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(self._mac(body) + body).decode().rstrip("=")

    def decode(self, token: str, filter_fingerprint: str) -> tuple[datetime, str] | None:
        if not token:
            return None
        bad = InvalidArgument([FieldViolation("page_token", "is not a token this server issued")])
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError):
            raise bad from None
        mac, body = raw[:16], raw[16:]
        if len(raw) < 17 or not hmac.compare_digest(mac, self._mac(body)):
            raise bad
        try:
            when, item_id, fingerprint = json.loads(body)
            created = datetime.fromisoformat(when)
        except (ValueError, TypeError):
            raise bad from None
        if fingerprint != filter_fingerprint:
            raise InvalidArgument([FieldViolation("page_token", "was issued for a different filter")])
        return created, str(item_id)


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, default=str, sort_keys=True).encode()).hexdigest()[:16]


class Keyed(Protocol):
    @property
    def create_time(self) -> datetime: ...
    @property
    def id(self) -> str: ...


K = TypeVar("K", bound=Keyed)
Cursor = tuple[datetime, str] | None


async def keyset_page(tokens: PageTokens, page_token: str, fingerprint_: str, size: int,
                      fetch: Callable[[Cursor, int], Awaitable[list[K]]]) -> tuple[list[K], str]:
    """One page of a list ordered by (create_time, id): the items, and the token of the next page ("" at the
    end). `fetch(cursor, limit)` reads up to `limit` items after the cursor."""
    items = await fetch(tokens.decode(page_token, fingerprint_), size + 1)
    if len(items) <= size:
        return items, ""
    items = items[:size]
    return items, tokens.encode(items[-1].create_time, items[-1].id, fingerprint_)
