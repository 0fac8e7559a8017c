"""One interceptor for every public RPC: authentication, safe request decoding, error mapping.

Handlers are wrapped (rather than checked in intercept_service) so that the principal lives in a
contextvar of the handler's own task, and so that a request that fails to decode becomes
INVALID_ARGUMENT instead of grpcio's INTERNAL.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import grpc
import jwt
from google.protobuf.message import DecodeError

from strait_server import auth, errors
from strait_server.api import errors as api_errors
from strait_server.api.inflight import Admission, InFlightBytes
from strait_server.api.limits import Limiter, caller_address, client_address
from strait_server.faults import database_unavailable
from strait_server.store.projects import ProjectStore

log = logging.getLogger(__name__)

_principal: contextvars.ContextVar[auth.Principal] = contextvars.ContextVar("strait_principal")
_run_principal: contextvars.ContextVar[auth.RunPrincipal] = contextvars.ContextVar("strait_run_principal")

EXEMPT_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")
# Authenticated by a run token instead of an API key.
RUN_TOKEN_PREFIX = "/strait.v1.RunContextService/"
# Methods whose requests can be megabytes: read a few at a time (inflight.Admission).
ADMITTED_METHODS = frozenset({"/strait.v1.JobService/BatchTriggerJob"})
# An admitted request smaller than this, once read, does not keep its admission slot while it is handled.
LARGE_REQUEST_BYTES = 1024 * 1024


def run_principal() -> auth.RunPrincipal:
    return _run_principal.get()


def principal() -> auth.Principal:
    return _principal.get()


def project_id() -> str:
    """The caller's project; the admin key has none and is refused here."""
    p = _principal.get()
    if p.project_id is None:
        raise errors.PermissionDenied("the admin key manages projects; use a project API key for this call")
    return p.project_id


