"""Every call as data: the request to send and how to convert its response. Client and AsyncClient only
differ in how they execute these, so building requests and decoding responses lives here once."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Literal, TypeAlias, TypeVar

from google.protobuf.message import Message

from strait_client._admin_models import ApiKey, ApiRateLimit, CreatedApiKey, EndpointCircuit, Project
from strait_client._convert import fill, mask_paths, top_level_paths
from strait_client._models import Job, Run, RunEvent, TriggeredRun
from strait_client._run_stats_models import RunStats
from strait_client._steps import Step
from strait_client._workflow_models import Workflow, WorkflowVersion
from strait_client._workflow_run_models import WorkflowRun
from strait_client.v1 import circuit_pb2, job_pb2, project_pb2, run_pb2, schedule_pb2, workflow_pb2

T = TypeVar("T")
Service = Literal["jobs", "runs", "projects", "schedules", "circuits", "workflows", "workflow_runs", "events"]
Page: TypeAlias = tuple[list[T], str]
Steps: TypeAlias = Sequence[Step | Mapping[str, Any]]
RateLimit: TypeAlias = ApiRateLimit | Mapping[str, Any] | None

JOB_ID_PREFIX = "job_"
WORKFLOW_ID_PREFIX = "wf_"
DEFAULT_PAGE_SIZE = 200


@dataclass(frozen=True)
class Op(Generic[T]):
    service: Service
    method: str
    request: Message
    convert: Callable[[Any], T]
    # The caller made a repeat harmless (an event's idempotency key): retried like a read.
    repeatable: bool = False

    @property
    def retryable(self) -> bool:
        """Safe to send again after UNAVAILABLE: a read (ValidateWorkflow writes nothing), a trigger whose
        request id makes a repeat return the first attempt's runs, or a call marked `repeatable`."""
        return (self.repeatable or self.method.startswith(("Get", "List", "Validate"))
                or bool(getattr(self.request, "request_id", "")))


@dataclass(frozen=True)
class RunOptions:
    """Options of one run in `jobs.batch_trigger` (the keyword arguments of `jobs.trigger`).

    A plain dict in a batch is a payload; wrap it in RunOptions to set anything else.
    """

    payload: Mapping[str, Any] | None = None
    scheduled_time: datetime | None = None
    priority: int | None = None
    timeout: timedelta | None = None
    max_attempts: int | None = None
    idempotency_key: str = ""
    tags: Mapping[str, str] | None = None
    metadata: Mapping[str, str] | None = None
    ttl: timedelta | None = None
    concurrency_key: str = ""
    dedup_key: str = ""
    debounce_key: str = ""

    def to_proto(self) -> job_pb2.RunOptions:
        """The options as a strait.v1.RunOptions message.

        Returns:
            The message (the payload JSON-encoded).

        Raises:
            TypeError: The payload is not a dict, or a value has the wrong type.
            ValueError: A value is invalid (e.g. a naive scheduled_time).
        """
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.payload is not None:
            if not isinstance(self.payload, Mapping):
                raise TypeError(f"payload must be a dict (a JSON object), not {type(self.payload).__name__}")
            values["payload"] = dict(self.payload)
        return fill(job_pb2.RunOptions(), values)


def new_request_id() -> str:
    """A fresh id for one trigger call; its retries reuse it, so the server creates its runs once."""
    return str(uuid.uuid4())


def is_job_id(id_or_slug: str) -> bool:
    return id_or_slug.startswith(JOB_ID_PREFIX)


def _selector(id_or_slug: str) -> dict[str, Any]:
    return {"id": id_or_slug} if is_job_id(id_or_slug) else {"slug": id_or_slug}


def _job(response: Any) -> Job:
    return Job.from_proto(response.job)


def _run(response: Any) -> Run:
    return Run.from_proto(response.run)


def _triggered(response: Any) -> TriggeredRun:
    """A TriggerJobResponse or ReplayRunResponse (which has no dedup/debounce flags: they stay False)."""
    return TriggeredRun.from_response(response.run, response.idempotent_repeat,
                                      bool(getattr(response, "deduplicated", False)),
                                      bool(getattr(response, "debounced", False)))


def page_of(items_field: str, decode: Callable[[Any], T]) -> Callable[[Any], Page[T]]:
    def convert(response: Any) -> Page[T]:
        return [decode(m) for m in getattr(response, items_field)], str(response.next_page_token)
    return convert


# Jobs


def create_job(slug: str, endpoint_url: str, values: Mapping[str, Any]) -> Op[Job]:
    job = fill(job_pb2.Job(slug=slug, endpoint_url=endpoint_url), values)
    return Op("jobs", "CreateJob", job_pb2.CreateJobRequest(job=job), _job)


