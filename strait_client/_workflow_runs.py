"""`client.workflow_runs`: read, list, cancel, watch and wait for workflow runs, blocking (WorkflowRuns) and
asyncio (AsyncWorkflowRuns). Runs are started with `client.workflows.trigger`."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Iterable, Iterator

from strait_client import _workflow_run_ops as ops
from strait_client._config import Timeout, seconds
from strait_client._ops import DEFAULT_PAGE_SIZE, WORKFLOW_ID_PREFIX
from strait_client._transport import AsyncTransport, Transport
from strait_client._watch import WorkflowRunWatch, follow, follow_async
from strait_client._workflow_run_models import StepRun, WorkflowRun, WorkflowRunEvent
from strait_client._workflows import AsyncWorkflows, Workflows

EVENTS_PAGE_SIZE = 1000


def _is_id(workflow: str | None) -> bool:
    return not workflow or workflow.startswith(WORKFLOW_ID_PREFIX)


class WorkflowRuns:
    """`client.workflow_runs`: read, list, cancel, watch and wait for workflow runs (docs/workflows.md)."""

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

    def steps(self, run_id: str) -> builtins.list[StepRun]:
        """The run's steps, with their job runs' outputs decoded.

        Args:
            run_id: The run's id.

        Returns:
            The step runs.

        Raises:
            NotFoundError: No such workflow run.
        """
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

    async def steps(self, run_id: str) -> builtins.list[StepRun]:
        """The run's steps, with their job runs' outputs decoded.

        Args:
            run_id: The run's id.

        Returns:
            The step runs.

        Raises:
            NotFoundError: No such workflow run.
        """
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
