"""A stored definition version as the engine uses it: steps with their parents and children, and the pure
rules that decide a step from how its parents ended."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from strait_server.workflows.graph import topological_order


class Rule(enum.StrEnum):
    ALL_SUCCESS = "all_success"
    NONE_FAILED = "none_failed"
    ALL_DONE = "all_done"
    ONE_SUCCESS = "one_success"
    ONE_FAILED = "one_failed"


class Policy(enum.StrEnum):
    FAIL_WORKFLOW = "fail_workflow"
    CONTINUE = "continue"
    IGNORE = "ignore"


class SkipReason(enum.StrEnum):
    CONDITION_FALSE = "condition_false"
    UPSTREAM_FAILED = "upstream_failed"
    ALL_UPSTREAM_SKIPPED = "all_upstream_skipped"
    TRIGGER_RULE_UNSATISFIABLE = "trigger_rule_unsatisfiable"
    MANUAL = "manual"
    DISABLED = "disabled"  # by the trigger's step_overrides


class StepStatus(enum.StrEnum):
    PENDING = "pending"
    READY = "ready"
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELED = "canceled"


FINISHED = frozenset({StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELED})

# Steps that wait for something outside the run: a decision, an event, time.
WAITING_KINDS = frozenset({"approval", "wait_for_event", "sleep"})


MAX_MAP_ITEMS = 10_000


@dataclass(frozen=True)
class MapPlan:
    """A map step: one instance per item of the CEL list `items`."""

    items: str
    max_items: int
    max_concurrency: int  # 0: every instance at once
    tolerated_count: int | None  # failed instances the step tolerates (None: not set)
    tolerated_percentage: float | None

    def fails(self, failed: int, total: int) -> bool:
        """Whether the step fails with this many failed instances: none is tolerated unless a tolerance is set,
        and then exceeding any one set fails it."""
        if not failed:
            return False
        if self.tolerated_count is None and self.tolerated_percentage is None:
            return True
        return ((self.tolerated_count is not None and failed > self.tolerated_count) or
                (self.tolerated_percentage is not None and failed * 100 > self.tolerated_percentage * total))


def _map_plan(spec: dict[str, Any] | None) -> MapPlan | None:
    if spec is None:
        return None
    count, percentage = spec.get("tolerated_failure_count"), spec.get("tolerated_failure_percentage")
    return MapPlan(items=spec.get("items", ""), max_items=min(spec.get("max_items") or MAX_MAP_ITEMS, MAX_MAP_ITEMS),
                   max_concurrency=spec.get("max_concurrency", 0), tolerated_count=count,
                   tolerated_percentage=None if percentage is None else float(percentage))


@dataclass(frozen=True)
class WaitPlan:
    """What an approval, event wait or sleep step waits for."""

    timeout_ms: int | None  # a sleep's duration; an approval's or event wait's timeout (None: none)
    until_template: str  # a sleep's end, as a {{ }} template of an RFC 3339 time
    approvers: tuple[str, ...]
    key_template: str
    lookback_ms: int
    match: str


def _wait_plan(kind: str, spec: dict[str, Any]) -> WaitPlan | None:
    if kind not in WAITING_KINDS:
        return None
    return WaitPlan(
        timeout_ms=_duration_ms(spec.get("duration") if kind == "sleep" else spec.get("timeout")),
        until_template=spec.get("until_template", ""), approvers=tuple(spec.get("approvers", [])),
        key_template=spec.get("event_key_template", ""), lookback_ms=_duration_ms(spec.get("lookback")) or 0,
        match=spec.get("match", ""))


@dataclass(frozen=True)
class StepPlan:
    ref: str
    parents: tuple[str, ...]
    children: tuple[str, ...]
    rule: Rule
    policy: Policy
    kind: str
    condition: str
    template: str  # input_template_json; "" for the default input
    job_id: str
    job_slug: str
    timeout_ms: int | None
    max_attempts: int | None
    uses_map: bool
    wait: WaitPlan | None = None
    map: MapPlan | None = None
    sub_workflow: tuple[str, str, int] | None = None  # (workflow id, slug, version; 0: current at start)
    output_selector: str = ""  # CEL over `result` (what the step's run gave): the step's output
    concurrency_key: str = ""  # CEL: at most one step of a run with the same value runs at once
    # The retry policy of the step's job runs (None: the job's): "exponential" or "fixed", and delays.
    retry_strategy: str | None = None
    retry_initial_ms: int | None = None
    retry_max_ms: int | None = None
    # How long the step's job run may wait for its first start (None: the job's run_ttl, if any).
    schedule_to_start_ms: int | None = None


class Strategy(enum.StrEnum):
    QUEUE = "queue"
    CANCEL_IN_PROGRESS = "cancel_in_progress"
    CANCEL_NEWEST = "cancel_newest"


@dataclass(frozen=True)
class Concurrency:
    """At most `max_runs` running runs of the workflow per value of the CEL `key` over the input."""

    max_runs: int
    key: str  # "": one key for every run
    strategy: Strategy


def _concurrency(spec: dict[str, Any] | None) -> Concurrency | None:
    if not spec or not spec.get("max_runs"):
        return None
    return Concurrency(max_runs=int(spec["max_runs"]), key=spec.get("key", ""),
                       strategy=Strategy(_enum_name(spec.get("strategy"), "CONCURRENCY_STRATEGY_", "queue")))


@dataclass(frozen=True)
class Plan:
    steps: dict[str, StepPlan]  # the on_failure_step included
    order: list[str]  # the DAG's steps (not the on_failure_step), parents before children
    on_failure: str = ""  # the ref of the on_failure_step ("": none)
    concurrency: Concurrency | None = None
    max_parallel_steps: int = 0  # steps running or waiting at once (0: no limit)
    timeout_ms: int | None = None  # how long a run may take from its start (None: no limit)

    @property
    def holds_steps(self) -> bool:
        """Whether steps decided to run may have to wait READY for others to end."""
        return bool(self.max_parallel_steps) or any(s.concurrency_key for s in self.steps.values())

    @property
    def has_maps(self) -> bool:
        return any(s.map is not None for s in self.steps.values())

    @property
    def roots(self) -> list[str]:
        return [ref for ref in self.order if not self.steps[ref].parents]



def _enum_name(value: Any, prefix: str, default: str) -> str:
    return str(value)[len(prefix):].lower() if value else default


def _duration_ms(text: str | None) -> int | None:
    """A protobuf JSON Duration ("1.5s") in milliseconds."""
    return None if not text else round(float(text.rstrip("s")) * 1000)


def _sub_workflow(spec: dict[str, Any] | None) -> tuple[str, str, int] | None:
    if spec is None:
        return None
    return spec.get("workflow_id", ""), spec.get("workflow_slug", ""), int(spec.get("version", 0))


def plan_of(definition: dict[str, Any]) -> Plan:
    raw = definition.get("steps", [])
    parents = {s["ref"]: tuple(dict.fromkeys(s.get("depends_on", []))) for s in raw}
    children: dict[str, list[str]] = {ref: [] for ref in parents}
    for ref, deps in parents.items():
        for parent in deps:
            children[parent].append(ref)
    on_failure = definition.get("on_failure_step")
    if on_failure:
        parents[on_failure["ref"]], children[on_failure["ref"]] = (), []
    steps = {}
    for s in [*raw, *([on_failure] if on_failure else [])]:
        kind = next((k for k in ("job", "approval", "wait_for_event", "sleep", "sub_workflow") if k in s), "")
        job = s.get("job", {})
        retry = s.get("retry_policy", {})
        steps[s["ref"]] = StepPlan(
            ref=s["ref"], parents=parents[s["ref"]], children=tuple(children[s["ref"]]),
            rule=Rule(_enum_name(s.get("trigger_rule"), "TRIGGER_RULE_", "all_success")),
            policy=Policy(_enum_name(s.get("on_failure"), "ON_FAILURE_", "fail_workflow")),
            kind=kind, condition=s.get("condition", ""), template=s.get("input_template_json", ""),
            job_id=job.get("job_id", ""), job_slug=job.get("job_slug", ""),
            timeout_ms=_duration_ms(s.get("timeout")), max_attempts=retry.get("max_attempts") or None,
            uses_map="map" in s, wait=_wait_plan(kind, s.get(kind, {})), map=_map_plan(s.get("map")),
            sub_workflow=_sub_workflow(s.get("sub_workflow")), output_selector=s.get("output_selector", ""),
            concurrency_key=s.get("concurrency_key", ""),
            retry_strategy=_enum_name(retry.get("strategy"), "RETRY_STRATEGY_", "") or None,
            retry_initial_ms=_duration_ms(retry.get("initial_delay")),
            retry_max_ms=_duration_ms(retry.get("max_delay")),
            schedule_to_start_ms=_duration_ms(s.get("schedule_to_start_timeout")))
    handler = on_failure["ref"] if on_failure else ""
    order = topological_order({ref: deps for ref, deps in parents.items() if ref != handler})
    return Plan(steps, order, handler, _concurrency(definition.get("concurrency")),
                int(definition.get("max_parallel_steps", 0)), _duration_ms(definition.get("timeout")))


@dataclass(frozen=True)
class Counters:
    total: int
    done: int
    ok: int
    failed: int
    skipped: int


RUN = "run"


def decide(rule: Rule, c: Counters) -> str | SkipReason | None:
    """"run", a skip reason, or None (not decided yet), as soon as the parents' outcomes determine it."""
    if c.total == 0:
        return RUN
    all_done = c.done >= c.total
    if rule in (Rule.ALL_SUCCESS, Rule.NONE_FAILED) and c.failed:
        return SkipReason.UPSTREAM_FAILED
    if rule is Rule.ONE_SUCCESS and c.ok:
        return RUN
    if rule is Rule.ONE_FAILED and c.failed:
        return RUN
    if not all_done:
        return None
    if rule is Rule.ALL_SUCCESS:
        return RUN if c.ok else SkipReason.ALL_UPSTREAM_SKIPPED
    if rule in (Rule.NONE_FAILED, Rule.ALL_DONE):
        return RUN
    return SkipReason.TRIGGER_RULE_UNSATISFIABLE


def step_status_of_run(run_status: str) -> StepStatus:
    """A step's status from its job run's terminal status."""
    if run_status == "completed":
        return StepStatus.COMPLETED
    if run_status == "canceled":
        return StepStatus.CANCELED
    return StepStatus.FAILED
