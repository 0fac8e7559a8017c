"""The console's workflow drawings (strait_server.console.graph), without a server: layers, crossings, routes
of long edges, wrapping of wide layers, the SVG's accessible parts, and the bounds for 1,000 steps."""

from __future__ import annotations

import re
import time
from itertools import combinations
from xml.etree import ElementTree

from strait_server.console import graph
from strait_server.console.graph import NODE_H, NODE_W, Layout, Node, layout, svg

SVG_NS = "{http://www.w3.org/2000/svg}"
ORDERS = ["validate", "risk", "charge", "review", "ship"]
ORDERS_EDGES = [("validate", "risk"), ("risk", "charge"), ("risk", "review"), ("charge", "ship"), ("review", "ship")]


def crossings(plan: Layout, edges: list[tuple[str, str]]) -> int:
    """Pairs of edges between the same two rows whose ends are in opposite orders."""
    def ends(edge: tuple[str, str]) -> tuple[int, int, int, int]:
        (px, py), (cx, cy) = plan.boxes[edge[0]], plan.boxes[edge[1]]
        return py, cy, px, cx
    count = 0
    for a, b in combinations(edges, 2):
        (ay, acy, apx, acx), (by, bcy, bpx, bcx) = ends(a), ends(b)
        if (ay, acy) == (by, bcy) and (apx - bpx) * (acx - bcx) < 0:
            count += 1
    return count


def overlaps(plan: Layout) -> list[tuple[str, str]]:
    boxes = list(plan.boxes.items())
    return [(a, b) for (a, (ax, ay)), (b, (bx, by)) in combinations(boxes, 2)
            if abs(ax - bx) < NODE_W and abs(ay - by) < NODE_H]


def test_each_step_is_drawn_below_its_deepest_parent() -> None:
    plan = layout(ORDERS, ORDERS_EDGES)
    y = {ref: plan.boxes[ref][1] for ref in ORDERS}
    assert y["validate"] < y["risk"] < y["charge"] == y["review"] < y["ship"]
    assert not overlaps(plan)
    # A step that also depends on a root goes below its deepest parent, not next to the root's children.
    deep = layout(["a", "b", "c"], [("a", "b"), ("b", "c"), ("a", "c")])
    assert deep.boxes["a"][1] < deep.boxes["b"][1] < deep.boxes["c"][1]


def test_barycenter_sweeps_undo_the_crossings_of_the_definition_order() -> None:
    # Listed so that each child sits under the other child's parent: drawn as listed, every edge would cross.
    refs = ["a", "b", "c", "x", "y", "z"]
    edges = [("a", "z"), ("b", "y"), ("c", "x")]
    plan = layout(refs, edges)
    assert crossings(plan, edges) == 0
    xs = {ref: plan.boxes[ref][0] for ref in refs}
    assert xs["z"] < xs["y"] < xs["x"]  # the children follow their parents' order


