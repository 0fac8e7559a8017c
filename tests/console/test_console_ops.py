"""The operations pages over HTTP: schedules paused, resumed and fired; circuits listed and reset, with the
project's budget; workers listed and drained; the overview's figures for the last hour and the queues; and the
admin key's projects and keys (a new key's secret shown once)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

from strait_client.v1 import (
    circuit_pb2,
    circuit_pb2_grpc,
    job_pb2,
    project_pb2,
    run_pb2,
    worker_pb2,
    worker_pb2_grpc,
    workflow_pb2,
    workflow_pb2_grpc,
)
from strait_client.worker import TaskContext, Worker
from strait_server.config import Settings
from strait_server.console.web import when
from tests.conftest import AppFactory, connect, eventually
from tests.console.support import browserless
from tests.integration.test_client import address
from tests.integration.test_workers import serving, worker_job
from tests.sink import Reply, Sink

S = run_pb2


def row(page: str, row_id: str) -> str:
    """The table row with this id attribute, as HTML."""
    found = re.search(rf'<tr id="{re.escape(row_id)}".*?</tr>', page, re.S)
    assert found, f"no row {row_id}"
    return found.group(0)


def fact(page: str, label: str) -> str:
    """The text of the <dd> that follows <dt>label</dt>."""
    found = re.search(rf"<dt>{re.escape(label)}</dt><dd>(.*?)</dd>", page, re.S)
    assert found, f"no fact {label}"
    return re.sub(r"<[^>]+>", "", found.group(1)).strip()


async def test_schedules_are_listed_paused_resumed_and_fired(make_app: AppFactory, settings: Settings,
                                                             sink: Sink) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    flows = workflow_pb2_grpc.WorkflowServiceStub(api.channel)
    try:
        job = await api.create_job("nightly", sink.script("/ok"), cron="0 3 * * *", timezone="Europe/Berlin")
        await api.create_job("unscheduled", sink.url("/ok"))
        workflow = (await flows.CreateWorkflow(workflow_pb2.CreateWorkflowRequest(workflow=workflow_pb2.Workflow(
            slug="weekly-report", cron="0 6 * * 1", steps=[workflow_pb2.Step(
                ref="only", job=workflow_pb2.JobStep(job_slug="nightly"))])), metadata=api.metadata)).workflow
        async with browserless(app) as b:
            await b.sign_in(api.key)
            status, page = await b.get("/schedules")
            assert status == 200
            nightly = row(page, f"job-{job.id}")
            assert all(text in nightly for text in ("nightly", "0 3 * * *", "Europe/Berlin", "active",
                                                    when(job.next_fire_time.ToDatetime(tzinfo=UTC))))
            assert "weekly-report" in row(page, f"workflow-{workflow.id}") and "unscheduled" not in page

            token = await b.csrf("/schedules")
            status, _, location = await b.post(f"/schedules/jobs/{job.id}/pause", {"csrf_token": token})
            assert status == 303 and location == f"/schedules#job-{job.id}"
            got = (await api.jobs.GetJob(job_pb2.GetJobRequest(id=job.id), metadata=api.metadata)).job
            assert got.schedule_paused
            _, page = await b.get("/schedules")
            assert "paused" in row(page, f"job-{job.id}") and "Resume" in row(page, f"job-{job.id}")

            await b.post(f"/schedules/jobs/{job.id}/resume", {"csrf_token": token})
            got = (await api.jobs.GetJob(job_pb2.GetJobRequest(id=job.id), metadata=api.metadata)).job
            assert not got.schedule_paused and got.HasField("next_fire_time")

            await b.post(f"/schedules/workflows/{workflow.id}/pause", {"csrf_token": token})
            got_flow = (await flows.GetWorkflow(workflow_pb2.GetWorkflowRequest(id=workflow.id),
                                                metadata=api.metadata)).workflow
            assert got_flow.schedule_paused

            status, _, location = await b.post(f"/schedules/jobs/{job.id}/trigger", {"csrf_token": token})
            assert status == 303 and location.startswith("/runs/run_")
            fired = await api.get_run(location.removeprefix("/runs/"))
            assert fired.job_id == job.id and fired.metadata["triggered_by"] == "schedule_trigger"

            # Nothing to act on: a precise page, not a crash.
            status, page, _ = await b.post("/schedules/jobs/job_0000000000000000000000000/pause",
                                           {"csrf_token": token})
            assert status == 404
            status, _, _ = await b.post(f"/schedules/things/{job.id}/pause", {"csrf_token": token})
            assert status == 404
    finally:
        await api.channel.close()


async def test_circuits_are_listed_and_reset_beside_the_budget(make_app: AppFactory, settings: Settings,
                                                               sink: Sink) -> None:
    app = await make_app(console_address="127.0.0.1:0", circuit_failure_threshold=2,
                         circuit_open_for=timedelta(minutes=10))
    api = await connect(app, settings.admin_key)
    circuits = circuit_pb2_grpc.EndpointCircuitServiceStub(api.channel)
    try:
        url = sink.script("/down", then=Reply(503))
        job = await api.create_job("flaky", url, max_attempts=1)
        await api.create_job("pricey", sink.url("/ok"), max_run_cost_microusd=250_000)
        for _ in range(2):
            run = await api.trigger(job)
            await api.wait_status(run.id, S.RUN_STATUS_DEAD_LETTER)

        async def opened() -> bool:
            got = await circuits.ListEndpointCircuits(circuit_pb2.ListEndpointCircuitsRequest(), metadata=api.metadata)
            return [c.state for c in got.circuits] == [circuit_pb2.CIRCUIT_STATE_OPEN]
        await eventually(opened)
        [project] = (await api.projects.ListProjects(project_pb2.ListProjectsRequest(),
                                                     metadata=api.metadata)).projects
        await api.projects.UpdateProject(project_pb2.UpdateProjectRequest(
            project=project_pb2.Project(id=project.id, monthly_budget_microusd=12_500_000,
                                        budget_action=project_pb2.BUDGET_ACTION_REJECT),
            update_mask=FieldMask(paths=["monthly_budget_microusd", "budget_action"])), metadata=api.admin_metadata)

        async with browserless(app) as b:
            await b.sign_in(api.key)
            status, page = await b.get("/circuits")
            assert status == 200
            listed = re.search(r'<table class="circuits">.*?</table>', page, re.S)
            assert listed
            circuit = listed.group(0)
            assert all(text in circuit for text in (url, ">flaky</a>", ">open</span>", 'a row">2</td>',
                                                    "endpoint returned 503"))
            assert fact(page, "Monthly budget") == "$12.50"
            assert fact(page, "Spent this month").startswith("$0.00")
            assert fact(page, "When it is reached") == "new runs are refused and cron ticks skipped"
            assert re.search(r">pricey</a></th><td[^>]*>\$0\.25</td>", page)

            token = await b.csrf("/circuits")
            status, _, location = await b.post("/circuits/reset", {"csrf_token": token, "endpoint_url": url})
            assert status == 303 and location == "/circuits"
            got = await circuits.ListEndpointCircuits(circuit_pb2.ListEndpointCircuitsRequest(), metadata=api.metadata)
            assert not got.circuits
            _, page = await b.get("/circuits")
            assert "No endpoint has failed since its last success." in page
            status, page, _ = await b.post("/circuits/reset", {"csrf_token": token, "endpoint_url": ""})
            assert status == 400 and "endpoint_url" in page
    finally:
        await api.channel.close()


async def test_workers_are_listed_and_drained(make_app: AppFactory, settings: Settings) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    stub = worker_pb2_grpc.WorkerServiceStub(api.channel)
    await worker_job(api, "resize")
    worker = Worker(address(app), api.key, slots=3, name="thumbnailer")

    async def resize(ctx: TaskContext, payload: Any) -> None:
        return None
    worker.handler("resize")(resize)
    try:
        async with browserless(app) as b, serving(worker):
            await b.sign_in(api.key)
            status, page = await b.get("/workers")
            assert status == 200
            listed = row(page, f"worker-{worker.session_id}")
            assert all(text in listed for text in ("thumbnailer", "<li>resize</li>", "0 of 3", ">serving<",
                                                   "Drain"))
            token = await b.csrf("/workers")
            status, _, location = await b.post(f"/workers/{worker.session_id}/drain", {"csrf_token": token})
            assert status == 303 and location == f"/workers#worker-{worker.session_id}"
            got = await stub.GetWorker(worker_pb2.GetWorkerRequest(id=worker.session_id), metadata=api.metadata)
            assert got.worker.draining
            _, page = await b.get("/workers")
            listed = row(page, f"worker-{worker.session_id}")
            assert ">draining<" in listed and "/drain" not in listed
            status, _, _ = await b.post("/workers/nobody/drain", {"csrf_token": token})
            assert status == 404
    finally:
        await api.channel.close()


async def test_the_overview_counts_the_last_hour_and_the_queues(make_app: AppFactory, settings: Settings,
                                                                sink: Sink) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    try:
        done = await api.create_job("ship", sink.script("/ok", then=Reply(delay=0.05)))
        failing = await api.create_job("bill", sink.script("/down", then=Reply(503)), max_attempts=1)
        later = await api.create_job("remind", sink.url("/ok"))
        waiting = await worker_job(api, "render")  # no worker connects: its runs stay queued
        finished = [await api.trigger(done) for _ in range(3)] + [await api.trigger(failing)]
        tomorrow = Timestamp()
        tomorrow.FromDatetime(datetime.now(UTC) + timedelta(days=1))
        for _ in range(4):
            await api.trigger(later, scheduled_time=tomorrow)
        for _ in range(2):
            await api.trigger(waiting)
        canceled = await api.trigger(later, scheduled_time=tomorrow)
        await api.runs.CancelRun(run_pb2.CancelRunRequest(id=canceled.id), metadata=api.metadata)
        for run in finished:
            await api.wait_status(run.id, S.RUN_STATUS_COMPLETED, S.RUN_STATUS_DEAD_LETTER)

        async with browserless(app) as b:
            await b.sign_in(api.key)
            status, page = await b.get("/overview")
            assert status == 200
            labels = ("Runs created", "Completed", "Failed", "Canceled", "Expired", "Unfinished now")
            assert [fact(page, label) for label in labels] == ["11", "3", "1 · dead letter", "1", "0", "6"]
            assert re.fullmatch(r"median \d+ ms, 95th percentile \d+ ms \(of 4\)", fact(page, "Attempt duration"))
            assert fact(page, "Wait to first start").endswith("(of 4)")
            assert page.count("<svg") == 3 and re.search(r"<title>\d\d:\d\d: completed \d", page)  # a tooltip
            hour = re.search(r'<table class="figures" id="hour-table">.*?</table>', page, re.S)
            assert hour
            periods = [re.findall(r">([^<]+)</td>", r) for r in re.findall(r"<tr>.*?</tr>", hour.group(0), re.S)
                       if "<time" in r]  # one 5-minute period, or two if the test crossed into the next one
            assert 1 <= len(periods) <= 2
            assert [sum(int(p[i]) for p in periods) for i in range(5)] == [11, 3, 1, 1, 0]
            depth = re.search(r'<table class="figures" id="depth-table">.*?</table>', page, re.S)
            assert depth
            rows = [re.findall(r">([^<]+)</(?:a|td)>", r)
                    for r in re.findall(r'<tr><th scope="row">.*?</tr>', depth.group(0))]
            assert rows == [["remind", "0", "4", "0", "4"], ["render", "2", "0", "0", "2"]]
            assert '<a href="/runs?job=remind">remind</a>' in depth.group(0)
    finally:
        await api.channel.close()


async def test_the_admin_key_manages_projects_and_keys_and_a_new_secret_shows_once(
        make_app: AppFactory, settings: Settings) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    try:
        async with browserless(app) as admin, browserless(app) as member:
            assert await admin.sign_in(settings.admin_key) == "/projects"
            status, _ = await admin.get("/overview")  # project pages are not the admin key's
            assert status == 303
            token = await admin.csrf("/projects")
            status, page, _ = await admin.post("/projects", {"csrf_token": token, "slug": "Not A Slug"})
            assert status == 400 and "slug" in page
            status, _, location = await admin.post("/projects", {"csrf_token": token, "slug": "shop",
                                                                 "name": "The shop"})
            assert status == 303 and location.startswith("/projects/proj_")
            _, page = await admin.get("/projects")
            assert 'href="/projects/' + location.rsplit("/", 1)[1] + '">shop</a>' in page

            status, _, to_key = await admin.post(location + "/keys", {"csrf_token": token, "name": "ci",
                                                                      "workers": "1"})
            assert status == 303
            key_id = to_key.split("#key-")[1]
            _, page = await admin.get(location)
            secret = re.search(r'value="(strait_[^"]+)" readonly', page)
            assert secret and "workers:connect" in row(page, f"key-{key_id}")
            _, page = await admin.get(location)
            assert secret.group(1) not in page and "readonly" not in page  # once only

            assert await member.sign_in(secret.group(1)) == "/"
            status, _ = await member.get("/projects")
            assert status == 303  # a project key is sent away from the admin pages
            _, page = await member.get("/overview")
            assert '<span class="who">shop</span>' in page

            status, _, _ = await admin.post(f"{location}/keys/{key_id}/revoke", {"csrf_token": token})
            assert status == 303
            _, page = await admin.get(location)
            assert "revoked" in row(page, f"key-{key_id}")
            status, _ = await member.get("/overview")  # the revoked key's session ends
            assert status == 303
    finally:
        await api.channel.close()
