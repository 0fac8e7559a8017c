"""The lean HTTP/1.1 endpoint client (strait_server/dispatch/transport.py) and its Resolver, against real
sockets: each test starts a small server on 127.0.0.1 that reads requests and writes exact raw answer bytes,
so every framing case (lengths, chunks, the end of the connection, interim answers, encodings, closes at
awkward moments) is under the test's control. Nothing waits by sleeping: servers record what they saw and
tests wait on those records (connections accepted, requests read, closes observed) with a deadline."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import random
import socket
import ssl
import struct
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field

import pytest
import trustme

from strait_server.dispatch import transport
from strait_server.dispatch.transport import EndpointClient, EndpointError, Response
from strait_server.endpoints import Resolver

DEADLINE = 5.0  # seconds any wait on the servers' records may take before the test fails
BUDGET = 5.0  # budget_s of requests that are expected to be answered


@dataclass(frozen=True)
class Request:
    line: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


class Peer:
    """The server side of one accepted connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.requests: list[Request] = []
        self.eof = asyncio.Event()  # the client closed its side: a read found the end of the stream
        self.closed = asyncio.Event()  # the server closed this connection and the close completed

    async def read_request(self) -> Request | None:
        """The next request, or None once the client closed the connection."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            assert not exc.partial, f"the connection ended inside a request head: {exc.partial!r}"
            self.eof.set()
            return None
        except ConnectionError:
            self.eof.set()
            return None
        line, *lines = head[:-4].decode("latin-1").split("\r\n")
        headers = []
        for raw in lines:
            name, sep, value = raw.partition(":")
            assert sep, f"not a header line: {raw!r}"
            headers.append((name, value.strip()))
        lengths = [int(value) for name, value in headers if name.lower() == "content-length"]
        body = await self.reader.readexactly(lengths[0]) if lengths else b""
        request = Request(line, headers, body)
        self.requests.append(request)
        return request

    async def send(self, *pieces: bytes) -> None:
        """Writes `pieces` one after the other, each flushed to the socket before the next."""
        for piece in pieces:
            self.writer.write(piece)
            await self.writer.drain()

    async def send_cut(self, data: bytes) -> None:
        """Writes `data` to a client that is expected to hang up before reading it all."""
        with suppress(ConnectionError):
            await self.send(data)

    def reset(self) -> None:
        """Ends the connection with a TCP reset instead of an orderly close."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    async def read_until_close(self) -> None:
        """For handlers: reads until the client closes the connection; fails if it sends a request instead."""
        request = await self.read_request()
        assert request is None, f"the client sent {request} on a connection it should have dropped"

    async def client_closed(self) -> None:
        """For tests: waits until a handler reading this connection saw the client close it."""
        try:
            await asyncio.wait_for(self.eof.wait(), DEADLINE)
        except TimeoutError:
            raise AssertionError(f"the client kept the connection open for {DEADLINE}s") from None


Handler = Callable[[Peer], Awaitable[None]]