def get_job(id_or_slug: str) -> Op[Job]:
    return Op("jobs", "GetJob", job_pb2.GetJobRequest(**_selector(id_or_slug)), _job)


def list_jobs(page_size: int) -> Callable[[str], Op[Page[Job]]]:
    return lambda token: Op("jobs", "ListJobs", job_pb2.ListJobsRequest(page_size=page_size, page_token=token),
                            page_of("jobs", Job.from_proto))


def _update_mask(request: Any, descriptor: Any, values: Mapping[str, Any], *, nested: bool = True) -> None:
    if not values:
        raise ValueError("name at least one field to update")
    request.update_mask.paths.extend((mask_paths if nested else top_level_paths)(descriptor, values))


def update_job(id_or_slug: str, values: Mapping[str, Any], etag: str) -> Op[Job]:
    """`id_or_slug` must be an id when `values` renames the job (the caller resolves it)."""
    request = job_pb2.UpdateJobRequest(job=fill(job_pb2.Job(etag=etag, **_selector(id_or_slug)), values))
    _update_mask(request, job_pb2.Job.DESCRIPTOR, values)
    return Op("jobs", "UpdateJob", request, _job)


def delete_job(id_or_slug: str, etag: str) -> Op[Job]:
    return Op("jobs", "DeleteJob", job_pb2.DeleteJobRequest(etag=etag, **_selector(id_or_slug)), _job)


def trigger_job(id_or_slug: str, options: RunOptions) -> Op[TriggeredRun]:
    request = job_pb2.TriggerJobRequest(options=options.to_proto(), request_id=new_request_id(),
                                        **_selector(id_or_slug))
    return Op("jobs", "TriggerJob", request, _triggered)


def _batch(response: Any) -> list[TriggeredRun]:
    # A batch reply has one flag per run, for all three reasons: deduplicated/debounced are not reported.
    return [TriggeredRun.from_response(run, bool(repeat), None, None)
            for run, repeat in zip(response.runs, response.idempotent_repeats, strict=False)]


def batch_trigger_job(id_or_slug: str, runs: Sequence[RunOptions | Mapping[str, Any]],
                      full: bool = False) -> Op[list[TriggeredRun]]:
    """full=False asks for the BASIC view (ids, statuses, times; no payload echo), which is much cheaper."""
    if isinstance(runs, Mapping | str):
        raise TypeError("runs must be a list of payload dicts or RunOptions")
    options = [r.to_proto() if isinstance(r, RunOptions) else RunOptions(payload=r).to_proto() for r in runs]
    view = job_pb2.RUN_VIEW_FULL if full else job_pb2.RUN_VIEW_BASIC
    request = job_pb2.BatchTriggerJobRequest(runs=options, view=view, request_id=new_request_id(),
                                             **_selector(id_or_slug))
    return Op("jobs", "BatchTriggerJob", request, _batch)


# Runs


def status_list(statuses: Iterable[str] | None) -> list[str] | None:
    if isinstance(statuses, str):  # one status (a RunStatus is a str too)
        return [statuses]
    return list(statuses) if statuses is not None else None


def get_run(run_id: str) -> Op[Run]:
    return Op("runs", "GetRun", run_pb2.GetRunRequest(id=run_id), _run)


def list_runs(job_id: str | None, statuses: Iterable[str] | None, created_after: datetime | None,
              created_before: datetime | None, page_size: int,
              tags: Mapping[str, str] | None = None) -> Callable[[str], Op[Page[Run]]]:
    base = run_pb2.ListRunsRequest(page_size=page_size, tags=dict(tags or {}))
    fill(base, {"job_id": job_id, "statuses": status_list(statuses),
                "create_time_after": created_after, "create_time_before": created_before})

    def make(token: str) -> Op[Page[Run]]:
        request = run_pb2.ListRunsRequest()
        request.CopyFrom(base)
        request.page_token = token
        return Op("runs", "ListRuns", request, page_of("runs", Run.from_proto))
    return make


def run_stats(window: timedelta | float | None, bucket: timedelta | float | None, job: str | None) -> Op[RunStats]:
    request = fill(run_pb2.GetRunStatsRequest(), {"window": window, "bucket": bucket, "job_id": job})
    return Op("runs", "GetRunStats", request, RunStats.from_proto)


def cancel_run(run_id: str, reason: str) -> Op[Run]:
    return Op("runs", "CancelRun", run_pb2.CancelRunRequest(id=run_id, reason=reason), _run)


def replay_run(run_id: str, idempotency_key: str) -> Op[TriggeredRun]:
    return Op("runs", "ReplayRun", run_pb2.ReplayRunRequest(id=run_id, idempotency_key=idempotency_key),
              _triggered)


