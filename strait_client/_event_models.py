"""Events as the client reads them (see _models for the conventions): Event mirrors strait.v1.Event field for
field; SentEvent adds what `events.send` did (`matched_steps`, `idempotent_repeat`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from strait_client._models import json_of, time_of
from strait_client.v1 import event_pb2


def _event_fields(m: event_pb2.Event) -> dict[str, Any]:
    return {"id": m.id, "key": m.key, "payload": json_of(m.payload_json), "idempotency_key": m.idempotency_key,
            "create_time": time_of(m, "create_time")}


@dataclass(frozen=True, slots=True)
class Event:
    """An event sent to the project (strait.v1.Event): it resolves the wait_for_event steps waiting for its
    `key`. `payload` is the decoded JSON value (None for null)."""

    id: str
    key: str
    payload: Any
    idempotency_key: str
    create_time: datetime | None

    @classmethod
    def from_proto(cls, m: event_pb2.Event) -> Event:
        """Decodes a strait.v1.Event message.

        Args:
            m: The message.

        Returns:
            The event.
        """
        return cls(**_event_fields(m))


@dataclass(frozen=True, slots=True)
class SentEvent(Event):
    """The event `events.send` returns: an Event, plus `matched_steps` (how many waiting steps it resolved) and
    `idempotent_repeat` (the idempotency key named an earlier event, which is returned; nothing was sent again
    and `matched_steps` is 0)."""

    matched_steps: int = 0
    idempotent_repeat: bool = False

    @classmethod
    def from_response(cls, m: event_pb2.SendEventResponse) -> SentEvent:
        """Decodes a strait.v1.SendEventResponse.

        Args:
            m: The response.

        Returns:
            The event with what sending it did.
        """
        return cls(**_event_fields(m.event), matched_steps=m.matched_steps, idempotent_repeat=m.idempotent_repeat)
