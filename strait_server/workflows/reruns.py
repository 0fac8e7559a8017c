"""Running steps again (RetryWorkflowStep, ReplayWorkflowSubtree): which steps start over, and what their
parents' outcomes count for them then. Pure functions over a plan and the steps' statuses."""

from __future__ import annotations

from collections.abc import Mapping

from strait_server.workflows.plan import FINISHED, Plan, Policy, StepStatus

RETRYABLE = frozenset({StepStatus.FAILED, StepStatus.CANCELED})


def descendants(plan: Plan, ref: str) -> list[str]:
    """The step's transitive children, in the plan's order."""
    found: set[str] = set()
    todo = [ref]
    while todo:
        for child in plan.steps[todo.pop()].children:
            if child not in found:
                found.add(child)
                todo.append(child)
    return [r for r in plan.order if r in found]


def retry_set(plan: Plan, statuses: Mapping[str, str], errors: Mapping[str, str], ref: str) -> list[str]:
    """A failed or canceled step, with what its failure kept from completing: its descendants that did not
    complete, and the steps canceled because it failed (FAIL_WORKFLOW), with theirs."""
    collateral = f"canceled: step {ref!r} failed"
    roots = [ref] + [r for r in plan.order if statuses.get(r) == StepStatus.CANCELED
                     and errors.get(r, "").startswith(collateral)]
    chosen: set[str] = set(roots)
    for root in roots:
        chosen.update(d for d in descendants(plan, root) if statuses.get(d) != StepStatus.COMPLETED)
    return [r for r in plan.order if r in chosen]


def replay_set(plan: Plan, ref: str) -> list[str]:
    """The step and every step after it, whatever they did; other branches and ancestors keep theirs."""
    return [ref, *descendants(plan, ref)]


def counts_from_parents(plan: Plan, statuses: Mapping[str, str], ref: str) -> tuple[int, int, int, int]:
    """(done, ok, failed, skipped) of the step's parents as they stand (steps started over count as not done)."""
    done = ok = failed = skipped = 0
    for parent in plan.steps[ref].parents:
        status = statuses.get(parent, StepStatus.PENDING)
        if status not in FINISHED:
            continue
        done += 1
        if status == StepStatus.COMPLETED or plan.steps[parent].policy is Policy.IGNORE:
            ok += 1
        elif status == StepStatus.SKIPPED:
            skipped += 1
        else:
            failed += 1
    return done, ok, failed, skipped


def open_and_failed(plan: Plan, statuses: Mapping[str, str]) -> tuple[int, int]:
    """The run's counts as they stand: steps not finished, and steps failed or canceled that fail the run."""
    open_steps = sum(1 for s in statuses.values() if s not in FINISHED)
    failed = sum(1 for ref, s in statuses.items() if s in RETRYABLE and ref in plan.steps
                 and plan.steps[ref].policy is not Policy.IGNORE)
    return open_steps, failed