def list_run_events(run_id: str, after_sequence: int, page_size: int) -> Callable[[str], Op[Page[RunEvent]]]:
    return lambda token: Op("runs", "ListRunEvents", run_pb2.ListRunEventsRequest(
        run_id=run_id, after_sequence=after_sequence, page_size=page_size, page_token=token),
        page_of("events", RunEvent.from_proto))


def watch_run_request(run_id: str, after_sequence: int) -> run_pb2.WatchRunRequest:
    return run_pb2.WatchRunRequest(run_id=run_id, after_sequence=after_sequence)


def watch_runs_request(job_id: str | None, statuses: Iterable[str] | None, tags: Mapping[str, str] | None,
                       resume_token: str, from_start: bool) -> run_pb2.WatchRunsRequest:
    request = run_pb2.WatchRunsRequest(resume_token=resume_token, from_start=from_start)
    fill(request, {"job_id": job_id, "statuses": status_list(statuses), "tags": dict(tags) if tags else None})
    return request


# Projects and API keys


def _project(response: Any) -> Project:
    return Project.from_proto(response.project)


def _api_key(response: Any) -> ApiKey:
    return ApiKey.from_proto(response.api_key)


def create_project(slug: str, name: str, api_rate_limit: RateLimit = None) -> Op[Project]:
    request = fill(project_pb2.CreateProjectRequest(slug=slug, name=name), {"api_rate_limit": api_rate_limit})
    return Op("projects", "CreateProject", request, _project)


def get_project(project_id: str) -> Op[Project]:
    return Op("projects", "GetProject", project_pb2.GetProjectRequest(id=project_id), _project)


def list_projects(page_size: int) -> Callable[[str], Op[Page[Project]]]:
    return lambda token: Op("projects", "ListProjects", project_pb2.ListProjectsRequest(
        page_size=page_size, page_token=token), page_of("projects", Project.from_proto))


def update_project(project_id: str, values: Mapping[str, Any]) -> Op[Project]:
    request = project_pb2.UpdateProjectRequest(project=fill(project_pb2.Project(id=project_id), values))
    _update_mask(request, project_pb2.Project.DESCRIPTOR, values, nested=False)
    return Op("projects", "UpdateProject", request, _project)


def create_api_key(name: str, project_id: str, api_rate_limit: RateLimit = None,
                   scopes: Sequence[str] = ()) -> Op[CreatedApiKey]:
    request = fill(project_pb2.CreateApiKeyRequest(project_id=project_id, name=name, scopes=list(scopes)),
                   {"api_rate_limit": api_rate_limit})
    return Op("projects", "CreateApiKey", request, CreatedApiKey.from_response)


def list_api_keys(project_id: str, page_size: int) -> Callable[[str], Op[Page[ApiKey]]]:
    return lambda token: Op("projects", "ListApiKeys", project_pb2.ListApiKeysRequest(
        project_id=project_id, page_size=page_size, page_token=token), page_of("api_keys", ApiKey.from_proto))


def update_api_key(key_id: str, values: Mapping[str, Any]) -> Op[ApiKey]:
    request = project_pb2.UpdateApiKeyRequest(api_key=fill(project_pb2.ApiKey(id=key_id), values))
    _update_mask(request, project_pb2.ApiKey.DESCRIPTOR, values, nested=False)
    return Op("projects", "UpdateApiKey", request, _api_key)


def revoke_api_key(key_id: str) -> Op[ApiKey]:
    return Op("projects", "RevokeApiKey", project_pb2.RevokeApiKeyRequest(id=key_id), _api_key)


# Schedules and circuits


def schedule_fire_times(id_or_slug: str, count: int) -> Op[list[datetime]]:
    request = schedule_pb2.ListScheduleFireTimesRequest(count=count, **_selector(id_or_slug))
    return Op("schedules", "ListScheduleFireTimes", request,
              lambda response: [t.ToDatetime(tzinfo=UTC) for t in response.fire_times])


def pause_schedule(id_or_slug: str) -> Op[Job]:
    return Op("schedules", "PauseSchedule", schedule_pb2.PauseScheduleRequest(**_selector(id_or_slug)), _job)


def resume_schedule(id_or_slug: str) -> Op[Job]:
    return Op("schedules", "ResumeSchedule", schedule_pb2.ResumeScheduleRequest(**_selector(id_or_slug)), _job)


def trigger_schedule(id_or_slug: str) -> Op[Run]:
    return Op("schedules", "TriggerSchedule", schedule_pb2.TriggerScheduleRequest(**_selector(id_or_slug)), _run)


def _workflow_schedule(id_or_slug: str) -> dict[str, Any]:
    return ({"workflow_id": id_or_slug} if id_or_slug.startswith(WORKFLOW_ID_PREFIX)
            else {"workflow_slug": id_or_slug})


