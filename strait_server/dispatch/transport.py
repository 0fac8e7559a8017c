"""A lean HTTP/1.1 client for endpoint POSTs: keep-alive connections per origin, parsed by httptools.

Dispatch needs little of a general HTTP client (one POST with a body; no redirects, cookies or proxies),
and aiohttp's generality cost ~110 us of CPU per request on uvloop against ~20 us here: at thousands of
runs per second that was the largest item of a dispatcher's profile. What it does:

- one pool of idle connections per (scheme, host, port), reused newest first and dropped after
  KEEPALIVE_S idle or when the endpoint says `Connection: close`;
- a request that fails on a reused connection before any byte of the answer arrived (the endpoint closed
  it while idle) is sent once more on a new connection;
- answers framed by Content-Length, chunked encoding or the end of the connection; 1xx answers skipped;
  gzip and deflate bodies decoded; bodies kept up to a cap (the rest ends the connection);
- names resolved through a cached `Resolver`, which refuses private addresses unless they are allowed.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

from strait_server.endpoints import Resolver

KEEPALIVE_S = 15.0  # an idle connection older than this is not reused (many servers close at 15-60 s)
MAX_IDLE_PER_ORIGIN = 256
_BAD_HEADER_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token


class EndpointError(OSError):
    """The endpoint could not be reached, or its answer was not HTTP."""


class _Retry(EndpointError):
    """A reused connection failed before any answer: safe to send once more on a new one."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes  # at most max_body + 1 bytes: one more than allowed tells that it was cut
    truncated: bool


@dataclass(frozen=True, slots=True)
class _Target:
    origin: tuple[str, str, int]
    host: str  # for the socket: brackets stripped
    port: int
    tls: bool
    head: bytes  # request line and Host header


