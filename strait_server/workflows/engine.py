"""The workflow engine: moves workflow runs on, one transaction per move.

A move starts from steps that ended (their job runs ended: rows the runs_step_run_end trigger wrote into
workflow_progress in the same transaction) or from a new run's roots. Under the workflow run's row lock it
records the steps' outcomes, adds them to their children's counters, decides each child whose trigger rule
is now determined (run, or skip and cascade), evaluates conditions and renders inputs, and creates the
job runs of the steps that start, through the same statement as every other run (store/runs.py). Then it
closes the run when no step is open. All of it commits together or not at all, so no outcome is counted twice
or lost, and no reconciler is needed.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from strait_server import ids
from strait_server.errors import FailedPrecondition, NotFound, PermissionDenied
from strait_server.model import MAP_INDEX_KEY, TRACE_CONTEXT_KEY, WORKFLOW_RUN_KEY, WORKFLOW_STEP_KEY, NewRun, Run
from strait_server.queue import ClaimedRun
from strait_server.store import workflow_runs as sql
from strait_server.store import workflows as workflows_sql
from strait_server.store.runs import cancel_runs, write_runs
from strait_server.workflows import expressions, reruns, waits
from strait_server.workflows.plan import (
    FINISHED,
    RUN,
    WAITING_KINDS,
    Counters,
    Plan,
    Policy,
    SkipReason,
    StepPlan,
    StepStatus,
    Strategy,
    decide,
    plan_of,
)

MAX_INPUT_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 10  # child runs under a run triggered by itself


class InputRefused(ValueError):
    """A rendered input the step cannot be given; the message is the step's error."""


def input_text(document: Any) -> str:
    """A step's (or map instance's) rendered input as JSON text: an object of at most MAX_INPUT_BYTES."""
    if not isinstance(document, dict):
        raise InputRefused("template_error: the input is not a JSON object")
    text = json.dumps(document)
    if len(text) > MAX_INPUT_BYTES:
        raise InputRefused(f"input_too_large: {len(text):,} bytes, at most {MAX_INPUT_BYTES:,}")
    return text
OK, FAILED, SKIPPED = 1, 2, 3  # how an ended step counts for its children


@dataclass
class Changes:
    """What committed moves changed, for the wake-ups after the commit."""

    job_runs: list[Run] = field(default_factory=list)
    workflow_runs: set[str] = field(default_factory=set)
    canceled_job_runs: list[str] = field(default_factory=list)
    # For metrics: runs started, final statuses of runs that ended, (kind, status, seconds) of steps that ended.
    runs_started: int = 0
    runs_ended: list[str] = field(default_factory=list)
    step_durations: list[tuple[str, str, float]] = field(default_factory=list)
    # A timer was set (a step waits with a wake time, a run has a deadline): the engine's loop looks again
    # when the next one is due.
    timers: bool = False
    # Job runs claimed in the move's transaction by this process's dispatcher (see passes.take_progress), and
    # when that claim started (time.time_ns()).
    claimed: list[ClaimedRun] = field(default_factory=list)
    claim_started_ns: int = 0

    def add(self, other: Changes) -> None:
        self.job_runs += other.job_runs
        self.workflow_runs |= other.workflow_runs
        self.canceled_job_runs += other.canceled_job_runs
        self.runs_started += other.runs_started
        self.runs_ended += other.runs_ended
        self.step_durations += other.step_durations
        self.timers |= other.timers
        self.claimed += other.claimed
        self.claim_started_ns = self.claim_started_ns or other.claim_started_ns


class Plans:
    """Definitions by (workflow, version): versions never change, so each is read and parsed once."""

    def __init__(self) -> None:
        self._plans: dict[tuple[str, int], Plan] = {}

    async def get(self, conn: sql.Conn, workflow_id: str, version: int) -> Plan:
        key = (workflow_id, version)
        if key not in self._plans:
            definition = await conn.fetchval(
                "SELECT definition FROM workflow_versions WHERE workflow_id = $1 AND version = $2", *key)
            self._plans[key] = plan_of(definition)
        return self._plans[key]

    def of(self, workflow_id: str, version: int, definition: dict[str, Any]) -> Plan:
        """The plan of a definition the caller read already."""
        key = (workflow_id, version)
        if key not in self._plans:
            self._plans[key] = plan_of(definition)
        return self._plans[key]


