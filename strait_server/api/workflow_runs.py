"""WorkflowRunService: read, follow and cancel workflow runs (TriggerWorkflow is in WorkflowService)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc

from strait_client.v1 import run_pb2, workflow_run_pb2, workflow_run_pb2_grpc
from strait_server.api import convert, validate
from strait_server.api.deps import Deps
from strait_server.api.interceptor import project_id
from strait_server.api.pagination import fingerprint, keyset_page, page_size
from strait_server.errors import Violations
from strait_server.service.watch import AgedOut, Keepalive, Watches
from strait_server.service.workflow_runs import WorkflowRuns
from strait_server.store.workflow_runs import StepRunRow, WorkflowRunEventRow, WorkflowRunRow, WorkflowRunStore

R = workflow_run_pb2
_RUN_STATUS = {"running": R.WORKFLOW_RUN_STATUS_RUNNING, "completed": R.WORKFLOW_RUN_STATUS_COMPLETED,
               "failed": R.WORKFLOW_RUN_STATUS_FAILED, "canceled": R.WORKFLOW_RUN_STATUS_CANCELED}
_RUN_STATUS_NAME = {v: k for k, v in _RUN_STATUS.items()}
_STEP_STATUS = {"pending": R.STEP_RUN_STATUS_PENDING, "running": R.STEP_RUN_STATUS_RUNNING,
                "completed": R.STEP_RUN_STATUS_COMPLETED, "failed": R.STEP_RUN_STATUS_FAILED,
                "skipped": R.STEP_RUN_STATUS_SKIPPED, "canceled": R.STEP_RUN_STATUS_CANCELED}
_SKIP = {"": R.SKIP_REASON_UNSPECIFIED, "condition_false": R.SKIP_REASON_CONDITION_FALSE,
         "upstream_failed": R.SKIP_REASON_UPSTREAM_FAILED, "all_upstream_skipped": R.SKIP_REASON_ALL_UPSTREAM_SKIPPED,
         "trigger_rule_unsatisfiable": R.SKIP_REASON_TRIGGER_RULE_UNSATISFIABLE}


def run_message(run: WorkflowRunRow) -> workflow_run_pb2.WorkflowRun:
    return R.WorkflowRun(
        id=run.id, project_id=run.project_id, workflow_id=run.workflow_id, version=run.version,
        status=_RUN_STATUS.get(run.status, R.WORKFLOW_RUN_STATUS_UNSPECIFIED), input_json=json.dumps(run.input),
        error=run.error, idempotency_key=run.idempotency_key, create_time=convert.ts(run.create_time),
        start_time=convert.ts(run.start_time), finish_time=convert.ts(run.finish_time),
        update_time=convert.ts(run.update_time))


def _step_message(step: StepRunRow) -> workflow_run_pb2.StepRun:
    return R.StepRun(
        id=step.id, workflow_run_id=step.workflow_run_id, step_ref=step.step_ref,
        status=_STEP_STATUS.get(step.status, R.STEP_RUN_STATUS_UNSPECIFIED),
        skip_reason=_SKIP.get(step.skip_reason, R.SKIP_REASON_UNSPECIFIED), job_run_id=step.job_run_id or "",
        output_json="" if step.output is None else json.dumps(step.output), error=step.error,
        create_time=convert.ts(step.create_time), start_time=convert.ts(step.start_time),
        finish_time=convert.ts(step.finish_time))


def _event_message(e: WorkflowRunEventRow) -> workflow_run_pb2.WorkflowRunEvent:
    return R.WorkflowRunEvent(workflow_run_id=e.workflow_run_id, sequence=e.seq, type=e.type, step_ref=e.step_ref,
                              from_status=e.from_status, to_status=e.to_status, message=e.message,
                              create_time=convert.ts(e.create_time))


def _run_id(v: Violations, value: str, path: str = "id") -> str:
    validate.check_text(v, path, value, max_len=64, required=True)
    v.raise_if_any()
    return value


class WorkflowRunServicer(workflow_run_pb2_grpc.WorkflowRunServiceServicer):
    def __init__(self, deps: Deps, store: WorkflowRunStore, runs: WorkflowRuns) -> None:
        self._d = deps
        self._store = store
        self._runs = runs

    async def GetWorkflowRun(self, request: workflow_run_pb2.GetWorkflowRunRequest,
                             context: grpc.aio.ServicerContext) -> workflow_run_pb2.GetWorkflowRunResponse:
        run = await self._store.get(project_id(), _run_id(Violations(), request.id))
        return R.GetWorkflowRunResponse(workflow_run=run_message(run))

    async def ListWorkflowRuns(self, request: workflow_run_pb2.ListWorkflowRunsRequest,
                               context: grpc.aio.ServicerContext) -> workflow_run_pb2.ListWorkflowRunsResponse:
        v = Violations()
        validate.check_text(v, "workflow_id", request.workflow_id, max_len=64)
        statuses = []
        for i, value in enumerate(request.statuses):
            if value in _RUN_STATUS_NAME:
                statuses.append(_RUN_STATUS_NAME[value])
            else:
                v.add(f"statuses[{i}]", "is not a known workflow run status")
        v.raise_if_any()
        project = project_id()
        size = page_size(request.page_size)
        page, token = await keyset_page(
            self._d.page_tokens, request.page_token,
            fingerprint("workflow_runs", project, request.workflow_id, *statuses), size,
            lambda cursor, limit: self._store.list_runs(project, workflow_id=request.workflow_id or None,
                                                        statuses=statuses or None, cursor=cursor, limit=limit))
        return R.ListWorkflowRunsResponse(workflow_runs=[run_message(r) for r in page], next_page_token=token)

    async def CancelWorkflowRun(self, request: workflow_run_pb2.CancelWorkflowRunRequest,
                                context: grpc.aio.ServicerContext) -> workflow_run_pb2.CancelWorkflowRunResponse:
        v = Violations()
        validate.check_text(v, "reason", request.reason, max_len=1024)
        run_id = _run_id(v, request.id)
        project = project_id()
        await self._runs.cancel(project, run_id, request.reason)
        return R.CancelWorkflowRunResponse(workflow_run=run_message(await self._store.get(project, run_id)))

    async def ListStepRuns(self, request: workflow_run_pb2.ListStepRunsRequest,
                           context: grpc.aio.ServicerContext) -> workflow_run_pb2.ListStepRunsResponse:
        steps = await self._store.steps(project_id(), _run_id(Violations(), request.workflow_run_id,
                                                              "workflow_run_id"))
        return R.ListStepRunsResponse(step_runs=[_step_message(s) for s in steps])

    async def ListWorkflowRunEvents(
            self, request: workflow_run_pb2.ListWorkflowRunEventsRequest,
            context: grpc.aio.ServicerContext) -> workflow_run_pb2.ListWorkflowRunEventsResponse:
        v = Violations()
        if request.after_sequence < 0:
            v.add("after_sequence", "must not be negative")
        if request.page_size < 0:
            v.add("page_size", "must not be negative")
        run_id = _run_id(v, request.workflow_run_id, "workflow_run_id")
        limit = min(request.page_size or 200, 1000)
        events = await self._store.events_after(project_id(), run_id, request.after_sequence, limit)
        return R.ListWorkflowRunEventsResponse(events=[_event_message(e) for e in events])

    async def WatchWorkflowRun(self, request: workflow_run_pb2.WatchWorkflowRunRequest,
                               context: grpc.aio.ServicerContext
                               ) -> AsyncIterator[workflow_run_pb2.WatchWorkflowRunResponse]:
        v = Violations()
        if request.after_sequence < 0:
            v.add("after_sequence", "must not be negative")
        run_id = _run_id(v, request.workflow_run_id, "workflow_run_id")
        project = project_id()
        await self._store.get(project, run_id)  # NOT_FOUND before the stream starts
        watches = Watches(self._d.runs, self._d.feed, self._d.events, self._d.settings)
        with self._d.streams.open(project):
            await context.send_initial_metadata(())
            try:
                async for item in watches.workflow_run(self._store, project, run_id, request.after_sequence):
                    if isinstance(item, Keepalive):
                        yield R.WatchWorkflowRunResponse(keepalive=run_pb2.Keepalive(time=convert.ts(item.time)))
                    else:
                        yield R.WatchWorkflowRunResponse(event=_event_message(item))
            except AgedOut:
                return
