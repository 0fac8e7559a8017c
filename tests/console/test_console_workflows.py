"""The workflow pages over HTTP: workflows and their versions drawn, the trigger form and its errors, runs listed
and filtered, a run's page and its steps, every action behind the CSRF token, another project's runs out of
reach, and the drawing of a 1,000-step run (on the page and live)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from html import unescape

import aiohttp
from google.protobuf.field_mask_pb2 import FieldMask

from strait_client.v1 import workflow_pb2, workflow_run_pb2
from strait_server.app import App
from strait_server.config import Settings
from tests.conftest import Api, AppFactory, connect, eventually
from tests.console.support import Browserless, browserless
from tests.integration.test_workflow_runs import Flows, step
from tests.integration.test_workflow_waits import approval
from tests.sink import Reply, Sink

W = workflow_pb2
R = workflow_run_pb2


async def run_status(flows: Flows, run_id: str) -> int:
    got = await flows.runs.GetWorkflowRun(R.GetWorkflowRunRequest(id=run_id), metadata=flows.api.metadata)
    return got.workflow_run.status


async def runs_of(flows: Flows) -> list[R.WorkflowRun]:
    listed = await flows.runs.ListWorkflowRuns(R.ListWorkflowRunsRequest(), metadata=flows.api.metadata)
    return list(listed.workflow_runs)


def nodes(page: str) -> dict[str, str]:
    """The drawn steps of a page: ref -> the node's tone (the first drawing's, for each ref)."""
    found: dict[str, str] = {}
    for title, tone in re.findall(r'<title>([a-z0-9_]+)[^<]*</title><g class="node (\w+)"', page):
        found.setdefault(title, tone)
    return found


async def test_workflows_are_listed_with_versions_drawn_and_the_trigger_form_shows_errors_by_its_field(
        make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    flows = Flows(api, sink)
    try:
        await flows.job("fetch")
        await flows.create(step("fetch", "fetch"), approval("review", "fetch"), slug="orders")
        await flows.defs.UpdateWorkflow(W.UpdateWorkflowRequest(
            workflow=W.Workflow(slug="orders", steps=[step("fetch", "fetch"), approval("review", "fetch"),
                                                      step("ship", "fetch", "review")]),
            update_mask=FieldMask(paths=["steps"])), metadata=api.metadata)
        async with browserless(app) as b:
            await b.sign_in(api.key)
            status, page = await b.get("/workflows")
            assert status == 200
            row = re.search(r'<a href="/workflows/orders"><code>orders</code></a></td>(.*?)</tr>', page, re.S)
            assert row and re.findall(r"<td>(\d+)</td>", row.group(1)) == ["2", "3"]  # version 2, three steps

            status, page = await b.get("/workflows/orders")
            assert status == 200
            assert all(f'id="step-{ref}"' in page for ref in ("fetch", "review", "ship"))
            drawings = page.count("<svg ")
            assert drawings == 2  # version 2 and version 1
            assert '<a href="/workflows/orders?version=1#step-review">' in page
            assert '<a href="/workflows/orders?version=2#step-ship">' in page
            assert nodes(page) == {"fetch": "idle", "review": "idle", "ship": "idle"}

            status, page = await b.get("/workflows/orders?version=1")
            assert status == 200 and 'id="step-ship"' not in page and "the current version is" in page
            assert '<input type="hidden" name="version" value="1">' in page

            # Refused input comes back in the form, with the reason next to the field; no run is made.
            token = await b.csrf("/workflows/orders")
            for text, reason in (('{"order": ', "must be valid JSON"), ("[1, 2]", "must be a JSON object")):
                status, page, _ = await b.post("/workflows/orders/trigger", {"csrf_token": token, "input_json": text})
                assert status == 400
                problem = re.search(r'<p id="input_json-problem"[^>]*>([^<]*)</p>', page)
                assert problem and problem.group(1) == reason
                assert 'aria-describedby="input_json-problem"' in page
                assert unescape(re.search(r"<textarea[^>]*>([^<]*)</textarea>", page).group(1)) == text
            status, _, _ = await b.post("/workflows/orders/trigger", {"input_json": "{}"})
            assert status == 403
            assert await runs_of(flows) == []

            # Version 1 from its page: a run of version 1, with the input given.
            status, _, location = await b.post("/workflows/orders/trigger", {
                "csrf_token": token, "input_json": '{"order": 7}', "version": "1"})
            assert status == 303 and location.startswith("/workflow-runs/wfr_")
            [run] = await runs_of(flows)
            assert location == f"/workflow-runs/{run.id}" and run.version == 1
            assert json.loads(run.input_json) == {"order": 7}

            status, page = await b.get("/workflows/nope")
            assert status == 404
    finally:
        await api.channel.close()


async def test_runs_are_listed_and_filtered_and_a_run_page_shows_its_steps_and_waiting_approvals(
        make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    flows = Flows(api, sink)
    try:
        await flows.job("fetch", then=Reply(body='{"order": 7}'))
        await flows.create(step("fetch", "fetch"), approval("review", "fetch"), step("ship", "fetch", "review"))
        await flows.create(approval("only"), slug="other")
        run = await flows.trigger(run_input={"order": 7})
        other = await flows.trigger("other")
        await flows.wait_step(run.id, "review", R.STEP_RUN_STATUS_WAITING)
        async with browserless(app) as b:
            await b.sign_in(api.key)
            _, page = await b.get("/workflow-runs")
            assert run.id in page and other.id in page
            _, page = await b.get("/workflow-runs?workflow=other")
            assert run.id not in page and other.id in page
            _, page = await b.get("/workflow-runs?status=completed")
            assert run.id not in page and other.id not in page and "No workflow runs match." in page

            status, page = await b.get(f"/workflow-runs/{run.id}")
            assert status == 200
            assert nodes(page) == {"fetch": "ok", "review": "idle", "ship": "idle"}
            assert f'<a href="/workflow-runs/{run.id}/steps/fetch">' in page
            assert f'sse-connect="/live/workflow-runs/{run.id}?after=' in page
            assert 'id="wfr-step-review"' in page and "for approval" in page
            assert "Approve review" in page and "Reject review" in page  # it waits for a decision

            status, page = await b.get(f"/workflow-runs/{run.id}/steps/fetch")
            assert status == 200
            assert re.search(r'<pre id="step-input">[^<]*&#34;order&#34;: 7', page)  # its job run's payload
            assert re.search(r'<pre id="step-output">[^<]*&#34;order&#34;: 7', page)
            job_run = (await flows.steps(run.id))["fetch"].job_run_id
            assert f'<a href="/runs/{job_run}">' in page
            status, page = await b.get(f"/workflow-runs/{run.id}/steps/nope")
            assert status == 404
    finally:
        await api.channel.close()


async def test_every_action_needs_the_csrf_token_and_does_what_it_says(make_app: AppFactory, settings: Settings,
                                                                       sink: Sink) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    flows = Flows(api, sink)
    try:
        await flows.job("charge", Reply(status=500), max_attempts=1)  # fails once, then answers 200
        await flows.create(approval("review"), approval("audit"), approval("notes"),
                           step("charge", "charge", "review", "audit", "notes"))
        run = await flows.trigger()
        await flows.wait_step(run.id, "notes", R.STEP_RUN_STATUS_WAITING)
        base = f"/workflow-runs/{run.id}"
        async with browserless(app) as b:
            await b.sign_in(api.key)
            token = await b.csrf(base)
            forms = [(f"{base}/steps/review/approve", {"text": "ok"}), (f"{base}/steps/review/reject", {}),
                     (f"{base}/steps/audit/skip", {}), (f"{base}/steps/notes/complete", {"text": "1"}),
                     (f"{base}/pause", {}), (f"{base}/cancel", {})]
            for path, form in forms:
                status, _, _ = await b.post(path, {"csrf_token": "forged", **form})
                assert status == 403, path
                status, _, _ = await b.post(path, {"csrf_token": token, **form}, headers={"Origin": "http://evil.test"})
                assert status == 403, path
            steps = await flows.steps(run.id)
            assert [steps[r].status for r in ("review", "audit", "notes")] == [R.STEP_RUN_STATUS_WAITING] * 3
            assert await run_status(flows, run.id) == R.WORKFLOW_RUN_STATUS_RUNNING

            async def act(path: str, **form: str) -> tuple[int, str, str]:
                return await b.post(base + path, {"csrf_token": token, **form})

            status, _, location = await act("/pause")
            assert (status, location) == (303, base)
            assert await run_status(flows, run.id) == R.WORKFLOW_RUN_STATUS_PAUSED
            _, page = await b.get(base)
            assert "Resume" in page and "Pause" not in page
            assert (await act("/resume"))[0] == 303
            assert await run_status(flows, run.id) == R.WORKFLOW_RUN_STATUS_RUNNING

            # A refused action is a page that says why, and the step is as it was.
            status, page, _ = await act("/steps/notes/complete", text="{not json", next=f"{base}/steps/notes")
            assert status == 400 and "output_json" in page and "must be valid JSON" in page
            status, page, _ = await act("/steps/review/retry")
            assert status == 409
            status, _, location = await act("/steps/notes/complete", text='{"by": "hand"}', next=f"{base}/steps/notes")
            assert status == 303 and location == f"{base}/steps/notes"
            status, _, location = await act("/steps/audit/skip", text="not this time", next="https://evil.test/")
            assert status == 303 and location == base  # back to the run, never elsewhere
            assert (await act("/steps/review/approve", text="ship it"))[0] == 303
            steps = await flows.steps(run.id)
            assert json.loads(steps["notes"].output_json) == {"by": "hand"}
            assert steps["audit"].status == R.STEP_RUN_STATUS_SKIPPED
            assert json.loads(steps["review"].output_json)["comment"] == "ship it"

            # charge's first answer is a 500: the step fails, and so does the run; retry runs it again.
            await flows.wait(run.id)
            assert await run_status(flows, run.id) == R.WORKFLOW_RUN_STATUS_FAILED
            _, page = await b.get(f"{base}/steps/charge")
            assert "Retry" in page and "Replay from here" in page
            assert (await act("/steps/charge/retry"))[0] == 303
            await eventually(lambda: _has_status(flows, run.id, R.WORKFLOW_RUN_STATUS_COMPLETED))
            assert (await act("/steps/review/replay"))[0] == 303  # review waits again; charge after it
            await flows.wait_step(run.id, "review", R.STEP_RUN_STATUS_WAITING)
            assert (await act("/steps/review/reject", text="changed my mind"))[0] == 303
            assert "changed my mind" in (await flows.steps(run.id))["review"].error
            await flows.wait(run.id)
            status, page, _ = await act("/cancel")
            assert status == 409  # a failed run cannot be canceled: the page says why
    finally:
        await api.channel.close()


async def _has_status(flows: Flows, run_id: str, status: int) -> bool:
    return await run_status(flows, run_id) == status


async def test_another_projects_workflow_runs_are_not_found(make_app: AppFactory, settings: Settings,
                                                            sink: Sink) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    mine, theirs = await connect(app, settings.admin_key), await connect(app, settings.admin_key)
    their_flows = Flows(theirs, sink)
    try:
        await their_flows.create(approval("gate"))
        their_run = await their_flows.trigger()
        async with browserless(app) as b:
            await b.sign_in(mine.key)
            token = await b.csrf("/workflow-runs")
            _, page = await b.get("/workflow-runs")
            assert their_run.id not in page
            for path in (f"/workflow-runs/{their_run.id}", f"/workflow-runs/{their_run.id}/steps/gate",
                         f"/live/workflow-runs/{their_run.id}?after=0", "/workflows/flow"):
                status, page = await b.get(path)
                assert status == 404, path
                assert "Not Found" in page, path
            for path in ("/cancel", "/steps/gate/approve"):
                status, _, _ = await b.post(f"/workflow-runs/{their_run.id}{path}", {"csrf_token": token})
                assert status == 404, path
            assert await run_status(their_flows, their_run.id) == R.WORKFLOW_RUN_STATUS_RUNNING
            assert (await their_flows.steps(their_run.id))["gate"].status == R.STEP_RUN_STATUS_WAITING
        async with browserless(app) as admin:  # the admin key has no project: its pages are the projects
            await admin.sign_in(settings.admin_key)
            for path in ("/workflows", "/workflow-runs", f"/workflow-runs/{their_run.id}"):
                status, _ = await admin.get(path)
                assert status == 303, path
    finally:
        await mine.channel.close()
        await theirs.channel.close()


async def test_a_map_step_is_one_node_with_its_counts_and_its_page_lists_its_instances_paged(
        make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    flows = Flows(api, sink)
    try:
        await flows.job("each", then=Reply(answer=lambda r: json.dumps({"got": r.json()["item"]})))
        await flows.create(step("each", "each", map=W.MapSpec(items="input.items"),
                                input_template_json='{"item": "{{ item }}"}'))
        run = await flows.trigger(run_input={"items": list(range(60))})
        await flows.wait(run.id)
        async with browserless(app) as b:
            await b.sign_in(api.key)
            _, page = await b.get(f"/workflow-runs/{run.id}")
            assert "<title>each, job, completed, 60/60 done, 0 failed</title>" in page
            assert page.count("<svg ") == 1 and len(nodes(page)) == 1  # one node for the 60 instances

            _, page = await b.get(f"/workflow-runs/{run.id}/steps/each")
            rows = re.findall(r"<tr>\s*<td>(\d+)</td>", page)
            assert rows == [str(i) for i in range(50)]
            more = re.search(r'<a rel="next" href="([^"]+)">More instances</a>', page)
            assert more
            _, page = await b.get(unescape(more.group(1)))
            assert re.findall(r"<tr>\s*<td>(\d+)</td>", page) == [str(i) for i in range(50, 60)]
            assert "60/60 done, 0 failed" in page and "More instances" not in page  # the step itself is still shown
    finally:
        await api.channel.close()


Events = list[tuple[str, str]]


async def events_of(b: Browserless, path: str, until: str = "", done: Callable[[Events], bool] | None = None,
                    timeout: float = 20.0) -> Events:
    """The (event, data) pairs of an event stream: up to the first `until` event, until `done` holds of those
    received, or to the stream's end."""
    async def read() -> Events:
        got: Events = []
        async with b.http.get(b.base + path, headers={"Accept": "text/event-stream"}) as response:
            assert response.status == 200
            event, data = "", []
            async for raw in response.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data.append(line[6:])
                elif not line and event:
                    got.append((event, "\n".join(data)))
                    if event == until or (done is not None and done(got)):
                        return got
                    event, data = "", []
        return got
    return await asyncio.wait_for(read(), timeout)