class Move:
    """One workflow run moving on inside the caller's transaction (which holds the run's row lock)."""

    def __init__(self, conn: sql.Conn, run: sql.WorkflowRunRow, plan: Plan, steps: list[sql.StepState],
                 plans: Plans) -> None:
        self._conn = conn
        self._plans = plans  # the plans of child runs (sub-workflow steps)
        self.run = run
        self._plan = plan
        self._steps = {s.step_ref: s for s in steps}
        self._status = {s.step_ref: s.status for s in steps}
        self._outputs = {s.step_ref: s.output for s in steps}
        self._errors = {s.step_ref: s.error for s in steps}
        self._updates: list[tuple[str, str, str, str, str | None, str]] = []
        self._events: list[tuple[str, str, str, str, str]] = []
        self._closed = 0
        self._failed = 0
        self._over = False
        # A FAIL_WORKFLOW step failed (its ref and error): the move stops and cancels what is open.
        self._fail_fast: tuple[str, str] | None = None
        # Paused: steps decided to run wait in READY until resume() (running ones go on).
        self._paused = run.status == sql.PAUSED
        self._disabled = frozenset(run.disabled_steps)  # the trigger's step_overrides: skipped when they would run
        self._failure: dict[str, str] = {}  # what failed, for the on_failure_step's default input
        self._input: dict[str, Any] | None = None  # the run's input, decoded when first read
        # The trigger's trace, continued by the job runs of the steps (hidden from users like any run's).
        self._trace = {TRACE_CONTEXT_KEY: run.trace_parent} if run.trace_parent else {}
        self._run_status = run.status
        self.changes = Changes(workflow_runs={run.id})

    # Recording

    def _set(self, ref: str, status: StepStatus, *, skip: str = "", output: Any = None, error: str = "",
             written: bool = False, message: str = "") -> None:
        """A step's new status (`written`: the statement that caused it wrote it already)."""
        before = self._status[ref]
        self._status[ref] = status
        if not written:
            self._updates.append((self._steps[ref].id, before, status.value, skip,
                                  None if output is None else json.dumps(output), error))
        self.event("step_status", ref, before, status.value, message or error or skip)
        if status in (StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELED):
            self._closed += 1
            self._outputs[ref], self._errors[ref] = output, error
            started = self._steps[ref].start_time
            if started is not None:
                self.changes.step_durations.append((self._plan.steps[ref].kind, status.value,
                                                    (self._now() - started).total_seconds()))

    def event(self, kind: str, ref: str, before: str, after: str, message: str = "") -> None:
        self._events.append((kind, ref, before, after, message))

    async def _flush_steps(self) -> None:
        if self._updates:
            columns = list(zip(*self._updates, strict=True))
            await self._conn.execute(sql.SET_STEPS, *[list(c) for c in columns])
            self._updates = []

    # Moving on

    async def start(self, from_status: str = "") -> None:
        """A new run (or one that waited queued): its roots start (or are skipped by their condition)."""
        self.event("run_status", "", from_status, "running")
        self.changes.runs_started += 1
        await self._propagate(await self._start_steps(self._plan.roots))
        await self.close()

    async def steps_ended(self, ended: Iterable[tuple[str, str, StepStatus, StepStatus, Any, str]],
                          instances: list[tuple[str, str, StepStatus, Any, str]] | None = None) -> None:
        """Steps ended: (step ref, step run id, the status it must still be in, new status, output, error):
        their job runs ended, events arrived, timers fired; and map instances (see instances_ended). Late ones
        are ignored: the step moved on meanwhile, or started over as another step run (a retry or replay) whose
        status the old one's end must not take."""
        outcomes: list[tuple[str, int] | None] = [*await self.instances_ended(instances or [])]
        for ref, step_run_id, expected, status, output, error in ended:
            if self._status.get(ref) != expected or self._steps[ref].id != step_run_id or self._over:
                continue  # the step was canceled, started over, or the run ended, meanwhile
            if status is StepStatus.COMPLETED and self._plan.steps[ref].output_selector:
                status, output, error = self._select(ref, output)
            outcomes.append(self._end(ref, status, output, error))
        await self._propagate([o for o in outcomes if o is not None])
        await self.close()

    def _select(self, ref: str, result: Any) -> tuple[StepStatus, Any, str]:
        """The step's output_selector applied to what its run gave (`result`); a selector that fails on it
        fails the step."""
        try:
            return StepStatus.COMPLETED, expressions.evaluate(self._plan.steps[ref].output_selector,
                                                             {"result": result}), ""
        except expressions.EvaluationError as exc:
            return StepStatus.FAILED, None, f"output_selector_error: {exc}"

    def _require_step(self, ref: str, allowed: Iterable[StepStatus]) -> StepPlan:
        step = self._plan.steps.get(ref)
        if step is None or ref not in self._status:  # (an on_failure_step that never ran has no step run)
            raise NotFound("step", ref)
        if StepStatus(self._status[ref]) not in set(allowed):
            raise FailedPrecondition(f"step {ref!r} is {self._status[ref]}", reason="STEP_STATE", subject=ref,
                                     violation_type="STEP_STATE")
        return step

    async def decide_approval(self, ref: str, approver: waits.Approver, approved: bool, text: str) -> None:
        """ApproveStep (the step completes with the decision as its output) or RejectStep (it fails)."""
        step = self._require_step(ref, [StepStatus.WAITING])
        if step.kind != "approval":
            raise FailedPrecondition(f"step {ref!r} is a {step.kind} step, not an approval", reason="STEP_KIND",
                                     subject=ref, violation_type="STEP_KIND")
        if not waits.may_decide(step, approver):
            raise PermissionDenied(f"this API key is not one of the approvers of step {ref!r}")
        who = approver.key_name or approver.key_id
        if approved:
            self.event("step_decision", ref, "", "", f"approved by {who}" + (f": {text}" if text else ""))
            outcome = self._end(ref, StepStatus.COMPLETED, waits.decision_output(approver, text, self._now()), "")
        else:
            outcome = self._end(ref, StepStatus.FAILED, None, f"rejected by {who}" + (f": {text}" if text else ""))
        await self._propagate([outcome] if outcome is not None else [])
        await self.close()

    async def hold(self, from_status: str, status: str, why: str) -> None:
        """A new run waits: queued for a concurrency slot (start_queued starts it), or scheduled for its time
        (start_scheduled starts it); or a scheduled run whose time came waits queued."""
        self.event("run_status", "", from_status, status, why)
        self._run_status = status
        await self._record()

    async def pause(self) -> None:
        """PauseWorkflowRun: from now, steps decided to run wait in READY."""
        await self._set_run_status(sql.RUNNING, sql.PAUSED)
        self._paused = True

    async def resume(self) -> None:
        """ResumeWorkflowRun: the READY steps start now."""
        await self._set_run_status(sql.PAUSED, sql.RUNNING)
        self._paused = False
        ready = [ref for ref in self._plan.order if self._status[ref] == StepStatus.READY]
        ended = await self._start_steps(ready)
        for ref in self._plan.order:  # maps that were running go on starting instances
            if self._plan.steps[ref].map and self._status[ref] == StepStatus.RUNNING and ref not in ready:
                if (outcome := await self._fill_map(ref, done=0, failed=0)) is not None:
                    ended.append(outcome)
        await self._propagate(ended)
        await self.close()

    async def _set_run_status(self, before: str, after: str) -> None:
        if self._run_status != before:
            raise FailedPrecondition(f"workflow run {self.run.id!r} is {self._run_status}", subject=self.run.id)
        await self._conn.execute(sql.SET_RUN_STATUS, self.run.id, after)
        self._run_status = after
        self.event("run_status", "", before, after)
        await self._record()

    async def force(self, ref: str, status: StepStatus, output: Any, reason: str) -> None:
        """CompleteWorkflowStep and SkipWorkflowStep: an open step ends by hand (its job run is canceled)."""
        self._require_step(ref, [StepStatus.PENDING, StepStatus.READY, StepStatus.RUNNING, StepStatus.WAITING])
        job_run = self._steps[ref].job_run_id
        if self._status[ref] == StepStatus.RUNNING and job_run:
            await cancel_runs(self._conn, [job_run], f"step {ref!r} was ended by hand")
            self.changes.canceled_job_runs.append(job_run)
        if self._status[ref] == StepStatus.RUNNING:
            await self._cancel_children([self._steps[ref].child_workflow_run_id], f"step {ref!r} was ended by hand")
        if status is StepStatus.SKIPPED:
            self.event("step_decision", ref, "", "", "skipped by hand" + (f": {reason}" if reason else ""))
            outcome: tuple[str, int] | None = self._skip(ref, SkipReason.MANUAL)
        else:
            self.event("step_decision", ref, "", "", "completed by hand")
            outcome = self._end(ref, StepStatus.COMPLETED, output, "")
        await self._propagate([outcome] if outcome is not None else [])
        await self.close()

    async def retry(self, ref: str) -> None:
        """RetryWorkflowStep: a failed or canceled step runs again, with what its failure kept from completing."""
        self._require_step(ref, reruns.RETRYABLE)
        await self.rerun(reruns.retry_set(self._plan, self._status, self._errors, ref), f"retry of step {ref!r}")

    async def replay(self, ref: str) -> None:
        """ReplayWorkflowSubtree: an ended step and every step after it run again."""
        self._require_step(ref, FINISHED)
        await self.rerun(reruns.replay_set(self._plan, ref), f"replay from step {ref!r}")

    async def rerun(self, refs: list[str], why: str) -> None:
        """RetryWorkflowStep and ReplayWorkflowSubtree: these steps start over (as new step runs, so that each
        may have a job run of its own again) and are decided again from their parents as they stand; an ended
        run is open again. Job runs of steps still running among them are canceled."""
        running = [self._steps[r] for r in refs if self._status[r] == StepStatus.RUNNING]
        if job_runs := [s.job_run_id for s in running if s.job_run_id]:
            await cancel_runs(self._conn, job_runs, f"step started over: {why}")
            self.changes.canceled_job_runs += job_runs
        await self._cancel_children((s.child_workflow_run_id for s in running), f"step started over: {why}")
        for ref in refs:
            self.event("step_status", ref, self._status[ref], StepStatus.PENDING.value, why)
            self._status[ref] = StepStatus.PENDING
            self._outputs[ref], self._errors[ref] = None, ""
        counts = [reruns.counts_from_parents(self._plan, self._status, ref) for ref in refs]
        new_ids = ids.new_ids("wfs", len(refs))
        rows = await self._conn.fetch(sql.RESET_STEPS, self.run.id, refs, new_ids,
                                      *[[c[i] for c in counts] for i in range(4)])
        for ref, step_id in zip(refs, new_ids, strict=True):
            self._steps[ref] = sql.StepState(step_id, ref, StepStatus.PENDING.value, None, "")
        await self._record()
        steps_open, steps_failed = reruns.open_and_failed(self._plan, self._status)
        await self._conn.execute(sql.REOPEN_RUN, self.run.id, steps_open, steps_failed)
        if self._run_status not in sql.OPEN:
            self.event("run_status", "", self._run_status, sql.RUNNING, f"reopened: {why}")
            self._run_status = sql.RUNNING
        await self._propagate(await self._decide_rows(rows))
        await self.close()

    def _now(self) -> datetime:
        return datetime.now(UTC)

    def _end(self, ref: str, status: StepStatus, output: Any, error: str) -> tuple[str, int] | None:
        self._set(ref, status, output=output if status is StepStatus.COMPLETED else None, error=error)
        if status is StepStatus.COMPLETED or self._plan.steps[ref].policy is Policy.IGNORE:
            return ref, OK
        self._failed += 1
        if self._plan.steps[ref].policy is Policy.FAIL_WORKFLOW:
            self._fail_fast = (ref, error or status.value)
            return None
        return ref, FAILED

    async def _propagate(self, ended: list[tuple[str, int]]) -> None:
        while (ended or self._fail_fast) and not self._over:
            if self._fail_fast is not None:
                await self._stop_on_failure(*self._fail_fast)
                return
            ended = await self._wave(ended)
            if not ended and self._plan.holds_steps and not self._paused:
                # Steps held by max_parallel_steps or a concurrency_key start as others end (in definition order).
                held = [ref for ref in self._plan.order if self._status[ref] == StepStatus.READY]
                if held:
                    ended = await self._start_steps(held)

    async def _wave(self, ended: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """Adds the ended steps to their children's counters and decides the children now determined."""
        await self._flush_steps()
        counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        for ref, how in ended:
            for child in self._plan.steps[ref].children:
                counts[child][0] += 1
                counts[child][how] += 1
        if not counts:
            return []
        children = list(counts)
        rows = await self._conn.fetch(sql.ADD_TO_COUNTERS, [self.run.id] * len(children), children,
                                      *[[counts[c][i] for c in children] for i in range(4)])
        return await self._decide_rows(rows)

    async def _decide_rows(self, rows: list[Any]) -> list[tuple[str, int]]:
        """Decides the pending steps whose counters these rows hold: start, skip (and cascade), or wait."""
        to_start, next_ended = [], []
        for row in rows:
            ref = row["step_ref"]
            verdict = decide(self._plan.steps[ref].rule, Counters(
                row["parents_total"], row["parents_done"], row["parents_ok"], row["parents_failed"],
                row["parents_skipped"]))
            if verdict == RUN:
                to_start.append(ref)
            elif verdict is not None:
                next_ended.append(self._skip(ref, SkipReason(verdict)))
        return next_ended + await self._start_steps(to_start)

    def _skip(self, ref: str, reason: SkipReason) -> tuple[str, int]:
        if reason is SkipReason.DISABLED:
            self.event("step_decision", ref, "", "", "skipped: disabled for this run by the trigger")
        elif reason is not SkipReason.MANUAL:
            self.event("step_decision", ref, "", "", f"skipped: {reason.value}")
        self._set(ref, StepStatus.SKIPPED, skip=reason.value)
        return ref, SKIPPED

    def _hold(self, refs: list[str]) -> list[str]:
        """The steps that may start now; the others wait READY (and start as others end): all while the run is
        paused, those beyond max_parallel_steps busy steps, and those whose concurrency_key a busy step (or
        one starting now) has."""
        busy = [r for r, s in self._status.items() if s in (StepStatus.RUNNING, StepStatus.WAITING)]
        room = 0 if self._paused else len(refs)
        if self._plan.max_parallel_steps and not self._paused:
            room = max(0, self._plan.max_parallel_steps - len(busy))
        keyed = any(self._plan.steps[r].concurrency_key for r in [*busy, *refs[:room]])
        context = self._context() if keyed else {}  # built once: keys read only ancestors' outputs
        keys_taken = {k for r in busy if (k := self._step_key(r, context))}
        starting = []
        for ref in refs[:room]:
            key = self._step_key(ref, context)
            if key is None or key not in keys_taken:
                starting.append(ref)
                keys_taken.add(key or "")
        for ref in refs:
            if ref not in starting and self._status[ref] != StepStatus.READY:
                self._set(ref, StepStatus.READY)
        return starting

    def _step_key(self, ref: str, context: dict[str, Any]) -> str | None:
        """The step's concurrency key in this run (None: it has none). It reads only ancestors, which ended
        before it started, so it is the same whenever it is evaluated."""
        expression = self._plan.steps[ref].concurrency_key
        if not expression:
            return None
        try:
            value = expressions.evaluate(expression, context)
        except expressions.EvaluationError:
            return None  # the step's own start reports what is wrong with its expressions
        return "key:" + (value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True))

    async def _start_steps(self, refs: list[str]) -> list[tuple[str, int]]:
        """Conditions, inputs and job runs of the steps decided to run; returns those that ended instead."""
        ended = [self._skip(ref, SkipReason.DISABLED) for ref in refs if ref in self._disabled]
        refs = self._hold([ref for ref in refs if ref not in self._disabled])
        by_job: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
        for ref in refs:
            kind = self._plan.steps[ref].kind
            if kind in WAITING_KINDS or kind == "sub_workflow" or self._plan.steps[ref].map is not None:
                starting = (self._start_map(ref) if self._plan.steps[ref].map else
                            self._start_child(ref) if kind == "sub_workflow" else self._start_wait(ref))
                if (outcome := await starting) is not None:
                    ended.append(outcome)
                continue
            prepared = self._prepare(ref)
            if isinstance(prepared, str):
                by_job[(self._plan.steps[ref].job_id, self._plan.steps[ref].job_slug)].append((ref, prepared))
            elif prepared is not None:
                ended.append(prepared)
        for (job_id, slug), items in by_job.items():
            ended += await self._create_job_runs(job_id, slug, items)
        return ended

    async def _start_child(self, ref: str) -> tuple[str, int] | None:
        """A sub-workflow step starts its child run, in this transaction (its input: as a job step's)."""
        prepared = self._prepare(ref)
        if not isinstance(prepared, str):
            return prepared
        await self._flush_steps()
        started = await self._child_run(ref, self._steps[ref].id, prepared)
        if started.startswith("wfr_"):
            self._steps[ref] = self._steps[ref]._replace(child_workflow_run_id=started)
            self._set(ref, StepStatus.RUNNING, written=True, message=f"child run {started}")
            return None
        return self._end(ref, StepStatus.FAILED, None, started)

    async def _child_run(self, ref: str, step_run_id: str, payload: str) -> str:
        """Starts the child run of a sub-workflow step (or of one instance of its map) and marks the step run
        running with it; returns the child run's id, or why it could not start."""
        if self.run.depth >= MAX_DEPTH:
            return f"sub_workflow_too_deep: runs nest at most {MAX_DEPTH} deep"
        workflow_id, slug, version = self._plan.steps[ref].sub_workflow or ("", "", 0)
        row = await self._conn.fetchrow(workflows_sql.GET_WORKFLOW, self.run.project_id, workflow_id, slug, version)
        if row is None or not row["enabled"]:
            return f"workflow {workflow_id or slug!r} {'is disabled' if row is not None else 'does not exist'}"
        child, _, changes = await start_run(
            self._conn, self._plans, project_id=self.run.project_id, workflow_id=row["id"], version=row["version"],
            run_input=json.loads(payload), idempotency_key="",
            parent=(self.run.id, step_run_id, self.run.depth + 1), trace_parent=self.run.trace_parent)
        self.changes.add(changes)
        await self._conn.execute(sql.SET_CHILD, step_run_id, child.id)
        return child.id

    async def _cancel_children(self, child_ids: Iterable[str | None], reason: str) -> None:
        """Child runs of steps that ended by decision of this run (canceled, failed fast, started over) end
        canceled too, and theirs, in this transaction."""
        for child_id in child_ids:
            if child_id:
                self.changes.add(await cancel_if_open(self._conn, self._plans, child_id, f"its parent run: {reason}"))

    def _condition_false(self, ref: str, context: dict[str, Any]) -> bool:
        """Raises expressions.EvaluationError when the condition cannot be evaluated."""
        step = self._plan.steps[ref]
        if step.condition and expressions.evaluate(step.condition, context) is not True:
            self.event("step_decision", ref, "", "", f"condition is false: {step.condition}")
            return True
        return False

    async def _start_wait(self, ref: str) -> tuple[str, int] | None:
        """An approval, event wait or sleep starts waiting (or ends at once: skipped by its condition, failed by
        a template, or an event it may look back for was sent already)."""
        step = self._plan.steps[ref]
        context = self._context()
        try:
            if self._condition_false(ref, context):
                return self._skip_condition(ref)
            start = waits.start_of(step, context)
        except expressions.EvaluationError as exc:
            return self._end(ref, StepStatus.FAILED, None, f"template_error: {exc}")
        assert step.wait is not None
        project = self.run.project_id
        if start.event_key is not None:
            await self._conn.execute(sql.LOCK_EVENT_KEY, project, start.event_key)
            if step.wait.lookback_ms:
                for row in await self._conn.fetch(sql.EVENTS_SINCE, project, start.event_key, step.wait.lookback_ms):
                    if waits.matches(step.wait.match, row["payload"]):
                        self.event("step_decision", ref, "", "", f"event {row['id']} was sent before the step waited")
                        return self._end(ref, StepStatus.COMPLETED, row["payload"], "")
        await self._flush_steps()
        await self._conn.execute(sql.SET_WAITING, self._steps[ref].id, start.reason, start.wake_time, project,
                                 start.event_key, step.wait.match, start.wake_in_ms)
        self.changes.timers |= start.wake_in_ms is not None or start.wake_time is not None
        self._set(ref, StepStatus.WAITING, written=True, message=start.reason)
        return None

    def _prepare(self, ref: str) -> str | tuple[str, int] | None:
        """The step's input as JSON text; or how it ended instead (skipped by its condition, failed)."""
        step = self._plan.steps[ref]
        # Built only for a condition or a template: it holds every step, and most steps start with neither.
        context = self._context() if step.condition or step.template else {}
        try:
            if self._condition_false(ref, context):
                return self._skip_condition(ref)
            document = expressions.render(step.template, context) if step.template else self._default_input(ref)
        except expressions.EvaluationError as exc:
            return self._end(ref, StepStatus.FAILED, None, f"template_error: {exc}")
        try:
            return input_text(document)
        except InputRefused as exc:
            return self._end(ref, StepStatus.FAILED, None, str(exc))

    def _skip_condition(self, ref: str) -> tuple[str, int]:
        self._set(ref, StepStatus.SKIPPED, skip=SkipReason.CONDITION_FALSE.value)
        return ref, SKIPPED

    def _run_input(self) -> dict[str, Any]:
        if self._input is None:
            document = json.loads(self.run.input)
            self._input = document if isinstance(document, dict) else {}
        return self._input

    def _context(self) -> dict[str, Any]:
        steps = {ref: {"output": self._outputs.get(ref), "status": status.upper(), "error": self._errors.get(ref, "")}
                 for ref, status in self._status.items()}
        run_input = self._run_input()
        # A bare {{ name }} that is no root reads the input (as the original templates did).
        return {**run_input, "input": run_input, "steps": steps, "run": {"id": self.run.id}}

    def _default_input(self, ref: str) -> dict[str, Any]:
        run_input = self._run_input()
        if ref == self._plan.on_failure:
            return {**run_input, **self._failure}
        parents = self._plan.steps[ref].parents
        return {**run_input, "parent_outputs": {p: self._outputs.get(p) for p in parents}} if parents else run_input

    async def _write_job_runs(self, job_id: str, slug: str,
                              items: list[tuple[str, str, str, dict[str, Any]]]) -> list[Run] | None:
        """The job runs of steps or map instances: (step ref, step run id, input, more metadata) each. None
        when the job is gone."""
        news = [NewRun(payload=payload, timeout_ms=step.timeout_ms, max_attempts=step.max_attempts,
                       retry_strategy=step.retry_strategy, retry_initial_ms=step.retry_initial_ms,
                       retry_max_ms=step.retry_max_ms, ttl_ms=step.schedule_to_start_ms,
                       ttl_until_start=step.schedule_to_start_ms is not None, workflow_step_run_id=step_run_id,
                       metadata={WORKFLOW_RUN_KEY: self.run.id, WORKFLOW_STEP_KEY: ref, **self._trace, **more})
                for ref, step_run_id, payload, more in items for step in [self._plan.steps[ref]]]
        created = await write_runs(self._conn, self.run.project_id, job_id, slug, news,
                                   ids.new_ids("run", len(news)), {}, checked=True)
        if created is not None:
            self.changes.job_runs += created
        return created

    async def _create_job_runs(self, job_id: str, slug: str, items: list[tuple[str, str]]) -> list[tuple[str, int]]:
        created = await self._write_job_runs(job_id, slug, [(ref, self._steps[ref].id, payload, {})
                                                            for ref, payload in items])
        if created is None:
            missing = f"job {job_id or slug!r} no longer exists"
            return [e for ref, _ in items if (e := self._end(ref, StepStatus.FAILED, None, missing)) is not None]
        for ref, _ in items:
            self._set(ref, StepStatus.RUNNING, written=True)  # INSERT_RUNS marks the step running
        return []

    # Map steps: the step's own row counts its instances (rows with a map_index), started in item order and
    # at most max_concurrency at once; instances are no steps of the DAG (steps_open counts the map step).

    async def _start_map(self, ref: str) -> tuple[str, int] | None:
        spec = self._plan.steps[ref].map
        assert spec is not None
        context = self._context()
        try:
            if self._condition_false(ref, context):
                return self._skip_condition(ref)
            items = expressions.evaluate(spec.items, context)
        except expressions.EvaluationError as exc:
            return self._end(ref, StepStatus.FAILED, None, f"template_error: {exc}")
        if not isinstance(items, list):
            return self._end(ref, StepStatus.FAILED, None, "template_error: the map's items are not a list")
        if len(items) > spec.max_items:
            return self._end(ref, StepStatus.FAILED, None,
                             f"map_too_large: {len(items):,} items, at most {spec.max_items:,}")
        if not items:
            return self._end(ref, StepStatus.COMPLETED, [], "")
        await self._flush_steps()
        await self._conn.execute(sql.START_MAP, self._steps[ref].id, json.loads(json.dumps(items, default=str)),
                                 ids.new_ids("wfs", len(items)))
        self._set(ref, StepStatus.RUNNING, written=True, message=f"map over {len(items):,} items")
        return await self._fill_map(ref, done=0, failed=0)

    async def _fill_map(self, ref: str, *, done: int, failed: int) -> tuple[str, int] | None:
        """Counts instances that ended, starts as many as the window allows, and ends the map step once
        every instance ended (its output: the instances' outputs in item order)."""
        spec, node = self._plan.steps[ref].map, self._steps[ref].id
        assert spec is not None
        counts = await self._conn.fetchrow(sql.COUNT_MAP, node, 0, done, failed)
        assert counts is not None
        while True:
            total, started, done_all, failed_all = counts
            room = total - started
            if spec.max_concurrency:
                room = min(room, spec.max_concurrency - (started - done_all))
            if room <= 0 or self._paused:  # a paused run starts no instance either
                break
            instant_failures = await self._start_instances(ref, room)
            counts = await self._conn.fetchrow(sql.COUNT_MAP, node, room, instant_failures, instant_failures)
            assert counts is not None
        total, _, done_all, failed_all = counts
        if done_all < total:
            return None
        if spec.fails(failed_all, total):
            return self._end(ref, StepStatus.FAILED, None, f"{failed_all:,} of {total:,} map instances failed")
        return self._end(ref, StepStatus.COMPLETED, await self._conn.fetchval(sql.MAP_OUTPUTS, self.run.id, ref), "")

    async def _start_instances(self, ref: str, count: int) -> int:
        """Starts the next `count` instances; returns how many failed at once instead (an input that does not
        render, a job gone)."""
        step = self._plan.steps[ref]
        rows = await self._conn.fetch(sql.NEXT_INSTANCES, self.run.id, ref, count)
        ready, failed = [], []
        context = self._context() if step.template else {}  # without a template an instance reads no context
        for row in rows:
            try:
                payload = self._instance_input(ref, context, row["item"], row["map_index"])
                ready.append((ref, row["id"], payload, {MAP_INDEX_KEY: str(row["map_index"])}))
            except expressions.EvaluationError as exc:
                failed.append((row["id"], f"template_error: {exc}"))
            except InputRefused as exc:
                failed.append((row["id"], str(exc)))
        if ready and step.kind == "sub_workflow":
            for _, step_run_id, payload, _ in ready:  # each instance: a child run of its own
                started = await self._child_run(ref, step_run_id, payload)
                if not started.startswith("wfr_"):
                    failed.append((step_run_id, started))
        elif ready and await self._write_job_runs(step.job_id, step.job_slug, ready) is None:
            failed += [(step_run_id, f"job {step.job_id or step.job_slug!r} no longer exists")
                       for _, step_run_id, _, _ in ready]
        if failed:
            await self._conn.execute(sql.END_INSTANCES, [i for i, _ in failed], ["failed"] * len(failed),
                                     [None] * len(failed), [e for _, e in failed])
        return len(failed)

    def _instance_input(self, ref: str, context: dict[str, Any], item: Any, index: int) -> str:
        """The template rendered with `item` and `index`; without one, just those two: the workflow input in
        every instance would copy it (and the list it often holds) once per item."""
        step = self._plan.steps[ref]
        document = (expressions.render(step.template, {**context, "item": item, "index": index}) if step.template
                    else {"item": item, "index": index})
        return input_text(document)

    async def instances_ended(self, ended: list[tuple[str, str, StepStatus, Any, str]]) -> list[tuple[str, int]]:
        """Map instances whose job runs ended: (step ref, instance id, status, output, error). Returns the map
        steps that ended with them."""
        if not ended or self._over:
            return []
        changed = {r["id"] for r in await self._conn.fetch(
            sql.END_INSTANCES, [i for _, i, _, _, _ in ended], [s.value for _, _, s, _, _ in ended],
            [None if o is None else json.dumps(o) for _, _, _, o, _ in ended], [e for _, _, _, _, e in ended])}
        outcomes = []
        for ref in dict.fromkeys(r for r, _, _, _, _ in ended):
            mine = [e for e in ended if e[0] == ref and e[1] in changed]
            if self._status.get(ref) != StepStatus.RUNNING or not mine:
                continue  # the map step ended meanwhile (canceled, say)
            failed = sum(1 for e in mine if e[2] is not StepStatus.COMPLETED)
            if (outcome := await self._fill_map(ref, done=len(mine), failed=failed)) is not None:
                outcomes.append(outcome)
        return outcomes

    async def _stop_on_failure(self, ref: str, error: str) -> None:
        """FAIL_WORKFLOW: every open step and its job run are canceled, and the run fails, after its
        on_failure_step when it has one (which runs once: its own failure ends the run)."""
        reason = f"step {ref!r} failed: {error}"
        await self._cancel_open(reason)
        handler = self._plan.on_failure
        if not handler or handler in self._status:
            await self._finish("failed", reason)
            return
        self._fail_fast = None
        await self._conn.execute(sql.KEEP_ERROR, self.run.id, reason)
        [step_id] = ids.new_ids("wfs", 1)
        await self._conn.execute(sql.INSERT_STEPS, self.run.id, [step_id], [handler], [0])
        self._steps[handler] = sql.StepState(step_id, handler, StepStatus.PENDING.value, None, "")
        self._status[handler] = StepStatus.PENDING
        self._closed -= 1  # one more step open (the counts are applied as a difference)
        self._failure = {"failed_step": ref, "error": error}
        self.event("step_decision", handler, "", "", f"runs after the failure of step {ref!r}")
        await self._propagate(await self._start_steps([handler]))

    async def time_out(self) -> None:
        """The workflow's timeout passed: every open step and its job run are canceled, the run ends timed
        out."""
        reason = f"the workflow's timeout ({(self._plan.timeout_ms or 0) / 1000:g} s) passed"
        await self._cancel_open(reason)
        await self._finish(sql.TIMED_OUT, reason)
        await self.close()

    async def cancel(self, reason: str) -> None:
        """CancelWorkflowRun: every open step and its job run are canceled, and so is the run."""
        await self._cancel_open(reason)
        await self._finish("canceled", reason)
        await self.close()

    async def _cancel_open(self, reason: str) -> None:
        await self._flush_steps()
        canceled = await self._conn.fetch(sql.CANCEL_OPEN_STEPS, self.run.id, "canceled: " + reason)
        for row in canceled:
            if row["map_index"] < 0:  # a map's instances end with it, without events of their own
                self.event("step_status", row["step_ref"], row["status"], StepStatus.CANCELED.value, reason)
                self._status[row["step_ref"]] = StepStatus.CANCELED
                self._closed += 1
        job_runs = [r["job_run_id"] for r in canceled if r["job_run_id"]]
        if job_runs:
            await cancel_runs(self._conn, job_runs, reason)
            self.changes.canceled_job_runs += job_runs
        await self._cancel_children((r["child_workflow_run_id"] for r in canceled), reason)

    async def close(self) -> None:
        """Writes what this move decided; ends the run when no step is open."""
        await self._flush_steps()
        steps_open, steps_failed = await self._record()
        if steps_open == 0 and not self._over:
            failed = steps_failed > 0
            await self._finish("failed" if failed else "completed", "a step failed" if failed else "")
            await self._record()

    async def _finish(self, status: str, error: str) -> None:
        # What a parent step gets of this run: the outputs of its last steps (those without children).
        output = {ref: self._outputs.get(ref) for ref in self._plan.order if not self._plan.steps[ref].children
                  and self._status.get(ref) == StepStatus.COMPLETED}
        await self._conn.execute(sql.FINISH_RUN, self.run.id, status, error, output)
        self.changes.runs_ended.append(status)
        self.event("run_status", "", self._run_status, status, error)
        self._over = True

    async def _record(self) -> tuple[int, int]:
        """Step counts and events, in one statement; (steps open, steps failed) after it."""
        columns = [list(c) for c in zip(*self._events, strict=True)] if self._events else [[]] * 5
        row = await self._conn.fetchrow(sql.CLOSE_AND_RECORD, self.run.id, self._closed, self._failed, *columns)
        assert row is not None  # the run is locked by this transaction
        self._closed = self._failed = 0
        self._events = []
        return int(row["steps_open"]), int(row["steps_failed"])


