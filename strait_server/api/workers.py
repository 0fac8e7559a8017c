"""WorkerService: workers' sessions (the protocol lives in workers/protocol.py), and the listing of workers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from strait_client.v1 import worker_pb2, worker_pb2_grpc
from strait_server.api import convert
from strait_server.api.deps import Deps
from strait_server.api.interceptor import principal, project_id
from strait_server.api.pagination import fingerprint, keyset_page, page_size
from strait_server.auth import WORKERS_CONNECT
from strait_server.errors import FieldViolation, InvalidArgument, PermissionDenied
from strait_server.store.worker_sessions import WorkerSessionRow, WorkerSessionStore
from strait_server.workers.hub import WorkerHub
from strait_server.workers.protocol import WorkerSessions
from strait_server.workers.reports import ReportRecorder

W = worker_pb2


class WorkerServicer(worker_pb2_grpc.WorkerServiceServicer):
    def __init__(self, deps: Deps, hub: WorkerHub, listing: WorkerSessionStore) -> None:
        self._d = deps
        recorder = ReportRecorder(deps.context, deps.events.published)
        self._sessions = WorkerSessions(hub, deps.jobs, deps.settings, recorder)
        self._listing = listing

    async def Connect(self, request_iterator: AsyncIterator[worker_pb2.ConnectRequest],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[worker_pb2.ConnectResponse]:
        project, caller = project_id(), principal()
        if WORKERS_CONNECT not in caller.scopes:
            raise PermissionDenied(f"worker sessions need an API key with the scope {WORKERS_CONNECT!r} "
                                   "(ProjectService.CreateApiKey with scopes)")
        async for message in self._sessions.serve(project, caller.key_id, request_iterator):
            yield message

    async def ListWorkers(self, request: worker_pb2.ListWorkersRequest,
                          context: grpc.aio.ServicerContext) -> worker_pb2.ListWorkersResponse:
        project = project_id()
        size = page_size(request.page_size)
        page, token = await keyset_page(
            self._d.page_tokens, request.page_token, fingerprint("workers", project), size,
            lambda cursor, limit: self._listing.list_sessions(project, cursor, limit))
        return W.ListWorkersResponse(workers=[_worker(w) for w in page], next_page_token=token)

    async def GetWorker(self, request: worker_pb2.GetWorkerRequest,
                        context: grpc.aio.ServicerContext) -> worker_pb2.GetWorkerResponse:
        return W.GetWorkerResponse(worker=_worker(await self._listing.get(project_id(), _worker_id(request.id))))

    async def DrainWorker(self, request: worker_pb2.DrainWorkerRequest,
                          context: grpc.aio.ServicerContext) -> worker_pb2.DrainWorkerResponse:
        row = await self._listing.request_drain(project_id(), _worker_id(request.id))
        return W.DrainWorkerResponse(worker=_worker(row))


def _worker_id(value: str) -> str:
    if not value or len(value) > 128:
        raise InvalidArgument([FieldViolation("id", "must be a worker (session) id")])
    return value


def _worker(w: WorkerSessionRow) -> worker_pb2.Worker:
    return W.Worker(id=w.id, worker_id=w.worker_id, name=w.name, hostname=w.hostname,
                    handlers=[W.Handler(queue=h["queue"], job_slug=h["job_slug"]) for h in w.handlers],
                    slots=w.slots, in_flight=w.in_flight, server_id=w.server_id, draining=w.drain_requested,
                    connect_time=convert.ts(w.create_time), seen_time=convert.ts(w.seen_time))
