"""`client.events`: send the events that workflow steps wait for (wait_for_event), blocking (Events) and
asyncio (AsyncEvents)."""

from __future__ import annotations

from typing import Any

from strait_client import _workflow_run_ops as ops
from strait_client._event_models import SentEvent
from strait_client._transport import AsyncTransport, Transport


class Events:
    """`client.events`: sends events to the project's waiting workflow steps (docs/workflows.md)."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def send(self, key: str, payload: Any = None, *, idempotency_key: str = "") -> SentEvent:
        """Sends an event: every step of the project now waiting for `key`, whose match (if any) accepts the
        payload, completes with the payload as its output. The event is kept 24 hours, so a wait with a
        look-back that starts later can still match it.

        Only a call with an `idempotency_key` is retried after UNAVAILABLE: a repeat with the same key (within
        24 hours) returns the first event and resolves nothing again, so a retry after a lost answer may come
        back with `idempotent_repeat` set and `matched_steps` 0. Without a key the call is not retried, as a
        retry could send the event twice.

        Args:
            key: The event's key (at most 1,024 characters), e.g. "order-7-paid".
            payload: Any JSON value (a str is a JSON string), encoded by the client; None sends null.
            idempotency_key: Sends the event at most once per key (at most 256 characters).

        Returns:
            The event, with `matched_steps` (how many waiting steps it resolved) and `idempotent_repeat`.

        Raises:
            InvalidArgumentError: The key is empty or too long, or the payload is too large (over 1 MiB).
            TypeError: `payload` cannot be encoded as JSON.
        """
        return self._t.call(ops.send_event(key, payload, idempotency_key))


class AsyncEvents:
    """`client.events` of AsyncClient: the methods of Events, awaited."""

    def __init__(self, transport: AsyncTransport) -> None:
        self._t = transport

    async def send(self, key: str, payload: Any = None, *, idempotency_key: str = "") -> SentEvent:
        """Sends an event: every step of the project now waiting for `key`, whose match (if any) accepts the
        payload, completes with the payload as its output. The event is kept 24 hours, so a wait with a
        look-back that starts later can still match it.

        Only a call with an `idempotency_key` is retried after UNAVAILABLE: a repeat with the same key (within
        24 hours) returns the first event and resolves nothing again, so a retry after a lost answer may come
        back with `idempotent_repeat` set and `matched_steps` 0. Without a key the call is not retried, as a
        retry could send the event twice.

        Args:
            key: The event's key (at most 1,024 characters), e.g. "order-7-paid".
            payload: Any JSON value (a str is a JSON string), encoded by the client; None sends null.
            idempotency_key: Sends the event at most once per key (at most 256 characters).

        Returns:
            The event, with `matched_steps` (how many waiting steps it resolved) and `idempotent_repeat`.

        Raises:
            InvalidArgumentError: The key is empty or too long, or the payload is too large (over 1 MiB).
            TypeError: `payload` cannot be encoded as JSON.
        """
        return await self._t.call(ops.send_event(key, payload, idempotency_key))
