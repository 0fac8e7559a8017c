"""WorkflowRunService: read, follow, cancel and operate workflow runs (TriggerWorkflow is in WorkflowService)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc

from strait_client.v1 import run_pb2, workflow_run_pb2, workflow_run_pb2_grpc
from strait_server.api import convert, resume_tokens, validate
from strait_server.api.deps import Deps
from strait_server.api.interceptor import principal, project_id
from strait_server.api.pagination import MAX_PAGE_SIZE, fingerprint, keyset_page, page_size
from strait_server.errors import Violations
from strait_server.service.watch import (
    AgedOut,
    Keepalive,
    MapProgress,
    Watches,
    WorkflowRunItem,
    WorkflowRunSnapshot,
)
from strait_server.service.workflow_runs import WorkflowRuns
from strait_server.store.workflow_runs import (
    StatusFeedCursor,
    StepRunRow,
    WorkflowRunEventRow,
    WorkflowRunRow,
    WorkflowRunStore,
)
from strait_server.workflows import waits
from strait_server.workflows.checks import REF_RE
from strait_server.workflows.plan import Plan

# A step's output set by hand (CompleteWorkflowStep.output_json), as large as a job run's output may be.
MAX_OUTPUT_BYTES = 1024 * 1024

R = workflow_run_pb2
_RUN_STATUS = {"running": R.WORKFLOW_RUN_STATUS_RUNNING, "completed": R.WORKFLOW_RUN_STATUS_COMPLETED,
               "failed": R.WORKFLOW_RUN_STATUS_FAILED, "canceled": R.WORKFLOW_RUN_STATUS_CANCELED,
               "paused": R.WORKFLOW_RUN_STATUS_PAUSED, "queued": R.WORKFLOW_RUN_STATUS_QUEUED,
               "timed_out": R.WORKFLOW_RUN_STATUS_TIMED_OUT, "scheduled": R.WORKFLOW_RUN_STATUS_SCHEDULED}
_RUN_STATUS_NAME = {v: k for k, v in _RUN_STATUS.items()}
_STEP_STATUS = {"pending": R.STEP_RUN_STATUS_PENDING, "ready": R.STEP_RUN_STATUS_READY,
                "running": R.STEP_RUN_STATUS_RUNNING,
                "waiting": R.STEP_RUN_STATUS_WAITING,
                "completed": R.STEP_RUN_STATUS_COMPLETED, "failed": R.STEP_RUN_STATUS_FAILED,
                "skipped": R.STEP_RUN_STATUS_SKIPPED, "canceled": R.STEP_RUN_STATUS_CANCELED}
_SKIP = {"": R.SKIP_REASON_UNSPECIFIED, "condition_false": R.SKIP_REASON_CONDITION_FALSE,
         "upstream_failed": R.SKIP_REASON_UPSTREAM_FAILED, "all_upstream_skipped": R.SKIP_REASON_ALL_UPSTREAM_SKIPPED,
         "trigger_rule_unsatisfiable": R.SKIP_REASON_TRIGGER_RULE_UNSATISFIABLE, "manual": R.SKIP_REASON_MANUAL,
         "disabled": R.SKIP_REASON_DISABLED}


def run_message(run: WorkflowRunRow) -> workflow_run_pb2.WorkflowRun:
    return R.WorkflowRun(
        id=run.id, project_id=run.project_id, workflow_id=run.workflow_id, version=run.version,
        status=_RUN_STATUS.get(run.status, R.WORKFLOW_RUN_STATUS_UNSPECIFIED), input_json=run.input,
        error=run.error, idempotency_key=run.idempotency_key, create_time=convert.ts(run.create_time),
        start_time=convert.ts(run.start_time), finish_time=convert.ts(run.finish_time),
        update_time=convert.ts(run.update_time), parent_workflow_run_id=run.parent_workflow_run_id or "",
        parent_step_run_id=run.parent_step_run_id or "", concurrency_key=run.concurrency_key or "",
        deadline_time=convert.ts(run.deadline_time), scheduled_time=convert.ts(run.scheduled_time))


def _step_message(step: StepRunRow) -> workflow_run_pb2.StepRun:
    return R.StepRun(
        id=step.id, workflow_run_id=step.workflow_run_id, step_ref=step.step_ref,
        status=_STEP_STATUS.get(step.status, R.STEP_RUN_STATUS_UNSPECIFIED),
        skip_reason=_SKIP.get(step.skip_reason, R.SKIP_REASON_UNSPECIFIED), job_run_id=step.job_run_id or "",
        output_json="" if step.output is None else json.dumps(step.output), error=step.error,
        create_time=convert.ts(step.create_time), start_time=convert.ts(step.start_time),
        finish_time=convert.ts(step.finish_time), waiting_reason=step.waiting_reason,
        wake_time=convert.ts(step.wake_time), map_index=step.map_index, map_counts=_map_counts(step),
        child_workflow_run_id=step.child_workflow_run_id or "")


def _map_counts(step: StepRunRow) -> workflow_run_pb2.MapCounts | None:
    if not step.map_total:
        return None
    return R.MapCounts(total=step.map_total, started=step.map_started, done=step.map_done, failed=step.map_failed)


def _graph_message(run: WorkflowRunRow, plan: Plan, steps: list[StepRunRow]) -> workflow_run_pb2.WorkflowRunGraph:
    nodes = [R.WorkflowRunGraphNode(
        step_ref=s.step_ref, kind=plan.steps[s.step_ref].kind if s.step_ref in plan.steps else "",
        status=_STEP_STATUS.get(s.status, R.STEP_RUN_STATUS_UNSPECIFIED),
        skip_reason=_SKIP.get(s.skip_reason, R.SKIP_REASON_UNSPECIFIED), waiting_reason=s.waiting_reason,
        job_run_id=s.job_run_id or "", error=s.error, start_time=convert.ts(s.start_time),
        finish_time=convert.ts(s.finish_time), map_counts=_map_counts(s)) for s in steps]
    edges = [R.WorkflowRunGraphEdge(parent=parent, child=ref) for ref in plan.order
             for parent in plan.steps[ref].parents]
    return R.WorkflowRunGraph(
        workflow_run_id=run.id, version=run.version,
        status=_RUN_STATUS.get(run.status, R.WORKFLOW_RUN_STATUS_UNSPECIFIED), nodes=nodes, edges=edges,
        roots=plan.roots, ready=[s.step_ref for s in steps if s.status == "ready"])


def _watch_message(item: WorkflowRunItem) -> workflow_run_pb2.WatchWorkflowRunResponse:
    if isinstance(item, Keepalive):
        return R.WatchWorkflowRunResponse(keepalive=run_pb2.Keepalive(time=convert.ts(item.time)))
    if isinstance(item, WorkflowRunSnapshot):
        return R.WatchWorkflowRunResponse(snapshot=R.WorkflowRunSnapshot(
            workflow_run=run_message(item.run), step_runs=[_step_message(s) for s in item.steps],
            sequence=item.run.event_seq))
    if isinstance(item, MapProgress):
        c = item.counts
        return R.WatchWorkflowRunResponse(map_progress=R.MapProgress(
            step_ref=c.step_ref, counts=R.MapCounts(total=c.total, started=c.started, done=c.done, failed=c.failed),
            time=convert.ts(item.time)))
    return R.WatchWorkflowRunResponse(event=_event_message(item))


def _event_message(e: WorkflowRunEventRow) -> workflow_run_pb2.WorkflowRunEvent:
    return R.WorkflowRunEvent(workflow_run_id=e.workflow_run_id, sequence=e.seq, type=e.type, step_ref=e.step_ref,
                              from_status=e.from_status, to_status=e.to_status, message=e.message,
                              create_time=convert.ts(e.create_time))


def encode_resume_token(cursor: StatusFeedCursor) -> str:
    return resume_tokens.encode("w1", cursor.xid, cursor.workflow_run_id, cursor.seq)


def decode_resume_token(token: str) -> StatusFeedCursor:
    def parse(parts: list[str]) -> StatusFeedCursor:
        xid, run_id, seq = parts
        cursor = StatusFeedCursor(int(xid), run_id, int(seq))
        # Outside xid8 and bigint, or not a run id's characters: PostgreSQL would refuse it later, less precisely.
        if not (0 <= cursor.xid < 2**64 and 0 <= cursor.seq < 2**63 and len(run_id) <= 64 and run_id.isascii()
                and run_id.isprintable()):
            raise ValueError(token)
        return cursor
    return resume_tokens.decode(token, "w1", parse)


def _run_id(v: Violations, value: str, path: str = "id") -> str:
    validate.check_text(v, path, value, max_len=64, required=True)
    v.raise_if_any()
    return value


def _step(v: Violations, request: Any) -> tuple[str, str]:
    """The workflow run and step ref an operation names."""
    validate.check_text(v, "step_ref", request.step_ref, max_len=63, required=True)
    if request.step_ref and not REF_RE.fullmatch(request.step_ref):
        v.add("step_ref", "is not a step ref (^[a-z][a-z0-9_]{0,62}$)")
    return _run_id(v, request.id), request.step_ref


def _approver() -> waits.Approver:
    who = principal()
    return waits.Approver(key_id=who.key_id, key_name=who.key_name)


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
        v = Violations()
        if request.step_ref and not REF_RE.fullmatch(request.step_ref):
            v.add("step_ref", "is not a step ref (^[a-z][a-z0-9_]{0,62}$)")
        run_id = _run_id(v, request.workflow_run_id, "workflow_run_id")
        project = project_id()
        if not request.step_ref:
            steps = await self._store.steps(project, run_id)
            return R.ListStepRunsResponse(step_runs=[_step_message(s) for s in steps])
        size = page_size(request.page_size or MAX_PAGE_SIZE)
        fp = fingerprint("step_runs", project, run_id, request.step_ref)
        cursor = self._d.page_tokens.decode(request.page_token, fp)
        after = int(cursor[1]) if cursor else -2  # the step itself (-1) first, then its instances
        rows = await self._store.step_with_instances(project, run_id, request.step_ref, after, size + 1)
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = self._d.page_tokens.encode(rows[-1].create_time, str(rows[-1].map_index), fp)
        return R.ListStepRunsResponse(step_runs=[_step_message(s) for s in rows], next_page_token=token)

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
        run = await self._store.get(project, run_id)  # NOT_FOUND before the stream starts
        maps = await self._runs.has_maps(run)
        watches = Watches(self._d.runs, self._d.feed, self._d.events, self._d.settings)
        with self._d.streams.open(project):
            await context.send_initial_metadata(())
            try:
                async for item in watches.workflow_run(self._store, project, run_id, request.after_sequence,
                                                       snapshot=request.snapshot, maps=maps):
                    yield _watch_message(item)
            except AgedOut:
                return

    async def WatchWorkflowRuns(self, request: workflow_run_pb2.WatchWorkflowRunsRequest,
                                context: grpc.aio.ServicerContext
                                ) -> AsyncIterator[workflow_run_pb2.WatchWorkflowRunsResponse]:
        v = Violations()
        validate.check_text(v, "workflow_id", request.workflow_id, max_len=64)
        v.raise_if_any()
        project = project_id()
        if request.resume_token:
            cursor = decode_resume_token(request.resume_token)
        elif request.from_start:
            cursor = StatusFeedCursor(0, "", 0)
        else:
            cursor = StatusFeedCursor((await self._d.feed.now()).xid, "", 0)
        watches = Watches(self._d.runs, self._d.feed, self._d.events, self._d.settings)
        with self._d.streams.open(project):
            await context.send_initial_metadata(())  # tells the client the feed position is taken
            try:
                async for item in watches.workflow_runs(self._store, project, cursor, request.workflow_id or None):
                    if isinstance(item, Keepalive):
                        yield R.WatchWorkflowRunsResponse(
                            keepalive=run_pb2.Keepalive(time=convert.ts(item.time)),
                            resume_token=encode_resume_token(cursor))
                    else:
                        cursor = item.cursor
                        yield R.WatchWorkflowRunsResponse(event=_event_message(item.event),
                                                          workflow_id=item.workflow_id,
                                                          resume_token=encode_resume_token(cursor))
            except AgedOut:
                return

    async def ApproveStep(self, request: workflow_run_pb2.ApproveStepRequest,
                          context: grpc.aio.ServicerContext) -> workflow_run_pb2.ApproveStepResponse:
        return R.ApproveStepResponse(step_run=await self._decide(request, "comment", approved=True))

    async def RejectStep(self, request: workflow_run_pb2.RejectStepRequest,
                         context: grpc.aio.ServicerContext) -> workflow_run_pb2.RejectStepResponse:
        return R.RejectStepResponse(step_run=await self._decide(request, "reason", approved=False))

    async def _decide(self, request: Any, text_field: str, *, approved: bool) -> workflow_run_pb2.StepRun:
        v = Violations()
        text = getattr(request, text_field)
        validate.check_text(v, text_field, text, max_len=4096)
        run_id, ref = _step(v, request)
        await self._runs.decide_approval(project_id(), run_id, ref, _approver(), approved=approved, text=text)
        return await self._step_run(run_id, ref)

    async def CompleteWorkflowStep(self, request: workflow_run_pb2.CompleteWorkflowStepRequest,
                                   context: grpc.aio.ServicerContext) -> workflow_run_pb2.CompleteWorkflowStepResponse:
        v = Violations()
        output = validate.check_json(v, "output_json", request.output_json or "null", MAX_OUTPUT_BYTES)
        run_id, ref = _step(v, request)
        await self._runs.complete_step(project_id(), run_id, ref, output)
        return R.CompleteWorkflowStepResponse(step_run=await self._step_run(run_id, ref))

    async def SkipWorkflowStep(self, request: workflow_run_pb2.SkipWorkflowStepRequest,
                               context: grpc.aio.ServicerContext) -> workflow_run_pb2.SkipWorkflowStepResponse:
        v = Violations()
        validate.check_text(v, "reason", request.reason, max_len=4096)
        run_id, ref = _step(v, request)
        await self._runs.skip_step(project_id(), run_id, ref, request.reason)
        return R.SkipWorkflowStepResponse(step_run=await self._step_run(run_id, ref))

    async def _step_run(self, run_id: str, ref: str) -> workflow_run_pb2.StepRun:
        return _step_message(await self._store.step(project_id(), run_id, ref))

    async def PauseWorkflowRun(self, request: workflow_run_pb2.PauseWorkflowRunRequest,
                               context: grpc.aio.ServicerContext) -> workflow_run_pb2.PauseWorkflowRunResponse:
        run_id = _run_id(Violations(), request.id)
        await self._runs.pause(project_id(), run_id)
        return R.PauseWorkflowRunResponse(workflow_run=run_message(await self._store.get(project_id(), run_id)))

    async def ResumeWorkflowRun(self, request: workflow_run_pb2.ResumeWorkflowRunRequest,
                                context: grpc.aio.ServicerContext) -> workflow_run_pb2.ResumeWorkflowRunResponse:
        run_id = _run_id(Violations(), request.id)
        await self._runs.resume(project_id(), run_id)
        return R.ResumeWorkflowRunResponse(workflow_run=run_message(await self._store.get(project_id(), run_id)))

    async def GetWorkflowRunGraph(self, request: workflow_run_pb2.GetWorkflowRunGraphRequest,
                                  context: grpc.aio.ServicerContext) -> workflow_run_pb2.GetWorkflowRunGraphResponse:
        run, plan, steps = await self._runs.graph(self._store, project_id(), _run_id(Violations(), request.id))
        return R.GetWorkflowRunGraphResponse(graph=_graph_message(run, plan, steps))

    async def RetryWorkflowStep(self, request: workflow_run_pb2.RetryWorkflowStepRequest,
                                context: grpc.aio.ServicerContext) -> workflow_run_pb2.RetryWorkflowStepResponse:
        run_id, ref = _step(Violations(), request)
        await self._runs.retry_step(project_id(), run_id, ref)
        return R.RetryWorkflowStepResponse(workflow_run=run_message(await self._store.get(project_id(), run_id)))

    async def ReplayWorkflowSubtree(self, request: workflow_run_pb2.ReplayWorkflowSubtreeRequest,
                                    context: grpc.aio.ServicerContext
                                    ) -> workflow_run_pb2.ReplayWorkflowSubtreeResponse:
        run_id, ref = _step(Violations(), request)
        await self._runs.replay_subtree(project_id(), run_id, ref)
        return R.ReplayWorkflowSubtreeResponse(workflow_run=run_message(await self._store.get(project_id(), run_id)))
