"""The decisions of a watch, which Client and AsyncClient share: where to resume, when it is over, whether to
reconnect. The drivers that run them over real streams are covered in tests/integration/test_client.py."""

from __future__ import annotations

import grpc
import pytest

from strait_client import (
    FeedEvent,
    MapProgress,
    NotFoundError,
    RunEvent,
    StraitError,
    UnavailableError,
    WorkflowRunEvent,
    WorkflowRunSnapshot,
)
from strait_client._watch import (
    MAX_FAILURES,
    WATCH_END_KEY,
    FeedWatch,
    RunWatch,
    WorkflowRunProgressWatch,
    WorkflowRunWatch,
    reconnect_delay,
)
from strait_client.v1 import run_pb2, workflow_run_pb2


class _Failure(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """What a failed stream raises, as far as a watch looks at it."""

    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "failed"

    def trailing_metadata(self) -> tuple[()]:
        return ()

    def initial_metadata(self) -> tuple[()]:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: object) -> bool:
        return False


def _event(sequence: int, to_status: int = run_pb2.RUN_STATUS_EXECUTING) -> run_pb2.WatchRunResponse:
    return run_pb2.WatchRunResponse(event=run_pb2.RunEvent(run_id="run_1", sequence=sequence, type="status_change",
                                                           to_status=to_status))


def test_a_run_watch_resumes_after_the_last_sequence_and_ends_at_the_terminal_event() -> None:
    watch = RunWatch("run_1", after_sequence=3)
    assert watch.request() == run_pb2.WatchRunRequest(run_id="run_1", after_sequence=3)
    assert watch.stream_timeout() is None
    assert watch.receive(run_pb2.WatchRunResponse(keepalive=run_pb2.Keepalive())) is None
    event = watch.receive(_event(4))
    assert isinstance(event, RunEvent) and event.sequence == 4 and not watch.finished
    assert watch.request().after_sequence == 4  # the next stream starts after it
    watch.stream_ended([(WATCH_END_KEY, "max-duration")])  # aged out: resume
    assert not watch.finished
    assert watch.receive(_event(5, run_pb2.RUN_STATUS_COMPLETED)) is not None and watch.finished


def test_a_stream_that_ends_with_run_finished_ends_the_watch() -> None:
    watch = RunWatch("run_1")
    watch.stream_ended([(WATCH_END_KEY, "run-finished")])
    assert watch.finished


def test_reconnects_back_off_and_give_up_after_too_many_failures_in_a_row() -> None:
    watch = RunWatch("run_1")
    delays = [watch.failed(_Failure(grpc.StatusCode.UNAVAILABLE)) for _ in range(MAX_FAILURES)]
    assert all(0 < d <= 5 for d in delays)
    with pytest.raises(UnavailableError):
        watch.failed(_Failure(grpc.StatusCode.UNAVAILABLE))
    # An event in between starts the count again.
    watch = RunWatch("run_1")
    for _ in range(MAX_FAILURES):
        watch.failed(_Failure(grpc.StatusCode.RESOURCE_EXHAUSTED))
    watch.receive(_event(1))
    assert watch.failed(_Failure(grpc.StatusCode.UNAVAILABLE)) > 0


def test_other_errors_raise_and_a_deadline_is_a_timeout() -> None:
    with pytest.raises(NotFoundError):
        RunWatch("run_1").failed(_Failure(grpc.StatusCode.NOT_FOUND))
    bounded = RunWatch("run_1", timeout=5)
    remaining = bounded.stream_timeout()
    assert remaining is not None and 4 < remaining <= 5
    with pytest.raises(TimeoutError, match="run_1"):
        bounded.failed(_Failure(grpc.StatusCode.DEADLINE_EXCEEDED))
    with pytest.raises(StraitError):  # without a timeout of its own, a deadline is the server's error
        RunWatch("run_1").failed(_Failure(grpc.StatusCode.DEADLINE_EXCEEDED))


def test_a_feed_resumes_from_the_last_token_even_after_keepalives() -> None:
    watch = FeedWatch("job_1", iter(["failed"]), {"env": "prod"}, "", from_start=True)
    first = watch.request()
    assert first.from_start and first.resume_token == "" and first.job_id == "job_1"
    assert list(first.statuses) == [run_pb2.RUN_STATUS_FAILED] and dict(first.tags) == {"env": "prod"}
    event = watch.receive(run_pb2.WatchRunsResponse(event=run_pb2.RunEvent(run_id="run_1"), resume_token="t1"))
    assert isinstance(event, FeedEvent) and event.resume_token == "t1"
    assert watch.receive(run_pb2.WatchRunsResponse(keepalive=run_pb2.Keepalive(), resume_token="t2")) is None
    watch.stream_ended(None)
    again = watch.request()  # the filters survive a one-shot iterable; from_start only applies without a token
    assert (again.resume_token, again.from_start, list(again.statuses)) == ("t2", False, [run_pb2.RUN_STATUS_FAILED])
    assert not watch.finished


