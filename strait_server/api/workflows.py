"""WorkflowService: workflow definitions and their versions."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
from google.protobuf import json_format

from strait_client.v1 import workflow_pb2, workflow_pb2_grpc
from strait_server.api import convert, replies, validate
from strait_server.api.deps import Deps
from strait_server.api.interceptor import project_id
from strait_server.api.pagination import fingerprint, page_size
from strait_server.api.workflow_runs import run_message
from strait_server.errors import Violations
from strait_server.service.workflow_runs import WorkflowRuns
from strait_server.service.workflows import Workflows
from strait_server.store.workflows import Attributes, Schedule, StoredVersion, StoredWorkflow, WorkflowStore
from strait_server.workflows import checks

# A workflow run's input (TriggerWorkflowRequest.input_json).
MAX_INPUT_BYTES = 1024 * 1024
# How far ahead a run may be scheduled (TriggerWorkflowRequest.scheduled_time): as far as a job's run may be.
MAX_SCHEDULE_AHEAD = validate.MAX_SCHEDULE_AHEAD
# Step overrides per trigger: one per step of the largest definition and its on_failure_step.
MAX_OVERRIDES = checks.MAX_STEPS + 1


def workflow_message(w: StoredWorkflow) -> workflow_pb2.Workflow:
    msg = json_format.ParseDict(w.definition, workflow_pb2.Workflow())
    a = w.attributes
    msg.id, msg.project_id, msg.slug, msg.name, msg.description = w.id, w.project_id, a.slug, a.name, a.description
    msg.version, msg.enabled, msg.etag = w.version, a.enabled, w.etag
    msg.tags.update(a.tags)
    msg.create_time.FromDatetime(w.create_time)
    msg.update_time.FromDatetime(w.update_time)
    s = a.schedule
    msg.cron, msg.timezone, msg.schedule_input_json = s.cron, s.timezone, s.input
    msg.cron_overlap_policy = convert.overlap_number(s.overlap)
    msg.schedule_paused = w.schedule_paused
    if s.cron and not w.schedule_paused and w.next_fire_time is not None:
        msg.next_fire_time.FromDatetime(w.next_fire_time)
    return msg


def _version_message(w: StoredWorkflow, v: StoredVersion) -> workflow_pb2.WorkflowVersion:
    definition = json_format.ParseDict(v.definition, workflow_pb2.Workflow())
    definition.id, definition.slug, definition.version = w.id, w.attributes.slug, v.version
    return workflow_pb2.WorkflowVersion(version=v.version, workflow=definition, create_time=convert.ts(v.create_time))


def _attributes(wf: workflow_pb2.Workflow, schedule: Schedule) -> Attributes:
    return Attributes(wf.slug, wf.name, wf.description, dict(wf.tags), wf.enabled if wf.HasField("enabled") else True,
                      schedule)


def _checked(wf: workflow_pb2.Workflow) -> tuple[checks.Definition, Schedule]:
    v = Violations()
    checks.check_attributes(v, wf)
    definition = checks.check_definition(v, wf)
    schedule = checks.check_schedule(v, wf, definition)
    v.raise_if_any()
    return definition, schedule


class WorkflowServicer(workflow_pb2_grpc.WorkflowServiceServicer):
    def __init__(self, deps: Deps, store: WorkflowStore, runs: WorkflowRuns) -> None:
        self._d = deps
        self._store = store
        self._workflows = Workflows(store)
        self._runs = runs
        self._reply_bytes = replies.budget(deps.settings.grpc_max_message_bytes)

    async def _selected(self, request: object, version: int = 0) -> StoredWorkflow:
        v = Violations()
        workflow_id, slug = validate.selector(v, request)
        if version < 0:
            v.add("version", "must not be negative")
        v.raise_if_any()
        return await self._store.get(project_id(), workflow_id=workflow_id, slug=slug, version=version)

    async def CreateWorkflow(self, request: workflow_pb2.CreateWorkflowRequest,
                             context: grpc.aio.ServicerContext) -> workflow_pb2.CreateWorkflowResponse:
        definition, schedule = _checked(request.workflow)
        created = await self._workflows.create(project_id(), _attributes(request.workflow, schedule), definition)
        return workflow_pb2.CreateWorkflowResponse(workflow=workflow_message(created))

    async def GetWorkflow(self, request: workflow_pb2.GetWorkflowRequest,
                          context: grpc.aio.ServicerContext) -> workflow_pb2.GetWorkflowResponse:
        return workflow_pb2.GetWorkflowResponse(workflow=workflow_message(await self._selected(request,
                                                                                                request.version)))

    async def ListWorkflows(self, request: workflow_pb2.ListWorkflowsRequest,
                            context: grpc.aio.ServicerContext) -> workflow_pb2.ListWorkflowsResponse:
        project = project_id()
        size = page_size(request.page_size)
        fp = fingerprint("workflows", project)
        cursor = self._d.page_tokens.decode(request.page_token, fp)
        items = await self._store.list_workflows(project, cursor, size + 1)
        page = replies.page(items, workflow_message, size=size, max_bytes=self._reply_bytes)
        last = page.last
        token = self._d.page_tokens.encode(last.create_time, last.id, fp) if last else ""
        return workflow_pb2.ListWorkflowsResponse(workflows=page.messages, next_page_token=token)

    async def UpdateWorkflow(self, request: workflow_pb2.UpdateWorkflowRequest,
                             context: grpc.aio.ServicerContext) -> workflow_pb2.UpdateWorkflowResponse:
        v = Violations()
        given = request.workflow
        paths = validate.mask_paths(v, list(request.update_mask.paths), checks.UPDATABLE, "Workflow")
        if not given.id and not given.slug:
            v.add("workflow.id", "set workflow.id (or workflow.slug) to name the workflow to update")
        v.raise_if_any()
        current = await self._store.get(project_id(), workflow_id=given.id, slug=given.slug if not given.id else "")
        merged = workflow_message(current)
        for path in paths:
            _replace_field(merged, given, path)
        definition, schedule = _checked(merged)
        updated = await self._workflows.update(current, _attributes(merged, schedule), definition, etag=given.etag)
        return workflow_pb2.UpdateWorkflowResponse(workflow=workflow_message(updated))

    async def DeleteWorkflow(self, request: workflow_pb2.DeleteWorkflowRequest,
                             context: grpc.aio.ServicerContext) -> workflow_pb2.DeleteWorkflowResponse:
        v = Violations()
        validate.check_text(v, "etag", request.etag, max_len=32)
        current = await self._selected(request)
        deleted = await self._store.delete(current, etag=request.etag)
        return workflow_pb2.DeleteWorkflowResponse(workflow=workflow_message(deleted))

    async def ListWorkflowVersions(self, request: workflow_pb2.ListWorkflowVersionsRequest,
                                   context: grpc.aio.ServicerContext) -> workflow_pb2.ListWorkflowVersionsResponse:
        current = await self._selected(request)
        size = page_size(request.page_size)
        fp = fingerprint("workflow_versions", current.id)
        cursor = self._d.page_tokens.decode(request.page_token, fp)
        before = int(cursor[1]) if cursor else None
        items = await self._store.versions(current.id, before, size + 1)
        page = replies.page(items, lambda item: _version_message(current, item), size=size,
                            max_bytes=self._reply_bytes)
        last = page.last
        token = self._d.page_tokens.encode(last.create_time, str(last.version), fp) if last else ""
        return workflow_pb2.ListWorkflowVersionsResponse(versions=page.messages, next_page_token=token)

    async def TriggerWorkflow(self, request: workflow_pb2.TriggerWorkflowRequest,
                              context: grpc.aio.ServicerContext) -> workflow_pb2.TriggerWorkflowResponse:
        v = Violations()
        workflow_id, slug = validate.selector(v, request)
        run_input = validate.check_json(v, "input_json", request.input_json or "{}", MAX_INPUT_BYTES,
                                        object_only=True)
        if request.version < 0:
            v.add("version", "must not be negative")
        validate.check_text(v, "idempotency_key", request.idempotency_key, max_len=256)
        scheduled = _scheduled_time(v, request)
        overrides = _step_overrides(v, request)
        v.raise_if_any()
        run, repeat = await self._runs.trigger(project_id(), workflow_id=workflow_id, slug=slug,
                                               version=request.version, run_input=run_input,
                                               idempotency_key=request.idempotency_key, scheduled_time=scheduled,
                                               step_overrides=overrides)
        return workflow_pb2.TriggerWorkflowResponse(workflow_run=run_message(run), idempotent_repeat=repeat)

    async def ValidateWorkflow(self, request: workflow_pb2.ValidateWorkflowRequest,
                               context: grpc.aio.ServicerContext) -> workflow_pb2.ValidateWorkflowResponse:
        definition, _ = _checked(request.workflow)
        await self._workflows.validate(project_id(), definition, request.workflow.slug)
        return workflow_pb2.ValidateWorkflowResponse(order=definition.order)


def _scheduled_time(v: Violations, request: workflow_pb2.TriggerWorkflowRequest) -> datetime | None:
    """When the run's steps start (None: at once). Whether that is still ahead is decided by the database's clock
    when the run is written; the horizon, by this process's."""
    if not request.HasField("scheduled_time"):
        return None
    at = validate.timestamp(v, "scheduled_time", request.scheduled_time)
    if at is not None and at - datetime.now(UTC) > MAX_SCHEDULE_AHEAD:
        v.add("scheduled_time", f"must be at most {MAX_SCHEDULE_AHEAD.days} days ahead")
    return at