@dataclass
class RawServer:
    handler: Handler
    port: int = 0
    peers: list[Peer] = field(default_factory=list)
    errors: list[Exception] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def start(self, ssl_context: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> None:
        self._server = await asyncio.start_server(self._accept, host, 0, ssl=ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]

    def url(self, path: str = "/", host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    async def peer(self, index: int) -> Peer:
        """The `index`th accepted connection, once it is there."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.peers) > index), DEADLINE)
        return self.peers[index]

    def requests(self) -> list[Request]:
        return [request for peer in self.peers for request in peer.requests]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = Peer(reader, writer)
        async with self._changed:
            self.peers.append(peer)
            self._changed.notify_all()
        try:
            await self.handler(peer)
            writer.close()
            with suppress(OSError):
                await writer.wait_closed()
        except asyncio.CancelledError:
            # stop() at teardown: not re-raised, as Python 3.11's stream callback logs a cancelled handler task.
            writer.transport.abort()
        except Exception as exc:  # reported at teardown: an assertion in a handler fails its test
            self.errors.append(exc)
            writer.transport.abort()
        finally:
            peer.closed.set()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


ServerFactory = Callable[..., Awaitable[RawServer]]


@pytest.fixture
async def serve() -> AsyncIterator[ServerFactory]:
    started: list[RawServer] = []

    async def factory(handler: Handler, ssl_context: ssl.SSLContext | None = None,
                      host: str = "127.0.0.1") -> RawServer:
        server = RawServer(handler)
        await server.start(ssl_context, host)
        started.append(server)
        return server

    yield factory
    for server in started:
        await server.stop()
    errors = [exc for server in started for exc in server.errors]
    assert not errors, f"a test server failed: {errors!r}"


@pytest.fixture
async def client() -> AsyncIterator[EndpointClient]:
    endpoint_client = EndpointClient(Resolver(allow_private=True))
    yield endpoint_client
    await endpoint_client.close()


def answer(body: bytes = b"ok", status: str = "200 OK", *headers: str) -> bytes:
    """An HTTP/1.1 answer framed by Content-Length."""
    head = "".join(f"{header}\r\n" for header in headers)
    return f"HTTP/1.1 {status}\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


@dataclass(frozen=True)
class Say:
    """One scripted reaction to a request: write `pieces` (each flushed on its own), then maybe hang up."""

    pieces: tuple[bytes, ...]
    close: bool = False  # close the connection after writing (an orderly close: FIN)
    reset: bool = False  # end it with a TCP reset instead

    @staticmethod
    def of(*pieces: bytes, close: bool = False, reset: bool = False) -> Say:
        return Say(pieces, close, reset)


HANG_UP = Say.of(close=True)  # read the request, close without a byte of answer
RESET = Say.of(reset=True)  # read the request, reset the connection without a byte of answer


def scripted(*script: Say) -> Handler:
    """Answers requests in arrival order, across all connections, with `script`; a request beyond it fails
    the test. A connection otherwise stays open until the client closes it."""
    pending = list(script)

    async def handle(peer: Peer) -> None:
        while (request := await peer.read_request()) is not None:
            assert pending, f"unexpected request: {request}"
            say = pending.pop(0)
            await peer.send(*say.pieces)
            if say.reset:
                peer.reset()
                return
            if say.close:
                return

    return handle


async def post(client: EndpointClient, url: str, body: bytes = b"{}", headers: dict[str, str] | None = None, *,
               budget_s: float = BUDGET, max_body: int = 1 << 20) -> Response:
    return await client.post(url, body, headers or {}, budget_s=budget_s, max_body=max_body)


# Connections: keep-alive, Connection: close, idle limits, concurrency


async def test_keep_alive_two_posts_share_one_connection_and_carry_the_exact_request(
        serve: ServerFactory, client: EndpointClient) -> None:
    server = await serve(scripted(Say.of(answer(b'{"n": 1}')), Say.of(answer(b"", "202 Accepted"))))
    url = server.url("/hooks/run?job=a%20b&n=1")
    first_body = b'{"payload": "\xc3\xa9t\xc3\xa9", "n": 12345678901234567890}'

    first = await post(client, url, first_body, {"Content-Type": "application/json", "X-Run-ID": "run-1",
                                                 "X-Note": "tab\tand unicode \u00e9"})
    second = await post(client, url, b"", {"X-Run-ID": "run-2"})

    assert first == Response(200, b'{"n": 1}', False)
    assert second == Response(202, b"", False)
    assert len(server.peers) == 1, "the second POST did not reuse the keep-alive connection"
    one, two = server.peers[0].requests
    assert one.line == two.line == "POST /hooks/run?job=a%20b&n=1 HTTP/1.1"
    assert dict(one.headers) == {"Host": f"127.0.0.1:{server.port}", "Content-Type": "application/json",
                                 "X-Run-ID": "run-1", "X-Note": "tab\tand unicode \u00c3\u00a9",  # UTF-8 bytes
                                 "Content-Length": str(len(first_body))}
    assert len(one.headers) == 5, f"a header was sent twice: {one.headers}"
    assert one.body == first_body
    assert dict(two.headers) == {"Host": f"127.0.0.1:{server.port}", "X-Run-ID": "run-2", "Content-Length": "0"}
    assert two.body == b""


async def test_host_header_names_the_url_host_lower_cased(serve: ServerFactory, client: EndpointClient) -> None:
    server = await serve(scripted(Say.of(answer(b"hi"))))
    assert await post(client, server.url("/x", host="LocalHost")) == Response(200, b"hi", False)
    [request] = server.requests()
    assert request.line == "POST /x HTTP/1.1"
    assert request.header("Host") == [f"localhost:{server.port}"]


def test_an_international_host_name_is_sent_in_its_ascii_form() -> None:
    target = transport._parse("http://Bücher.example:8080/x")
    assert target.host == "xn--bcher-kva.example"
    assert target.head == b"POST /x HTTP/1.1\r\nHost: xn--bcher-kva.example:8080\r\n"


async def test_ipv6_literal_host_is_bracketed_in_the_host_header(
        serve: ServerFactory, client: EndpointClient) -> None:
    server = await serve(scripted(Say.of(answer(b"v6"))), host="::1")
    assert await post(client, server.url("/six", host="[::1]")) == Response(200, b"v6", False)
    [request] = server.requests()
    assert request.header("Host") == [f"[::1]:{server.port}"]


async def test_large_request_body_arrives_exactly(serve: ServerFactory, client: EndpointClient) -> None:
    body = bytes(range(256)) * 16384  # 4 MiB: more than any socket buffer
    server = await serve(scripted(Say.of(answer(b"got it"))))
    assert await post(client, server.url("/upload"), body) == Response(200, b"got it", False)
    [request] = server.requests()
    assert request.header("Content-Length") == [str(len(body))]
    assert request.body == body


class FixedResolver(Resolver):
    """Answers every name with the given addresses: DNS is not under a test's control, the sockets are."""

    def __init__(self, *addresses: tuple[int, str]) -> None:
        super().__init__(allow_private=True)
        self._addresses = list(addresses)

    async def resolve(self, host: str, port: int) -> list[tuple[int, str]]:
        return list(self._addresses)


async def test_each_resolved_address_is_tried_in_order(serve: ServerFactory) -> None:
    server = await serve(scripted(Say.of(answer(b"second address"))))
    # Nothing listens on ::1 at the server's port (it listens on 127.0.0.1 only): refused, then the next.
    fallback = EndpointClient(FixedResolver((socket.AF_INET6, "::1"), (socket.AF_INET, "127.0.0.1")))
    try:
        url = f"http://endpoint.test:{server.port}/multi"
        assert await post(fallback, url) == Response(200, b"second address", False)
    finally:
        await fallback.close()
    [request] = server.requests()
    assert request.header("Host") == [f"endpoint.test:{server.port}"]  # the URL's name, not the address


async def test_no_reachable_address_raises_endpoint_error(serve: ServerFactory) -> None:
    server = await serve(scripted())
    await server.stop()  # the port is known and nothing listens on it any more
    nowhere = EndpointClient(FixedResolver((socket.AF_INET6, "::1"), (socket.AF_INET, "127.0.0.1")))
    try:
        with pytest.raises(EndpointError, match=f"cannot connect to endpoint.test:{server.port}"):
            await post(nowhere, f"http://endpoint.test:{server.port}/")
    finally:
        await nowhere.close()


async def test_empty_path_is_sent_as_slash(serve: ServerFactory, client: EndpointClient) -> None:
    server = await serve(scripted(Say.of(answer())))
    await post(client, f"http://127.0.0.1:{server.port}?a=1")
    [request] = server.requests()
    assert request.line == "POST /?a=1 HTTP/1.1"


@pytest.mark.parametrize("close_answer", [
    answer(b"bye", "200 OK", "Connection: close"),
    answer(b"bye", "200 OK", "connection: Close"),
    b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nbye",  # HTTP/1.0 without keep-alive
], ids=["connection-close", "connection-close-lowercase", "http-1.0"])
async def test_an_answer_that_ends_the_connection_makes_the_next_post_open_a_new_one(
        serve: ServerFactory, client: EndpointClient, close_answer: bytes) -> None:
    # The server keeps its side open after the answer: only the client's respect for it is tested.
    server = await serve(scripted(Say.of(close_answer), Say.of(answer(b"again"))))
    url = server.url("/c")
    assert await post(client, url) == Response(200, b"bye", False)
    first = await server.peer(0)
    await first.client_closed()
    assert await post(client, url) == Response(200, b"again", False)
    assert len(server.peers) == 2
    assert [len(peer.requests) for peer in server.peers] == [1, 1]


async def test_http_1_0_keep_alive_answer_keeps_the_connection(serve: ServerFactory, client: EndpointClient) -> None:
    server = await serve(scripted(
        Say.of(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nk1"),
        Say.of(answer(b"k2"))))
    url = server.url("/k")
    assert (await post(client, url)).body == b"k1"
    assert (await post(client, url)).body == b"k2"
    assert len(server.peers) == 1


async def test_idle_connection_past_keepalive_limit_is_not_reused(
        serve: ServerFactory, client: EndpointClient, monkeypatch: pytest.MonkeyPatch) -> None:
    server = await serve(scripted(Say.of(answer(b"1")), Say.of(answer(b"2"))))
    url = server.url("/idle")
    assert (await post(client, url)).body == b"1"
    monkeypatch.setattr(transport, "KEEPALIVE_S", 0.0)  # every idle connection is now too old
    assert (await post(client, url)).body == b"2"
    assert len(server.peers) == 2
    await server.peers[0].client_closed()  # the stale connection was closed, not leaked


async def test_idle_connections_are_closed_once_stale_without_further_requests(
        serve: ServerFactory, client: EndpointClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "KEEPALIVE_S", 0.2)
    server = await serve(scripted(Say.of(answer(b"1"))))
    assert (await post(client, server.url("/once"))).body == b"1"
    # Nothing else is sent to this endpoint: the client still lets the connection go.
    await server.peers[0].client_closed()


async def test_concurrent_posts_use_separate_connections_and_the_idle_pool_is_capped(
        serve: ServerFactory, client: EndpointClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "MAX_IDLE_PER_ORIGIN", 1)
    both_in = asyncio.Event()

    async def handle(peer: Peer) -> None:
        while (request := await peer.read_request()) is not None:
            if len(server.requests()) == 2:
                both_in.set()
            # Neither of the first two is answered before both arrived: they are in flight at once.
            await asyncio.wait_for(both_in.wait(), DEADLINE)
            await peer.send(answer(request.body))

    server = await serve(handle)
    url = server.url("/par")
    one, two = await asyncio.gather(post(client, url, b"one"), post(client, url, b"two"))
    assert (one.body, two.body) == (b"one", b"two")
    assert len(server.peers) == 2
    assert [len(peer.requests) for peer in server.peers] == [1, 1]

    # One idle connection is kept per origin here: the other one was closed by the client...
    waits = [asyncio.ensure_future(peer.eof.wait()) for peer in server.peers]
    done, pending = await asyncio.wait(waits, timeout=DEADLINE, return_when=asyncio.FIRST_COMPLETED)
    for waiting in pending:
        waiting.cancel()
    assert done, "neither connection was closed though only one may be kept idle"
    # ...and the kept one serves the next POST.
    assert (await post(client, url, b"three")).body == b"three"
    assert len(server.peers) == 2
    assert sorted(len(peer.requests) for peer in server.peers) == [1, 2]


async def test_close_ends_idle_connections(serve: ServerFactory) -> None:
    server = await serve(scripted(Say.of(answer())))
    endpoint_client = EndpointClient(Resolver(allow_private=True))
    await post(endpoint_client, server.url())
    await endpoint_client.close()
    await (await server.peer(0)).client_closed()


# Answer framing


async def test_chunked_answer_is_reassembled_and_the_connection_reused(
        serve: ServerFactory, client: EndpointClient) -> None:
    chunked = Say.of(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n",
        b"5\r\nhello\r\n",
        b"1;ext=1\r\n \r\n",  # a chunk extension
        b"1A\r\nabcdefghijklmnopqrstuvwxyz\r\n",  # hexadecimal size
        b"0\r\nX-Trailer: t\r\n\r\n")  # a trailer after the last chunk
    server = await serve(scripted(chunked, Say.of(answer(b"next"))))
    url = server.url("/chunks")
    assert await post(client, url) == Response(200, b"hello abcdefghijklmnopqrstuvwxyz", False)
    assert await post(client, url) == Response(200, b"next", False)
    assert len(server.peers) == 1


async def test_answer_written_in_tiny_pieces_is_parsed(serve: ServerFactory, client: EndpointClient) -> None:
    raw = (b"HTTP/1.1 201 Created\r\nX-Long-Header-Name: " + b"v" * 300 + b"\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n" + b"3\r\nabc\r\n" + b"4\r\ndefg\r\n" + b"0\r\n\r\n")
    pieces = [raw[i:i + 3] for i in range(0, len(raw), 3)]
    server = await serve(scripted(Say.of(*pieces), Say.of(answer(b"after"))))
    url = server.url("/slow")
    assert await post(client, url) == Response(201, b"abcdefg", False)
    assert await post(client, url) == Response(200, b"after", False)
    assert len(server.peers) == 1


async def test_large_body_over_many_reads_is_returned_whole(serve: ServerFactory, client: EndpointClient) -> None:
    body = bytes(range(256)) * 8192  # 2 MiB
    server = await serve(scripted(Say.of(*[answer(body)[i:i + 65536] for i in range(0, len(body) + 100, 65536)])))
    assert await post(client, server.url("/big"), max_body=len(body)) == Response(200, body, False)


@pytest.mark.parametrize("head", [
    b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n",  # neither length nor chunks: ends at the close
], ids=["http-1.0", "http-1.1-connection-close", "http-1.1-unframed"])
async def test_close_delimited_answer_is_returned_whole(
        serve: ServerFactory, client: EndpointClient, head: bytes) -> None:
    server = await serve(scripted(
        Say.of(head, b"part one, ", b"part two, ", b"the end", close=True),
        Say.of(answer(b"fresh"))))
    url = server.url("/eof")
    assert await post(client, url) == Response(200, b"part one, part two, the end", False)
    assert await post(client, url) == Response(200, b"fresh", False)
    assert len(server.peers) == 2


async def test_answer_without_a_body_by_status_keeps_the_connection(
        serve: ServerFactory, client: EndpointClient) -> None:
    server = await serve(scripted(Say.of(b"HTTP/1.1 204 No Content\r\n\r\n"), Say.of(answer(b"x", "503 Busy"))))
    url = server.url("/nobody")
    assert await post(client, url) == Response(204, b"", False)
    assert await post(client, url) == Response(503, b"x", False)
    assert len(server.peers) == 1


@pytest.mark.parametrize("interim", [
    b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n",
], ids=["103", "100", "100-then-102"])
async def test_interim_answers_are_skipped(serve: ServerFactory, client: EndpointClient, interim: bytes) -> None:
    final = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ndone\r\n0\r\n\r\n"
    server = await serve(scripted(Say.of(interim, final), Say.of(answer(b"second"))))
    url = server.url("/hints")
    assert await post(client, url) == Response(200, b"done", False)
    # The parser is back at the start of an answer: the connection serves the next POST.
    assert await post(client, url) == Response(200, b"second", False)
    assert len(server.peers) == 1


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-15)
    return compressor.compress(data) + compressor.flush()


DOCUMENT = b'{"result": "' + b"compressible " * 500 + b'"}'


@pytest.mark.parametrize(("encoding", "encoded"), [
    ("gzip", gzip.compress(DOCUMENT)),
    ("GZip", gzip.compress(DOCUMENT)),
    ("x-gzip", gzip.compress(DOCUMENT)),
    ("deflate", zlib.compress(DOCUMENT)),
    ("deflate", _raw_deflate(DOCUMENT)),  # raw deflate without the zlib wrapper, as some servers send
], ids=["gzip", "gzip-mixed-case", "x-gzip", "deflate-zlib", "deflate-raw"])
async def test_encoded_answer_body_is_decoded(
        serve: ServerFactory, client: EndpointClient, encoding: str, encoded: bytes) -> None:
    server = await serve(scripted(Say.of(answer(encoded, "200 OK", f"Content-Encoding: {encoding}"))))
    assert await post(client, server.url("/gz")) == Response(200, DOCUMENT, False)


async def test_chunked_gzip_answer_is_decoded(serve: ServerFactory, client: EndpointClient) -> None:
    encoded = gzip.compress(DOCUMENT)
    half = len(encoded) // 2
    server = await serve(scripted(Say.of(
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"%x\r\n%s\r\n" % (half, encoded[:half]),
        b"%x\r\n%s\r\n0\r\n\r\n" % (len(encoded) - half, encoded[half:]))))
    assert await post(client, server.url("/gzc")) == Response(200, DOCUMENT, False)


# Body cap


async def test_body_over_the_cap_is_cut_and_the_connection_not_reused(
        serve: ServerFactory, client: EndpointClient) -> None:
    body = bytes(range(256)) * 1024  # 256 KiB: more than one read

    async def handle(peer: Peer) -> None:
        if peer is server.peers[0]:
            assert await peer.read_request() is not None
            await peer.send_cut(answer(body))
            await peer.read_until_close()
        else:
            await scripted(Say.of(answer(b"small")))(peer)

    server = await serve(handle)
    url = server.url("/cap")
    assert await post(client, url, max_body=100) == Response(200, body[:101], True)
    await server.peers[0].client_closed()  # the client hung up rather than read the rest
    assert await post(client, url, max_body=100) == Response(200, b"small", False)
    assert len(server.peers) == 2


async def test_body_of_exactly_the_cap_is_whole_and_the_connection_reused(
        serve: ServerFactory, client: EndpointClient) -> None:
    server = await serve(scripted(Say.of(answer(b"x" * 100)), Say.of(answer(b"y" * 100))))
    url = server.url("/exact")
    assert await post(client, url, max_body=100) == Response(200, b"x" * 100, False)
    assert await post(client, url, max_body=100) == Response(200, b"y" * 100, False)
    assert len(server.peers) == 1


async def test_chunked_body_over_the_cap_is_cut(serve: ServerFactory, client: EndpointClient) -> None:
    chunk = b"z" * 4000
    chunks = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 50

    async def handle(peer: Peer) -> None:
        assert await peer.read_request() is not None
        await peer.send_cut(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(chunks))
        await peer.read_until_close()

    server = await serve(handle)
    assert await post(client, server.url("/capc"), max_body=10_000) == Response(200, b"z" * 10_001, True)
    await server.peers[0].client_closed()


async def test_compressed_body_longer_than_the_cap_that_decodes_within_it_is_whole(
        serve: ServerFactory, client: EndpointClient) -> None:
    document = random.Random(7).randbytes(100)  # incompressible: its gzip form is longer than itself
    encoded = gzip.compress(document)
    assert len(encoded) > 110
    # Two chunks, the first already longer than the cap: the client must read on to decode the whole.
    server = await serve(scripted(Say.of(
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"%x\r\n%s\r\n" % (105, encoded[:105]),
        b"%x\r\n%s\r\n0\r\n\r\n" % (len(encoded) - 105, encoded[105:]))))
    assert await post(client, server.url("/gz-room"), max_body=100) == Response(200, document, False)


async def test_decoded_body_over_the_cap_is_cut(serve: ServerFactory, client: EndpointClient) -> None:
    server = await serve(scripted(Say.of(answer(gzip.compress(DOCUMENT), "200 OK", "Content-Encoding: gzip"))))
    assert await post(client, server.url("/capgz"), max_body=50) == Response(200, DOCUMENT[:51], True)


# Failures, resends and timeouts


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "reset"])
async def test_idle_connection_closed_by_the_server_is_replaced(
        serve: ServerFactory, client: EndpointClient, reset: bool) -> None:
    answered = asyncio.Event()

    async def handle(peer: Peer) -> None:
        if peer is server.peers[0]:
            assert await peer.read_request() is not None
            await peer.send(answer(b"first"))  # no Connection: close: the client keeps the connection
            await asyncio.wait_for(answered.wait(), DEADLINE)
            if reset:
                peer.reset()  # as an idle timeout of a load balancer may do
            # else: an orderly close, as a server's keep-alive timeout does (on return from the handler)
        else:
            await scripted(Say.of(answer(b"second")))(peer)

    server = await serve(handle)
    url = server.url("/idle-close")
    assert await post(client, url, b"one") == Response(200, b"first", False)
    answered.set()  # the client holds the connection idle now: the server ends it
    await asyncio.wait_for(server.peers[0].closed.wait(), DEADLINE)
    assert await post(client, url, b"two") == Response(200, b"second", False)
    assert len(server.peers) == 2
    assert [r.body for r in server.peers[0].requests] == [b"one"]
    assert [r.body for r in server.peers[1].requests] == [b"two"]


