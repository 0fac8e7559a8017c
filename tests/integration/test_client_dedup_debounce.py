"""The client's trigger passes dedup_key and debounce_key and reports what the server did with them
(`deduplicated`, `debounced`), blocking and asyncio alike; a batch carries the keys per run."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from strait_client import AsyncClient, Client, RunOptions, RunStatus
from strait_server.app import App
from tests.conftest import Api
from tests.integration.test_client import address
from tests.sink import Sink


async def test_dedup_key_decides_which_triggers_are_the_same(app: App, api: Api, sink: Sink) -> None:
    async with AsyncClient(address(app), api.key) as client:
        await client.jobs.create("charge", sink.script("/charge"), dedup_window=timedelta(minutes=10))
        first = await client.jobs.trigger("charge", {"amount": 5}, dedup_key="order-1")
        # Another payload, the same key: the same charge, so the first run comes back and nothing is created.
        again = await client.jobs.trigger("charge", {"amount": 6}, dedup_key="order-1")
        other = await client.jobs.trigger("charge", {"amount": 5}, dedup_key="order-2")
        assert (first.deduplicated, again.deduplicated, other.deduplicated) == (False, True, False)
        assert again.id == first.id and again.payload == {"amount": 5} and other.id != first.id
        assert not any(r.debounced for r in (first, again, other))

        def blocking() -> tuple[bool | None, str]:
            with Client(address(app), api.key) as sync:
                repeat = sync.jobs.trigger("charge", {"amount": 7}, dedup_key="order-2")
                return repeat.deduplicated, repeat.id
        assert await asyncio.to_thread(blocking) == (True, other.id)

        batch = await client.jobs.batch_trigger("charge", [RunOptions(payload={"amount": 8}, dedup_key="order-1"),
                                                           RunOptions(payload={"amount": 9}, dedup_key="order-3")])
        # A batch reply marks a returned run with idempotent_repeat, for whichever reason.
        assert [(r.id == first.id, r.idempotent_repeat, r.deduplicated) for r in batch] == [
            (True, True, None), (False, False, None)]
        assert len([r async for r in client.runs.list(job="charge")]) == 3


async def test_debounce_key_collapses_triggers_into_one_pending_run(app: App, api: Api, sink: Sink) -> None:
    async with AsyncClient(address(app), api.key) as client:
        await client.jobs.create("reindex", sink.script("/reindex"), debounce_window=timedelta(minutes=10))
        first = await client.jobs.trigger("reindex", {"rev": 1}, debounce_key="tenant-a")
        later = await client.jobs.trigger("reindex", {"rev": 2}, debounce_key="tenant-a")
        other = await client.jobs.trigger("reindex", {"rev": 1}, debounce_key="tenant-b")
        assert (first.debounced, later.debounced, other.debounced) == (False, True, False)
        assert first.status is RunStatus.DELAYED
        assert later.id == first.id and later.payload == {"rev": 2}  # the latest payload wins
        assert other.id != first.id and not any(r.deduplicated for r in (first, later, other))

        def blocking() -> tuple[bool | None, str, object]:
            with Client(address(app), api.key) as sync:
                latest = sync.jobs.trigger("reindex", {"rev": 3}, debounce_key="tenant-a")
                return latest.debounced, latest.id, latest.payload
        assert await asyncio.to_thread(blocking) == (True, first.id, {"rev": 3})
        assert len([r async for r in client.runs.list(job="reindex")]) == 2
