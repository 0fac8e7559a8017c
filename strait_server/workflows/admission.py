"""Workflow concurrency: which runs of a workflow may run at once (`concurrency.max_runs` per key), and what
happens to the others by the workflow's strategy: QUEUE (they wait, started oldest first as slots free up),
CANCEL_IN_PROGRESS (the oldest running ones are canceled to make room), CANCEL_NEWEST (the new run is
canceled at once)."""

from __future__ import annotations

import json
from typing import Any

from strait_server.errors import Violations
from strait_server.workflows import expressions
from strait_server.workflows.plan import Plan


def key_of(plan: Plan, run_input: dict[str, Any], path: str = "input_json") -> str | None:
    """The run's concurrency key (None: the workflow sets no limit). INVALID_ARGUMENT on `path` when the
    key's expression cannot be evaluated on this input."""
    if plan.concurrency is None:
        return None
    if not plan.concurrency.key:
        return ""
    try:
        value = expressions.evaluate(plan.concurrency.key, {**run_input, "input": run_input})
    except expressions.EvaluationError as exc:
        v = Violations()
        v.add(path, f"the workflow's concurrency key cannot be computed from it: {exc}")
        v.raise_if_any()
        raise AssertionError("unreachable") from exc
    return value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