@pytest.mark.parametrize("drop", [HANG_UP, RESET], ids=["fin", "reset"])
async def test_reused_connection_that_fails_before_any_answer_byte_is_resent_once(
        serve: ServerFactory, client: EndpointClient, drop: Say) -> None:
    # Deterministic form of an idle close racing a new request: the server reads the second request on the
    # kept connection and drops the connection without answering.
    server = await serve(scripted(Say.of(answer(b"first")), drop, Say.of(answer(b"resent"))))
    url = server.url("/resend")
    assert await post(client, url, b"one") == Response(200, b"first", False)
    assert await post(client, url, b"two") == Response(200, b"resent", False)
    assert len(server.peers) == 2
    assert [r.body for r in server.peers[0].requests] == [b"one", b"two"]
    assert [r.body for r in server.peers[1].requests] == [b"two"]


async def test_reused_connection_failing_twice_is_not_resent_again(
        serve: ServerFactory, client: EndpointClient) -> None:
    server = await serve(scripted(Say.of(answer(b"first")), HANG_UP, HANG_UP, Say.of(answer(b"unexpected"))))
    url = server.url("/twice")
    await post(client, url, b"one")
    with pytest.raises(EndpointError):
        await post(client, url, b"two")
    assert [r.body for r in server.requests()] == [b"one", b"two", b"two"]
    assert len(server.peers) == 2


