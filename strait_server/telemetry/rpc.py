"""gRPC server interceptor counting calls by method and status code and timing them.

It is the outermost interceptor, so it sees the status every call really ends with, authentication
failures included. Streaming calls count when they end. Unknown methods (no handler) are not counted, so a
client cannot grow the label set with made-up names.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from strait_server.telemetry.metrics import Metrics

Behavior = Callable[[Any, Any], Any]


def _code(context: grpc.aio.ServicerContext, exc: BaseException | None) -> str:
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "CANCELLED"
    code = context.code()  # set by abort() or set_code(); None means OK unless the handler raised
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    return "UNKNOWN" if exc is not None else "OK"


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, metrics: Metrics, *, reuse_handlers: bool = False) -> None:
        self._metrics = metrics
        # The wrapped handler of each method, built once (intercept_service runs on every call); only when
        # no inner interceptor builds per-call handlers (OpenTelemetry's keeps the call's details).
        self._reuse = reuse_handlers
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    def _observe(self, method: str, context: grpc.aio.ServicerContext, exc: BaseException | None,
                 started: float) -> None:
        self._metrics.grpc_requests.labels(method, _code(context, exc)).inc()
        self._metrics.grpc_duration.labels(method).observe(time.perf_counter() - started)

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        wrapped = self._wrap(handler, method)
        if self._reuse:
            self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        kwargs = {"request_deserializer": handler.request_deserializer,
                  "response_serializer": handler.response_serializer}
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(self._unary(handler.unary_unary, method), **kwargs)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(self._unary(handler.stream_unary, method), **kwargs)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(self._stream(handler.unary_stream, method), **kwargs)
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(self._stream(handler.stream_stream, method), **kwargs)
        return handler

    def _unary(self, behavior: Behavior, method: str) -> Callable[[Any, Any], Awaitable[Any]]:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            try:
                response = await behavior(request, context)
            except BaseException as exc:
                self._observe(method, context, exc, started)
                raise
            self._observe(method, context, None, started)
            return response
        return wrapped

    def _stream(self, behavior: Behavior, method: str) -> Callable[[Any, Any], Any]:
        if not inspect.isasyncgenfunction(behavior):
            return self._unary(behavior, method)  # a handler that writes with context.write() (health Watch)

        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started = time.perf_counter()
            try:
                async for item in behavior(request, context):
                    yield item
            except BaseException as exc:
                self._observe(method, context, exc, started)
                raise
            self._observe(method, context, None, started)
        return wrapped
