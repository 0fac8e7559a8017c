"""The command line's live views: `runs watch` drawing a run on a real (pseudo-)terminal as it happens, and
`runs tail` printing the project's events as they are committed."""

from __future__ import annotations

import asyncio
import json
import signal

from strait_client import AsyncRunContext
from strait_server.app import App
from tests.cli_process import STRAIT, Cli, Terminal, cli_env
from tests.conftest import Api
from tests.integration.test_client import address
from tests.sink import Received, Reply, Sink


async def test_runs_watch_draws_status_progress_and_logs_live_on_a_terminal(app: App, api: Api, sink: Sink) -> None:
    reported_half = asyncio.Event()
    go_on = asyncio.Event()

    async def job_code(request: Received) -> None:  # the job's own code, reporting on its run
        async with AsyncRunContext.from_headers(request.headers, address(app)) as ctx:
            await ctx.log("starting the export")
            await ctx.progress(40, "exporting rows", step="rows")
            reported_half.set()
            await asyncio.wait_for(go_on.wait(), 30)  # until the terminal has shown the progress so far
            await ctx.log("rows written")
            await ctx.progress(100, "exported")

    cli = Cli(cli_env(address(app), api.key))
    await cli.json("jobs", "create", "export", sink.script("/export", Reply(200, action=job_code)))
    run = await cli.json("trigger", "export")
    await asyncio.wait_for(reported_half.wait(), 30)

    terminal = await Terminal.start((*STRAIT, "runs", "watch", run["id"]), cli.env)
    await terminal.wait_for("starting the export", "exporting rows", "40%", "executing")
    assert "━" in terminal.screen  # the bar itself
    assert "rows written" not in terminal.screen
    go_on.set()
    assert await terminal.exit_code() == 0
    screen = terminal.screen
    assert "rows written" in screen and "100%" in screen
    assert screen.rstrip().splitlines()[-1].startswith(f"{run['id']} completed")
    assert "\x1b[" in terminal.raw  # drawn with terminal control sequences, not plain lines


async def test_runs_watch_on_a_terminal_exits_1_when_the_run_fails(app: App, api: Api, sink: Sink) -> None:
    cli = Cli(cli_env(address(app), api.key))
    await cli.json("jobs", "create", "doomed", sink.script("/doomed", then=Reply(500)), "--max-attempts", "1")
    run = await cli.json("trigger", "doomed")
    terminal = await Terminal.start((*STRAIT, "runs", "watch", run["id"]), cli.env)
    assert await terminal.exit_code() == 1
    assert terminal.screen.rstrip().splitlines()[-1] == f"{run['id']} dead_letter: endpoint returned 500"


async def test_runs_tail_prints_new_runs_as_they_happen(app: App, api: Api, sink: Sink) -> None:
    cli = Cli(cli_env(address(app), api.key))
    await cli.json("jobs", "create", "seen", sink.script("/seen"))
    await cli.json("jobs", "create", "other", sink.script("/other"))
    before = await cli.json("trigger", "seen", "--wait")

    tail = await cli.start("runs", "tail", "--job", "seen", "--from-start", "-o", "json")
    assert tail.stdout is not None
    try:
        events = []

        async def read_until(run_id: str, status: str) -> None:
            while not any(e["run_id"] == run_id and e["to_status"] == status for e in events):
                line = await asyncio.wait_for(tail.stdout.readline(), 30)  # type: ignore[union-attr]
                assert line, "the tail ended"
                events.append(json.loads(line))

        await read_until(before["id"], "completed")  # stored events first: the feed is open
        other = await cli.json("trigger", "other")
        new = await cli.json("trigger", "seen", '{"live": true}')
        await read_until(new["id"], "completed")
        new_events = [(e["sequence"], e["to_status"]) for e in events if e["run_id"] == new["id"]]
        assert new_events == [(1, "queued"), (2, "executing"), (3, "completed")] or new_events == [
            (1, "executing"), (2, "completed")]
        assert all(e["resume_token"] for e in events)
        # The other job's run was committed before the new one, and left out by --job.
        assert other["id"] not in {e["run_id"] for e in events}
    finally:
        tail.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(tail.wait(), 30)
    assert code == 130
    assert b"Traceback" not in await tail.stderr.read()  # type: ignore[union-attr]


async def test_runs_tail_for_people(app: App, api: Api, sink: Sink) -> None:
    cli = Cli(cli_env(address(app), api.key))
    await cli.json("jobs", "create", "shown", sink.script("/shown"))
    done = await cli.json("trigger", "shown", "--wait")
    tail = await cli.start("runs", "tail", "--from-start", "--status", "completed")
    assert tail.stdout is not None
    try:
        line = (await asyncio.wait_for(tail.stdout.readline(), 30)).decode()
    finally:
        tail.send_signal(signal.SIGINT)
        await asyncio.wait_for(tail.wait(), 30)
    assert line.split()[1:4] == [done["id"], "shown", "status_change"], line
    assert line.rstrip().endswith("→ completed")
