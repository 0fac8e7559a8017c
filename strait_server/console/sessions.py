"""Console sign-ins: an opaque session id in an HttpOnly, SameSite=Strict cookie names the API key it signed in
with, kept in this process's memory only (a key never reaches the browser, a log or another process)."""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

COOKIE = "strait_console"


@dataclass
class ConsoleSession:
    id: str
    api_key: str
    # The key's project ("" for the admin key, which manages projects and keys only).
    project_id: str
    project_slug: str
    is_admin: bool
    expires: float  # time.monotonic()
    # Submitted with every form and sent by htmx with every request that changes something.
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    # What the next page shows once, after a redirect: a new API key's secret, by "<project id>/<key id>".
    shown_once: dict[str, str] = field(default_factory=dict)

    def csrf_matches(self, token: str) -> bool:
        return hmac.compare_digest(self.csrf.encode(), token.encode())


class SessionStore:
    """At most `limit` sessions, each living `ttl_s` from its last use; the least recently used go first."""

    def __init__(self, ttl_s: float, limit: int = 10_000) -> None:
        self._ttl = ttl_s
        self._limit = limit
        self._sessions: OrderedDict[str, ConsoleSession] = OrderedDict()

    def create(self, api_key: str, project_id: str, project_slug: str, is_admin: bool) -> ConsoleSession:
        self._expire()
        while len(self._sessions) >= self._limit:
            self._sessions.popitem(last=False)
        session = ConsoleSession(secrets.token_urlsafe(32), api_key, project_id, project_slug, is_admin,
                                 time.monotonic() + self._ttl)
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str) -> ConsoleSession | None:
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = time.monotonic()
        if session.expires <= now:
            del self._sessions[session_id]
            return None
        session.expires = now + self._ttl
        self._sessions.move_to_end(session_id)
        return session

    def drop(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if oldest.expires > now:
                break
            del self._sessions[oldest.id]
