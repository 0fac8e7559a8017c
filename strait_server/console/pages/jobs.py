"""Jobs: the project's jobs, paged, with the form that creates one; one job with its settings, its recent runs
and their success rate; trigger a run with a JSON payload; enable and disable. Creating, editing and deleting
are pages/job_edits.py's; their forms are drawn by these pages."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import TypeVar

from aiohttp import web
from google.protobuf.field_mask_pb2 import FieldMask

from strait_client._errors import AbortedError, FailedPreconditionError, InvalidArgumentError
from strait_client._models import Job, Run
from strait_client.v1 import job_pb2, run_pb2
from strait_server.console import job_facts, job_form
from strait_server.console.job_form import JobForm
from strait_server.console.pages.runs import project_only
from strait_server.console.web import API, caller, query, render, session_of

Named = TypeVar("Named", job_pb2.GetJobRequest, job_pb2.TriggerJobRequest, job_pb2.DeleteJobRequest, job_pb2.Job)
PAGE_SIZE = 50
RECENT_RUNS = 50
PAYLOAD_FIELD = "options.payload_json"
STALE = ("Someone changed this job after you opened the page, so nothing was changed. The page now shows the job "
         "as it is: check it and try again.")
SAVED = "Saved: the settings below are the job's now."


def register(router: web.UrlDispatcher) -> None:
    router.add_get("/jobs", jobs_page)
    router.add_get("/jobs/{job}", job_page)
    router.add_post("/jobs/{job}/trigger", trigger)
    router.add_post("/jobs/{job}/enabled", set_enabled)


def naming(request: web.Request, message: Named) -> Named:
    """`message` naming the job of the URL, by slug or by id (ids start with "job_", which slugs may not)."""
    key = request.match_info["job"]
    if key.startswith("job_"):
        message.id = key
    else:
        message.slug = key
    return message


@dataclass(frozen=True)
class TriggerForm:
    """The trigger form as the user left it, and what the API said about it."""

    payload: str = "{}"
    payload_problem: str = ""  # shown next to the payload field
    problem: str = ""  # about the trigger as a whole


async def jobs_page(request: web.Request) -> web.StreamResponse:
    project_only(session_of(request))
    return await jobs_view(request)


async def jobs_view(request: web.Request, http_status: int = 200, create: JobForm | None = None) -> web.Response:
    """The jobs list, with the create form as `create` left it (closed and empty when None, unless there is no
    job yet)."""
    api = request.app[API]
    token = request.query.get("page_token", "")
    listed = await api.call(caller(request), api.jobs.ListJobs,
                            job_pb2.ListJobsRequest(page_size=PAGE_SIZE, page_token=token))
    jobs = [Job.from_proto(j) for j in listed.jobs]
    next_page = query(request, page_token=listed.next_page_token) if listed.next_page_token else ""
    # Said after a delete's redirect; not for a job that is listed (a link that claims otherwise).
    deleted = request.query.get("deleted", "") if create is None else ""
    if deleted in {j.slug for j in jobs}:
        deleted = ""
    return render(request, "jobs.html", http_status=http_status, jobs=jobs, facts=job_facts, next_page=next_page,
                  later_page=bool(token), create=create or job_form.new_form(), create_open=create is not None,
                  deleted=deleted, title="Jobs")


async def job_page(request: web.Request) -> web.StreamResponse:
    project_only(session_of(request))
    return await job_view(request, note=SAVED if request.query.get("saved") == "1" else "")


async def job_view(request: web.Request, http_status: int = 200, form: TriggerForm | None = None,
                   notice: str = "", edit: JobForm | None = None, note: str = "") -> web.Response:
    """The job page; `form` and `edit` are the trigger and edit forms as the user left them (None: fresh),
    `notice` a problem to point out, `note` news (a change saved)."""
    api = request.app[API]
    got = await api.call(caller(request), api.jobs.GetJob, naming(request, job_pb2.GetJobRequest()))
    job = Job.from_proto(got.job)
    listed = await api.call(caller(request), api.runs.ListRuns,
                            run_pb2.ListRunsRequest(job_id=job.id, page_size=RECENT_RUNS))
    runs = [Run.from_proto(r) for r in listed.runs]
    # Names this rendering of the trigger form; with the payload it makes the trigger's request id, so a second
    # submission of the same form (a double click) returns the first run instead of creating another.
    nonce = secrets.token_urlsafe(16)
    return render(request, "job.html", http_status=http_status, job=job, runs=runs,
                  rate=job_facts.success_rate(runs), sections=job_facts.sections(job), form=form or TriggerForm(),
                  nonce=nonce, notice=notice, edit=edit or job_form.form_of(job),
                  edit_fields=job_form.edit_fields(job), note=note, title=f"Job {job.slug}")


async def trigger(request: web.Request) -> web.StreamResponse:
    """Triggers the job with the payload typed in; on success the new run's page, else the job page with the
    API's objections next to what the user typed."""
    project_only(session_of(request))
    api = request.app[API]
    form = await request.post()
    payload = str(form.get("payload", ""))
    nonce = str(form.get("nonce", ""))
    ask = naming(request, job_pb2.TriggerJobRequest(options=job_pb2.RunOptions(payload_json=payload),
                                                    request_id=_request_id(nonce, payload) if nonce else ""))
    try:
        triggered = await api.call(caller(request), api.jobs.TriggerJob, ask)
    except InvalidArgumentError as err:
        return await job_view(request, http_status=400, form=_refused(payload, err))
    except FailedPreconditionError as err:  # e.g. the job is disabled
        return await job_view(request, http_status=409, form=TriggerForm(payload, problem=err.message))
    raise web.HTTPSeeOther(f"/runs/{triggered.run.id}")


def _request_id(nonce: str, payload: str) -> str:
    # A different payload sent from the same form (edited after going back) is a different trigger.
    return hashlib.sha256(f"{nonce}\n{payload}".encode()).hexdigest()[:48]


def _refused(payload: str, err: InvalidArgumentError) -> TriggerForm:
    about_payload = [d for f, d in err.field_violations if f == PAYLOAD_FIELD]
    others = [f"{f}: {d}" for f, d in err.field_violations if f != PAYLOAD_FIELD]
    payload_problem = "; ".join(about_payload)
    where = _json_error(payload) if about_payload else ""
    if where:
        payload_problem += f" ({where})"
    problem = "; ".join(others) or ("" if about_payload else err.message)
    return TriggerForm(payload, payload_problem, problem)


def _json_error(text: str) -> str:
    """Where text stops being JSON, for the user to find the mistake; "" when it parses."""
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
    except RecursionError:
        return "nested too deeply"
    return ""


async def set_enabled(request: web.Request) -> web.StreamResponse:
    """Enables or disables the job, only if it is still as the page showed it (its etag)."""
    project_only(session_of(request))
    api = request.app[API]
    form = await request.post()
    change = naming(request, job_pb2.Job(enabled=str(form.get("enabled", "")) == "true",
                                         etag=str(form.get("etag", ""))))
    try:
        updated = await api.call(caller(request), api.jobs.UpdateJob,
                                 job_pb2.UpdateJobRequest(job=change, update_mask=FieldMask(paths=["enabled"])))
    except AbortedError:
        return await job_view(request, http_status=409, notice=STALE)
    raise web.HTTPSeeOther(f"/jobs/{updated.job.slug}")
