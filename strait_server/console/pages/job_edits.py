"""Creating, editing and deleting jobs: the posts of the forms on the jobs and job pages. Each answers with the
page the form is on (what was typed kept, the API's objections beside the fields) or, once done, a redirect."""

from __future__ import annotations

from aiohttp import web
from google.protobuf.field_mask_pb2 import FieldMask

from strait_client._errors import AbortedError, AlreadyExistsError, InvalidArgumentError
from strait_client._models import Job
from strait_client.v1 import job_pb2
from strait_server.console import job_form
from strait_server.console.job_form import JobForm
from strait_server.console.pages.jobs import job_view, jobs_view, naming
from strait_server.console.pages.runs import project_only
from strait_server.console.web import API, caller, session_of

STALE_EDIT = ("Someone changed this job after you opened the page, so your changes were not saved. The page now "
              "shows the job as it is: check it and save again.")
STALE_DELETE = ("Someone changed this job after you opened the page, so it was not deleted. The page now shows the "
                "job as it is: check it and delete it again if you still mean to.")
UNCHANGED = "Nothing to save: the form holds the job's settings as they are."


def register(router: web.UrlDispatcher) -> None:
    router.add_post("/jobs", create)
    router.add_post("/jobs/{job}/edit", edit)
    router.add_post("/jobs/{job}/delete", delete)


async def create(request: web.Request) -> web.StreamResponse:
    """Creates the job the form describes; on success its page, else the jobs list with the form as typed."""
    project_only(session_of(request))
    api = request.app[API]
    values = job_form.typed(await request.post(), job_form.CREATE_FIELDS)
    message, problems = job_form.create_request(values)
    form = JobForm(values, problems)
    if problems:
        return await jobs_view(request, http_status=400, create=form)
    try:
        created = await api.call(caller(request), api.jobs.CreateJob, job_pb2.CreateJobRequest(job=message))
    except InvalidArgumentError as err:
        return await jobs_view(request, http_status=400, create=job_form.refused(form, err, job_form.CREATE_FIELDS))
    except AlreadyExistsError as err:
        return await jobs_view(request, http_status=409, create=job_form.refused(form, err, job_form.CREATE_FIELDS))
    raise web.HTTPSeeOther(f"/jobs/{created.job.slug}")


async def edit(request: web.Request) -> web.StreamResponse:
    """Updates the settings the form changed (the update mask names exactly those), only if the job is still as
    the page showed it (its etag); then the job page with the new values."""
    project_only(session_of(request))
    api = request.app[API]
    posted = await request.post()
    etag = str(posted.get("etag", ""))
    values = job_form.typed(posted, job_form.EDIT_FIELDS)
    job = await _job(request)
    shown = job_form.edit_fields(job)
    change = job_form.edit_request(values, job)
    form = JobForm(values, change.problems, etag=etag)
    if change.problems:
        return await job_view(request, http_status=400, edit=form)
    if not change.mask:
        return await job_view(request, note=UNCHANGED)
    change.job.etag = etag
    try:
        updated = await api.call(caller(request), api.jobs.UpdateJob, job_pb2.UpdateJobRequest(
            job=change.job, update_mask=FieldMask(paths=change.mask)))
    except InvalidArgumentError as err:
        return await job_view(request, http_status=400, edit=job_form.refused(form, err, shown))
    except AbortedError:
        current = await _job(request)
        return await job_view(request, http_status=409, notice=STALE_EDIT,
                              edit=job_form.form_of(current, job_form.unsaved(values, current)))
    raise web.HTTPSeeOther(f"/jobs/{updated.job.slug}?saved=1")


async def delete(request: web.Request) -> web.StreamResponse:
    """Deletes the job (the API cancels its unfinished runs), only if it is still as the page showed it."""
    project_only(session_of(request))
    api = request.app[API]
    etag = str((await request.post()).get("etag", ""))
    try:
        deleted = await api.call(caller(request), api.jobs.DeleteJob,
                                 naming(request, job_pb2.DeleteJobRequest(etag=etag)))
    except AbortedError:
        return await job_view(request, http_status=409, notice=STALE_DELETE)
    raise web.HTTPSeeOther(f"/jobs?deleted={deleted.job.slug}")


async def _job(request: web.Request) -> Job:
    api = request.app[API]
    got = await api.call(caller(request), api.jobs.GetJob, naming(request, job_pb2.GetJobRequest()))
    return Job.from_proto(got.job)
