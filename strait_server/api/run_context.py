"""RunContextService: what code running inside a run reports, authenticated by its run token."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import grpc

from strait_client.v1 import run_context_pb2, run_context_pb2_grpc
from strait_server import errors
from strait_server.api import convert, run_reports, validate
from strait_server.api.deps import Deps
from strait_server.api.interceptor import run_principal
from strait_server.errors import Violations
from strait_server.model import ErrorClass, EventType, RunStatus

# Checkpoints travel in an HTTP header (X-Last-Checkpoint); common servers refuse header lines over 8 KiB.
MAX_CHECKPOINT_BYTES = 4 * 1024


def _run(request_run_id: str) -> tuple[str, int]:
    """The token's run and attempt; a request naming another run is refused."""
    principal = run_principal()
    if request_run_id and request_run_id != principal.run_id:
        raise errors.PermissionDenied("this run token is for another run")
    return principal.run_id, principal.attempt


class RunContextServicer(run_context_pb2_grpc.RunContextServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._d = deps

    def _published(self, run_id: str) -> None:
        self._d.events.published([run_id])

    async def Log(self, request: run_context_pb2.LogRequest,
                  context: grpc.aio.ServicerContext) -> run_context_pb2.LogResponse:
        run_id, attempt = _run(request.run_id)
        v = Violations()
        message, data = run_reports.log_event(v, "", request.message, request.level, request.data_json)
        v.raise_if_any()
        seq = await self._d.context.append(run_id, attempt, EventType.LOG, message, data)
        self._published(run_id)
        return run_context_pb2.LogResponse(sequence=seq)

    async def Progress(self, request: run_context_pb2.ProgressRequest,
                       context: grpc.aio.ServicerContext) -> run_context_pb2.ProgressResponse:
        run_id, attempt = _run(request.run_id)
        v = Violations()
        message, data = run_reports.progress_event(v, "", request.percent, request.message, request.step)
        v.raise_if_any()
        seq = await self._d.context.append(run_id, attempt, EventType.PROGRESS, message, data)
        self._published(run_id)
        return run_context_pb2.ProgressResponse(sequence=seq)

    async def Heartbeat(self, request: run_context_pb2.HeartbeatRequest,
                        context: grpc.aio.ServicerContext) -> run_context_pb2.HeartbeatResponse:
        run_id, attempt = _run(request.run_id)
        beat = await self._d.context.heartbeat(run_id, attempt)
        if beat.canceled or beat.deadline is None:
            return run_context_pb2.HeartbeatResponse(canceled=True)
        self._published(run_id)
        s = self._d.settings
        lifetime = (beat.deadline - convert.utc_now()).total_seconds() + s.run_token_ttl_margin.total_seconds()
        token = self._d.tokens.issue(run_id, attempt, lifetime)
        return run_context_pb2.HeartbeatResponse(deadline_time=convert.ts(beat.deadline), run_token=token)

    async def Checkpoint(self, request: run_context_pb2.CheckpointRequest,
                         context: grpc.aio.ServicerContext) -> run_context_pb2.CheckpointResponse:
        run_id, attempt = _run(request.run_id)
        v = Violations()
        validate.check_json(v, "state_json", request.state_json, MAX_CHECKPOINT_BYTES)
        v.raise_if_any()
        seq = await self._d.context.append(run_id, attempt, EventType.CHECKPOINT, "", {"size": len(request.state_json)},
                                           checkpoint=request.state_json)
        self._published(run_id)
        return run_context_pb2.CheckpointResponse(sequence=seq)

    async def SetOutput(self, request: run_context_pb2.SetOutputRequest,
                        context: grpc.aio.ServicerContext) -> run_context_pb2.SetOutputResponse:
        run_id, attempt = _run(request.run_id)
        v = Violations()
        validate.check_json(v, "output_json", request.output_json, self._d.settings.max_output_bytes)
        v.raise_if_any()
        seq = await self._d.context.append(run_id, attempt, "output", "", {"size": len(request.output_json)},
                                           output=request.output_json)
        self._published(run_id)
        return run_context_pb2.SetOutputResponse(sequence=seq)

    async def Complete(self, request: run_context_pb2.CompleteRequest,
                       context: grpc.aio.ServicerContext) -> run_context_pb2.CompleteResponse:
        run_id, attempt = _run(request.run_id)
        v = Violations()
        if request.output_json:
            validate.check_json(v, "output_json", request.output_json, self._d.settings.max_output_bytes)
        v.raise_if_any()
        run = await self._d.context.finish(run_id, attempt, RunStatus.COMPLETED, request.output_json or None, "",
                                            ErrorClass.NONE)
        self._published(run_id)
        return run_context_pb2.CompleteResponse(run=convert.run(run))

    async def Fail(self, request: run_context_pb2.FailRequest,
                   context: grpc.aio.ServicerContext) -> run_context_pb2.FailResponse:
        run_id, attempt = _run(request.run_id)
        v = Violations()
        validate.check_text(v, "error", request.error, max_len=8192, required=True)
        v.raise_if_any()
        run = await self._d.context.finish(run_id, attempt, RunStatus.FAILED, None, request.error, ErrorClass.JOB)
        self._published(run_id)
        return run_context_pb2.FailResponse(run=convert.run(run))

    async def StreamOutput(self, request_iterator: AsyncIterator[run_context_pb2.StreamOutputRequest],
                           context: grpc.aio.ServicerContext) -> run_context_pb2.StreamOutputResponse:
        chunks = 0
        async for request in request_iterator:
            run_id, attempt = _run(request.run_id)
            v = Violations()
            validate.check_text(v, "stream_id", request.stream_id, max_len=128)
            if len(request.chunk) > 64 * 1024:
                v.add("chunk", "must be at most 64 KiB")
            v.raise_if_any()
            data = {"stream_id": request.stream_id or "default", "done": request.done,
                    "chunk_base64": base64.b64encode(request.chunk).decode()}
            await self._d.context.append(run_id, attempt, EventType.OUTPUT_CHUNK, "", data)
            self._published(run_id)
            chunks += 1
        return run_context_pb2.StreamOutputResponse(chunks=chunks)

    async def ReportCost(self, request: run_context_pb2.ReportCostRequest,
                         context: grpc.aio.ServicerContext) -> run_context_pb2.ReportCostResponse:
        run_id, attempt = _run(request.run_id)
        v = Violations()
        if not 1 <= request.cost_microusd <= 10**12:
            v.add("cost_microusd", "must be between 1 and 1,000,000,000,000 micro-USD")
        v.raise_if_any()
        added = await self._d.budgets.add_cost(run_id, attempt, request.cost_microusd,
                                               self._d.settings.max_run_cost_microusd)
        if added is None:
            raise await self._d.context.refusal(run_id, attempt)
        self._published(run_id)
        return run_context_pb2.ReportCostResponse(
            run_cost_microusd=added.run_cost, month_to_date_spend_microusd=added.budget.spent,
            budget_exhausted=added.budget.exhausted)
