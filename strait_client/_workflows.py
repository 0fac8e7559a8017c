"""`client.workflows`: workflow definitions and their versions, blocking (Workflows) and asyncio (AsyncWorkflows).

A workflow is named by id ("wf_...") or by slug. Steps are Step objects (or dicts with Step's fields); the
definition is checked whole by the server, which refuses it with InvalidArgumentError naming every violation
in `field_violations` (("workflow.steps[1].condition", "is not a valid CEL expression: ..."), ...).
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import datetime
from typing import Any

from strait_client import _ops
from strait_client._ops import DEFAULT_PAGE_SIZE, Steps
from strait_client._transport import AsyncTransport, Transport
from strait_client._workflow_models import Workflow, WorkflowVersion
from strait_client._workflow_run_models import TriggeredWorkflowRun
from strait_client._workflow_run_ops import trigger_workflow


class Workflows:
    """`client.workflows`: workflow definitions (docs/workflows.md). Every change to a definition writes a new,
    immutable version."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def create(self, slug: str, steps: Steps, **fields: Any) -> Workflow:
        """Creates a workflow (version 1).

        Args:
            slug: Unique in the project: 1-128 of [a-z0-9_-], starting with a letter or digit.
            steps: 1-1000 Steps; their depends_on must form a DAG.
            **fields: Other Workflow fields: name, description, on_failure_step=Step(...),
                concurrency=WorkflowConcurrency(...), timeout=timedelta, max_parallel_steps, tags={...},
                enabled=False, and a schedule: cron="0 3 * * *", timezone, cron_overlap_policy="skip",
                schedule_input={...} (the input of the runs it starts).

        Returns:
            The workflow as stored.

        Raises:
            AlreadyExistsError: The slug is taken.
            InvalidArgumentError: The definition is refused (`field_violations` names each fault).
            TypeError: A keyword names no Workflow field, or a value has the wrong type.
            ValueError: A value cannot be sent (an unknown enum name, a template JSON cannot encode).
        """
        return self._t.call(_ops.create_workflow(slug, steps, fields))

    def get(self, id_or_slug: str, version: int = 0) -> Workflow:
        """Reads a workflow: its current definition, or an earlier version of it.

        Args:
            id_or_slug: The workflow's id or slug.
            version: The version to read; 0: the current one.

        Returns:
            The workflow, with the definition of that version.

        Raises:
            NotFoundError: No such workflow in the project, or no such version of it.
        """
        return self._t.call(_ops.get_workflow(id_or_slug, version))

    def list(self, *, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[Workflow]:
        """Every workflow of the project, oldest first, fetching pages as the iteration proceeds.

        Args:
            page_size: Workflows per call (1..1000).

        Returns:
            An iterator of workflows (each with its current definition).

        Raises:
            StraitError: A page could not be fetched (raised while iterating).
        """
        return self._t.pages(_ops.list_workflows(page_size))

    def update(self, id_or_slug: str, *, etag: str = "", **fields: Any) -> Workflow:
        """Replaces exactly the given fields; a new version is written only when the definition (steps,
        on_failure_step, concurrency, timeout, max_parallel_steps) changes, not for attributes or the schedule.

        Args:
            id_or_slug: The workflow's id or slug.
            etag: When given, update only if the workflow is unchanged since this etag was read.
            **fields: The fields to replace (name, description, steps, on_failure_step, concurrency, timeout,
                max_parallel_steps, tags, enabled, cron, timezone, cron_overlap_policy, schedule_input), each
                whole; None resets one to its default (cron=None removes the schedule).

        Returns:
            The updated workflow.

        Raises:
            AbortedError: `etag` no longer matches.
            NotFoundError: No such workflow.
            InvalidArgumentError: The definition is refused, or a field cannot be updated (slug).
            ValueError: No field was given.
        """
        return self._t.call(_ops.update_workflow(id_or_slug, fields, etag))

    def delete(self, id_or_slug: str, *, etag: str = "") -> Workflow:
        """Deletes a workflow and frees its slug; its versions are kept for the runs that use them.

        Args:
            id_or_slug: The workflow's id or slug.
            etag: When given, delete only if the workflow is unchanged since this etag was read.

        Returns:
            The workflow as it was.

        Raises:
            AbortedError: `etag` no longer matches.
            NotFoundError: No such workflow.
        """
        return self._t.call(_ops.delete_workflow(id_or_slug, etag))

    def versions(self, id_or_slug: str, *, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[WorkflowVersion]:
        """Every version of a workflow's definition, newest first, fetching pages as the iteration proceeds.

        Args:
            id_or_slug: The workflow's id or slug.
            page_size: Versions per call (1..1000).

        Returns:
            An iterator of versions.

        Raises:
            NotFoundError: No such workflow (raised while iterating, as any failed page is).
        """
        return self._t.pages(_ops.list_workflow_versions(id_or_slug, page_size))

    def validate(self, slug: str, steps: Steps, **fields: Any) -> builtins.list[str]:
        """Checks a definition as `create` would, writing nothing.

        Args:
            slug: The slug the workflow would have (a step may run the workflow itself as a sub-workflow).
            steps: The steps, as for `create`.
            **fields: Other Workflow fields, as for `create`.

        Returns:
            The step refs in an order that puts every step after the steps it depends on.

        Raises:
            InvalidArgumentError: The definition would be refused (`field_violations` names each fault).
            TypeError: A keyword names no Workflow field, or a value has the wrong type.
            ValueError: A value cannot be sent (an unknown enum name, a template JSON cannot encode).
        """
        return self._t.call(_ops.validate_workflow(slug, steps, fields))

    def trigger(self, id_or_slug: str, input: Mapping[str, Any] | None = None, *,
                version: int = 0, idempotency_key: str = "", scheduled_time: datetime | None = None,
                step_overrides: Mapping[str, bool] | None = None) -> TriggeredWorkflowRun:
        """Starts a run of a workflow (docs/workflows.md, "Running a workflow").

        Args:
            id_or_slug: The workflow's id or slug.
            input: The run's input: a dict (a JSON object, at most 1 MiB); None: {}.
            version: The definition version to run; 0: the current one.
            idempotency_key: A repeat with the key of an earlier run of this workflow returns that run instead.
            scheduled_time: An aware datetime: the run is created SCHEDULED and its steps start then (at once
                when it is past); at most 30 days ahead.
            step_overrides: Step refs mapped to enabled: False disables the step for this run (it is skipped,
                skip reason DISABLED, when it would run).

        Returns:
            The run, with `idempotent_repeat` true when the key matched an earlier run.

        Raises:
            NotFoundError: No such workflow, or no such version of it.
            FailedPreconditionError: The workflow is disabled.
            InvalidArgumentError: The input is refused (not an object, too large), the time is too far ahead, or
                an override names no step of the workflow (`step_overrides[i].ref`).
            TypeError: `input` is not a dict, or `step_overrides` not a dict of str to bool.
            ValueError: `scheduled_time` is a naive datetime.
        """
        return self._t.call(trigger_workflow(id_or_slug, input, version, idempotency_key, scheduled_time,
                                             step_overrides))


class AsyncWorkflows:
    """`client.workflows` of AsyncClient: the methods of Workflows, awaited; `list` and `versions` are async
    iterators."""

    def __init__(self, transport: AsyncTransport) -> None:
        self._t = transport

    async def create(self, slug: str, steps: Steps, **fields: Any) -> Workflow:
        """Creates a workflow (version 1).

        Args:
            slug: Unique in the project: 1-128 of [a-z0-9_-], starting with a letter or digit.
            steps: 1-1000 Steps; their depends_on must form a DAG.
            **fields: Other Workflow fields: name, description, on_failure_step=Step(...),
                concurrency=WorkflowConcurrency(...), timeout=timedelta, max_parallel_steps, tags={...},
                enabled=False, and a schedule: cron="0 3 * * *", timezone, cron_overlap_policy="skip",
                schedule_input={...} (the input of the runs it starts).

        Returns:
            The workflow as stored.

        Raises:
            AlreadyExistsError: The slug is taken.
            InvalidArgumentError: The definition is refused (`field_violations` names each fault).
            TypeError: A keyword names no Workflow field, or a value has the wrong type.
            ValueError: A value cannot be sent (an unknown enum name, a template JSON cannot encode).
        """
        return await self._t.call(_ops.create_workflow(slug, steps, fields))

    async def get(self, id_or_slug: str, version: int = 0) -> Workflow:
        """Reads a workflow: its current definition, or an earlier version of it.

        Args:
            id_or_slug: The workflow's id or slug.
            version: The version to read; 0: the current one.

        Returns:
            The workflow, with the definition of that version.

        Raises:
            NotFoundError: No such workflow in the project, or no such version of it.
        """
        return await self._t.call(_ops.get_workflow(id_or_slug, version))

    def list(self, *, page_size: int = DEFAULT_PAGE_SIZE) -> AsyncIterator[Workflow]:
        """Every workflow of the project, oldest first, fetching pages as the iteration proceeds.

        Args:
            page_size: Workflows per call (1..1000).

        Returns:
            An async iterator of workflows (each with its current definition).

        Raises:
            StraitError: A page could not be fetched (raised while iterating).
        """
        return self._t.pages(_ops.list_workflows(page_size))

    async def update(self, id_or_slug: str, *, etag: str = "", **fields: Any) -> Workflow:
        """Replaces exactly the given fields; a new version is written only when the definition (steps,
        on_failure_step, concurrency, timeout, max_parallel_steps) changes, not for attributes or the schedule.

        Args:
            id_or_slug: The workflow's id or slug.
            etag: When given, update only if the workflow is unchanged since this etag was read.
            **fields: The fields to replace (name, description, steps, on_failure_step, concurrency, timeout,
                max_parallel_steps, tags, enabled, cron, timezone, cron_overlap_policy, schedule_input), each
                whole; None resets one to its default (cron=None removes the schedule).

        Returns:
            The updated workflow.

        Raises:
            AbortedError: `etag` no longer matches.
            NotFoundError: No such workflow.
            InvalidArgumentError: The definition is refused, or a field cannot be updated (slug).
            ValueError: No field was given.
        """
        return await self._t.call(_ops.update_workflow(id_or_slug, fields, etag))

    async def delete(self, id_or_slug: str, *, etag: str = "") -> Workflow:
        """Deletes a workflow and frees its slug; its versions are kept for the runs that use them.

        Args:
            id_or_slug: The workflow's id or slug.
            etag: When given, delete only if the workflow is unchanged since this etag was read.

        Returns:
            The workflow as it was.

        Raises:
            AbortedError: `etag` no longer matches.
            NotFoundError: No such workflow.
        """
        return await self._t.call(_ops.delete_workflow(id_or_slug, etag))

    def versions(self, id_or_slug: str, *, page_size: int = DEFAULT_PAGE_SIZE) -> AsyncIterator[WorkflowVersion]:
        """Every version of a workflow's definition, newest first, fetching pages as the iteration proceeds.

        Args:
            id_or_slug: The workflow's id or slug.
            page_size: Versions per call (1..1000).

        Returns:
            An async iterator of versions.

        Raises:
            NotFoundError: No such workflow (raised while iterating, as any failed page is).
        """
        return self._t.pages(_ops.list_workflow_versions(id_or_slug, page_size))

    async def validate(self, slug: str, steps: Steps, **fields: Any) -> builtins.list[str]:
        """Checks a definition as `create` would, writing nothing.

        Args:
            slug: The slug the workflow would have (a step may run the workflow itself as a sub-workflow).
            steps: The steps, as for `create`.
            **fields: Other Workflow fields, as for `create`.

        Returns:
            The step refs in an order that puts every step after the steps it depends on.

        Raises:
            InvalidArgumentError: The definition would be refused (`field_violations` names each fault).
            TypeError: A keyword names no Workflow field, or a value has the wrong type.
            ValueError: A value cannot be sent (an unknown enum name, a template JSON cannot encode).
        """
        return await self._t.call(_ops.validate_workflow(slug, steps, fields))

    async def trigger(self, id_or_slug: str, input: Mapping[str, Any] | None = None, *,
                      version: int = 0, idempotency_key: str = "", scheduled_time: datetime | None = None,
                      step_overrides: Mapping[str, bool] | None = None) -> TriggeredWorkflowRun:
        """Starts a run of a workflow (docs/workflows.md, "Running a workflow").

        Args:
            id_or_slug: The workflow's id or slug.
            input: The run's input: a dict (a JSON object, at most 1 MiB); None: {}.
            version: The definition version to run; 0: the current one.
            idempotency_key: A repeat with the key of an earlier run of this workflow returns that run instead.
            scheduled_time: An aware datetime: the run is created SCHEDULED and its steps start then (at once
                when it is past); at most 30 days ahead.
            step_overrides: Step refs mapped to enabled: False disables the step for this run (it is skipped,
                skip reason DISABLED, when it would run).

        Returns:
            The run, with `idempotent_repeat` true when the key matched an earlier run.

        Raises:
            NotFoundError: No such workflow, or no such version of it.
            FailedPreconditionError: The workflow is disabled.
            InvalidArgumentError: The input is refused (not an object, too large), the time is too far ahead, or
                an override names no step of the workflow (`step_overrides[i].ref`).
            TypeError: `input` is not a dict, or `step_overrides` not a dict of str to bool.
            ValueError: `scheduled_time` is a naive datetime.
        """
        return await self._t.call(trigger_workflow(id_or_slug, input, version, idempotency_key, scheduled_time,
                                                   step_overrides))