class Authenticator:
    """Resolves bearer keys to principals, caching digests briefly to spare a query per call."""

    def __init__(self, projects: ProjectStore, admin_key: str, jwt_key: str, cache_seconds: float = 5.0) -> None:
        self._projects = projects
        self._admin_key = admin_key
        self._jwt_key = jwt_key
        self._ttl = cache_seconds
        # Digest -> (principal, expiry): also carries the key's rate limit, so limits cost no query per call.
        self._cache: dict[str, tuple[auth.Principal, float]] = {}

    def forget(self) -> None:
        self._cache.clear()

    @staticmethod
    def _bearer(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str:
        value = ""
        for key, v in metadata or ():
            if key == "authorization":
                value = v if isinstance(v, str) else v.decode("latin-1")
                break
        scheme, _, token = value.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise errors.Unauthenticated("missing or malformed authorization: expected 'Bearer <key>'")
        return token

    def authenticate_run(self, metadata: tuple[tuple[str, str | bytes], ...] | None) -> auth.RunPrincipal:
        token = self._bearer(metadata)
        try:
            claims = auth.verify_run_token(self._jwt_key, token)
        except jwt.InvalidTokenError:
            raise errors.Unauthenticated("invalid or expired run token") from None
        run_id, attempt = claims.get("sub"), claims.get("attempt")
        if not isinstance(run_id, str) or not run_id or not isinstance(attempt, int) or attempt < 1:
            raise errors.Unauthenticated("invalid run token")
        return auth.RunPrincipal(run_id=run_id, attempt=attempt)

    async def authenticate(self, metadata: tuple[tuple[str, str | bytes], ...] | None, *,
                           before_lookup: Callable[[], Awaitable[None]] | None = None) -> auth.Principal:
        """The caller's principal; `before_lookup` runs before a key has to be looked up in the database."""
        token = self._bearer(metadata)
        if auth.is_admin_key(token, self._admin_key):
            return auth.Principal(project_id=None, is_admin=True)
        if not token.startswith(auth.KEY_PREFIX) or len(token) > 128:
            raise errors.Unauthenticated("invalid API key")
        digest = auth.digest_of(token)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        if before_lookup is not None:
            await before_lookup()
        found = await self._projects.authenticate(digest)
        if found is None:
            raise errors.Unauthenticated("invalid API key")
        if len(self._cache) > 10_000:
            self._cache.clear()
        principal = auth.Principal(project_id=found.project_id, key_id=found.key_id, key_name=found.key_name,
                                   key_rate_limit=found.key_rate_limit, project_rate_limit=found.project_rate_limit,
                                   scopes=found.scopes)
        self._cache[digest] = (principal, now + self._ttl)
        return principal


def _map_exception(exc: BaseException) -> tuple[grpc.StatusCode, str, tuple[tuple[str, Any], ...]]:
    if isinstance(exc, errors.StraitError):
        return api_errors.to_grpc(exc)
    if isinstance(exc, asyncpg.DataError):
        return api_errors.to_grpc(errors.InvalidArgument(
            [errors.FieldViolation("request", "contains a value that cannot be stored")]))
    if database_unavailable(exc):
        return api_errors.to_grpc(errors.Unavailable("the database is unavailable; retry later"))
    if isinstance(exc, asyncpg.DeadlockDetectedError | asyncpg.SerializationError):
        # A concurrent call on the same rows won; nothing was written, the call may simply be repeated.
        return api_errors.to_grpc(errors.Aborted("the call conflicted with a concurrent one on the same rows; retry",
                                                 reason="CONCURRENT_CONFLICT"))
    request_id = uuid.uuid4().hex
    log.error("unhandled error in RPC", exc_info=exc, extra={"action": "rpc_internal", "request_id": request_id})
    return api_errors.internal(request_id)


async def _abort(context: grpc.aio.ServicerContext,
                 failure: tuple[grpc.StatusCode, str, tuple[tuple[str, Any], ...]]) -> None:
    """Ends the call with `failure`. Called after the `except` block, never inside it: an abort raised there
    chains the handled exception, whose traceback holds the handler's frame, and so the request's bytes, in a
    reference cycle that only the garbage collector frees. With large requests refused in a burst, that kept
    gigabytes alive."""
    code, message, trailers = failure
    await context.abort(code, message, trailing_metadata=trailers)


def _decode(raw: bytes, deserializer: Callable[[bytes], Any] | None) -> Any:
    if deserializer is None:
        return raw
    try:
        return deserializer(raw)
    except (DecodeError, ValueError, TypeError, RuntimeError):
        raise errors.InvalidArgument([errors.FieldViolation("request", "is not a valid protobuf message")],
                                     "malformed request message") from None


async def _decoded(raw_requests: AsyncIterator[bytes], deserializer: Callable[[bytes], Any] | None
                   ) -> AsyncIterator[Any]:
    """A client stream's messages, decoded (a malformed one raises InvalidArgument where it is read)."""
    async for raw in raw_requests:
        yield _decode(raw, deserializer)


async def _read_one(requests: AsyncIterator[bytes]) -> bytes:
    async for raw in requests:
        return raw
    raise errors.InvalidArgument([errors.FieldViolation("request", "is missing")], "no request message")


class GuardInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, authenticator: Authenticator, limiter: Limiter | None = None,
                 inflight: InFlightBytes | None = None, admission: Admission | None = None) -> None:
        self._auth = authenticator
        self._limiter = limiter
        self._inflight = inflight or InFlightBytes(server_max=2**62, caller_max=2**62)
        self._admission = admission
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}  # per registered method (unknown ones are not kept)

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(EXEMPT_PREFIXES):
            return handler
        # Innermost interceptor: the registered handler is the same on every call, so its wrapper is too.
        self._wrapped[method] = wrapped = self._wrap(handler, method)
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if handler.unary_unary is not None and method in ADMITTED_METHODS and self._admission is not None:
            # Served as client-streaming, which the wire cannot tell from unary: the handler then runs before
            # the request is read, and reads it once admitted.
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, handler.request_deserializer, method, self._admission),
                response_serializer=handler.response_serializer)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, handler.request_deserializer, method),
                response_serializer=handler.response_serializer)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, handler.request_deserializer, method),
                response_serializer=handler.response_serializer)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_client_stream(handler.stream_unary, handler.request_deserializer, method),
                response_serializer=handler.response_serializer)
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._wrap_bidi(handler.stream_stream, handler.request_deserializer, method),
                response_serializer=handler.response_serializer)
        return handler

    async def _authenticate(self, context: grpc.aio.ServicerContext, method: str) -> None:
        metadata = context.invocation_metadata()
        if method.startswith(RUN_TOKEN_PREFIX):
            _run_principal.set(self._auth.authenticate_run(metadata))
        else:
            _principal.set(await self._authenticate_key(context, metadata))

    async def _authenticate_key(self, context: grpc.aio.ServicerContext,
                                metadata: tuple[tuple[str, str | bytes], ...] | None) -> auth.Principal:
        """API-key authentication under the limits: a locked-out address is refused before its key costs a
        query, a failure counts towards a lockout, a success towards the key's rate limit."""
        limiter = self._limiter
        if limiter is None:
            return await self._auth.authenticate(metadata)
        address = caller_address(context.peer(), metadata)
        try:
            found = await self._auth.authenticate(metadata, before_lookup=lambda: limiter.check_blocked(address))
        except errors.Unauthenticated:
            await limiter.failed(address)
            raise
        await limiter.admit(address, found)
        return found

    async def _prepare(self, raw: bytes, deserializer: Callable[[bytes], Any] | None,
                       context: grpc.aio.ServicerContext, method: str) -> Any:
        await self._authenticate(context, method)
        return _decode(raw, deserializer)

    def _caller(self, context: grpc.aio.ServicerContext) -> str:
        """Whose requests the in-flight byte budget counts: the API key, else the run, else the address."""
        p = _principal.get(None)
        if p is not None:
            return f"api_key:{p.key_id}" if p.key_id else "admin"
        r = _run_principal.get(None)
        return f"run:{r.run_id}" if r is not None else client_address(context.peer())

    def _wrap_unary(self, behavior: Callable[[Any, Any], Awaitable[Any]], deserializer: Callable[[bytes], Any] | None,
                    method: str, admission: Admission | None = None) -> Callable[[Any, Any], Awaitable[Any]]:
        """`admission`: the request arrives unread (an iterator of one message), to be read once admitted."""
        async def wrapped(request: bytes | AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> Any:
            try:
                await self._authenticate(context, method)
                async with admission.slot() if admission is not None else contextlib.nullcontext() as slot:
                    raw = request if isinstance(request, bytes) else await _read_one(request)
                    if slot is not None and len(raw) < LARGE_REQUEST_BYTES:
                        slot.release()  # small once read: no reason to hold others back
                    with self._inflight.hold(self._caller(context), len(raw)):
                        message = _decode(raw, deserializer)
                        # Read here, the bytes are this frame's alone: free them while the call is handled.
                        del raw, request
                        return await behavior(message, context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:  # every error leaves with a precise status
                failure = _map_exception(exc)
            await _abort(context, failure)
        return wrapped

    def _wrap_client_stream(self, behavior: Callable[[Any, Any], Awaitable[Any]],
                            deserializer: Callable[[bytes], Any] | None, method: str
                            ) -> Callable[[AsyncIterator[bytes], Any], Awaitable[Any]]:
        async def wrapped(raw_requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> Any:
            try:
                await self._authenticate(context, method)
                return await behavior(_decoded(raw_requests, deserializer), context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                failure = _map_exception(exc)
            await _abort(context, failure)
        return wrapped

    def _wrap_bidi(self, behavior: Callable[[Any, Any], AsyncIterator[Any]],
                   deserializer: Callable[[bytes], Any] | None, method: str
                   ) -> Callable[[AsyncIterator[bytes], Any], AsyncIterator[Any]]:
        async def wrapped(raw_requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
                          ) -> AsyncIterator[Any]:
            try:
                await self._authenticate(context, method)
                async for item in behavior(_decoded(raw_requests, deserializer), context):
                    yield item
                return
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                failure = _map_exception(exc)
            await _abort(context, failure)
        return wrapped

    def _wrap_stream(self, behavior: Callable[[Any, Any], AsyncIterator[Any]],
                     deserializer: Callable[[bytes], Any] | None,
                     method: str) -> Callable[[bytes, Any], AsyncIterator[Any]]:
        async def wrapped(raw: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                request = await self._prepare(raw, deserializer, context, method)
                async for item in behavior(request, context):
                    yield item
                return
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                failure = _map_exception(exc)
            await _abort(context, failure)
        return wrapped