@pytest.mark.parametrize("drop", [HANG_UP, RESET], ids=["fin", "reset"])
async def test_fresh_connection_closed_without_answer_raises_and_is_not_resent(
        serve: ServerFactory, client: EndpointClient, drop: Say) -> None:
    server = await serve(scripted(drop, Say.of(answer(b"must not be asked"))))
    with pytest.raises(EndpointError) as raised:
        await post(client, server.url("/gone"), b"once")
    assert isinstance(raised.value, OSError)  # http.py turns OSError into a "connection" failure
    assert len(server.peers) == 1
    assert [r.body for r in server.requests()] == [b"once"]


@pytest.mark.parametrize("partial", [
    b"HTTP/1.1 200 OK\r\nContent-Le",  # inside the head
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",  # inside a framed body
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",  # inside a chunk
], ids=["head", "body", "chunk"])
async def test_reused_connection_closed_mid_answer_raises_and_is_not_resent(
        serve: ServerFactory, client: EndpointClient, partial: bytes) -> None:
    server = await serve(scripted(Say.of(answer(b"first")), Say.of(partial, close=True),
                                  Say.of(answer(b"must not be asked"))))
    url = server.url("/mid")
    await post(client, url, b"one")
    with pytest.raises(EndpointError):
        await post(client, url, b"two")
    assert len(server.peers) == 1
    assert [r.body for r in server.requests()] == [b"one", b"two"]


