"""Dead letter: the project's runs in status dead_letter, grouped by job and error, with replay of one run, of
the runs ticked, or of a whole group. Replaying creates new runs; the dead-letter runs stay for inspection."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from datetime import datetime

from aiohttp import web

from strait_client._errors import StraitError, UnauthenticatedError
from strait_client._models import Run
from strait_client.v1 import run_pb2
from strait_server.console.pages.runs import job_slugs, project_only
from strait_server.console.web import API, caller, render, session_of

MAX_RUNS = 1000  # read at most this many dead-letter runs (newest first) per page view or group replay
PAGE_SIZE = 250
MAX_PAGES = 8  # pages hold fewer runs when payloads are big: bound the calls too
SHOWN_PER_GROUP = 5
REPLAYS_AT_ONCE = 8
# A repeated replay of the same run from this page (a double click, a reload that posts again) returns the first
# replay instead of creating another: the API keys replays per original run.
REPLAY_KEY = "console-dead-letter"


@dataclass
class Group:
    """Dead-letter runs of one job that failed with the same error, newest first."""

    key: str
    job_id: str
    job: str
    error: str
    runs: list[Run] = field(default_factory=list)

    @property
    def newest(self) -> datetime | None:
        return _dead_since(self.runs[0]) if self.runs else None

    @property
    def shown(self) -> list[Run]:
        return self.runs[:SHOWN_PER_GROUP]


@dataclass
class Replayed:
    """What a replay did: new runs (original id, new run), earlier replays returned again, refusals."""

    created: list[tuple[str, Run]] = field(default_factory=list)
    repeated: list[tuple[str, Run]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)


def register(router: web.UrlDispatcher) -> None:
    router.add_get("/dead-letter", dead_letter_page)
    router.add_post("/dead-letter/replay", replay)


def group_key(job_id: str, error: str) -> str:
    return hashlib.sha256(f"{job_id}\n{error}".encode()).hexdigest()[:16]


def _dead_since(run: Run) -> datetime | None:
    return run.finish_time or run.update_time or run.create_time


def _newest_first(at: datetime | None) -> float:
    return -at.timestamp() if at else 0.0


def groups_of(runs: list[Run], slugs: dict[str, str]) -> list[Group]:
    """Runs grouped by job and error; the group with the newest dead run first."""
    groups: dict[str, Group] = {}
    for run in runs:
        key = group_key(run.job_id, run.error)
        group = groups.setdefault(key, Group(key, run.job_id, slugs.get(run.job_id, run.job_id), run.error))
        group.runs.append(run)
    for group in groups.values():
        group.runs.sort(key=lambda r: _newest_first(_dead_since(r)))
    return sorted(groups.values(), key=lambda g: _newest_first(g.newest))


async def dead_runs(request: web.Request) -> tuple[list[Run], bool]:
    """The newest dead-letter runs, at most MAX_RUNS of them, and whether there are more."""
    api = request.app[API]
    runs: list[Run] = []
    token = ""
    for _ in range(MAX_PAGES):
        listed = await api.call(caller(request), api.runs.ListRuns, run_pb2.ListRunsRequest(
            statuses=[run_pb2.RUN_STATUS_DEAD_LETTER], page_size=min(PAGE_SIZE, MAX_RUNS - len(runs)),
            page_token=token))
        runs += [Run.from_proto(r) for r in listed.runs]
        token = listed.next_page_token
        if not token or len(runs) >= MAX_RUNS:
            break
    return runs, bool(token)


async def dead_letter_page(request: web.Request) -> web.StreamResponse:
    project_only(session_of(request))
    return await _view(request)


async def _view(request: web.Request, http_status: int = 200, replayed: Replayed | None = None,
                problem: str = "") -> web.Response:
    runs, more = await dead_runs(request)
    groups = groups_of(runs, await job_slugs(request))
    return render(request, "dead_letter.html", http_status=http_status, groups=groups, total=len(runs), more=more,
                  limit=MAX_RUNS, replayed=replayed, problem=problem, title="Dead letter")


async def replay(request: web.Request) -> web.StreamResponse:
    """Replays one run (`one`), the runs ticked (`run`, with action=selected), or a group (`group`, with
    action=group: its dead-letter runs as they are now, within the MAX_RUNS newest), then shows the dead letter
    again with what was replayed."""
    project_only(session_of(request))
    form = await request.post()
    action = str(form.get("action", ""))
    if form.get("one"):
        run_ids = [str(form["one"])]
    elif action == "group":
        runs, _ = await dead_runs(request)
        wanted = str(form.get("group", ""))
        run_ids = [r.id for r in runs if group_key(r.job_id, r.error) == wanted]
    else:
        run_ids = list(dict.fromkeys(str(v) for v in form.getall("run", [])))[:MAX_RUNS]
    if not run_ids:
        problem = ("Tick the runs to replay first." if action != "group"
                   else "That group has no runs in the dead letter any more.")
        return await _view(request, http_status=400, problem=problem)
    return await _view(request, replayed=await replay_runs(request, run_ids))


async def replay_runs(request: web.Request, run_ids: list[str]) -> Replayed:
    """Replays each run, a few at a time; a refusal (the job was disabled or deleted, the run is another
    project's, ...) is noted and the others go ahead."""
    api = request.app[API]
    who = caller(request)
    gate = asyncio.Semaphore(REPLAYS_AT_ONCE)
    outcome = Replayed()

    async def one(run_id: str) -> None:
        async with gate:
            try:
                answer = await api.call(who, api.runs.ReplayRun,
                                        run_pb2.ReplayRunRequest(id=run_id, idempotency_key=REPLAY_KEY))
            except UnauthenticatedError:
                raise  # the key was revoked: the console signs the browser out
            except StraitError as err:
                outcome.refused.append((run_id, err.message))
                return
        new = Run.from_proto(answer.run)
        (outcome.repeated if answer.idempotent_repeat else outcome.created).append((run_id, new))

    await asyncio.gather(*(one(run_id) for run_id in run_ids))
    order = {run_id: i for i, run_id in enumerate(run_ids)}  # as the page listed them, whichever finished first
    for pairs in (outcome.created, outcome.repeated, outcome.refused):
        pairs.sort(key=lambda pair: order[pair[0]])
    return outcome
