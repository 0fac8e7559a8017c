"""The steps of a workflow definition (see _models for the conventions): frozen dataclasses that mirror
strait.v1.Step and its kind messages field for field.

They are input too: build `Step(...)` objects and pass them to `workflows.create/update/validate`; each has a
`to_proto()`. Optional messages read as None when unset (the kind specs, `retry_policy`, `map`), so a step
read back equals the one written. A step's `input_template` is its decoded JSON (a dict, usually) or JSON
text: a str is always JSON text, both when given and when read back (a template that is a bare JSON string,
or null, reads as its text), so every step read can be written again unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Any, TypeVar

from google.protobuf.message import Message

from strait_client._convert import fill
from strait_client._enums import OnFailure, RetryStrategy, TriggerRule, from_proto
from strait_client._models import duration_of
from strait_client.v1 import workflow_pb2

T = TypeVar("T")
KINDS = ("job", "approval", "wait_for_event", "sleep", "sub_workflow")
"""The names of Step's kind fields, exactly one of which a step sets."""


def present(m: Message, name: str, decode: Callable[[Any], T]) -> T | None:
    """A message field decoded; None when unset."""
    return decode(getattr(m, name)) if m.HasField(name) else None


def _is_default(value: Any) -> bool:
    return value is None or (isinstance(value, str | int | float | tuple) and not value)


def given(value: Any) -> dict[str, Any]:
    """A dataclass's fields that differ from the proto3 defaults: what to set. Leaving "" and 0 out keeps an
    empty member of a oneof (JobStep.job_id when job_slug is set) from being picked over the one given."""
    return {f.name: v for f in fields(value) if not _is_default(v := getattr(value, f.name))}