async def test_connection_refused_raises_endpoint_error(serve: ServerFactory, client: EndpointClient) -> None:
    server = await serve(scripted())
    await server.stop()  # the port is known and nothing listens on it any more
    with pytest.raises(EndpointError, match=f"cannot connect to 127.0.0.1:{server.port}"):
        await post(client, server.url())


@pytest.mark.parametrize("stall", [
    b"",  # not a byte of answer
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",  # the head and part of the body
], ids=["silent", "partial"])
async def test_timeout_raises_within_the_budget_and_the_connection_is_dropped(
        serve: ServerFactory, client: EndpointClient, stall: bytes) -> None:
    async def handle(peer: Peer) -> None:
        if peer is server.peers[0]:
            assert await peer.read_request() is not None
            await peer.send(stall)
            await peer.read_until_close()  # never answers; ends when the client gives up on it
        else:
            await scripted(Say.of(answer(b"responsive")))(peer)

    server = await serve(handle)
    url = server.url("/slow")
    budget = 0.3
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await post(client, url, budget_s=budget)
    elapsed = time.monotonic() - started
    assert budget - 0.05 <= elapsed < budget + 2.0, f"timed out after {elapsed:.3f}s for a {budget}s budget"
    await server.peers[0].client_closed()
    # Same origin: had the timed-out connection been reused, this would hang on the first handler again.
    assert await post(client, url, budget_s=BUDGET) == Response(200, b"responsive", False)
    assert len(server.peers) == 2