def test_a_long_edge_runs_through_a_placeholder_beside_the_steps_in_between() -> None:
    plan = layout(["a", "b", "c"], [("a", "b"), ("b", "c"), ("a", "c")])
    long_route = next(r for r in plan.routes if len(r) > 2)
    assert len(long_route) == 4  # a's bottom, the placeholder's top and bottom in b's layer, c's top
    (_, top), (x, _) = long_route[1], long_route[1]
    bx, by = plan.boxes["b"]
    assert top == by and not bx <= x <= bx + NODE_W  # beside b, not through it
    assert long_route[0] == (plan.boxes["a"][0] + NODE_W // 2, plan.boxes["a"][1] + NODE_H)
    assert long_route[-1] == (plan.boxes["c"][0] + NODE_W // 2, plan.boxes["c"][1])


def test_a_wide_layer_wraps_so_that_the_drawing_keeps_a_readable_width() -> None:
    refs = ["root", *[f"s{i}" for i in range(40)]]
    plan = layout(refs, [("root", f"s{i}") for i in range(40)])
    assert plan.width <= graph.MAX_ROW_W + 2 * graph.MARGIN
    rows = {plan.boxes[f"s{i}"][1] for i in range(40)}
    assert len(rows) > 1 and not overlaps(plan)
    assert min(rows) > plan.boxes["root"][1]


def test_unknown_refs_self_edges_and_cycles_do_not_break_the_drawing() -> None:
    plan = layout(["a", "b", "c"], [("a", "b"), ("a", "nope"), ("b", "b"), ("b", "c"), ("c", "b")])
    assert set(plan.boxes) == {"a", "b", "c"} and not overlaps(plan)
    assert all(len(r) >= 2 for r in plan.routes)


def test_the_svg_has_a_linked_titled_node_per_step_an_edge_per_dependency_and_a_description() -> None:
    nodes = [Node("validate", "job", "ok", "completed", href="/workflow-runs/wfr_1/steps/validate"),
             Node("risk", "job", "busy", "running", href="/workflow-runs/wfr_1/steps/risk"),
             Node("charge", "job", "bad", "failed", "3/10 done, 1 failed", href="/workflow-runs/wfr_1/steps/charge"),
             Node("review", "approval", "idle", "waiting", href="/workflow-runs/wfr_1/steps/review"),
             Node("ship", "job", "muted", "skipped", href="/workflow-runs/wfr_1/steps/ship?a=1&b=<2>")]
    text = svg(layout(ORDERS, ORDERS_EDGES), nodes, "Steps of wfr_1", "run")
    root = ElementTree.fromstring(text)  # well-formed XML: every text and link is escaped
    assert root.get("aria-labelledby") == "run-title" and root.find(f"{SVG_NS}title").text == "Steps of wfr_1"
    desc = root.find(f"{SVG_NS}desc").text
    assert desc.startswith("5 steps and 5 dependencies") and "1 running" in desc and "1 skipped" in desc
    links = root.findall(f"{SVG_NS}a")
    assert [a.get("href") for a in links] == [n.href for n in nodes]
    titles = [a.find(f"{SVG_NS}title").text for a in links]
    assert titles[2] == "charge, job, failed, 3/10 done, 1 failed"
    groups = [a.find(f"{SVG_NS}g") for a in links]
    assert [g.get("class") for g in groups] == ["node ok", "node busy", "node bad", "node idle", "node muted"]
    assert all(g.find(f"{SVG_NS}rect") is not None for g in groups)
    assert [t.text for t in groups[2].findall(f"{SVG_NS}text")] == ["charge", "job · failed", "3/10 done, 1 failed"]
    assert len(root.findall(f".//{SVG_NS}path[@class='edge']")) == 5


def test_a_definition_without_links_draws_plain_nodes_and_long_names_are_shortened() -> None:
    name = "a_step_with_a_very_long_name_indeed"
    text = svg(layout([name], []), [Node(name, "sleep")], "v1", "v1")
    root = ElementTree.fromstring(text)
    node = root.find(f"{SVG_NS}g[@class='node idle']")
    assert node is not None and node.find(f"{SVG_NS}title").text == f"{name}, sleep"
    label = node.find(f"{SVG_NS}text").text
    assert label.endswith("…") and len(label) == graph.LABEL_CHARS and "1 step and 0 dependencies" in text


def test_a_thousand_steps_draw_in_bounded_time_and_size() -> None:
    shapes = {
        # Fan-out and fan-in: one root, 998 steps in parallel, one join.
        "fan": [("s0", f"s{i}") for i in range(1, 999)] + [(f"s{i}", "s999") for i in range(1, 999)],
        # A chain whose every step also depends on the root: long edges of every length.
        "chain": [(f"s{i}", f"s{i + 1}") for i in range(999)] + [("s0", f"s{i}") for i in range(2, 1000)],
        # Each step depends on the twenty before it: more dependencies than are drawn.
        "dense": [(f"s{i}", f"s{j}") for j in range(1000) for i in range(max(0, j - 20), j)],
    }
    refs = [f"s{i}" for i in range(1000)]
    nodes = [Node(r, "job", "busy", "running", "", f"/workflow-runs/wfr_06h4w0jq75ct3wn3tnpqv605/steps/{r}")
             for r in refs]
    for name, edges in shapes.items():
        best = float("inf")
        for _ in range(3):  # this thread's CPU time, the best of three: other busy processes do not count
            started = time.thread_time()
            text = svg(layout(refs, edges), nodes, name, name)
            best = min(best, time.thread_time() - started)
        assert best < 0.1, f"{name}: {best * 1000:.0f} ms"
        assert len(text) < 1_000_000, f"{name}: {len(text)} bytes"
        assert len(re.findall(r'class="node ', text)) == 1000
        assert len(re.findall(r'class="edge"', text)) == min(len(edges), graph.MAX_EDGES)
    assert "not drawn" in svg(layout(refs, shapes["dense"]), nodes, "dense", "dense")