async def test_the_live_view_sends_what_changed_and_ends_with_the_run(make_app: AppFactory, settings: Settings,
                                                                      sink: Sink) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    flows = Flows(api, sink)
    try:
        await flows.job("ship")
        await flows.create(approval("review"), step("ship", "ship", "review"))
        run = await flows.trigger()
        await flows.wait_step(run.id, "review", R.STEP_RUN_STATUS_WAITING)
        after = (await flows.events(run.id))[-1].sequence
        async with browserless(app) as b:
            await b.sign_in(api.key)
            _, page = await b.get(f"/workflow-runs/{run.id}")
            assert f"/live/workflow-runs/{run.id}?after={after}&amp;steps_from=0" in page
            following = asyncio.create_task(events_of(b, f"/live/workflow-runs/{run.id}?after={after}", "never"))
            await flows.runs.ApproveStep(R.ApproveStepRequest(id=run.id, step_ref="review"),
                                         metadata=api.metadata)
            got = await following  # the stream ends by itself once the run has ended
            assert got[-1] == ("end", "")
            refreshes = [data for event, data in got if event == "refresh"]
            assert refreshes and nodes(refreshes[-1]) == {"review": "ok", "ship": "ok"}
            assert '<span id="wfr-status" class="badge ok">completed</span>' in refreshes[-1]
            assert all('hx-swap-oob="true"' in data for data in refreshes)
            # A part goes again only when it changed: the approvals (none left) went with the first redraw only.
            assert 'id="wfr-approvals"' in refreshes[0]
            assert not any('id="wfr-approvals"' in data for data in refreshes[1:])
            _, page = await b.get(f"/workflow-runs/{run.id}")
            assert "sse-connect" not in page  # an ended run is not followed
    finally:
        await api.channel.close()


