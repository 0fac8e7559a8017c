"""EventService: events that resolve the wait_for_event steps of workflow runs."""

from __future__ import annotations

import json

import grpc

from strait_client.v1 import event_pb2, event_pb2_grpc
from strait_server.api import convert, validate
from strait_server.api.interceptor import project_id
from strait_server.errors import Violations
from strait_server.service.workflow_runs import send_event
from strait_server.store.sent_events import SentEvent, SentEventStore
from strait_server.workflows.waits import MAX_EVENT_KEY_CHARS

MAX_PAYLOAD_BYTES = 1024 * 1024


def _event_message(e: SentEvent) -> event_pb2.Event:
    return event_pb2.Event(id=e.id, key=e.key, payload_json=json.dumps(e.payload),
                           idempotency_key=e.idempotency_key, create_time=convert.ts(e.create_time))


class EventServicer(event_pb2_grpc.EventServiceServicer):
    def __init__(self, store: SentEventStore) -> None:
        self._store = store

    async def SendEvent(self, request: event_pb2.SendEventRequest,
                        context: grpc.aio.ServicerContext) -> event_pb2.SendEventResponse:
        v = Violations()
        validate.check_text(v, "key", request.key, max_len=MAX_EVENT_KEY_CHARS, required=True)
        payload = validate.check_json(v, "payload_json", request.payload_json or "null", MAX_PAYLOAD_BYTES)
        validate.check_text(v, "idempotency_key", request.idempotency_key, max_len=256)
        v.raise_if_any()
        sent = await send_event(self._store, project_id(), request.key, payload, request.idempotency_key)
        return event_pb2.SendEventResponse(event=_event_message(sent.event), matched_steps=sent.matched_steps,
                                           idempotent_repeat=sent.repeat)