@pytest.mark.parametrize("garbage", [
    b"HELLO\r\n\r\n",
    b"HTTP/1.1 abc OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"SSH-2.0-OpenSSH_9.6\r\n",
], ids=["hello", "bad-status", "bad-length", "bad-chunk-size", "ssh"])
async def test_malformed_answer_raises_endpoint_error_and_drops_the_connection(
        serve: ServerFactory, client: EndpointClient, garbage: bytes) -> None:
    async def handle(peer: Peer) -> None:
        assert await peer.read_request() is not None
        await peer.send_cut(garbage)
        await peer.read_until_close()

    server = await serve(handle)
    with pytest.raises(EndpointError, match="malformed HTTP answer"):
        await post(client, server.url("/junk"))
    await server.peers[0].client_closed()


# Requests that cannot be sent


@pytest.mark.parametrize("headers", [
    {"X-Evil": "a\r\nInjected: 1"},
    {"X-Evil": "a\nInjected: 1"},
    {"X-Evil": "a\rb"},
    {"X-Evil": "nul\x00"},
    {"X-Evil\r\nInjected": "1"},
    {"X-Evil: injected": "1"},
    {"X Evil": "1"},
    {"": "1"},
], ids=["crlf", "lf", "cr", "nul", "crlf-in-name", "colon-in-name", "space-in-name", "empty-name"])
async def test_header_with_forbidden_characters_is_refused_before_anything_is_sent(
        serve: ServerFactory, client: EndpointClient, headers: dict[str, str]) -> None:
    server = await serve(scripted(Say.of(answer(b"clean"))))
    url = server.url("/h")
    with pytest.raises(ValueError, match="HTTP does not allow"):
        await post(client, url, b"x", {"X-Fine": "1", **headers})
    assert await post(client, url, b"y", {"X-Fine": "1"}) == Response(200, b"clean", False)
    # Nothing of the refused request reached the server: one connection, one clean request.
    assert len(server.peers) == 1
    [request] = server.requests()
    assert request.body == b"y"
    assert not request.header("Injected")