async def test_the_graph_of_a_thousand_step_run_is_drawn_on_its_page_and_live(make_app: AppFactory,
                                                                              settings: Settings) -> None:
    app: App = await make_app(console_address="127.0.0.1:0")
    api: Api = await connect(app, settings.admin_key)
    flows = Flows(api, Sink())
    try:
        # An approval gate, then 999 approvals after it: nothing is dispatched, every step is drawn.
        steps = [approval("gate"), *[approval(f"s{i}", "gate") for i in range(1, 1000)]]
        await flows.create(*steps, slug="big")
        run = await flows.trigger("big")
        await flows.wait_step(run.id, "gate", R.STEP_RUN_STATUS_WAITING)
        async with browserless(app) as b:
            await b.sign_in(api.key)
            started = time.monotonic()
            status, page = await b.get(f"/workflow-runs/{run.id}")
            took = time.monotonic() - started
            assert status == 200 and took < 10, took
            drawn = nodes(page)
            assert len(drawn) == 1000 and drawn["gate"] == "idle"
            drawing = re.search(r'<div id="wfr-graph".*?</svg>', page, re.S)
            assert drawing and len(drawing.group(0)) < 1_000_000  # bounded: about 400 bytes a step
            assert len(page) < 1_500_000
            assert page.count('<tr id="wfr-step-') == 100  # the steps table is paged
            _, second = await b.get(f"/workflow-runs/{run.id}?steps_from=100")
            assert 'id="wfr-step-s100"' in second and 'id="wfr-step-s99"' not in second

            # Live: the events since the start make one redraw with every step.
            [(event, live)] = await events_of(b, f"/live/workflow-runs/{run.id}?after=0", "refresh")
            assert event == "refresh" and 'id="wfr-graph"' in live and len(nodes(live)) == 1000
    finally:
        await api.channel.close()


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, str]]:
    """The (event, data) pairs of an open event stream, as they come."""
    event, data = "", []
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])
        elif not line and event:
            yield event, "\n".join(data)
            event, data = "", []


