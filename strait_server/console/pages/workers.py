"""Workers: the project's connected worker sessions (handlers, slots, runs in flight, the server process they
are connected to, draining, last seen), and the drain action."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from aiohttp import web

from strait_client._models import time_of
from strait_client.v1 import worker_pb2
from strait_server.console.pages.runs import project_only
from strait_server.console.web import API, caller, query, render, session_of

PAGE_SIZE = 100


@dataclass(frozen=True, slots=True)
class WorkerSession:
    """A connected worker as the page shows it (strait.v1.Worker)."""

    id: str
    worker_id: str
    name: str
    hostname: str
    handlers: tuple[tuple[str, str], ...]  # (queue, job slug)
    slots: int
    in_flight: int
    server_id: str
    draining: bool
    connect_time: datetime | None
    seen_time: datetime | None

    @classmethod
    def from_proto(cls, m: worker_pb2.Worker) -> WorkerSession:
        return cls(m.id, m.worker_id, m.name, m.hostname, tuple((h.queue, h.job_slug) for h in m.handlers),
                   m.slots, m.in_flight, m.server_id, m.draining, time_of(m, "connect_time"),
                   time_of(m, "seen_time"))


def register(router: web.UrlDispatcher) -> None:
    router.add_get("/workers", workers_page)
    router.add_post("/workers/{id}/drain", drain)


async def workers_page(request: web.Request) -> web.StreamResponse:
    project_only(session_of(request))
    api = request.app[API]
    listed = await api.call(caller(request), api.workers.ListWorkers, worker_pb2.ListWorkersRequest(
        page_size=PAGE_SIZE, page_token=request.query.get("page_token", "")))
    workers = [WorkerSession.from_proto(w) for w in listed.workers]
    return render(request, "workers.html", title="Workers", workers=workers,
                  next_page=query(request, page_token=listed.next_page_token) if listed.next_page_token else "")


async def drain(request: web.Request) -> web.StreamResponse:
    """Asks a worker to drain: it gets nothing new, finishes what it holds and stays connected, idle."""
    project_only(session_of(request))
    api = request.app[API]
    session_id = request.match_info["id"]
    await api.call(caller(request), api.workers.DrainWorker, worker_pb2.DrainWorkerRequest(id=session_id))
    raise web.HTTPSeeOther(f"/workers#worker-{session_id}")