@pytest.mark.parametrize("url", [
    "ftp://127.0.0.1/x",
    "file:///etc/passwd",
    "127.0.0.1:8080/x",
    "http:///no-host",
    "http://127.0.0.1:{port}/with space",
    "http://127.0.0.1:{port}/nul\x00",
    "http://127.0.0.1:99999/bad-port",
], ids=["ftp", "file", "no-scheme", "no-host", "space", "nul", "bad-port"])
async def test_url_that_cannot_be_sent_is_refused(serve: ServerFactory, client: EndpointClient, url: str) -> None:
    server = await serve(scripted(Say.of(answer(b"clean"))))
    with pytest.raises(ValueError):
        await post(client, url.format(port=server.port))
    assert await post(client, server.url("/ok")) == Response(200, b"clean", False)
    assert len(server.requests()) == 1


# Resolver


@pytest.mark.parametrize("host", [
    "127.0.0.1", "localhost", "localhost.localdomain", "api.localhost", "metadata.google.internal", "::1",
    "::ffff:127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "0.0.0.0", "100.64.0.1", "fd00::1",
    # Other spellings of 127.0.0.1 that the system resolver accepts: refused by the address they resolve to.
    "2130706433", "0x7f.1", "017700000001", "127.1",
])
async def test_resolver_refuses_private_hosts_unless_allowed(host: str) -> None:
    with pytest.raises(OSError, match=r"does not resolve to an address that may be called"):
        await Resolver(allow_private=False).resolve(host, 80)


async def test_resolver_passes_public_literals_through() -> None:
    resolver = Resolver(allow_private=False)
    assert await resolver.resolve("8.8.8.8", 443) == [(socket.AF_INET, "8.8.8.8")]
    assert await resolver.resolve("2001:4860:4860::8888", 443) == [(socket.AF_INET6, "2001:4860:4860::8888")]


