"""Helpers shared by several test modules: timestamps, the injectable cron clock, /metrics scraping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import aiohttp
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client.parser import text_string_to_metric_families

from strait_client.v1 import job_pb2
from strait_server.app import App
from tests.conftest import eventually

# Retries 10 ms apart, so that retry paths run in milliseconds.
FAST_RETRY = job_pb2.RetryPolicy(initial_delay={"nanos": 10_000_000}, max_delay={"nanos": 10_000_000})


def ts_in(**delta: float) -> Timestamp:
    """A protobuf Timestamp `delta` (timedelta keywords) from now."""
    ts = Timestamp()
    ts.FromDatetime(datetime.now(UTC) + timedelta(**delta))
    return ts


class FakeClock:
    """The cron scheduler's injectable clock: tests move `now` instead of waiting for real minutes."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


async def scheduler_passes(apps: list[App], count: int) -> None:
    """Waits until every scheduler has completed `count` more passes."""
    marks = [app.cron.ticks for app in apps if app.cron]

    async def done() -> bool:
        return all(app.cron is not None and app.cron.ticks >= m + count for app, m in zip(apps, marks, strict=True))
    await eventually(done)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(app: App) -> Samples:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{app.metrics_port}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples named `name` whose labels include `labels` (0 when there is none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)
