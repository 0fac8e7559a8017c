"""What the workflow pages show of definitions and runs: a step's kind in words, a map step's counts, and the
drawings of a definition or of a run (graph.Node lists laid out and rendered as SVG markup)."""

from __future__ import annotations

from collections.abc import Callable

from markupsafe import Markup

from strait_client._steps import Step
from strait_client._workflow_models import Workflow
from strait_client._workflow_run_models import MapCounts, WorkflowRunGraph
from strait_server.console import graph
from strait_server.console.web import STATUS_TONES, duration


def counts(value: MapCounts | None) -> str:
    """A map step's instances as "done/total, failed"."""
    return f"{value.done}/{value.total} done, {value.failed} failed" if value is not None else ""


def kind_of(step: Step) -> str:
    kind = (step.kind or "").replace("_", " ")
    return f"{kind} · map" if step.map is not None else kind


def target(step: Step) -> str:
    """What a step runs or waits for, in a few words."""
    if step.job is not None:
        return f"job {step.job.job_slug or step.job.job_id}"
    if step.sub_workflow is not None:
        return f"workflow {step.sub_workflow.workflow_slug or step.sub_workflow.workflow_id}"
    if step.approval is not None:
        who = ", ".join(step.approval.approvers) or "any key of the project"
        return f"decided by {who}" + (f", times out after {duration(step.approval.timeout)}"
                                      if step.approval.timeout else "")
    if step.wait_for_event is not None:
        return f"event {step.wait_for_event.event_key_template}"
    if step.sleep is not None:
        return f"sleep {duration(step.sleep.duration)}" if step.sleep.duration else \
            f"sleep until {step.sleep.until_template}"
    return ""


def definition_steps(workflow: Workflow) -> list[tuple[Step, bool]]:
    """The steps of a definition, each with whether it is the on-failure step (drawn and listed last)."""
    steps = [(s, False) for s in workflow.steps]
    if workflow.on_failure_step is not None:
        steps.append((workflow.on_failure_step, True))
    return steps


def definition_drawing(workflow: Workflow, ident: str, href: Callable[[str], str]) -> Markup:
    """A version of a workflow as a graph; each step links to `href(ref)`."""
    steps = definition_steps(workflow)
    nodes = [graph.Node(s.ref, kind_of(s) + (" · on failure" if on_failure else ""), "idle", href=href(s.ref))
             for s, on_failure in steps]
    edges = [(parent, s.ref) for s, _ in steps for parent in s.depends_on]
    plan = graph.layout([n.ref for n in nodes], edges)
    title = f"{workflow.slug}, version {workflow.version}"
    return Markup(graph.svg(plan, nodes, title, ident))  # graph.svg escapes every text it draws


def run_nodes(run_graph: WorkflowRunGraph) -> list[graph.Node]:
    run_id = run_graph.workflow_run_id
    return [graph.Node(n.step_ref, n.kind.replace("_", " "), STATUS_TONES.get(str(n.status or ""), "idle"),
                       str(n.status or "unknown"), counts(n.map_counts),
                       f"/workflow-runs/{run_id}/steps/{n.step_ref}") for n in run_graph.nodes]


def run_layout(run_graph: WorkflowRunGraph) -> graph.Layout:
    """The layout of a run's steps: it never changes during the run, so a live view computes it once."""
    return graph.layout([n.step_ref for n in run_graph.nodes], [(e.parent, e.child) for e in run_graph.edges])


def run_drawing(run_graph: WorkflowRunGraph, plan: graph.Layout | None = None) -> Markup:
    plan = plan or run_layout(run_graph)
    svg = graph.svg(plan, run_nodes(run_graph), f"Steps of {run_graph.workflow_run_id}", "wfr-drawing")
    return Markup(svg)  # graph.svg escapes every text it draws
