"""Reply sizes: byte-bounded pages, and the FULL view's estimate of new runs staying above their real size."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from strait_client.v1 import job_pb2, run_pb2
from strait_server import errors
from strait_server.api import convert, replies
from strait_server.model import Run, RunStatus

MiB = 1024 * 1024
LATE = datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)


def test_the_budget_stays_under_the_server_and_client_limits() -> None:
    assert replies.budget(8 * MiB) == 4 * MiB - 64 * 1024
    assert replies.budget(64 * MiB) == replies.budget(8 * MiB)  # clients accept 4 MiB unless configured
    assert replies.budget(2 * MiB) == 2 * MiB - 64 * 1024
    assert replies.budget(100_000) == 50_000


def _runs(*sizes: int) -> list[run_pb2.Run]:
    return [run_pb2.Run(id=f"r{i}", payload_json="x" * size) for i, size in enumerate(sizes)]


def test_a_page_stops_before_its_bytes_pass_the_budget() -> None:
    items = _runs(400, 400, 400, 400)
    page = replies.page(items, lambda r: r, size=10, max_bytes=1000)
    assert [m.id for m in page.messages] == ["r0", "r1"] and page.last is items[1]
    assert sum(m.ByteSize() + replies.ITEM_FRAMING for m in page.messages) <= 1000


def test_a_page_always_sends_one_item_and_ends_without_last() -> None:
    big = _runs(5000, 10)
    assert replies.page(big, lambda r: r, size=10, max_bytes=1000).last is big[0]
    small = _runs(10, 10)
    assert replies.page(small, lambda r: r, size=10, max_bytes=1000) == (small, None)
    # One more item than the page size: more follow.
    assert replies.page(small, lambda r: r, size=1, max_bytes=1000).last is small[0]
    # The store's own byte bound stopped the list: more follow, even when everything read fits.
    assert replies.page(small, lambda r: r, size=10, max_bytes=1000, cut=True).last is small[1]
    assert replies.page([], lambda r: r, size=10, max_bytes=1000, cut=False) == ([], None)


def _widest_new_run(options: job_pb2.RunOptions, job_tags: dict[str, str]) -> Run:
    """The run a trigger with `options` creates, with every field the request does not set at its widest."""
    return Run(
        id="run_" + "z" * 24, project_id="proj_" + "z" * 24, job_id="job_" + "z" * 24, status=RunStatus.DELAYED,
        attempt=0, max_attempts=100, priority=10, timeout_ms=86_400_000, payload=options.payload_json or "{}",
        output=None, error="", error_class="", scheduled_time=LATE, create_time=LATE, update_time=LATE,
        start_time=None, finish_time=None, idempotency_key=options.idempotency_key,
        tags={**job_tags, **options.tags},
        # A debounced job's new run says so in its metadata.
        metadata={**options.metadata, "triggered_by": "debounce"}, attempts=[], replay_of="", expires_at=LATE,
        concurrency_key=options.concurrency_key)


@pytest.mark.parametrize("options", [
    job_pb2.RunOptions(),
    job_pb2.RunOptions(
        payload_json='{"a": 1}', idempotency_key="k" * 256, concurrency_key="c" * 256, priority=10, max_attempts=100,
        timeout=Duration(seconds=86_400), ttl=Duration(seconds=86_400), scheduled_time=Timestamp(seconds=2**33),
        tags={f"t{i}": "" for i in range(20)}, metadata={f"m{i}": "" for i in range(64)}),
])
@pytest.mark.parametrize("job_tags", [{}, {f"j{i}": "v" * 1024 for i in range(20)}])
def test_the_estimate_of_new_runs_is_never_below_their_full_view(options: job_pb2.RunOptions,
                                                                 job_tags: dict[str, str]) -> None:
    batch = [options] * 3
    runs = [_widest_new_run(o, job_tags) for o in batch]
    actual = sum(convert.run(r).ByteSize() + replies.ITEM_FRAMING for r in runs)
    replies.FullView(batch, actual).require_fits(runs)
    with pytest.raises(errors.InvalidArgument):
        replies.FullView(batch, actual - 1).require_fits(runs)
    with pytest.raises(errors.InvalidArgument):  # the estimate is at least the real size...
        replies.FullView(batch, actual - 1).require_new_runs_fit(job_tags)
    # ... and not far above it.
    replies.FullView(batch, actual + len(batch) * replies.FULL_RUN_OVERHEAD).require_new_runs_fit(job_tags)


def test_a_full_view_too_big_names_the_view_and_builds_each_run_once() -> None:
    run = _widest_new_run(job_pb2.RunOptions(payload_json='{"x": "' + "x" * 1000 + '"}'), {})
    full = replies.FullView([job_pb2.RunOptions()], 5000)
    full.require_fits([run] * 4)
    with pytest.raises(errors.InvalidArgument) as refused:
        full.require_fits([run] * 5)
    assert [v.field for v in refused.value.violations] == ["view"]
    first, second = full.messages([run, run])
    assert first is second
