"""Checks of a workflow definition as CreateWorkflow, UpdateWorkflow and ValidateWorkflow receive it (the
protobuf message): every violation with its field path (workflow.steps[3].condition), so that nothing is left
to fail at run time that could be refused when the definition is written."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration

from strait_client.v1 import job_pb2, workflow_pb2
from strait_server.api import validate
from strait_server.errors import InvalidArgument, Violations
from strait_server.store.workflows import Schedule
from strait_server.workflows import admission, expressions
from strait_server.workflows.graph import Cycle, ancestors, topological_order
from strait_server.workflows.plan import MAX_MAP_ITEMS, plan_of

REF_RE = re.compile(r"[a-z][a-z0-9_]{0,62}")
MAX_STEPS = 1000
MAX_WAIT = timedelta(days=30)
MAX_LOOKBACK = timedelta(hours=24)
MAX_TEMPLATE_BYTES = 1024 * 1024
# The fields that make a version: what a run executes. Name, description, tags and enabled are attributes, and
# so is the schedule: it decides when runs start, not what they execute (a tick runs the current version).
DEFINITION_FIELDS = ("steps", "on_failure_step", "concurrency", "timeout", "max_parallel_steps")
ATTRIBUTE_FIELDS = ("name", "description", "tags", "enabled")
SCHEDULE_FIELDS = ("cron", "timezone", "cron_overlap_policy", "schedule_input_json")
UPDATABLE = frozenset(DEFINITION_FIELDS + ATTRIBUTE_FIELDS + SCHEDULE_FIELDS)
# The input of a scheduled run, as TriggerWorkflowRequest.input_json.
MAX_SCHEDULE_INPUT_BYTES = 1024 * 1024
_KNOWN: dict[str, set[int]] = {
    "trigger_rule": set(workflow_pb2.TriggerRule.values()),
    "on_failure": set(workflow_pb2.OnFailure.values()),
}


@dataclass(frozen=True)
class Target:
    """A job or workflow a step names (by id or slug), to be looked up in the project."""

    path: str
    id: str
    slug: str


@dataclass(frozen=True)
class Definition:
    """A checked definition: as stored (protobuf JSON of the definition fields), its hash, an order of its
    steps, and the jobs and workflows it names."""

    document: dict[str, Any]
    digest: bytes
    order: list[str]
    jobs: list[Target]
    sub_workflows: list[Target]


def check_definition(v: Violations, wf: workflow_pb2.Workflow) -> Definition:
    """Adds a violation for everything wrong with the definition fields of `wf` (the caller raises)."""
    steps = list(wf.steps)
    if not 1 <= len(steps) <= MAX_STEPS:
        v.add("workflow.steps", f"must hold 1 to {MAX_STEPS} steps")
    refs = _refs(v, steps, wf)
    parents = {s.ref: list(dict.fromkeys(s.depends_on)) for s in steps if s.ref in refs}
    for i, step in enumerate(steps):
        _check_step(v, f"workflow.steps[{i}]", step, refs)
    if wf.HasField("on_failure_step"):
        _check_step(v, "workflow.on_failure_step", wf.on_failure_step, refs)
        if wf.on_failure_step.depends_on:
            v.add("workflow.on_failure_step.depends_on", "must be empty: the step runs after any failure")
    order = _order(v, parents)
    if order:
        _check_step_refs(v, steps, parents, wf)
    _check_workflow_settings(v, wf)
    # Only a definition without violations is written (and only then is every Duration in it valid JSON).
    document = {} if v.items else definition_document(wf)
    return Definition(document, digest(document), order, _job_refs(wf), _sub_workflow_refs(wf))


def definition_document(wf: workflow_pb2.Workflow) -> dict[str, Any]:
    """The definition fields as protobuf JSON (field names as in the proto): what a version stores. Default
    values are left out, so equal definitions have equal documents."""
    only = workflow_pb2.Workflow(steps=wf.steps, max_parallel_steps=wf.max_parallel_steps)
    for name in ("on_failure_step", "concurrency", "timeout"):
        if wf.HasField(name):
            getattr(only, name).CopyFrom(getattr(wf, name))
    return json_format.MessageToDict(only, preserving_proto_field_name=True)


def digest(document: dict[str, Any]) -> bytes:
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).digest()


def _refs(v: Violations, steps: list[workflow_pb2.Step], wf: workflow_pb2.Workflow) -> set[str]:
    seen: set[str] = set()
    named = [(f"workflow.steps[{i}].ref", s.ref) for i, s in enumerate(steps)]
    if wf.HasField("on_failure_step"):
        named.append(("workflow.on_failure_step.ref", wf.on_failure_step.ref))
    for path, ref in named:
        if not REF_RE.fullmatch(ref):
            v.add(path, "must match ^[a-z][a-z0-9_]{0,62}$ (expressions name it as steps.<ref>)")
        elif ref in seen:
            v.add(path, f"{ref!r} is used by another step")
        seen.add(ref)
    return seen


def _order(v: Violations, parents: dict[str, list[str]]) -> list[str]:
    known = {ref: [p for p in deps if p in parents] for ref, deps in parents.items()}
    try:
        return topological_order(known)
    except Cycle as cycle:
        v.add("workflow.steps", f"depends_on forms a cycle: {cycle}")
        return []


def _check_step(v: Violations, path: str, step: workflow_pb2.Step, refs: set[str]) -> None:
    deps = list(step.depends_on)
    if len(deps) > MAX_STEPS:
        v.add(f"{path}.depends_on", f"must name at most {MAX_STEPS} steps")
    for j, dep in enumerate(deps):
        if dep == step.ref:
            v.add(f"{path}.depends_on[{j}]", "a step cannot depend on itself")
        elif dep not in refs:
            v.add(f"{path}.depends_on[{j}]", f"{dep!r} is not a step of this workflow")
        elif dep in deps[:j]:
            v.add(f"{path}.depends_on[{j}]", f"{dep!r} is named twice")
    for name, known in _KNOWN.items():
        if getattr(step, name) not in known:
            v.add(f"{path}.{name}", "is not a known value")
    _check_kind(v, path, step)
    _check_expressions(v, path, step)
    _check_run_settings(v, path, step)


def _check_kind(v: Violations, path: str, step: workflow_pb2.Step) -> None:
    kind = step.WhichOneof("kind")
    if kind is None:
        v.add(f"{path}.kind", "set one of job, approval, wait_for_event, sleep, sub_workflow")
        return
    _KIND_CHECKS[kind](v, f"{path}.{kind}", getattr(step, kind))
    if step.HasField("map") and kind not in ("job", "sub_workflow"):
        v.add(f"{path}.map", "only job and sub_workflow steps can map over items")


def _check_job(v: Violations, path: str, job: workflow_pb2.JobStep) -> None:
    which = job.WhichOneof("job")
    if which is None or not getattr(job, which):
        v.add(f"{path}.job_id", "set job_id or job_slug")
    else:
        validate.check_text(v, f"{path}.{which}", getattr(job, which), max_len=128)


def _check_approval(v: Violations, path: str, approval: workflow_pb2.ApprovalStep) -> None:
    if len(approval.approvers) > 100:
        v.add(f"{path}.approvers", "must name at most 100 approvers")
    for i, name in enumerate(approval.approvers):
        validate.check_text(v, f"{path}.approvers[{i}]", name, max_len=128, required=True)
    if approval.HasField("timeout"):
        _check_duration(v, f"{path}.timeout", approval.timeout, MAX_WAIT)


def _check_wait(v: Violations, path: str, wait: workflow_pb2.WaitForEventStep) -> None:
    if not wait.event_key_template:
        v.add(f"{path}.event_key_template", "is required")
    else:
        validate.check_text(v, f"{path}.event_key_template", wait.event_key_template, max_len=1024)
        _check_template_text(v, f"{path}.event_key_template", wait.event_key_template)
    if wait.HasField("timeout"):
        _check_duration(v, f"{path}.timeout", wait.timeout, MAX_WAIT)
    if wait.HasField("lookback"):
        _check_duration(v, f"{path}.lookback", wait.lookback, MAX_LOOKBACK, allow_zero=True)
    if wait.match:
        _check_expression(v, f"{path}.match", wait.match)


def _check_sleep(v: Violations, path: str, sleep: workflow_pb2.SleepStep) -> None:
    which = sleep.WhichOneof("until")
    if which == "duration":
        _check_duration(v, f"{path}.duration", sleep.duration, MAX_WAIT)
    elif which == "until_template" and sleep.until_template:
        _check_template_text(v, f"{path}.until_template", sleep.until_template)
    else:
        v.add(f"{path}.duration", "set duration or until_template")


def _check_sub_workflow(v: Violations, path: str, sub: workflow_pb2.SubWorkflowStep) -> None:
    which = sub.WhichOneof("workflow")
    if which is None or not getattr(sub, which):
        v.add(f"{path}.workflow_id", "set workflow_id or workflow_slug")
    if sub.version < 0:
        v.add(f"{path}.version", "must not be negative")


_KIND_CHECKS: dict[str, Callable[[Violations, str, Any], None]] = {
    "job": _check_job, "approval": _check_approval, "wait_for_event": _check_wait, "sleep": _check_sleep,
    "sub_workflow": _check_sub_workflow,
}


def _check_expressions(v: Violations, path: str, step: workflow_pb2.Step) -> None:
    for name in ("condition", "output_selector", "concurrency_key"):
        if getattr(step, name):
            _check_expression(v, f"{path}.{name}", getattr(step, name))
    if step.input_template_json:
        parsed = validate.check_json(v, f"{path}.input_template_json", step.input_template_json,
                                     MAX_TEMPLATE_BYTES)
        if parsed is not None:
            for text in expressions.templates(step.input_template_json):
                _check_expression(v, f"{path}.input_template_json", text)
    if step.HasField("map"):
        _check_map(v, f"{path}.map", step.map)


def _check_map(v: Violations, path: str, spec: workflow_pb2.MapSpec) -> None:
    _check_expression(v, f"{path}.items", spec.items)
    if not 0 <= spec.max_items <= MAX_MAP_ITEMS:
        v.add(f"{path}.max_items", f"must be between 0 (the limit, {MAX_MAP_ITEMS:,}) and {MAX_MAP_ITEMS:,}")
    if spec.max_concurrency < 0:
        v.add(f"{path}.max_concurrency", "must not be negative")
    if spec.tolerated_failure_count < 0:
        v.add(f"{path}.tolerated_failure_count", "must not be negative")
    if not 0 <= spec.tolerated_failure_percentage <= 100:
        v.add(f"{path}.tolerated_failure_percentage", "must be between 0 and 100")


def _check_expression(v: Violations, path: str, text: str) -> None:
    try:
        expressions.check(text)
    except expressions.ExpressionError as exc:
        v.add(path, f"is not a valid CEL expression: {exc}")


def _check_template_text(v: Violations, path: str, text: str) -> None:
    for expression in expressions.templates(json.dumps(text)):
        _check_expression(v, path, expression)


def _check_run_settings(v: Violations, path: str, step: workflow_pb2.Step) -> None:
    if step.HasField("timeout"):
        _check_duration(v, f"{path}.timeout", step.timeout, validate.MAX_TIMEOUT, minimum=timedelta(seconds=1))
    if step.HasField("schedule_to_start_timeout"):
        _check_duration(v, f"{path}.schedule_to_start_timeout", step.schedule_to_start_timeout, MAX_WAIT)
    if step.HasField("retry_policy"):
        policy = step.retry_policy
        if not 0 <= policy.max_attempts <= 100:
            v.add(f"{path}.retry_policy.max_attempts", "must be between 0 (the job's) and 100")
        if policy.strategy not in set(job_pb2.RetryStrategy.values()):
            v.add(f"{path}.retry_policy.strategy", "is not a known value")
        for name in ("initial_delay", "max_delay"):
            if policy.HasField(name):
                _check_duration(v, f"{path}.retry_policy.{name}", getattr(policy, name), timedelta(hours=24),
                                allow_zero=True)
        if (policy.HasField("initial_delay") and policy.HasField("max_delay")
                and _nanos_of(policy.max_delay) < _nanos_of(policy.initial_delay)):
            v.add(f"{path}.retry_policy.max_delay", "must not be shorter than initial_delay")


def _check_duration(v: Violations, path: str, d: Duration, most: timedelta, *, allow_zero: bool = False,
                    minimum: timedelta | None = None) -> None:
    least = minimum or timedelta(0)
    # Compared as nanoseconds: a Duration may hold seconds no timedelta can (protobuf allows 10,000 years).
    nanos = _nanos_of(d)
    fits = 0 <= d.nanos <= 999_999_999 and d.seconds >= 0
    if not fits or not _nanos(least) <= nanos <= _nanos(most) or (nanos == 0 and not allow_zero):
        bounds = f"between {least} and {most}" if minimum else f"positive and at most {most}"
        v.add(path, f"must be {bounds}")


def _nanos_of(d: Duration) -> int:
    return d.seconds * 1_000_000_000 + d.nanos


def _nanos(d: timedelta) -> int:
    return d // timedelta(microseconds=1) * 1000


def _check_step_refs(v: Violations, steps: list[workflow_pb2.Step], parents: dict[str, list[str]],
                     wf: workflow_pb2.Workflow) -> None:
    """Expressions may read only the steps a step runs after (directly or not): another step's output may
    not exist yet when it runs. The on_failure step may read every step."""
    above = ancestors({ref: [p for p in deps if p in parents] for ref, deps in parents.items()})
    for i, step in enumerate(steps):
        _check_reads(v, f"workflow.steps[{i}]", step, above.get(step.ref, frozenset()))
    if wf.HasField("on_failure_step"):
        _check_reads(v, "workflow.on_failure_step", wf.on_failure_step, frozenset(parents))


def _check_reads(v: Violations, path: str, step: workflow_pb2.Step, readable: frozenset[str]) -> None:
    sources = [("condition", step.condition), ("concurrency_key", step.concurrency_key),
               ("map.items", step.map.items if step.HasField("map") else "")]
    if step.input_template_json:
        try:
            sources += [("input_template_json", t) for t in expressions.templates(step.input_template_json)]
        except ValueError:
            pass  # reported as invalid JSON already
    for name, text in sources:
        for ref in sorted(expressions.step_refs(text) - readable):
            v.add(f"{path}.{name}", f"reads steps.{ref}, which is not a step this one depends on (directly or not)")


def _check_workflow_settings(v: Violations, wf: workflow_pb2.Workflow) -> None:
    if wf.max_parallel_steps < 0:
        v.add("workflow.max_parallel_steps", "must not be negative")
    if wf.HasField("timeout"):
        _check_duration(v, "workflow.timeout", wf.timeout, MAX_WAIT)
    if wf.HasField("concurrency"):
        c = wf.concurrency
        if c.max_runs < 0:
            v.add("workflow.concurrency.max_runs", "must not be negative")
        if c.key:
            _check_expression(v, "workflow.concurrency.key", c.key)
            if expressions.step_refs(c.key):
                v.add("workflow.concurrency.key", "can read only input: no step has run when a run starts")
        if c.strategy not in set(workflow_pb2.ConcurrencyStrategy.values()):
            v.add("workflow.concurrency.strategy", "is not a known value")


def _job_refs(wf: workflow_pb2.Workflow) -> list[Target]:
    out = []
    for path, step in _all_steps(wf):
        if step.WhichOneof("kind") == "job":
            out.append(Target(f"{path}.job", step.job.job_id, step.job.job_slug))
    return out


def _sub_workflow_refs(wf: workflow_pb2.Workflow) -> list[Target]:
    out = []
    for path, step in _all_steps(wf):
        if step.WhichOneof("kind") == "sub_workflow":
            sub = step.sub_workflow
            out.append(Target(f"{path}.sub_workflow", sub.workflow_id, sub.workflow_slug))
    return out


def _all_steps(wf: workflow_pb2.Workflow) -> list[tuple[str, workflow_pb2.Step]]:
    steps = [(f"workflow.steps[{i}]", s) for i, s in enumerate(wf.steps)]
    if wf.HasField("on_failure_step"):
        steps.append(("workflow.on_failure_step", wf.on_failure_step))
    return steps


def check_schedule(v: Violations, wf: workflow_pb2.Workflow, definition: Definition) -> Schedule:
    """The workflow's schedule, checked as a job's is (workflow.cron, workflow.timezone, ...). With a `cron`,
    the workflow's concurrency key must be computable from the schedule's input, which every tick uses."""
    cron, tz = validate.cron_schedule(v, "workflow", wf.cron, wf.timezone)
    overlap = validate.overlap_policy(v, "workflow.cron_overlap_policy", wf.cron_overlap_policy)
    path = "workflow.schedule_input_json"
    run_input = validate.check_json(v, path, wf.schedule_input_json or "{}", MAX_SCHEDULE_INPUT_BYTES,
                                    object_only=True)
    if cron and run_input is not None and definition.document:
        try:
            admission.key_of(plan_of(definition.document), run_input, path)
        except InvalidArgument as exc:
            for violation in exc.violations:
                v.add(violation.field, violation.description)
    return Schedule(cron, tz, overlap, wf.schedule_input_json)


def check_attributes(v: Violations, wf: workflow_pb2.Workflow) -> None:
    if not validate.SLUG_RE.fullmatch(wf.slug):
        v.add("workflow.slug", "must match ^[a-z0-9][a-z0-9_-]{0,127}$")
    elif wf.slug.startswith("wf_"):
        v.add("workflow.slug", "must not start with 'wf_' (reserved for workflow ids)")
    validate.check_text(v, "workflow.name", wf.name, max_len=256)
    validate.check_text(v, "workflow.description", wf.description, max_len=4096)
    validate.check_map(v, "workflow.tags", dict(wf.tags))