def test_reconnect_delays_grow_to_five_seconds() -> None:
    assert reconnect_delay(1) <= 0.2 and 2.5 <= reconnect_delay(10) <= 5.0


def _flow_event(sequence: int, to_status: str = "running",
                kind: str = "run_status") -> workflow_run_pb2.WatchWorkflowRunResponse:
    return workflow_run_pb2.WatchWorkflowRunResponse(event=workflow_run_pb2.WorkflowRunEvent(
        workflow_run_id="wfr_1", sequence=sequence, type=kind, to_status=to_status))


def test_a_workflow_run_watch_resumes_after_the_last_sequence_and_ends_at_the_final_event() -> None:
    watch = WorkflowRunWatch("wfr_1", after_sequence=2)
    assert watch.request() == workflow_run_pb2.WatchWorkflowRunRequest(workflow_run_id="wfr_1", after_sequence=2)
    event = watch.receive(_flow_event(3, "completed", "step_status"))  # a step's status is not the run's
    assert isinstance(event, WorkflowRunEvent) and event.sequence == 3 and not watch.finished
    assert watch.receive(workflow_run_pb2.WatchWorkflowRunResponse(keepalive=run_pb2.Keepalive())) is None
    watch.stream_ended(())  # aged out after sending something: resume after it
    assert not watch.finished and watch.request().after_sequence == 3
    with pytest.raises(UnavailableError):  # failures count as for runs
        for _ in range(MAX_FAILURES + 1):
            watch.failed(_Failure(grpc.StatusCode.UNAVAILABLE))
    watch = WorkflowRunWatch("wfr_1", after_sequence=3)
    watch.request()
    # A final status change ends the watch once the server ends the stream after it (the run may have
    # opened again since, and then the stream goes on).
    assert watch.receive(_flow_event(4, "canceled")) is not None and not watch.finished
    watch.stream_ended(())
    assert watch.finished
    watch = WorkflowRunWatch("wfr_1", after_sequence=3)
    watch.request()
    watch.receive(_flow_event(4, "failed"))
    watch.receive(_flow_event(5, "running"))  # reopened: the watch goes on after the stream ends
    watch.stream_ended(())
    assert not watch.finished and watch.request().after_sequence == 5


def test_a_workflow_run_stream_that_ends_empty_ends_the_watch() -> None:
    watch = WorkflowRunWatch("wfr_1", after_sequence=9)  # the run ended at or before sequence 9
    watch.request()
    watch.stream_ended(())
    assert watch.finished


def test_a_workflow_run_watch_deadline_is_a_timeout() -> None:
    watch = WorkflowRunWatch("wfr_1", timeout=5)
    assert watch.stream_timeout() is not None
    with pytest.raises(TimeoutError, match="workflow run wfr_1"):
        watch.failed(_Failure(grpc.StatusCode.DEADLINE_EXCEEDED))


def test_a_progress_watch_asks_for_one_snapshot_then_resumes_after_its_sequence() -> None:
    watch = WorkflowRunProgressWatch("wfr_1")
    assert watch.request().snapshot
    snapshot = watch.receive(workflow_run_pb2.WatchWorkflowRunResponse(snapshot=workflow_run_pb2.WorkflowRunSnapshot(
        workflow_run=workflow_run_pb2.WorkflowRun(id="wfr_1", status=workflow_run_pb2.WORKFLOW_RUN_STATUS_RUNNING),
        step_runs=[workflow_run_pb2.StepRun(step_ref="fan")], sequence=7)))
    assert isinstance(snapshot, WorkflowRunSnapshot) and snapshot.sequence == 7
    assert [s.step_ref for s in snapshot.step_runs] == ["fan"]
    progress = watch.receive(workflow_run_pb2.WatchWorkflowRunResponse(map_progress=workflow_run_pb2.MapProgress(
        step_ref="fan", counts=workflow_run_pb2.MapCounts(total=10, started=4, done=3))))
    assert isinstance(progress, MapProgress) and (progress.counts.total, progress.counts.done) == (10, 3)
    watch.stream_ended(())  # aged out: resume after the snapshot, without another
    again = watch.request()
    assert not watch.finished and (again.snapshot, again.after_sequence) == (False, 7)
    # The snapshot of an ended run ends the watch with the stream.
    ended = WorkflowRunProgressWatch("wfr_2")
    ended.request()
    ended.receive(workflow_run_pb2.WatchWorkflowRunResponse(snapshot=workflow_run_pb2.WorkflowRunSnapshot(
        workflow_run=workflow_run_pb2.WorkflowRun(status=workflow_run_pb2.WORKFLOW_RUN_STATUS_COMPLETED), sequence=5)))
    ended.stream_ended(())
    assert ended.finished


def test_an_event_watch_passes_over_map_progress() -> None:
    watch = WorkflowRunWatch("wfr_1")
    assert not watch.request().snapshot
    assert watch.receive(workflow_run_pb2.WatchWorkflowRunResponse(
        map_progress=workflow_run_pb2.MapProgress(step_ref="fan"))) is None
