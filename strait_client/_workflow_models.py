"""Workflows as the client reads them (see _models for the conventions): frozen dataclasses that mirror
strait.v1.Workflow, WorkflowVersion and WorkflowConcurrency field for field. The steps are in _steps.

`on_failure_step` and `concurrency` read as None when unset, so a definition read back equals the one written.
WorkflowConcurrency is input too (`workflows.create(..., concurrency=WorkflowConcurrency(1, "input.customer"))`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from strait_client._convert import fill
from strait_client._enums import ConcurrencyStrategy, CronOverlapPolicy, from_proto
from strait_client._models import duration_of, json_of, time_of
from strait_client._steps import Step, given, present
from strait_client.v1 import workflow_pb2


@dataclass(frozen=True, slots=True)
class WorkflowConcurrency:
    """How many runs of a workflow run at once (strait.v1.WorkflowConcurrency): at most `max_runs` (0: no
    limit) per key, the CEL `key` over `input` (empty: one key for all runs); `strategy` None: QUEUE."""

    max_runs: int = 0
    key: str = ""
    strategy: ConcurrencyStrategy | None = None

    @classmethod
    def from_proto(cls, m: workflow_pb2.WorkflowConcurrency) -> WorkflowConcurrency:
        """Decodes a strait.v1.WorkflowConcurrency message.

        Args:
            m: The message.

        Returns:
            The settings.
        """
        return cls(m.max_runs, m.key, from_proto(ConcurrencyStrategy, m.strategy))

    def to_proto(self) -> workflow_pb2.WorkflowConcurrency:
        """The settings as a strait.v1.WorkflowConcurrency message.

        Returns:
            The message.
        """
        return fill(workflow_pb2.WorkflowConcurrency(), given(self))


@dataclass(frozen=True, slots=True)
class Workflow:
    """A workflow (strait.v1.Workflow): its definition as of `version` (`steps`, `on_failure_step`,
    `concurrency`, `timeout`, `max_parallel_steps`: what a run executes) and its attributes (`name`,
    `description`, `tags`, `enabled`, and the cron schedule: `cron`, `timezone`, `cron_overlap_policy`,
    `schedule_input`, the decoded input of the runs it starts; `next_fire_time` and `schedule_paused` are
    output only). Pass `etag` back to `workflows.update`/`delete` to refuse stale writes."""

    id: str
    project_id: str
    slug: str
    name: str
    description: str
    version: int
    steps: tuple[Step, ...]
    on_failure_step: Step | None
    concurrency: WorkflowConcurrency | None
    timeout: timedelta | None
    max_parallel_steps: int
    cron: str
    timezone: str
    cron_overlap_policy: CronOverlapPolicy | None
    schedule_input: Mapping[str, Any]
    next_fire_time: datetime | None
    schedule_paused: bool
    tags: Mapping[str, str]
    enabled: bool
    etag: str
    create_time: datetime | None
    update_time: datetime | None

    @classmethod
    def from_proto(cls, m: workflow_pb2.Workflow) -> Workflow:
        """Decodes a strait.v1.Workflow message.

        Args:
            m: The message.

        Returns:
            The workflow.
        """
        return cls(
            id=m.id, project_id=m.project_id, slug=m.slug, name=m.name, description=m.description,
            version=m.version, steps=tuple(Step.from_proto(s) for s in m.steps),
            on_failure_step=present(m, "on_failure_step", Step.from_proto),
            concurrency=present(m, "concurrency", WorkflowConcurrency.from_proto), timeout=duration_of(m, "timeout"),
            max_parallel_steps=m.max_parallel_steps, cron=m.cron, timezone=m.timezone,
            cron_overlap_policy=from_proto(CronOverlapPolicy, m.cron_overlap_policy),
            schedule_input=json_of(m.schedule_input_json) or {}, next_fire_time=time_of(m, "next_fire_time"),
            schedule_paused=m.schedule_paused, tags=dict(m.tags),
            enabled=m.enabled if m.HasField("enabled") else True, etag=m.etag,
            create_time=time_of(m, "create_time"), update_time=time_of(m, "update_time"),
        )


@dataclass(frozen=True, slots=True)
class WorkflowVersion:
    """One immutable version of a workflow's definition (strait.v1.WorkflowVersion). Its `workflow` holds the
    definition of that version (steps, on_failure_step, concurrency, timeout, max_parallel_steps) with the
    workflow's id and slug; attributes are not kept per version: name, description, tags and etag read empty
    (and enabled True)."""

    version: int
    workflow: Workflow
    create_time: datetime | None

    @classmethod
    def from_proto(cls, m: workflow_pb2.WorkflowVersion) -> WorkflowVersion:
        """Decodes a strait.v1.WorkflowVersion message.

        Args:
            m: The message.

        Returns:
            The version.
        """
        return cls(m.version, Workflow.from_proto(m.workflow), time_of(m, "create_time"))