async def step_states(conn: sql.Conn, run_ids: list[str]) -> dict[str, list[sql.StepState]]:
    """What the engine needs of the steps (not map instances) of these runs, by run."""
    states: dict[str, list[sql.StepState]] = defaultdict(list)
    for r in await conn.fetch(sql.STEPS_OF_RUNS, run_ids):
        states[r["workflow_run_id"]].append(sql.StepState(
            r["id"], r["step_ref"], r["status"], r["output"], r["error"], r["job_run_id"], r["wake_time"],
            r["child_workflow_run_id"], r["start_time"]))
    return states


async def _states(conn: sql.Conn, run_id: str) -> list[sql.StepState]:
    return (await step_states(conn, [run_id]))[run_id]


async def start_run(conn: sql.Conn, plans: Plans, *, project_id: str, workflow_id: str, version: int,
                    run_input: dict[str, Any], idempotency_key: str, parent: tuple[str, str, int] | None = None,
                    concurrency_key: str | None = None, trace_parent: str = "",
                    scheduled_time: datetime | None = None,
                    disabled_steps: Sequence[str] = ()) -> tuple[sql.WorkflowRunRow, bool, Changes]:
    """Inside the caller's transaction: a new run and its first move. (run, repeat, changes). `parent`: the
    run, step run and depth of a child run; `concurrency_key`: the run's key when its workflow limits runs;
    `scheduled_time`: when its steps start (None, or a time past by the database's clock: now);
    `disabled_steps`: steps skipped when they would run."""
    plan = await plans.get(conn, workflow_id, version)
    parent_run, parent_step, depth = parent or (None, None, 0)
    if scheduled_time is not None and not await conn.fetchval(sql.IS_FUTURE, scheduled_time):
        scheduled_time = None  # due already: starts now, like any run
    # A scheduled run takes its concurrency slot (or waits for one) when its time comes, not now.
    admitted = (Admission(sql.SCHEDULED, why=f"starts at {scheduled_time.isoformat()}")
                if scheduled_time is not None else await _admit(conn, plan, workflow_id, concurrency_key))
    row = await conn.fetchrow(sql.INSERT_RUN, ids.new_id("wfr"), project_id, workflow_id, version, run_input,
                              idempotency_key, len(plan.order), parent_run, parent_step, depth,
                              sql.RUNNING if admitted.status == sql.CANCELED else admitted.status,
                              concurrency_key, trace_parent, scheduled_time, list(dict.fromkeys(disabled_steps)))
    if row is None:
        existing = await conn.fetchrow(sql.BY_KEY, workflow_id, idempotency_key)
        return sql.run_row(existing), True, Changes()
    run = sql.run_row(row)
    changes = await _apply(conn, plans, run, plan, admitted, "")
    return sql.run_row(await conn.fetchrow(sql.GET_RUN, run.id, project_id)), False, changes