def _step_overrides(v: Violations, request: workflow_pb2.TriggerWorkflowRequest) -> list[tuple[str, bool]]:
    """(ref, enabled) of each override; whether the refs name steps is checked against the version."""
    overrides = request.step_overrides
    if len(overrides) > MAX_OVERRIDES:
        v.add("step_overrides", f"must hold at most {MAX_OVERRIDES:,} overrides")
        return []
    first: dict[str, int] = {}
    for i, o in enumerate(overrides):
        path = f"step_overrides[{i}].ref"
        validate.check_text(v, path, o.ref, max_len=63, required=True)
        if o.ref in first:
            v.add(path, f"names step {o.ref!r} again (step_overrides[{first[o.ref]}])")
        first.setdefault(o.ref, i)
    return [(o.ref, o.enabled) for o in overrides]


def _replace_field(target: workflow_pb2.Workflow, source: workflow_pb2.Workflow, name: str) -> None:
    """Field `name` of `target` becomes `source`'s (cleared when `source` leaves it unset)."""
    target.ClearField(name)  # type: ignore[arg-type]  # a checked update_mask path
    if name == "tags":
        target.tags.update(source.tags)
    elif name == "steps":
        target.steps.extend(source.steps)
    elif name in ("on_failure_step", "concurrency", "timeout"):
        if source.HasField(name):  # type: ignore[arg-type]
            getattr(target, name).CopyFrom(getattr(source, name))
    elif name != "enabled" or source.HasField("enabled"):
        setattr(target, name, getattr(source, name))