def _strings(name: str, value: Sequence[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError(f"{name} takes a list of strings, not a str")
    return tuple(value)


def _template(text: str) -> Any:
    """input_template_json decoded, but kept as text when it is a bare JSON string or null (see above)."""
    if not text:
        return None
    value = json.loads(text)
    return text if value is None or isinstance(value, str) else value


@dataclass(frozen=True, slots=True)
class JobStep:
    """A step that runs a job, named by `job_id` ("job_...") or `job_slug`: set one (strait.v1.JobStep)."""

    job_id: str = ""
    job_slug: str = ""

    @classmethod
    def from_proto(cls, m: workflow_pb2.JobStep) -> JobStep:
        """Decodes a strait.v1.JobStep message.

        Args:
            m: The message.

        Returns:
            The spec.
        """
        return cls(m.job_id, m.job_slug)

    def to_proto(self) -> workflow_pb2.JobStep:
        """The spec as a strait.v1.JobStep message.

        Returns:
            The message.
        """
        return fill(workflow_pb2.JobStep(), given(self))


@dataclass(frozen=True, slots=True)
class ApprovalStep:
    """A step that waits for a decision (strait.v1.ApprovalStep): `approvers` are the API key names allowed to
    decide (empty: any key of the project); `timeout` None: it never expires."""

    approvers: Sequence[str] = ()
    timeout: timedelta | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "approvers", _strings("approvers", self.approvers))

    @classmethod
    def from_proto(cls, m: workflow_pb2.ApprovalStep) -> ApprovalStep:
        """Decodes a strait.v1.ApprovalStep message.

        Args:
            m: The message.

        Returns:
            The spec.
        """
        return cls(tuple(m.approvers), duration_of(m, "timeout"))

    def to_proto(self) -> workflow_pb2.ApprovalStep:
        """The spec as a strait.v1.ApprovalStep message.

        Returns:
            The message.
        """
        return fill(workflow_pb2.ApprovalStep(), given(self))


@dataclass(frozen=True, slots=True)
class WaitForEventStep:
    """A step that waits for an event whose key is `event_key_template` (strait.v1.WaitForEventStep), matched
    by the CEL `match` when given, looking back `lookback`; `timeout` None: it waits for ever (30 days)."""

    event_key_template: str = ""
    timeout: timedelta | None = None
    lookback: timedelta | None = None
    match: str = ""

    @classmethod
    def from_proto(cls, m: workflow_pb2.WaitForEventStep) -> WaitForEventStep:
        """Decodes a strait.v1.WaitForEventStep message.

        Args:
            m: The message.

        Returns:
            The spec.
        """
        return cls(m.event_key_template, duration_of(m, "timeout"), duration_of(m, "lookback"), m.match)

    def to_proto(self) -> workflow_pb2.WaitForEventStep:
        """The spec as a strait.v1.WaitForEventStep message.

        Returns:
            The message.
        """
        return fill(workflow_pb2.WaitForEventStep(), given(self))


@dataclass(frozen=True, slots=True)
class SleepStep:
    """A step that waits for a `duration`, or until the RFC 3339 time `until_template` gives: set one
    (strait.v1.SleepStep)."""

    duration: timedelta | None = None
    until_template: str = ""

    @classmethod
    def from_proto(cls, m: workflow_pb2.SleepStep) -> SleepStep:
        """Decodes a strait.v1.SleepStep message.

        Args:
            m: The message.

        Returns:
            The spec.
        """
        return cls(duration_of(m, "duration"), m.until_template)

    def to_proto(self) -> workflow_pb2.SleepStep:
        """The spec as a strait.v1.SleepStep message.

        Returns:
            The message.
        """
        return fill(workflow_pb2.SleepStep(), given(self))


@dataclass(frozen=True, slots=True)
class SubWorkflowStep:
    """A step that runs another workflow, named by `workflow_id` ("wf_...") or `workflow_slug` (set one), as a
    child run (strait.v1.SubWorkflowStep); `version` 0: the child's current version when the step starts."""

    workflow_id: str = ""
    workflow_slug: str = ""
    version: int = 0

    @classmethod
    def from_proto(cls, m: workflow_pb2.SubWorkflowStep) -> SubWorkflowStep:
        """Decodes a strait.v1.SubWorkflowStep message.

        Args:
            m: The message.

        Returns:
            The spec.
        """
        return cls(m.workflow_id, m.workflow_slug, m.version)

    def to_proto(self) -> workflow_pb2.SubWorkflowStep:
        """The spec as a strait.v1.SubWorkflowStep message.

        Returns:
            The message.
        """
        return fill(workflow_pb2.SubWorkflowStep(), given(self))


@dataclass(frozen=True, slots=True)
class MapSpec:
    """Runs a job or sub-workflow step once per item of the CEL list `items` (strait.v1.MapSpec). Zero means
    the server's limit for `max_items` (10,000), and no limit for `max_concurrency`."""

    items: str
    max_items: int = 0
    max_concurrency: int = 0
    tolerated_failure_count: int = 0
    tolerated_failure_percentage: float = 0.0

    @classmethod
    def from_proto(cls, m: workflow_pb2.MapSpec) -> MapSpec:
        """Decodes a strait.v1.MapSpec message.

        Args:
            m: The message.

        Returns:
            The spec.
        """
        return cls(m.items, m.max_items, m.max_concurrency, m.tolerated_failure_count,
                   m.tolerated_failure_percentage)

    def to_proto(self) -> workflow_pb2.MapSpec:
        """The spec as a strait.v1.MapSpec message.

        Returns:
            The message.
        """
        return fill(workflow_pb2.MapSpec(), given(self))


@dataclass(frozen=True, slots=True)
class StepRetryPolicy:
    """Overrides the job's retries for one step's runs (strait.v1.StepRetryPolicy); `max_attempts` 0 and None
    fields keep the job's."""

    max_attempts: int = 0
    strategy: RetryStrategy | None = None
    initial_delay: timedelta | None = None
    max_delay: timedelta | None = None

    @classmethod
    def from_proto(cls, m: workflow_pb2.StepRetryPolicy) -> StepRetryPolicy:
        """Decodes a strait.v1.StepRetryPolicy message.

        Args:
            m: The message.

        Returns:
            The policy.
        """
        return cls(m.max_attempts, from_proto(RetryStrategy, m.strategy), duration_of(m, "initial_delay"),
                   duration_of(m, "max_delay"))

    def to_proto(self) -> workflow_pb2.StepRetryPolicy:
        """The policy as a strait.v1.StepRetryPolicy message.

        Returns:
            The message.
        """
        return fill(workflow_pb2.StepRetryPolicy(), given(self))


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a workflow (strait.v1.Step): its `ref`, the refs it `depends_on`, and exactly one kind
    (`job`, `approval`, `wait_for_event`, `sleep` or `sub_workflow`; see `kind`). None and empty fields take
    the server's defaults (`trigger_rule` ALL_SUCCESS, `on_failure` FAIL_WORKFLOW). `input_template` is a
    JSON value with {{ CEL }} templates in its strings, given as a dict (or any non-str JSON value) or as
    JSON text (a str); see the module docstring. E.g.
    `Step("charge", ["risk"], job=JobStep(job_slug="charge-card"), condition="steps.risk.output.score < 80")`.
    """

    ref: str
    depends_on: Sequence[str] = ()
    trigger_rule: TriggerRule | None = None
    condition: str = ""
    on_failure: OnFailure | None = None
    job: JobStep | None = None
    approval: ApprovalStep | None = None
    wait_for_event: WaitForEventStep | None = None
    sleep: SleepStep | None = None
    sub_workflow: SubWorkflowStep | None = None
    input_template: Any = None
    retry_policy: StepRetryPolicy | None = None
    timeout: timedelta | None = None
    schedule_to_start_timeout: timedelta | None = None
    map: MapSpec | None = None
    output_selector: str = ""
    concurrency_key: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "depends_on", _strings("depends_on", self.depends_on))

    @property
    def kind(self) -> str | None:
        """The name of the kind field that is set ("job", "approval", ...); None when none is."""
        return next((name for name in KINDS if getattr(self, name) is not None), None)

    @classmethod
    def from_proto(cls, m: workflow_pb2.Step) -> Step:
        """Decodes a strait.v1.Step message.

        Args:
            m: The message.

        Returns:
            The step.
        """
        return cls(
            ref=m.ref, depends_on=tuple(m.depends_on), trigger_rule=from_proto(TriggerRule, m.trigger_rule),
            condition=m.condition, on_failure=from_proto(OnFailure, m.on_failure),
            job=present(m, "job", JobStep.from_proto), approval=present(m, "approval", ApprovalStep.from_proto),
            wait_for_event=present(m, "wait_for_event", WaitForEventStep.from_proto),
            sleep=present(m, "sleep", SleepStep.from_proto),
            sub_workflow=present(m, "sub_workflow", SubWorkflowStep.from_proto),
            input_template=_template(m.input_template_json),
            retry_policy=present(m, "retry_policy", StepRetryPolicy.from_proto),
            timeout=duration_of(m, "timeout"), schedule_to_start_timeout=duration_of(m, "schedule_to_start_timeout"),
            map=present(m, "map", MapSpec.from_proto), output_selector=m.output_selector,
            concurrency_key=m.concurrency_key,
        )

    def to_proto(self) -> workflow_pb2.Step:
        """The step as a strait.v1.Step message.

        Returns:
            The message (`input_template` JSON-encoded unless it is JSON text already).

        Raises:
            TypeError: A field has the wrong type (e.g. a dict where a JobStep belongs).
            ValueError: A value is invalid (an unknown enum name, or an input_template JSON cannot encode).
        """
        values = given(self)
        values.pop("input_template", None)
        template = self.input_template
        if isinstance(template, str):
            values["input_template_json"] = template
        elif template is not None:
            values["input_template"] = template
        return fill(workflow_pb2.Step(), values)
