"""Every call as data: the request to send and how to convert its response. Client and AsyncClient only
differ in how they execute these, so building requests and decoding responses lives here once."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Literal, TypeAlias, TypeVar

import grpc
from google.protobuf.message import Message

from strait_client._convert import fill, mask_paths, to_dict
from strait_client.v1 import job_pb2, project_pb2, run_pb2, schedule_pb2

T = TypeVar("T")
Service = Literal["jobs", "runs", "projects", "schedules"]
Dict: TypeAlias = dict[str, Any]
Page: TypeAlias = tuple[list[Dict], str]

JOB_ID_PREFIX = "job_"
TERMINAL_STATUSES = frozenset({
    "completed", "failed", "timed_out", "crashed", "system_failed", "canceled", "expired", "dead_letter",
})
"""Run statuses a run never leaves (ReplayRun creates a new run instead)."""
DEFAULT_PAGE_SIZE = 200


def is_terminal(status: str | None) -> bool:
    """Whether a run status (as found in run dicts) is final."""
    return status in TERMINAL_STATUSES


@dataclass(frozen=True)
class Op(Generic[T]):
    service: Service
    method: str
    request: Message
    convert: Callable[[Any], T]

    @property
    def retryable(self) -> bool:
        """Safe to send again after UNAVAILABLE: a read, or a trigger whose request id makes a repeat return
        the first attempt's runs."""
        return self.method.startswith(("Get", "List")) or bool(getattr(self.request, "request_id", ""))


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

    def to_proto(self) -> job_pb2.RunOptions:
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


def _selector(id_or_slug: str) -> Dict:
    return {"id": id_or_slug} if is_job_id(id_or_slug) else {"slug": id_or_slug}


def _job(response: Any) -> Dict:
    return to_dict(response.job)


def _run(response: Any) -> Dict:
    return to_dict(response.run)


def _run_repeat(response: Any) -> Dict:
    return {**to_dict(response.run), "idempotent_repeat": bool(response.idempotent_repeat)}


def _page(items_field: str) -> Callable[[Any], Page]:
    def convert(response: Any) -> Page:
        return [to_dict(m) for m in getattr(response, items_field)], str(response.next_page_token)
    return convert


# Jobs


def create_job(slug: str, endpoint_url: str, values: Mapping[str, Any]) -> Op[Dict]:
    job = fill(job_pb2.Job(slug=slug, endpoint_url=endpoint_url), values)
    return Op("jobs", "CreateJob", job_pb2.CreateJobRequest(job=job), _job)


def get_job(id_or_slug: str) -> Op[Dict]:
    return Op("jobs", "GetJob", job_pb2.GetJobRequest(**_selector(id_or_slug)), _job)


def list_jobs(page_size: int) -> Callable[[str], Op[Page]]:
    return lambda token: Op("jobs", "ListJobs", job_pb2.ListJobsRequest(page_size=page_size, page_token=token),
                            _page("jobs"))


def update_job(id_or_slug: str, values: Mapping[str, Any], etag: str) -> Op[Dict]:
    """`id_or_slug` must be an id when `values` renames the job (the caller resolves it)."""
    if not values:
        raise ValueError("name at least one field to update")
    job = fill(job_pb2.Job(etag=etag, **_selector(id_or_slug)), values)
    request = job_pb2.UpdateJobRequest(job=job)
    request.update_mask.paths.extend(mask_paths(job_pb2.Job.DESCRIPTOR, values))
    return Op("jobs", "UpdateJob", request, _job)


def delete_job(id_or_slug: str, etag: str) -> Op[Dict]:
    return Op("jobs", "DeleteJob", job_pb2.DeleteJobRequest(etag=etag, **_selector(id_or_slug)), _job)


def trigger_job(id_or_slug: str, options: RunOptions) -> Op[Dict]:
    request = job_pb2.TriggerJobRequest(options=options.to_proto(), request_id=new_request_id(),
                                        **_selector(id_or_slug))
    return Op("jobs", "TriggerJob", request, _run_repeat)


def _batch(response: Any) -> list[Dict]:
    return [{**to_dict(run), "idempotent_repeat": bool(repeat)}
            for run, repeat in zip(response.runs, response.idempotent_repeats, strict=False)]


def batch_trigger_job(id_or_slug: str, runs: Sequence[RunOptions | Mapping[str, Any]],
                      full: bool = False) -> Op[list[Dict]]:
    """full=False asks for the BASIC view (ids, statuses, times; no payload echo), which is much cheaper."""
    if isinstance(runs, Mapping | str):
        raise TypeError("runs must be a list of payload dicts or RunOptions")
    options = [r.to_proto() if isinstance(r, RunOptions) else RunOptions(payload=r).to_proto() for r in runs]
    view = job_pb2.RUN_VIEW_FULL if full else job_pb2.RUN_VIEW_BASIC
    request = job_pb2.BatchTriggerJobRequest(runs=options, view=view, request_id=new_request_id(),
                                             **_selector(id_or_slug))
    return Op("jobs", "BatchTriggerJob", request, _batch)


# Runs


def get_run(run_id: str) -> Op[Dict]:
    return Op("runs", "GetRun", run_pb2.GetRunRequest(id=run_id), _run)