async def test_resolver_allowing_private_resolves_localhost_to_loopback() -> None:
    addresses = await Resolver(allow_private=True).resolve("localhost", 8080)
    assert addresses
    for family, address in addresses:
        ip = ipaddress.ip_address(address)
        assert ip.is_loopback, address
        assert family == (socket.AF_INET6 if ip.version == 6 else socket.AF_INET)
    assert len(set(addresses)) == len(addresses)


async def test_resolver_caches_within_the_ttl() -> None:
    cached = Resolver(allow_private=True, ttl=60.0)
    first = await cached.resolve("localhost", 80)
    assert await cached.resolve("localhost", 80) is first  # the same answer, not a new lookup

    uncached = Resolver(allow_private=True, ttl=0.0)
    first = await uncached.resolve("localhost", 80)
    again = await uncached.resolve("localhost", 80)
    assert again == first and again is not first  # expired at once: looked up anew


async def test_client_refuses_private_endpoint_without_connecting(serve: ServerFactory) -> None:
    server = await serve(scripted(Say.of(answer(b"allowed"))))
    guarded = EndpointClient(Resolver(allow_private=False))
    try:
        for host in ("127.0.0.1", "localhost"):
            with pytest.raises(EndpointError, match=r"does not resolve to an address that may be called"):
                await post(guarded, server.url("/", host=host))
    finally:
        await guarded.close()
    open_client = EndpointClient(Resolver(allow_private=True))
    try:
        assert await post(open_client, server.url("/")) == Response(200, b"allowed", False)
    finally:
        await open_client.close()
    assert len(server.peers) == 1  # only the allowed client's connection


# TLS


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _server_context(ca: trustme.CA, *identities: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*identities).configure_cert(context)
    return context


def _trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_https_post_over_a_trusted_certificate(serve: ServerFactory, ca: trustme.CA, host: str) -> None:
    server = await serve(scripted(Say.of(answer(b"secure 1")), Say.of(answer(b"secure 2"))),
                         _server_context(ca, "127.0.0.1", "localhost"))
    tls_client = EndpointClient(Resolver(allow_private=True), ssl_context=_trusting(ca))
    try:
        url = server.url("/tls?x=1", host=host, scheme="https")
        assert await post(tls_client, url, b"a") == Response(200, b"secure 1", False)
        assert await post(tls_client, url, b"b") == Response(200, b"secure 2", False)
    finally:
        await tls_client.close()
    assert len(server.peers) == 1  # kept alive over TLS too
    assert [r.body for r in server.requests()] == [b"a", b"b"]
    assert server.requests()[0].line == "POST /tls?x=1 HTTP/1.1"
    assert server.requests()[0].header("Host") == [f"{host}:{server.port}"]


async def test_https_with_an_untrusted_certificate_fails(serve: ServerFactory, ca: trustme.CA) -> None:
    server = await serve(scripted(Say.of(answer(b"should not be read"))),
                         _server_context(ca, "127.0.0.1", "localhost"))
    default_trust = EndpointClient(Resolver(allow_private=True))  # the system's CAs, not the test CA
    try:
        with pytest.raises(EndpointError, match="cannot connect"):
            await post(default_trust, server.url("/tls", scheme="https"))
    finally:
        await default_trust.close()
    assert server.requests() == []


async def test_https_with_a_certificate_for_another_name_fails(serve: ServerFactory, ca: trustme.CA) -> None:
    server = await serve(scripted(Say.of(answer(b"should not be read"))), _server_context(ca, "other.example"))
    tls_client = EndpointClient(Resolver(allow_private=True), ssl_context=_trusting(ca))
    try:
        with pytest.raises(EndpointError, match="cannot connect"):
            await post(tls_client, server.url("/tls", scheme="https"))
    finally:
        await tls_client.close()
    assert server.requests() == []


async def test_https_resend_after_an_idle_close_and_a_close_delimited_answer(
        serve: ServerFactory, ca: trustme.CA) -> None:
    server = await serve(scripted(
        Say.of(answer(b"kept")),
        HANG_UP,  # the second request, on the kept connection: dropped without an answer
        Say.of(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b"until ", b"the end", close=True)),
        _server_context(ca, "127.0.0.1"))
    tls_client = EndpointClient(Resolver(allow_private=True), ssl_context=_trusting(ca))
    try:
        url = server.url("/tls-close", scheme="https")
        assert await post(tls_client, url, b"one") == Response(200, b"kept", False)
        assert await post(tls_client, url, b"two") == Response(200, b"until the end", False)
    finally:
        await tls_client.close()
    assert [[r.body for r in peer.requests] for peer in server.peers] == [[b"one", b"two"], [b"two"]]