async def start_scheduled(conn: sql.Conn, plans: Plans, run: sql.WorkflowRunRow) -> Changes:
    """Inside the caller's transaction, which holds the scheduled run's row lock: its time came, and it is
    admitted as a new run is now (it starts, waits queued for a concurrency slot, or is canceled)."""
    plan = await plans.get(conn, run.workflow_id, run.version)
    admitted = await _admit(conn, plan, run.workflow_id, run.concurrency_key)
    return await _apply(conn, plans, run, plan, admitted, sql.SCHEDULED)


@dataclass(frozen=True)
class Admission:
    """What a run's concurrency limit makes of it: running, queued, canceled (CANCEL_NEWEST) or, for a run
    not due yet, scheduled; and the runs it cancels (CANCEL_IN_PROGRESS)."""

    status: str
    to_cancel: tuple[str, ...] = ()
    why: str = ""


async def _admit(conn: sql.Conn, plan: Plan, workflow_id: str, concurrency_key: str | None) -> Admission:
    """A run about to start, by its workflow's concurrency limit; the key's lock is held until commit."""
    limit = plan.concurrency if concurrency_key is not None else None
    if limit is None:
        return Admission(sql.RUNNING)
    assert concurrency_key is not None
    await conn.execute(sql.LOCK_CONCURRENCY_KEY, workflow_id, concurrency_key)
    holding = [r["id"] for r in await conn.fetch(sql.HOLDING_SLOTS, workflow_id, concurrency_key)]
    over = len(holding) - limit.max_runs + 1
    if over <= 0:
        return Admission(sql.RUNNING)
    if limit.strategy is Strategy.QUEUE:
        return Admission(sql.QUEUED, why=f"waiting for one of {limit.max_runs} slots of key {concurrency_key!r}")
    if limit.strategy is Strategy.CANCEL_IN_PROGRESS:
        return Admission(sql.RUNNING, tuple(holding[:over]))
    return Admission(sql.CANCELED,
                     why=f"the workflow runs at most {limit.max_runs} at once for key {concurrency_key!r}")