def list_runs(job_id: str | None, statuses: Iterable[str] | None, created_after: datetime | None,
              created_before: datetime | None, page_size: int) -> Callable[[str], Op[Page]]:
    if isinstance(statuses, str):
        statuses = [statuses]
    base = run_pb2.ListRunsRequest(page_size=page_size)
    fill(base, {"job_id": job_id, "statuses": list(statuses) if statuses is not None else None,
                "create_time_after": created_after, "create_time_before": created_before})

    def make(token: str) -> Op[Page]:
        request = run_pb2.ListRunsRequest()
        request.CopyFrom(base)
        request.page_token = token
        return Op("runs", "ListRuns", request, _page("runs"))
    return make


def cancel_run(run_id: str, reason: str) -> Op[Dict]:
    return Op("runs", "CancelRun", run_pb2.CancelRunRequest(id=run_id, reason=reason), _run)


def replay_run(run_id: str, idempotency_key: str) -> Op[Dict]:
    return Op("runs", "ReplayRun", run_pb2.ReplayRunRequest(id=run_id, idempotency_key=idempotency_key),
              _run_repeat)


def list_run_events(run_id: str, after_sequence: int, page_size: int) -> Callable[[str], Op[Page]]:
    return lambda token: Op("runs", "ListRunEvents", run_pb2.ListRunEventsRequest(
        run_id=run_id, after_sequence=after_sequence, page_size=page_size, page_token=token), _page("events"))


# Projects


def create_project(slug: str, name: str) -> Op[Dict]:
    return Op("projects", "CreateProject", project_pb2.CreateProjectRequest(slug=slug, name=name),
              lambda r: to_dict(r.project))


def get_project(project_id: str) -> Op[Dict]:
    return Op("projects", "GetProject", project_pb2.GetProjectRequest(id=project_id), lambda r: to_dict(r.project))


def list_projects(page_size: int) -> Callable[[str], Op[Page]]:
    return lambda token: Op("projects", "ListProjects", project_pb2.ListProjectsRequest(
        page_size=page_size, page_token=token), _page("projects"))


def create_api_key(name: str, project_id: str) -> Op[Dict]:
    return Op("projects", "CreateApiKey", project_pb2.CreateApiKeyRequest(project_id=project_id, name=name),
              lambda r: {**to_dict(r.api_key), "secret": str(r.secret)})


def list_api_keys(project_id: str, page_size: int) -> Callable[[str], Op[Page]]:
    return lambda token: Op("projects", "ListApiKeys", project_pb2.ListApiKeysRequest(
        project_id=project_id, page_size=page_size, page_token=token), _page("api_keys"))


def revoke_api_key(key_id: str) -> Op[Dict]:
    return Op("projects", "RevokeApiKey", project_pb2.RevokeApiKeyRequest(id=key_id),
              lambda r: to_dict(r.api_key))


WATCH_END_KEY = "strait-watch-end"
RESUMABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})


def watch_run_request(run_id: str, after_sequence: int) -> run_pb2.WatchRunRequest:
    return run_pb2.WatchRunRequest(run_id=run_id, after_sequence=after_sequence)


def ends_run(event: Dict) -> bool:
    """The run's terminal status change: nothing follows it."""
    return event.get("type") == "status_change" and is_terminal(event.get("to_status"))


def run_finished(trailing: Any) -> bool:
    """Whether a stream that ended OK did so because the run finished (else it aged out: resume)."""
    return any(key == WATCH_END_KEY and value == "run-finished" for key, value in trailing or ())


def reconnect_delay(failures: int) -> float:
    """Backoff with jitter between reconnects: 0.1 s doubling to 5 s."""
    return float(min(0.1 * 2 ** failures, 5.0) * random.uniform(0.5, 1.0))


def event_dict(event: Any) -> Dict:
    return to_dict(event)


def watch_runs_request(job_id: str | None, statuses: Iterable[str] | None, tags: Mapping[str, str] | None,
                       resume_token: str, from_start: bool) -> run_pb2.WatchRunsRequest:
    if isinstance(statuses, str):
        statuses = [statuses]
    request = run_pb2.WatchRunsRequest(resume_token=resume_token, from_start=from_start)
    fill(request, {"job_id": job_id, "statuses": list(statuses) if statuses is not None else None,
                   "tags": dict(tags) if tags else None})
    return request


def _schedule_selector(id_or_slug: str) -> Dict:
    return {"id": id_or_slug} if is_job_id(id_or_slug) else {"slug": id_or_slug}


def schedule_fire_times(id_or_slug: str, count: int) -> Op[list[datetime]]:
    request = schedule_pb2.ListScheduleFireTimesRequest(count=count, **_schedule_selector(id_or_slug))
    return Op("schedules", "ListScheduleFireTimes", request,
              lambda response: [t.ToDatetime(tzinfo=UTC) for t in response.fire_times])


def pause_schedule(id_or_slug: str) -> Op[Dict]:
    return Op("schedules", "PauseSchedule", schedule_pb2.PauseScheduleRequest(**_schedule_selector(id_or_slug)), _job)


def resume_schedule(id_or_slug: str) -> Op[Dict]:
    return Op("schedules", "ResumeSchedule", schedule_pb2.ResumeScheduleRequest(**_schedule_selector(id_or_slug)),
              _job)


def trigger_schedule(id_or_slug: str) -> Op[Dict]:
    return Op("schedules", "TriggerSchedule",
              schedule_pb2.TriggerScheduleRequest(**_schedule_selector(id_or_slug)), _run)