class _Connection(asyncio.Protocol):
    """One keep-alive connection; serves one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Response] | None = None
        self._cap = 0
        self._begin()

    def _begin(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._answered = False  # any byte of the answer arrived
        self._headers_done = False
        self._framed = False  # Content-Length or chunked: the end is known without closing
        self._encoding = b""

    async def send(self, data: bytes, cap: int) -> Response:
        assert self.transport is not None
        self._begin()
        self._cap = cap
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self._waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._answered = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(EndpointError(f"malformed HTTP answer: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is None or self._waiter.done():
            return
        if self._headers_done and not self._framed:
            self._finish(keep_alive=False)  # an answer delimited by the end of the connection
        elif not self._answered and self.reused:
            self._fail(_Retry("the endpoint closed an idle connection"))
        else:
            self._fail(EndpointError(f"the endpoint closed the connection ({exc or 'no answer'})"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if lname == b"content-length" or (lname == b"transfer-encoding" and b"chunked" in value.lower()):
            self._framed = True
        elif lname == b"content-encoding":
            self._encoding = value.strip().lower()

    def on_headers_complete(self) -> None:
        self._headers_done = True
        status = self._parser.get_status_code()
        if status in (204, 304) or 100 <= status < 200:
            self._framed = True  # no body by definition

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._size += len(body)
        # Beyond the cap (a compressed body gets room to decode into it), the rest is not wanted: end the
        # connection instead of reading it.
        if self._size > (self._cap * 16 + 65_536 if self._encoding else self._cap):
            self._finish(keep_alive=False)
            self.close()

    def on_message_complete(self) -> None:
        if 100 <= self._parser.get_status_code() < 200:
            self._begin()  # an interim answer (103 Early Hints and the like): the real one follows
            self._answered = True
            return
        self._finish(keep_alive=self._parser.should_keep_alive())

    def _finish(self, *, keep_alive: bool) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        body = b"".join(self._chunks)
        if self._encoding in (b"gzip", b"x-gzip", b"deflate"):
            body = _decoded(body, self._cap + 1)
        if not keep_alive:
            self.closed = True
        waiter.set_result(Response(self._parser.get_status_code(), body[: self._cap + 1], len(body) > self._cap))
        self._waiter = None

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self._waiter = None


def _decoded(body: bytes, limit: int) -> bytes:
    try:
        return zlib.decompressobj(wbits=47).decompress(body, limit)  # 47: zlib or gzip header, detected
    except zlib.error:
        try:
            return zlib.decompressobj(wbits=-15).decompress(body, limit)  # raw deflate, as some servers send
        except zlib.error:
            return body


class EndpointClient:
    def __init__(self, resolver: Resolver, ssl_context: ssl.SSLContext | None = None) -> None:
        self._resolver = resolver
        self._ssl = ssl_context or ssl.create_default_context()
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._targets: dict[str, _Target] = {}
        self._prune_timer: asyncio.TimerHandle | None = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], *, budget_s: float,
                   max_body: int) -> Response:
        """POSTs `body` and reads the answer within `budget_s` seconds. Raises TimeoutError, EndpointError (an
        OSError) when the endpoint is unreachable or does not speak HTTP, and ValueError for a URL or header
        it cannot send."""
        target = self._target(url)
        request = target.head + _header_block(headers, len(body)) + body
        async with asyncio.timeout(budget_s):
            conn = await self._acquire(target)
            try:
                response = await self._send(conn, request, max_body)
            except _Retry:
                conn = await self._connect(target)
                response = await self._send(conn, request, max_body)
        self._release(target, conn)
        return response

    async def _send(self, conn: _Connection, request: bytes, max_body: int) -> Response:
        try:
            return await conn.send(request, max_body)
        except BaseException:
            conn.close()  # cancelled (timed out) or failed mid-answer: never reusable
            self._open.discard(conn)
            raise

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) > 10_000:
                self._targets.clear()
            self._targets[url] = target = _parse(url)
        return target

    async def _acquire(self, target: _Target) -> _Connection:
        idle = self._idle.get(target.origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < KEEPALIVE_S:
                conn.reused = True
                return conn
            conn.close()
            self._open.discard(conn)
        return await self._connect(target)

    async def _connect(self, target: _Target) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            addresses = await self._resolver.resolve(target.host, target.port)
        except OSError as exc:  # refused (a private address) or not found
            raise EndpointError(str(exc)) from exc
        error: Exception | None = None
        for family, address in addresses:
            try:
                _, conn = await loop.create_connection(
                    _Connection, address, target.port, family=family,
                    ssl=self._ssl if target.tls else None, server_hostname=target.host if target.tls else None)
            except (OSError, ssl.SSLError) as exc:
                error = exc
                continue
            self._open.add(conn)
            return conn
        raise EndpointError(f"cannot connect to {target.host}:{target.port}: {error}")

    def _release(self, target: _Target, conn: _Connection) -> None:
        if conn.closed:
            conn.close()
            self._open.discard(conn)
            return
        conn.idle_since = time.monotonic()
        idle = self._idle.setdefault(target.origin, [])
        idle.append(conn)
        if len(idle) > MAX_IDLE_PER_ORIGIN:
            oldest = idle.pop(0)
            oldest.close()
            self._open.discard(oldest)
        if self._prune_timer is None:
            self._prune_timer = asyncio.get_running_loop().call_later(KEEPALIVE_S, self._prune)

    def _prune(self) -> None:
        """Closes connections idle past KEEPALIVE_S, so that an endpoint no longer dispatched to is not held
        open; comes back when the oldest remaining one reaches that age."""
        self._prune_timer = None
        now = time.monotonic()
        for origin, idle in list(self._idle.items()):
            keep = [c for c in idle if not c.closed and now - c.idle_since < KEEPALIVE_S]
            for conn in idle:
                if conn not in keep:
                    conn.close()
                    self._open.discard(conn)
            if keep:
                self._idle[origin] = keep
            else:
                del self._idle[origin]
        if self._idle:
            oldest = min(c.idle_since for idle in self._idle.values() for c in idle)
            self._prune_timer = asyncio.get_running_loop().call_later(
                max(oldest + KEEPALIVE_S - now, 0.001), self._prune)

    async def close(self) -> None:
        if self._prune_timer is not None:
            self._prune_timer.cancel()
            self._prune_timer = None
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()


def _parse(url: str) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url[:200]!r}")
    tls = parts.scheme == "https"
    default_port = 443 if tls else 80
    port = parts.port or default_port
    host = parts.hostname  # lower-cased, brackets stripped
    if not host.isascii():
        host = host.encode("idna").decode("ascii")  # the Host header and TLS name want the ASCII form
    authority = f"[{host}]" if ":" in host else host
    if port != default_port:
        authority = f"{authority}:{port}"
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    if _BAD_HEADER_VALUE.search(path) or " " in path:
        raise ValueError("the URL path holds spaces or control characters")
    head = f"POST {path} HTTP/1.1\r\nHost: {authority}\r\n".encode()
    return _Target(origin=(parts.scheme, host, port), host=host, port=port, tls=tls, head=head)


def _header_block(headers: Mapping[str, str], length: int) -> bytes:
    lines = []
    for name, value in headers.items():
        if _BAD_HEADER_VALUE.search(value) or not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"header {name!r} holds characters HTTP does not allow")
        lines.append(f"{name}: {value}\r\n")
    lines.append(f"Content-Length: {length}\r\n\r\n")
    return "".join(lines).encode()