async def rows_until(events: AsyncIterator[tuple[str, str]], run_id: str, status: str) -> str:
    """The rows received until one of run `run_id` in `status`."""
    got = ""
    async def read() -> str:
        nonlocal got
        async for _, data in events:
            got += data
            if re.search(f'<tr id="workflow-run-{run_id}"[^>]*>(?:(?!</tr>).)*>{status}<', data, re.S):
                return got
        raise AssertionError(f"the stream ended before {run_id} was {status}")
    return await asyncio.wait_for(read(), 20)


async def test_the_runs_list_adds_new_runs_once_and_swaps_rows_as_their_status_changes(
        make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    flows = Flows(api, sink)
    release = asyncio.Event()
    try:
        await flows.job("ship", then=Reply(block=release))
        await flows.job("quick")
        await flows.create(step("ship", "ship"))
        await flows.create(step("quick", "quick"), slug="other")
        shown = await flows.trigger()  # created before the page: on it already
        earlier = await flows.trigger("other")
        await flows.wait(earlier.id)
        async with browserless(app) as b:
            await b.sign_in(api.key)
            _, page = await b.get("/workflow-runs")
            assert page.count(f'id="workflow-run-{shown.id}"') == 1 and 'data-keep="200"' in page
            live = re.search(r'sse-connect="([^"]+)"', page)
            assert live is not None and live.group(1).startswith("/live/workflow-runs?")
            async with b.http.get(b.base + unescape(live.group(1)), headers={"Accept": "text/event-stream"}) as r:
                events = sse_events(r)
                _, first = await anext(events)  # the catch-up, once the feed is open: the page's rows again
                assert f'<tr id="workflow-run-{shown.id}" hx-swap-oob="outerHTML">' in first
                new = await flows.trigger()
                release.set()
                got = await rows_until(events, new.id, "completed")
            assert got.count(f'<tr id="workflow-run-{new.id}">') == 1  # added once, at the top
            assert f'<tr id="workflow-run-{shown.id}">' not in got  # never added a second time
            assert f'<tr id="workflow-run-{new.id}" hx-swap-oob="outerHTML">' in got  # then swapped in place

            # A workflow filter applies to the live rows too.
            _, page = await b.get("/workflow-runs?workflow=other")
            live = re.search(r'sse-connect="([^"]+)"', page)
            assert live is not None and shown.id not in page
            async with b.http.get(b.base + unescape(live.group(1)), headers={"Accept": "text/event-stream"}) as r:
                events = sse_events(r)
                _, first = await anext(events)
                assert earlier.id in first
                elsewhere = await flows.trigger()
                wanted = await flows.trigger("other")
                got = await rows_until(events, wanted.id, "completed")
            assert elsewhere.id not in got
    finally:
        release.set()
        await api.channel.close()
