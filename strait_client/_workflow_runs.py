"""`client.workflow_runs`: read, list, cancel, watch and wait for workflow runs, decide their approvals, end
their steps by hand, pause and resume them and read their graphs, blocking (WorkflowRuns) and asyncio
(AsyncWorkflowRuns). Runs are started with `client.workflows.trigger`."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from strait_client import _workflow_run_ops as ops
from strait_client._config import Timeout, seconds
from strait_client._ops import DEFAULT_PAGE_SIZE, WORKFLOW_ID_PREFIX
from strait_client._transport import AsyncTransport, Transport
from strait_client._watch import (
    WorkflowRunProgressWatch,
    WorkflowRunsFeedWatch,
    WorkflowRunWatch,
    follow,
    follow_async,
)
from strait_client._workflow_run_models import (
    MapProgress,
    StepRun,
    WorkflowRun,
    WorkflowRunChange,
    WorkflowRunEvent,
    WorkflowRunGraph,
    WorkflowRunSnapshot,
)
from strait_client._workflows import AsyncWorkflows, Workflows

WorkflowRunProgressItem = WorkflowRunSnapshot | WorkflowRunEvent | MapProgress

EVENTS_PAGE_SIZE = 1000


def _is_id(workflow: str | None) -> bool:
    return not workflow or workflow.startswith(WORKFLOW_ID_PREFIX)


class WorkflowRuns:
    """`client.workflow_runs`: read, list, cancel, watch and wait for workflow runs, and operate them: approvals,
    steps ended by hand, pause and resume, the run's graph (docs/workflows.md)."""

    def __init__(self, transport: Transport, workflows: Workflows) -> None:
        self._t = transport
        self._workflows = workflows

    def get(self, run_id: str) -> WorkflowRun:
        """Reads a workflow run.

        Args:
            run_id: The run's id ("wfr_...").

        Returns:
            The workflow run.

        Raises:
            NotFoundError: No such workflow run in the project.
        """
        return self._t.call(ops.get_workflow_run(run_id))

    def list(self, workflow: str | None = None, statuses: Iterable[str] | None = None, *,
             page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[WorkflowRun]:
        """The project's workflow runs, newest first, fetching pages as the iteration proceeds.

        Args:
            workflow: Only this workflow's runs (id or slug; a slug is resolved first).
            statuses: Only runs in one of these statuses (WorkflowRunStatus members or their names).
            page_size: Runs per call (1..1000).

        Returns:
            An iterator of workflow runs.

        Raises:
            NotFoundError: `workflow` names no workflow.
            ValueError: A status is not a WorkflowRunStatus.
        """
        workflow_id = workflow if _is_id(workflow) else self._workflows.get(workflow or "").id
        return self._t.pages(ops.list_workflow_runs(workflow_id, statuses, page_size))

    def cancel(self, run_id: str, reason: str = "") -> WorkflowRun:
        """Cancels a workflow run that has not ended: the run, its unfinished steps and their job runs end
        canceled, and no step starts afterwards.

        Args:
            run_id: The run's id.
            reason: Kept as the run's `error`.

        Returns:
            The canceled run.

        Raises:
            NotFoundError: No such workflow run.
            FailedPreconditionError: The run has already ended.
        """
        return self._t.call(ops.cancel_workflow_run(run_id, reason))

    def steps(self, run_id: str, step_ref: str = "") -> builtins.list[StepRun]:
        """The run's steps in definition order, with their job runs' outputs decoded; or one map step followed
        by its instances in item order.

        Args:
            run_id: The run's id.
            step_ref: Only this step, with its map instances (`map_index` 0, 1, ...); "": every step, without
                instances.

        Returns:
            The step runs.

        Raises:
            NotFoundError: No such workflow run.
            InvalidArgumentError: `step_ref` is not a step ref.
        """
        if step_ref:
            return list(self._t.pages(ops.list_step_instances(run_id, step_ref)))
        return self._t.call(ops.list_step_runs(run_id))

    def events(self, run_id: str, *, after_sequence: int = 0) -> builtins.list[WorkflowRunEvent]:
        """The run's stored events in sequence order.

        Args:
            run_id: The run's id.
            after_sequence: Only events after this sequence number.

        Returns:
            The events.

        Raises:
            NotFoundError: No such workflow run.
        """
        return list(self._t.pages(ops.list_workflow_run_events(run_id, after_sequence, EVENTS_PAGE_SIZE)))

    def watch(self, run_id: str, *, after_sequence: int = 0,
              timeout: Timeout | None = None) -> Iterator[WorkflowRunEvent]:
        """The run's events in sequence order, stored then live, until its final status change.

        Reconnects by itself (from the last sequence received, so nothing is missed or repeated) when the
        connection drops or the server ends the stream at its maximum duration.

        Args:
            run_id: The run's id.
            after_sequence: Start after this sequence number.
            timeout: How long the whole watch may take (seconds or a timedelta); None: no limit.

        Returns:
            An iterator of events that ends after the run's final event.

        Raises:
            TimeoutError: `timeout` passed first (raised while iterating, like the others).
            NotFoundError: No such workflow run.
            UnavailableError: The server stayed unreachable through 8 reconnects in a row.
        """
        watch = WorkflowRunWatch(run_id, after_sequence, None if timeout is None else seconds(timeout))
        return follow(self._t.stub("workflow_runs").WatchWorkflowRun, watch, self._t.metadata)

    def watch_all(self, *, workflow: str | None = None, resume_token: str = "",
                  from_start: bool = False) -> Iterator[WorkflowRunChange]:
        """The project's workflow runs as they are created and change status, in commit order, live, until
        you stop iterating. Reconnects by itself from the last resume token when the connection drops or the
        stream ages out, so nothing is missed or repeated.

        Args:
            workflow: Only this workflow's runs (id or slug; a slug is resolved first).
            resume_token: Continue after the change that carried this token (WorkflowRunChange.resume_token);
                empty: from now.
            from_start: Without a resume token, start from the oldest stored change instead of now.

        Returns:
            An endless iterator of changes, each with its `resume_token`: store the last one processed.

        Raises:
            NotFoundError: `workflow` names no workflow.
            UnavailableError: The server stayed unreachable through 8 reconnects in a row.
        """
        workflow_id = workflow if _is_id(workflow) else self._workflows.get(workflow or "").id
        watch = WorkflowRunsFeedWatch(workflow_id, resume_token, from_start)
        return follow(self._t.stub("workflow_runs").WatchWorkflowRuns, watch, self._t.metadata)

    def watch_progress(self, run_id: str, *, timeout: Timeout | None = None) -> Iterator[WorkflowRunProgressItem]:
        """What a live view of the run needs: a snapshot of the run and its steps, then the events after it and
        the counts of its running map steps as they change (at most once a second per map step), until the
        run's final status change. Reconnects like `watch`, from the last sequence received.

        Args:
            run_id: The run's id.
            timeout: How long the whole watch may take (seconds or a timedelta); None: no limit.

        Returns:
            An iterator of a WorkflowRunSnapshot, then WorkflowRunEvent and MapProgress items.

        Raises:
            TimeoutError: `timeout` passed first (raised while iterating, like the others).
            NotFoundError: No such workflow run.
            UnavailableError: The server stayed unreachable through 8 reconnects in a row.
        """
        watch = WorkflowRunProgressWatch(run_id, None if timeout is None else seconds(timeout))
        return follow(self._t.stub("workflow_runs").WatchWorkflowRun, watch, self._t.metadata)

    def wait(self, run_id: str, timeout: Timeout = 60.0) -> WorkflowRun:
        """Waits until the run ends (completed, failed or canceled), watching its events (not polling).

        Args:
            run_id: The run's id.
            timeout: How long to wait at most: seconds or a timedelta.

        Returns:
            The finished run (as `get` returns it).

        Raises:
            TimeoutError: The run did not end within `timeout`.
            NotFoundError: No such workflow run.
        """
        for _ in self.watch(run_id, timeout=timeout):
            pass
        return self.get(run_id)

    def approve(self, run_id: str, step_ref: str, comment: str = "") -> StepRun:
        """Approves a waiting approval step: it completes with the output {"approver", "approver_key_id",
        "comment", "time"} and the run goes on. Not retried (a repeat would find the step decided).

        Args:
            run_id: The run's id.
            step_ref: The approval step's ref.
            comment: Kept in the step's output.

        Returns:
            The step, completed.

        Raises:
            NotFoundError: No such workflow run, or no such step in it.
            FailedPreconditionError: The run has ended, the step is not waiting, or it is not an approval.
            PermissionDeniedError: The step names its approvers, and this API key is not one of them.
            InvalidArgumentError: `step_ref` is not a valid step ref, or `comment` is too long.
        """
        return self._t.call(ops.approve_step(run_id, step_ref, comment))

    def reject(self, run_id: str, step_ref: str, reason: str = "") -> StepRun:
        """Rejects a waiting approval step: it fails (error "rejected by <key>: <reason>") and its
        on_failure policy applies. Not retried.

        Args:
            run_id: The run's id.
            step_ref: The approval step's ref.
            reason: Kept in the step's error.

        Returns:
            The step, failed.

        Raises:
            NotFoundError: No such workflow run, or no such step in it.
            FailedPreconditionError: The run has ended, the step is not waiting, or it is not an approval.
            PermissionDeniedError: The step names its approvers, and this API key is not one of them.
            InvalidArgumentError: `step_ref` is not a valid step ref, or `reason` is too long.
        """
        return self._t.call(ops.reject_step(run_id, step_ref, reason))

    def complete_step(self, run_id: str, step_ref: str, output: Any = None) -> StepRun:
        """Completes an open step (pending, ready, running or waiting) by hand with the given output; a
        running step's job run is canceled, and its dependents go on as if it had completed. Not retried.

        Args:
            run_id: The run's id.
            step_ref: The step's ref.
            output: The step's output: any JSON value (a str is a JSON string), encoded by the client.

        Returns:
            The step, completed.

        Raises:
            NotFoundError: No such workflow run, or no such step in it.
            FailedPreconditionError: The run has ended, or the step has.
            InvalidArgumentError: `step_ref` is not a valid step ref, or the output is too large.
            TypeError: `output` cannot be encoded as JSON.
        """
        return self._t.call(ops.complete_step(run_id, step_ref, output))

    def skip_step(self, run_id: str, step_ref: str, reason: str = "") -> StepRun:
        """Skips an open step (pending, ready, running or waiting) by hand: skip reason MANUAL; a running
        step's job run is canceled, and its dependents decide by their trigger rules. Not retried.

        Args:
            run_id: The run's id.
            step_ref: The step's ref.
            reason: Kept in the run's events.

        Returns:
            The step, skipped.

        Raises:
            NotFoundError: No such workflow run, or no such step in it.
            FailedPreconditionError: The run has ended, or the step has.
            InvalidArgumentError: `step_ref` is not a valid step ref, or `reason` is too long.
        """
        return self._t.call(ops.skip_step(run_id, step_ref, reason))

    def retry_step(self, run_id: str, step_ref: str) -> WorkflowRun:
        """Runs a failed or canceled step again, with the steps its failure kept from completing (its
        descendants that did not complete, and the steps canceled because it failed). A completed or failed
        run opens again. Not retried.

        Args:
            run_id: The run's id.
            step_ref: The step.

        Returns:
            The run, running again.

        Raises:
            NotFoundError: No such workflow run or step.
            FailedPreconditionError: The step did not fail (or was not canceled), or the run was canceled.
        """
        return self._t.call(ops.retry_workflow_step(run_id, step_ref))

    def replay_subtree(self, run_id: str, step_ref: str) -> WorkflowRun:
        """Runs an ended step and every step after it again, whatever they did; other branches and the outputs
        of its ancestors are kept. A completed or failed run opens again. Not retried.

        Args:
            run_id: The run's id.
            step_ref: The step the replay starts from.

        Returns:
            The run, running again.

        Raises:
            NotFoundError: No such workflow run or step.
            FailedPreconditionError: The step has not ended, or the run was canceled.
        """
        return self._t.call(ops.replay_workflow_subtree(run_id, step_ref))

    def pause(self, run_id: str) -> WorkflowRun:
        """Pauses a running run: steps already running or waiting go on and their outcomes are recorded, but
        no step starts; steps that become ready wait in READY (see `graph`). Not retried.

        Args:
            run_id: The run's id.

        Returns:
            The run, paused.

        Raises:
            NotFoundError: No such workflow run.
            FailedPreconditionError: The run is not running (paused already, or ended).
        """
        return self._t.call(ops.pause_workflow_run(run_id))

    def resume(self, run_id: str) -> WorkflowRun:
        """Resumes a paused run: every READY step starts. Not retried.

        Args:
            run_id: The run's id.

        Returns:
            The run, running again.

        Raises:
            NotFoundError: No such workflow run.
            FailedPreconditionError: The run is not paused.
        """
        return self._t.call(ops.resume_workflow_run(run_id))

    def graph(self, run_id: str) -> WorkflowRunGraph:
        """The run as a graph: a node per step in definition order (kind, status, skip and waiting reasons,
        job run, error, times), an edge per dependency, the roots and the READY steps. A read: retried.

        Args:
            run_id: The run's id.

        Returns:
            The graph.

        Raises:
            NotFoundError: No such workflow run.
        """
        return self._t.call(ops.workflow_run_graph(run_id))


class AsyncWorkflowRuns:
    """`client.workflow_runs` of AsyncClient: the methods of WorkflowRuns, awaited; `list` and `watch` are async
    iterators."""

    def __init__(self, transport: AsyncTransport, workflows: AsyncWorkflows) -> None:
        self._t = transport
        self._workflows = workflows

    async def get(self, run_id: str) -> WorkflowRun:
        """Reads a workflow run.

        Args:
            run_id: The run's id ("wfr_...").

        Returns:
            The workflow run.

        Raises:
            NotFoundError: No such workflow run in the project.
        """
        return await self._t.call(ops.get_workflow_run(run_id))

    async def list(self, workflow: str | None = None, statuses: Iterable[str] | None = None, *,
                   page_size: int = DEFAULT_PAGE_SIZE) -> AsyncIterator[WorkflowRun]:
        """The project's workflow runs, newest first, fetching pages as the iteration proceeds.

        Args:
            workflow: Only this workflow's runs (id or slug; a slug is resolved first).
            statuses: Only runs in one of these statuses (WorkflowRunStatus members or their names).
            page_size: Runs per call (1..1000).

        Returns:
            An async iterator of workflow runs.

        Raises:
            NotFoundError: `workflow` names no workflow.
            ValueError: A status is not a WorkflowRunStatus.
        """
        workflow_id = workflow if _is_id(workflow) else (await self._workflows.get(workflow or "")).id
        async for run in self._t.pages(ops.list_workflow_runs(workflow_id, statuses, page_size)):
            yield run

    async def cancel(self, run_id: str, reason: str = "") -> WorkflowRun:
        """Cancels a workflow run that has not ended: the run, its unfinished steps and their job runs end
        canceled, and no step starts afterwards.

        Args:
            run_id: The run's id.
            reason: Kept as the run's `error`.

        Returns:
            The canceled run.

        Raises:
            NotFoundError: No such workflow run.
            FailedPreconditionError: The run has already ended.
        """
        return await self._t.call(ops.cancel_workflow_run(run_id, reason))

    async def steps(self, run_id: str, step_ref: str = "") -> builtins.list[StepRun]:
        """The run's steps in definition order, with their job runs' outputs decoded; or one map step followed
        by its instances in item order.

        Args:
            run_id: The run's id.
            step_ref: Only this step, with its map instances (`map_index` 0, 1, ...); "": every step, without
                instances.

        Returns:
            The step runs.

        Raises:
            NotFoundError: No such workflow run.
            InvalidArgumentError: `step_ref` is not a step ref.
        """
        if step_ref:
            return [s async for s in self._t.pages(ops.list_step_instances(run_id, step_ref))]
        return await self._t.call(ops.list_step_runs(run_id))

    async def events(self, run_id: str, *, after_sequence: int = 0) -> builtins.list[WorkflowRunEvent]:
        """The run's stored events in sequence order.

        Args:
            run_id: The run's id.
            after_sequence: Only events after this sequence number.

        Returns:
            The events.

        Raises:
            NotFoundError: No such workflow run.
        """
        make = ops.list_workflow_run_events(run_id, after_sequence, EVENTS_PAGE_SIZE)
        return [e async for e in self._t.pages(make)]

    def watch(self, run_id: str, *, after_sequence: int = 0,
              timeout: Timeout | None = None) -> AsyncIterator[WorkflowRunEvent]:
        """The run's events in sequence order, stored then live, until its final status change.

        Reconnects by itself (from the last sequence received, so nothing is missed or repeated) when the
        connection drops or the server ends the stream at its maximum duration.

        Args:
            run_id: The run's id.
            after_sequence: Start after this sequence number.
            timeout: How long the whole watch may take (seconds or a timedelta); None: no limit.

        Returns:
            An async iterator of events that ends after the run's final event.

        Raises:
            TimeoutError: `timeout` passed first (raised while iterating, like the others).
            NotFoundError: No such workflow run.
            UnavailableError: The server stayed unreachable through 8 reconnects in a row.
        """
        watch = WorkflowRunWatch(run_id, after_sequence, None if timeout is None else seconds(timeout))
        return follow_async(self._t.stub("workflow_runs").WatchWorkflowRun, watch, self._t.metadata)

    async def watch_all(self, *, workflow: str | None = None, resume_token: str = "",
                        from_start: bool = False) -> AsyncIterator[WorkflowRunChange]:
        """The project's workflow runs as they are created and change status, in commit order, live, until
        you stop iterating. Reconnects by itself from the last resume token when the connection drops or the
        stream ages out, so nothing is missed or repeated.

        Args:
            workflow: Only this workflow's runs (id or slug; a slug is resolved first).
            resume_token: Continue after the change that carried this token (WorkflowRunChange.resume_token);
                empty: from now.
            from_start: Without a resume token, start from the oldest stored change instead of now.

        Returns:
            An endless async iterator of changes, each with its `resume_token`: store the last one processed.

        Raises:
            NotFoundError: `workflow` names no workflow.
            UnavailableError: The server stayed unreachable through 8 reconnects in a row.
        """
        workflow_id = workflow if _is_id(workflow) else (await self._workflows.get(workflow or "")).id
        watch = WorkflowRunsFeedWatch(workflow_id, resume_token, from_start)
        async for change in follow_async(self._t.stub("workflow_runs").WatchWorkflowRuns, watch, self._t.metadata):
            yield change

    def watch_progress(self, run_id: str, *, timeout: Timeout | None = None
                       ) -> AsyncIterator[WorkflowRunProgressItem]:
        """What a live view of the run needs: a snapshot of the run and its steps, then the events after it and
        the counts of its running map steps as they change (at most once a second per map step), until the
        run's final status change. Reconnects like `watch`, from the last sequence received.

        Args:
            run_id: The run's id.
            timeout: How long the whole watch may take (seconds or a timedelta); None: no limit.

        Returns:
            An async iterator of a WorkflowRunSnapshot, then WorkflowRunEvent and MapProgress items.

        Raises:
            TimeoutError: `timeout` passed first (raised while iterating, like the others).
            NotFoundError: No such workflow run.
            UnavailableError: The server stayed unreachable through 8 reconnects in a row.
        """
        watch = WorkflowRunProgressWatch(run_id, None if timeout is None else seconds(timeout))
        return follow_async(self._t.stub("workflow_runs").WatchWorkflowRun, watch, self._t.metadata)

    async def wait(self, run_id: str, timeout: Timeout = 60.0) -> WorkflowRun:  # noqa: ASYNC109 - mirrors WorkflowRuns.wait
        """Waits until the run ends (completed, failed or canceled), watching its events (not polling).

        Args:
            run_id: The run's id.
            timeout: How long to wait at most: seconds or a timedelta.

        Returns:
            The finished run (as `get` returns it).

        Raises:
            TimeoutError: The run did not end within `timeout`.
            NotFoundError: No such workflow run.
        """
        async for _ in self.watch(run_id, timeout=timeout):
            pass
        return await self.get(run_id)

    async def approve(self, run_id: str, step_ref: str, comment: str = "") -> StepRun:
        """Approves a waiting approval step: it completes with the output {"approver", "approver_key_id",
        "comment", "time"} and the run goes on. Not retried (a repeat would find the step decided).

        Args:
            run_id: The run's id.
            step_ref: The approval step's ref.
            comment: Kept in the step's output.

        Returns:
            The step, completed.

        Raises:
            NotFoundError: No such workflow run, or no such step in it.
            FailedPreconditionError: The run has ended, the step is not waiting, or it is not an approval.
            PermissionDeniedError: The step names its approvers, and this API key is not one of them.
            InvalidArgumentError: `step_ref` is not a valid step ref, or `comment` is too long.
        """
        return await self._t.call(ops.approve_step(run_id, step_ref, comment))

    async def reject(self, run_id: str, step_ref: str, reason: str = "") -> StepRun:
        """Rejects a waiting approval step: it fails (error "rejected by <key>: <reason>") and its
        on_failure policy applies. Not retried.

        Args:
            run_id: The run's id.
            step_ref: The approval step's ref.
            reason: Kept in the step's error.

        Returns:
            The step, failed.

        Raises:
            NotFoundError: No such workflow run, or no such step in it.
            FailedPreconditionError: The run has ended, the step is not waiting, or it is not an approval.
            PermissionDeniedError: The step names its approvers, and this API key is not one of them.
            InvalidArgumentError: `step_ref` is not a valid step ref, or `reason` is too long.
        """
        return await self._t.call(ops.reject_step(run_id, step_ref, reason))

    async def complete_step(self, run_id: str, step_ref: str, output: Any = None) -> StepRun:
        """Completes an open step (pending, ready, running or waiting) by hand with the given output; a
        running step's job run is canceled, and its dependents go on as if it had completed. Not retried.

        Args:
            run_id: The run's id.
            step_ref: The step's ref.
            output: The step's output: any JSON value (a str is a JSON string), encoded by the client.

        Returns:
            The step, completed.

        Raises:
            NotFoundError: No such workflow run, or no such step in it.
            FailedPreconditionError: The run has ended, or the step has.
            InvalidArgumentError: `step_ref` is not a valid step ref, or the output is too large.
            TypeError: `output` cannot be encoded as JSON.
        """
        return await self._t.call(ops.complete_step(run_id, step_ref, output))

    async def skip_step(self, run_id: str, step_ref: str, reason: str = "") -> StepRun:
        """Skips an open step (pending, ready, running or waiting) by hand: skip reason MANUAL; a running
        step's job run is canceled, and its dependents decide by their trigger rules. Not retried.

        Args:
            run_id: The run's id.
            step_ref: The step's ref.
            reason: Kept in the run's events.

        Returns:
            The step, skipped.

        Raises:
            NotFoundError: No such workflow run, or no such step in it.
            FailedPreconditionError: The run has ended, or the step has.
            InvalidArgumentError: `step_ref` is not a valid step ref, or `reason` is too long.
        """
        return await self._t.call(ops.skip_step(run_id, step_ref, reason))

    async def retry_step(self, run_id: str, step_ref: str) -> WorkflowRun:
        """Runs a failed or canceled step again, with the steps its failure kept from completing (its
        descendants that did not complete, and the steps canceled because it failed). A completed or failed
        run opens again. Not retried.

        Args:
            run_id: The run's id.
            step_ref: The step.

        Returns:
            The run, running again.

        Raises:
            NotFoundError: No such workflow run or step.
            FailedPreconditionError: The step did not fail (or was not canceled), or the run was canceled.
        """
        return await self._t.call(ops.retry_workflow_step(run_id, step_ref))

    async def replay_subtree(self, run_id: str, step_ref: str) -> WorkflowRun:
        """Runs an ended step and every step after it again, whatever they did; other branches and the outputs
        of its ancestors are kept. A completed or failed run opens again. Not retried.

        Args:
            run_id: The run's id.
            step_ref: The step the replay starts from.

        Returns:
            The run, running again.

        Raises:
            NotFoundError: No such workflow run or step.
            FailedPreconditionError: The step has not ended, or the run was canceled.
        """
        return await self._t.call(ops.replay_workflow_subtree(run_id, step_ref))

    async def pause(self, run_id: str) -> WorkflowRun:
        """Pauses a running run: steps already running or waiting go on and their outcomes are recorded, but
        no step starts; steps that become ready wait in READY (see `graph`). Not retried.

        Args:
            run_id: The run's id.

        Returns:
            The run, paused.

        Raises:
            NotFoundError: No such workflow run.
            FailedPreconditionError: The run is not running (paused already, or ended).
        """
        return await self._t.call(ops.pause_workflow_run(run_id))

    async def resume(self, run_id: str) -> WorkflowRun:
        """Resumes a paused run: every READY step starts. Not retried.

        Args:
            run_id: The run's id.

        Returns:
            The run, running again.

        Raises:
            NotFoundError: No such workflow run.
            FailedPreconditionError: The run is not paused.
        """
        return await self._t.call(ops.resume_workflow_run(run_id))

    async def graph(self, run_id: str) -> WorkflowRunGraph:
        """The run as a graph: a node per step in definition order (kind, status, skip and waiting reasons,
        job run, error, times), an edge per dependency, the roots and the READY steps. A read: retried.

        Args:
            run_id: The run's id.

        Returns:
            The graph.

        Raises:
            NotFoundError: No such workflow run.
        """
        return await self._t.call(ops.workflow_run_graph(run_id))