async def _apply(conn: sql.Conn, plans: Plans, run: sql.WorkflowRunRow, plan: Plan, admitted: Admission,
                 from_status: str) -> Changes:
    """The first move of a run as admitted: a run just written with the admitted status (`from_status` ''), or
    a scheduled run whose time came (`from_status` 'scheduled')."""
    changes = Changes(workflow_runs={run.id})
    for old in admitted.to_cancel:
        changes.add(await cancel_if_open(conn, plans, old, f"a newer run {run.id} took its concurrency slot"))
    move = Move(conn, run, plan, [], plans)
    if admitted.status == sql.CANCELED:
        await move.cancel(admitted.why)
    elif admitted.status in (sql.QUEUED, sql.SCHEDULED):
        if from_status:
            await conn.execute(sql.SET_RUN_STATUS, run.id, admitted.status)
        await move.hold(from_status, admitted.status, admitted.why)
    else:
        if from_status:
            await conn.execute(sql.SET_RUN_STATUS, run.id, sql.RUNNING)
        move = await begin(conn, plans, dataclasses.replace(run, status=sql.RUNNING), plan, from_status)
    changes.add(move.changes)
    return changes


async def begin(conn: sql.Conn, plans: Plans, run: sql.WorkflowRunRow, plan: Plan, from_status: str = "") -> Move:
    """The run's steps, its deadline, and its first move."""
    if plan.timeout_ms:
        await conn.execute(sql.SET_DEADLINE, run.id, plan.timeout_ms)
    step_ids = ids.new_ids("wfs", len(plan.order))
    await conn.execute(sql.INSERT_STEPS, run.id, step_ids, plan.order,
                       [len(plan.steps[ref].parents) for ref in plan.order])
    move = Move(conn, run, plan, await _states(conn, run.id), plans)
    move.changes.timers = bool(plan.timeout_ms)
    await move.start(from_status)
    return move


