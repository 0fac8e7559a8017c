"""Every public method of the client documents its arguments, its result and, for calls, its errors."""

from __future__ import annotations

import inspect

import pytest

import strait_client
from strait_client._circuits import AsyncCircuits, Circuits
from strait_client._events import AsyncEvents, Events
from strait_client._jobs import AsyncJobs, Jobs
from strait_client._projects import AsyncProjects, Projects
from strait_client._runs import AsyncRuns, Runs
from strait_client._schedules import AsyncSchedules, Schedules
from strait_client._workflow_runs import AsyncWorkflowRuns, WorkflowRuns
from strait_client._workflows import AsyncWorkflows, Workflows

# Classes whose methods call the server: each documents what it raises.
CALLERS = {Jobs, AsyncJobs, Runs, AsyncRuns, Projects, AsyncProjects, Schedules, AsyncSchedules, Circuits,
           AsyncCircuits, Workflows, AsyncWorkflows, WorkflowRuns, AsyncWorkflowRuns, Events, AsyncEvents,
           strait_client.Client, strait_client.AsyncClient, strait_client.RunContext, strait_client.AsyncRunContext}
EXPORTED = {obj for name in strait_client.__all__ if inspect.isclass(obj := getattr(strait_client, name))
            and not issubclass(obj, Exception)}


def _methods() -> list[tuple[type, str]]:
    out = []
    for cls in sorted(EXPORTED | CALLERS, key=lambda c: c.__name__):
        for name, member in vars(cls).items():
            if name.startswith("_") or isinstance(member, property):
                continue
            if isinstance(member, classmethod | staticmethod) or inspect.isfunction(member):
                out.append((cls, name))
    return out


@pytest.mark.parametrize(("cls", "name"), _methods(), ids=lambda x: getattr(x, "__name__", x))
def test_public_methods_are_documented(cls: type, name: str) -> None:
    function = getattr(cls, name)
    doc = inspect.getdoc(function) or ""
    assert doc, f"{cls.__name__}.{name} has no docstring"
    signature = inspect.signature(function)
    if [p for p in signature.parameters if p not in ("self", "cls")]:
        assert "Args:" in doc, f"{cls.__name__}.{name}: no Args section"
    if signature.return_annotation not in ("None", None, inspect.Signature.empty):
        assert "Returns:" in doc, f"{cls.__name__}.{name}: no Returns section"
    if cls in CALLERS and name != "close":
        assert "Raises:" in doc, f"{cls.__name__}.{name}: no Raises section"
