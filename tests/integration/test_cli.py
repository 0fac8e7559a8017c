"""The `strait` command line against a real server, database and endpoint: each command run as a subprocess,
as a user runs it, reading STRAIT_ADDRESS and STRAIT_API_KEY."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from importlib.metadata import version
from zoneinfo import ZoneInfo

import pytest

from strait_server.app import App
from strait_server.config import Settings
from tests.cli_process import Cli, cli_env
from tests.conftest import Api, AppFactory, connect, eventually
from tests.integration.test_client import address
from tests.sink import Reply, Sink


@pytest.fixture
def cli(app: App, api: Api) -> Cli:
    return Cli(cli_env(address(app), api.key))


async def test_version_prints_the_package_version() -> None:
    result = await Cli(cli_env("127.0.0.1:1", ""))("--version")
    assert (result.code, result.out) == (0, f"strait {version('strait')}\n")


async def test_jobs_crud(cli: Cli, sink: Sink) -> None:
    url = sink.script("/crud")
    created = await cli.json("jobs", "create", "crud", url, "--name", "CRUD", "--max-attempts", "5",
                             "--timeout", "1m30s", "--tag", "team=a", "--set", "dedup_window=60")
    assert created["slug"] == "crud" and created["endpoint_url"] == url and created["name"] == "CRUD"
    assert created["max_attempts"] == 5 and created["timeout"] == 90 and created["tags"] == {"team": "a"}
    assert created["dedup_window"] == 60 and created["id"].startswith("job_")
    assert created["create_time"].endswith("Z")

    listed = await cli("jobs", "list")
    assert listed.code == 0
    header, row = listed.out.splitlines()
    assert header.split()[:3] == ["SLUG", "ID", "RUNS"] and row.split()[:3] == ["crud", created["id"], url]
    assert [j["id"] for j in await cli.json("jobs", "list")] == [created["id"]]
    assert await cli.json("jobs", "get", created["id"]) == created
    shown = await cli("jobs", "get", "crud")
    assert re.search(r"^max_attempts +5 *$", shown.out, re.M) and "team=a" in shown.out

    updated = await cli.json("jobs", "update", "crud", "--disable", "--description", "d", "--priority", "7")
    assert (updated["enabled"], updated["description"], updated["priority"]) == (False, "d", 7)
    assert updated["name"] == "CRUD" and updated["etag"] != created["etag"]
    stale = await cli("jobs", "update", "crud", "--name", "late", "--etag", created["etag"])
    assert stale.code == 1 and stale.err.startswith("strait: ABORTED: ")
    renamed = await cli.json("jobs", "update", "crud", "--slug", "crud-2", "--endpoint", url + "?v=2")
    assert (renamed["id"], renamed["slug"], renamed["endpoint_url"]) == (created["id"], "crud-2", url + "?v=2")
    nothing = await cli("jobs", "update", "crud-2")
    assert nothing.code == 2 and "name at least one setting" in nothing.err

    deleted = await cli("jobs", "delete", "crud-2")
    assert deleted.code == 0 and f"deleted job crud-2 ({created['id']})" in deleted.out
    gone = await cli("jobs", "get", "crud-2")
    assert gone.code == 1 and gone.out == ""
    assert gone.err.splitlines() == [gone.err.strip()] and gone.err.startswith("strait: NOT_FOUND: ")


async def test_bad_input_is_one_line_naming_the_field(cli: Cli) -> None:
    bad = await cli("jobs", "create", "bad", "not-a-url", "--max-attempts", "3")
    assert bad.code == 1 and bad.out == ""
    assert len(bad.err.splitlines()) == 1, bad.err
    assert bad.err.startswith("strait: INVALID_ARGUMENT: ") and "job.endpoint_url" in bad.err
    assert "Traceback" not in bad.err

    unknown = await cli("jobs", "create", "bad", "http://127.0.0.1:9/", "--set", "colour=red")
    assert unknown.code == 2 and "Job has no field 'colour'" in unknown.err
    duration = await cli("jobs", "create", "bad", "http://127.0.0.1:9/", "--timeout", "soon")
    assert duration.code == 2 and "'soon' is not a duration" in duration.err
    payload = await cli("trigger", "bad", "[1, 2]")
    assert payload.code == 2 and "must be a JSON object" in payload.err
    missing_key = await Cli({**cli.env, "STRAIT_API_KEY": ""})("jobs", "list")
    assert missing_key.code == 2 and "set STRAIT_API_KEY" in missing_key.err


async def test_trigger_wait_exits_0_only_when_the_run_completed(cli: Cli, sink: Sink) -> None:
    await cli.json("jobs", "create", "echo", sink.script("/echo", then=Reply(body='{"echoed": true}')))
    await cli.json("jobs", "create", "broken", sink.script("/broken", then=Reply(503)), "--max-attempts", "1")

    done = await cli.json("trigger", "echo", '{"n": 1}', "--wait")
    assert done["status"] == "completed" and done["payload"] == {"n": 1} and done["output"] == {"echoed": True}
    from_stdin = await cli.json("trigger", "echo", "-", "--wait", stdin='{"from": "stdin"}')
    assert from_stdin["payload"] == {"from": "stdin"} and from_stdin["status"] == "completed"

    failed = await cli("trigger", "broken", "--wait")
    assert failed.code == 1
    assert "dead_letter" in failed.out and "endpoint returned 503" in failed.out
    as_json = await cli("trigger", "broken", "--wait", "-o", "json")
    assert as_json.code == 1 and json.loads(as_json.out)["status"] == "dead_letter"

    not_waited = await cli.json("trigger", "broken")
    assert not_waited["status"] in ("queued", "executing", "dead_letter")
    late = await cli("trigger", "echo", "--delay", "1h", "--wait", "--wait-timeout", "500ms")
    assert late.code == 1 and late.err.startswith("strait: run_") and "has not finished after 500ms" in late.err
    alone = await cli("trigger", "echo", "--wait-timeout", "1s")
    assert alone.code == 2 and "--wait-timeout goes with --wait" in alone.err

    # `runs watch` of a run that already ended: its stored events, then the same exit codes.
    watched = await cli("runs", "watch", done["id"], "-o", "json")
    assert watched.code == 0 and watched.json_lines()[-1]["to_status"] == "completed"
    watched = await cli("runs", "watch", as_json_id := json.loads(as_json.out)["id"])
    assert watched.code == 1 and watched.out.splitlines()[-1].startswith(f"{as_json_id} dead_letter")


async def test_runs_list_filters(cli: Cli, sink: Sink) -> None:
    await cli.json("jobs", "create", "a", sink.script("/a"))
    await cli.json("jobs", "create", "b", sink.script("/b", then=Reply(503)), "--max-attempts", "1")
    first = await cli.json("trigger", "a", '{"i": 1}', "--wait", "--tag", "region=eu", "--tag", "tier=gold")
    second = await cli.json("trigger", "a", '{"i": 2}', "--wait", "--tag", "region=eu")
    dead = (await cli("trigger", "b", "--wait", "-o", "json")).out

    every = await cli.json("runs", "list")
    assert [r["id"] for r in every] == [json.loads(dead)["id"], second["id"], first["id"]]  # newest first
    assert [r["id"] for r in await cli.json("runs", "list", "--job", "a")] == [second["id"], first["id"]]
    assert [r["id"] for r in await cli.json("runs", "list", "--status", "dead_letter")] == [json.loads(dead)["id"]]
    both = await cli.json("runs", "list", "--status", "dead_letter", "--status", "completed", "--job", "b")
    assert [r["status"] for r in both] == ["dead_letter"]
    after_first = await cli.json("runs", "list", "--since", first["create_time"], "--job", "a")
    assert [r["id"] for r in after_first] == [second["id"]]
    assert len(await cli.json("runs", "list", "--since", "1h")) == 3
    local = datetime.fromisoformat(first["create_time"]).astimezone() + timedelta(hours=1)
    assert await cli.json("runs", "list", "--since", local.replace(tzinfo=None).isoformat()) == []
    assert len(await cli.json("runs", "list", "--limit", "1")) == 1
    in_eu = await cli.json("runs", "list", "--tag", "region=eu")
    assert [r["id"] for r in in_eu] == [second["id"], first["id"]]
    gold = await cli.json("runs", "list", "--tag", "region=eu", "--tag", "tier=gold")
    assert [r["id"] for r in gold] == [first["id"]]

    table = await cli("runs", "list", "--job", "b")
    assert table.code == 0
    assert table.out.splitlines()[1].split()[:3] == [json.loads(dead)["id"], "b", "dead_letter"]
    unknown = await cli("runs", "list", "--job", "nope")
    assert unknown.code == 1 and unknown.err.startswith("strait: NOT_FOUND: ")
    bad_status = await cli("runs", "list", "--status", "finished")
    assert bad_status.code == 2 and "'finished' is not one of" in bad_status.err


async def test_runs_stats(cli: Cli, sink: Sink) -> None:
    await cli.json("jobs", "create", "a", sink.script("/a"))
    await cli.json("jobs", "create", "b", sink.script("/b", then=Reply(503)), "--max-attempts", "1")
    done = await cli.json("trigger", "a", "--wait")
    assert (await cli("trigger", "b", "--wait")).code == 1
    await cli.json("trigger", "a", "--delay", "1h")

    stats = await cli.json("runs", "stats")
    assert stats["bucket"] == 300 and len(stats["buckets"]) == 12 and stats["start_time"].endswith("Z")
    totals = stats["totals"]
    assert (totals["created"], totals["completed"], totals["failed"]) == (3, 1, 1)
    assert totals["duration"]["count"] == 2 and totals["wait"]["p50"] is not None
    assert stats["queues"] == [{"job_id": done["job_id"], "job_slug": "a", "queued": 0, "delayed": 1,
                                "executing": 0}]
    only_b = await cli.json("runs", "stats", "--job", "b", "--window", "2h", "--bucket", "10m")
    assert (len(only_b["buckets"]), only_b["totals"]["failed"], only_b["queues"]) == (12, 1, [])

    shown = await cli("runs", "stats")
    assert shown.code == 0
    assert re.search(r"^created +3 *$", shown.out, re.M) and re.search(r"^failed +1 *$", shown.out, re.M)
    assert re.search(r"^wait +p50 \S+, p95 \S+ \(of 2\) *$", shown.out, re.M)
    assert re.search(r"^JOB +QUEUED +DELAYED +EXECUTING *$", shown.out, re.M)
    assert re.search(r"^a +0 +1 +0 *$", shown.out, re.M)
    assert re.search(r"^FROM +CREATED +COMPLETED +FAILED", shown.out, re.M)
    bad = await cli("runs", "stats", "--bucket", "10s")
    assert bad.code == 1 and bad.err.startswith("strait: INVALID_ARGUMENT: ") and "bucket" in bad.err
    assert (await cli("runs", "stats", "--window", "soon")).code == 2


async def test_events_cancel_and_replay_of_a_dead_letter_run(cli: Cli, sink: Sink) -> None:
    url = sink.script("/flaky", then=Reply(503))
    await cli.json("jobs", "create", "flaky", url, "--max-attempts", "2", "--set",
                   'retry_policy={"initial_delay": 0.01, "max_delay": 0.01}')
    dead = (await cli("trigger", "flaky", '{"order": 42}', "--wait", "-o", "json")).out
    dead_run = json.loads(dead)
    assert dead_run["status"] == "dead_letter" and [a["status_code"] for a in dead_run["attempts"]] == [503, 503]

    events = await cli.json("runs", "events", dead_run["id"])
    assert [(e["sequence"], e["from_status"], e["to_status"]) for e in events] == [
        (1, None, "queued"), (2, "queued", "executing"), (3, "executing", "queued"), (4, "queued", "executing"),
        (5, "executing", "dead_letter")]
    table = await cli("runs", "events", dead_run["id"])
    assert "executing → dead_letter" in table.out and "endpoint returned 503" in table.out
    shown = await cli("runs", "get", dead_run["id"])
    assert '{"order": 42}' in shown.out and "attempts" in shown.out and "flaky" in shown.out

    await cli.json("jobs", "update", "flaky", "--endpoint", sink.script("/fixed"))
    replay = await cli.json("runs", "replay", dead_run["id"])
    assert replay["replay_of_run_id"] == dead_run["id"] and replay["payload"] == {"order": 42}
    watched = await cli("runs", "watch", replay["id"], "-o", "json")
    assert watched.code == 0 and watched.json_lines()[-1]["to_status"] == "completed"
    assert sink.for_path("/fixed")[0].json() == {"order": 42}

    later = await cli.json("trigger", "flaky", "--delay", "1h")
    assert later["status"] == "delayed"
    canceled = await cli.json("runs", "cancel", later["id"], "--reason", "not needed")
    assert canceled["status"] == "canceled"
    again = await cli("runs", "cancel", later["id"])
    assert again.code == 1 and again.err.startswith("strait: FAILED_PRECONDITION: ")
    assert (await cli.json("runs", "events", later["id"]))[-1]["message"] == "not needed"
    missing = await cli("runs", "get", "run_doesnotexist")
    assert missing.code == 1 and "NOT_FOUND" in missing.err


async def test_schedules(cli: Cli, sink: Sink) -> None:
    await cli.json("jobs", "create", "nightly", sink.script("/nightly"))
    await cli.json("jobs", "create", "adhoc", sink.script("/adhoc"))
    created = await cli.json("schedules", "create", "nightly", "0 3 * * *", "--timezone", "Europe/Paris",
                             "--overlap", "skip")
    assert (created["cron"], created["timezone"], created["cron_overlap_policy"]) == ("0 3 * * *", "Europe/Paris",
                                                                                     "skip")
    assert [s["slug"] for s in await cli.json("schedules", "list")] == ["nightly"]
    shown = await cli.json("schedules", "get", "nightly", "--count", "3")
    times = [datetime.fromisoformat(t) for t in shown["fire_times"]]
    assert len(times) == 3 and all(t.astimezone(ZoneInfo("Europe/Paris")).hour == 3 for t in times)

    assert (await cli.json("schedules", "pause", "nightly"))["schedule_paused"] is True
    assert (await cli.json("schedules", "resume", "nightly"))["schedule_paused"] is False
    run = await cli.json("schedules", "trigger", "nightly")
    assert run["metadata"]["triggered_by"] == "schedule_trigger"
    no_schedule = await cli("schedules", "pause", "adhoc")
    assert no_schedule.code == 1 and no_schedule.err.startswith("strait: FAILED_PRECONDITION: ")
    bad = await cli("schedules", "create", "adhoc", "every day")
    assert bad.code == 1 and "INVALID_ARGUMENT" in bad.err and "job.cron" in bad.err

    removed = await cli.json("schedules", "delete", "nightly")
    assert removed["cron"] == "" and await cli.json("schedules", "list") == []


async def test_circuits_list_and_reset(make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    app = await make_app(circuit_failure_threshold=2, circuit_open_for=timedelta(minutes=10))
    api = await connect(app, settings.admin_key)
    cli = Cli(cli_env(address(app), api.key))
    url = sink.script("/down", Reply(503), Reply(503), then=Reply(200))
    await cli.json("jobs", "create", "down", url, "--max-attempts", "10", "--set",
                   'retry_policy={"initial_delay": 0.01, "max_delay": 0.01}')
    run = await cli.json("trigger", "down")

    async def opened() -> list[dict[str, object]] | None:
        circuits = await cli.json("circuits", "list")
        return circuits if circuits and circuits[0]["state"] == "open" else None
    circuit = (await eventually(opened))[0]
    assert circuit["endpoint_url"] == url and circuit["consecutive_failures"] == 2
    table = await cli("circuits", "list")
    assert table.out.splitlines()[1].split()[:3] == [url, "open", "2"]

    reset = await cli.json("circuits", "reset", url)
    assert reset["state"] == "closed"
    watched = await cli("runs", "watch", run["id"], "-o", "json")  # the waiting run goes out again, and completes
    assert watched.code == 0 and watched.json_lines()[-1]["to_status"] == "completed"
    await api.channel.close()


async def test_projects_and_keys_with_the_admin_key(app: App, api: Api, settings: Settings, sink: Sink) -> None:
    admin = Cli(cli_env(address(app), "", STRAIT_ADMIN_KEY=settings.admin_key))
    project = await admin.json("projects", "create", "shop", "--name", "Shop", "--rate-limit", "100/1s")
    assert project["slug"] == "shop" and project["api_rate_limit"] == {"requests": 100, "window": 1.0}
    assert "shop" in [p["slug"] for p in await admin.json("projects", "list")]
    assert (await admin.json("projects", "get", project["id"]))["name"] == "Shop"
    budget = await admin.json("projects", "update", project["id"], "--budget", "5000000", "--budget-action", "reject")
    assert (budget["monthly_budget_microusd"], budget["budget_action"]) == (5_000_000, "reject")

    key = await admin.json("keys", "create", "--project", project["id"], "--name", "ci", "--scope", "workers:connect")
    assert key["secret"].startswith("strait_") and key["scopes"] == ["workers:connect"]
    shown = await admin("keys", "create", "--project", project["id"], "--name", "other")
    assert "shown only this once" in shown.out and "strait_" in shown.out
    listed = await admin.json("keys", "list", "--project", project["id"])
    assert sorted(k["name"] for k in listed) == ["ci", "other"] and all("secret" not in k for k in listed)

    as_key = Cli(cli_env(address(app), key["secret"]))
    assert await as_key.json("jobs", "list") == []
    revoked = await admin.json("keys", "revoke", key["id"])
    assert revoked["revoke_time"] is not None
    refused = await as_key("jobs", "list")
    assert refused.code == 1 and refused.err.startswith("strait: UNAUTHENTICATED: ")

    project_key = Cli(cli_env(address(app), api.key))  # a project key may not create projects
    denied = await project_key("projects", "create", "other")
    assert denied.code == 1 and denied.err.startswith("strait: PERMISSION_DENIED: ")