def workflow_schedule_fire_times(id_or_slug: str, count: int) -> Op[list[datetime]]:
    request = schedule_pb2.ListScheduleFireTimesRequest(count=count, **_workflow_schedule(id_or_slug))
    return Op("schedules", "ListScheduleFireTimes", request,
              lambda response: [t.ToDatetime(tzinfo=UTC) for t in response.fire_times])


def pause_workflow_schedule(id_or_slug: str) -> Op[Workflow]:
    request = schedule_pb2.PauseScheduleRequest(**_workflow_schedule(id_or_slug))
    return Op("schedules", "PauseSchedule", request, _workflow)


def resume_workflow_schedule(id_or_slug: str) -> Op[Workflow]:
    request = schedule_pb2.ResumeScheduleRequest(**_workflow_schedule(id_or_slug))
    return Op("schedules", "ResumeSchedule", request, _workflow)


def trigger_workflow_schedule(id_or_slug: str) -> Op[WorkflowRun]:
    request = schedule_pb2.TriggerScheduleRequest(**_workflow_schedule(id_or_slug))
    return Op("schedules", "TriggerSchedule", request, lambda response: WorkflowRun.from_proto(response.workflow_run))


def list_circuits(page_size: int) -> Callable[[str], Op[Page[EndpointCircuit]]]:
    return lambda token: Op("circuits", "ListEndpointCircuits", circuit_pb2.ListEndpointCircuitsRequest(
        page_size=page_size, page_token=token), page_of("circuits", EndpointCircuit.from_proto))


def reset_circuit(endpoint_url: str) -> Op[EndpointCircuit]:
    return Op("circuits", "ResetEndpointCircuit", circuit_pb2.ResetEndpointCircuitRequest(endpoint_url=endpoint_url),
              lambda response: EndpointCircuit.from_proto(response.circuit))


# Workflows


def workflow_selector(id_or_slug: str) -> dict[str, Any]:
    return {"id": id_or_slug} if id_or_slug.startswith(WORKFLOW_ID_PREFIX) else {"slug": id_or_slug}


def _workflow(response: Any) -> Workflow:
    return Workflow.from_proto(response.workflow)


def _definition(slug: str, steps: Steps, values: Mapping[str, Any]) -> workflow_pb2.Workflow:
    return fill(workflow_pb2.Workflow(slug=slug), {"steps": steps, **values})


def create_workflow(slug: str, steps: Steps, values: Mapping[str, Any]) -> Op[Workflow]:
    request = workflow_pb2.CreateWorkflowRequest(workflow=_definition(slug, steps, values))
    return Op("workflows", "CreateWorkflow", request, _workflow)


def get_workflow(id_or_slug: str, version: int) -> Op[Workflow]:
    request = workflow_pb2.GetWorkflowRequest(version=version, **workflow_selector(id_or_slug))
    return Op("workflows", "GetWorkflow", request, _workflow)


def list_workflows(page_size: int) -> Callable[[str], Op[Page[Workflow]]]:
    return lambda token: Op("workflows", "ListWorkflows", workflow_pb2.ListWorkflowsRequest(
        page_size=page_size, page_token=token), page_of("workflows", Workflow.from_proto))


def update_workflow(id_or_slug: str, values: Mapping[str, Any], etag: str) -> Op[Workflow]:
    """The server takes top-level paths only: a field given is replaced whole (a dict too)."""
    workflow = fill(workflow_pb2.Workflow(etag=etag, **workflow_selector(id_or_slug)), values)
    request = workflow_pb2.UpdateWorkflowRequest(workflow=workflow)
    _update_mask(request, workflow_pb2.Workflow.DESCRIPTOR, values, nested=False)
    return Op("workflows", "UpdateWorkflow", request, _workflow)


def delete_workflow(id_or_slug: str, etag: str) -> Op[Workflow]:
    request = workflow_pb2.DeleteWorkflowRequest(etag=etag, **workflow_selector(id_or_slug))
    return Op("workflows", "DeleteWorkflow", request, _workflow)


def list_workflow_versions(id_or_slug: str, page_size: int) -> Callable[[str], Op[Page[WorkflowVersion]]]:
    return lambda token: Op("workflows", "ListWorkflowVersions", workflow_pb2.ListWorkflowVersionsRequest(
        page_size=page_size, page_token=token, **workflow_selector(id_or_slug)),
        page_of("versions", WorkflowVersion.from_proto))


def validate_workflow(slug: str, steps: Steps, values: Mapping[str, Any]) -> Op[list[str]]:
    request = workflow_pb2.ValidateWorkflowRequest(workflow=_definition(slug, steps, values))
    return Op("workflows", "ValidateWorkflow", request, lambda response: list(response.order))