async def cancel_if_open(conn: sql.Conn, plans: Plans, run_id: str, reason: str) -> Changes:
    """Inside the caller's transaction: the run, if it has not ended, ends canceled (with its children)."""
    locked = await conn.fetchrow(sql.LOCK_RUNS, [run_id])
    if locked is None or locked["status"] not in sql.OPEN:
        return Changes()
    run = sql.run_row(locked)
    move = Move(conn, run, await plans.get(conn, run.workflow_id, run.version), await _states(conn, run.id), plans)
    await move.cancel(reason)
    return move.changes


async def locked_move(conn: sql.Conn, plans: Plans, *, project_id: str, run_id: str, reopen: bool = False) -> Move:
    """Inside the caller's transaction: the open run, locked, ready to move (NOT_FOUND; FAILED_PRECONDITION
    when it ended, unless `reopen` and it completed or failed)."""
    locked = await conn.fetchrow(sql.LOCK_RUNS, [run_id])
    if locked is None or locked["project_id"] != project_id:
        raise NotFound("workflow run", run_id)
    run = sql.run_row(locked)
    if not (reopen and run.status in sql.REOPENABLE):
        sql.require_open(run)
    plan = await plans.get(conn, run.workflow_id, run.version)
    return Move(conn, run, plan, await _states(conn, run.id), plans)


async def cancel_run(conn: sql.Conn, plans: Plans, *, project_id: str, run_id: str, reason: str) -> Changes:
    """Inside the caller's transaction: the run, its open steps and their job runs end canceled."""
    move = await locked_move(conn, plans, project_id=project_id, run_id=run_id)
    await move.cancel(reason)
    return move.changes
