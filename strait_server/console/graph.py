"""Workflow graphs drawn on the server as SVG.

The layout is layered, top to bottom: a step sits one layer below its deepest parent (longest path from the
roots), and the steps of a layer are ordered by a few barycenter sweeps (each step moves towards the mean
position of its neighbours in the layer above, then below) to reduce crossings. An edge that spans several
layers passes through a narrow placeholder in each layer in between, so that it is ordered like a step and
runs between the boxes rather than through them. A layer wider than the drawing wraps onto several rows.

`layout` depends only on the steps and their edges, so a live view computes it once and redraws only the
statuses with `svg`. Both are bounded for the largest definitions (1,000 steps): placeholders and drawn edges
have budgets, and the drawing's width is capped.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from itertools import pairwise

NODE_W, NODE_H = 168, 54
PLACEHOLDER_W = 12
H_GAP, ROW_GAP, LAYER_GAP = 24, 18, 44
MARGIN = 16
MAX_ROW_W = 1100  # a wider layer wraps: the drawing stays readable when scaled to a page
SWEEPS = 2
MAX_PLACEHOLDERS = 2000
MAX_EDGES = 5000
LABEL_CHARS = 22

Point = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Node:
    """A step as drawn: `tone` is a CSS class (ok, bad, busy, idle, muted); `status` is empty for a definition;
    `counts` is a map step's "done/total, failed"; `href` is where the node links (its step's details)."""

    ref: str
    kind: str
    tone: str = "idle"
    status: str = ""
    counts: str = ""
    href: str = ""


@dataclass(frozen=True, slots=True)
class Layout:
    """Where each step's box goes (its top-left corner), each drawn edge's route (from the parent's bottom,
    through its placeholders, to the child's top), the drawing's size, and how many edges were not drawn."""

    boxes: dict[str, Point]
    routes: tuple[tuple[Point, ...], ...]
    width: int
    height: int
    undrawn_edges: int = 0


def layout(refs: Sequence[str], edges: Sequence[tuple[str, str]]) -> Layout:
    """The layout of steps `refs` (in definition order) with `edges` (parent, child)."""
    index: dict[str, int] = {}
    for ref in refs:
        index.setdefault(ref, len(index))
    pairs = _pairs(index, edges)
    layer_of = _layers(len(index), pairs)
    pairs = [(p, c) for p, c in pairs if layer_of[p] < layer_of[c]]  # defensive: a cycle is never drawn
    drawn, undrawn = pairs[:MAX_EDGES], len(pairs) - min(len(pairs), MAX_EDGES)
    grid = _Grid(layer_of)
    chains = [grid.chain(p, c) for p, c in drawn]
    grid.order()
    boxes, centers, width, height = grid.place()
    routes = tuple(_route(chain, boxes, centers) for chain in chains)
    return Layout({ref: boxes[i] for ref, i in index.items()}, routes, width, height, undrawn)


def _pairs(index: dict[str, int], edges: Sequence[tuple[str, str]]) -> list[tuple[int, int]]:
    """The edges between known steps as (parent, child) indexes, each once, without self-loops."""
    pairs = []
    known = index.get
    for parent, child in dict.fromkeys(edges):  # each once, in order
        p, c = known(parent), known(child)
        if p is not None and c is not None and p != c:
            pairs.append((p, c))
    return pairs


def _layers(count: int, pairs: list[tuple[int, int]]) -> list[int]:
    """Longest-path layers from the roots (Kahn's order); steps on a cycle go below everything else."""
    children: list[list[int]] = [[] for _ in range(count)]
    waiting = [0] * count
    for parent, child in pairs:
        children[parent].append(child)
        waiting[child] += 1
    layer = [0] * count
    ready = [i for i in range(count) if waiting[i] == 0]
    seen = 0
    while ready:
        step = ready.pop()
        seen += 1
        below = layer[step] + 1
        for child in children[step]:
            if layer[child] < below:
                layer[child] = below
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    if seen < count:
        bottom = max(layer, default=0) + 1
        layer = [bottom if waiting[i] else layer[i] for i in range(count)]
    return layer


class _Grid:
    """Slots by layer: a slot is a step (0..n-1, in definition order) or a placeholder of a long edge (n, n+1,
    ...)."""

    def __init__(self, layer_of: list[int]) -> None:
        self.steps = len(layer_of)
        self.layer_of = layer_of
        self.layers: list[list[int]] = [[] for _ in range(max(layer_of, default=-1) + 1)]
        for i, layer in enumerate(layer_of):
            self.layers[layer].append(i)
        self.up: dict[int, list[int]] = defaultdict(list)
        self.down: dict[int, list[int]] = defaultdict(list)
        self.placeholders = 0

    def chain(self, p: int, c: int) -> list[int]:
        """The slots an edge passes: its parent, a placeholder per layer in between (while the budget lasts),
        its child. Consecutive slots of a chain are neighbours for the ordering."""
        span = self.layer_of[c] - self.layer_of[p]
        if span > 1 and self.placeholders + span - 1 > MAX_PLACEHOLDERS:
            return [p, c]  # drawn straight; too many long edges to route them all
        chain = [p]
        for layer in range(self.layer_of[p] + 1, self.layer_of[c]):
            slot = self.steps + self.placeholders
            self.placeholders += 1
            self.layers[layer].append(slot)
            chain.append(slot)
        chain.append(c)
        if span == 1 or len(chain) > 2:
            for upper, lower in pairwise(chain):
                self.down[upper].append(lower)
                self.up[lower].append(upper)
        return chain

    def order(self) -> None:
        """Barycenter sweeps, down then up: a slot moves to the mean position of its neighbours in the layer
        it is compared with; one without neighbours there keeps its position (ties keep the current order)."""
        position = {slot: i for layer in self.layers for i, slot in enumerate(layer)}
        for _ in range(SWEEPS):
            for i in range(1, len(self.layers)):
                self._sort(i, self.up, position)
            for i in range(len(self.layers) - 2, -1, -1):
                self._sort(i, self.down, position)

    def _sort(self, i: int, neighbours: dict[int, list[int]], position: dict[int, int]) -> None:
        def barycenter(slot: int) -> tuple[float, int]:
            near = neighbours.get(slot)
            mean = sum(position[n] for n in near) / len(near) if near else float(position[slot])
            return mean, position[slot]

        self.layers[i].sort(key=barycenter)
        for at, slot in enumerate(self.layers[i]):
            position[slot] = at

    def width_of(self, slot: int) -> int:
        return NODE_W if slot < self.steps else PLACEHOLDER_W

    def place(self) -> tuple[dict[int, Point], dict[int, int], int, int]:
        """The top-left corner and the x centre of every slot, and the drawing's size. A layer wraps into rows
        of at most MAX_ROW_W; each row is centred."""
        wrapped = [self._wrap(layer) for layer in self.layers]
        width = max((self._row_width(row) for rows in wrapped for row in rows), default=NODE_W) + 2 * MARGIN
        boxes: dict[int, Point] = {}
        centers: dict[int, int] = {}
        y = MARGIN
        for rows in wrapped:
            for row in rows:
                x = (width - self._row_width(row)) // 2
                for slot in row:
                    boxes[slot] = (x, y)
                    centers[slot] = x + self.width_of(slot) // 2
                    x += self.width_of(slot) + H_GAP
                y += NODE_H + ROW_GAP
            y += LAYER_GAP - ROW_GAP
        height = max(y - LAYER_GAP + MARGIN, NODE_H + 2 * MARGIN)
        return boxes, centers, width, height

    def _row_width(self, row: list[int]) -> int:
        return sum(self.width_of(s) for s in row) + H_GAP * (len(row) - 1)

    def _wrap(self, layer: list[int]) -> list[list[int]]:
        rows: list[list[int]] = [[]]
        used = 0
        for slot in layer:
            step = self.width_of(slot) + (H_GAP if rows[-1] else 0)
            if rows[-1] and used + step > MAX_ROW_W:
                rows.append([])
                used, step = 0, self.width_of(slot)
            rows[-1].append(slot)
            used += step
        return rows


def _route(chain: list[int], boxes: dict[int, Point], centers: dict[int, int]) -> tuple[Point, ...]:
    """The points an edge passes: the parent's bottom centre, the top and bottom of each placeholder, the
    child's top centre."""
    first, last = chain[0], chain[-1]
    points = [(centers[first], boxes[first][1] + NODE_H)]
    for slot in chain[1:-1]:
        points += [(centers[slot], boxes[slot][1]), (centers[slot], boxes[slot][1] + NODE_H)]
    points.append((centers[last], boxes[last][1]))
    return tuple(points)


def _path(route: tuple[Point, ...]) -> str:
    """A curve between layers, a straight line through each placeholder."""
    (x, y), rest = route[0], route[1:]
    parts = [f"M{x} {y}"]
    for i, (nx, ny) in enumerate(rest):
        if i % 2 == 0:
            mid = (y + ny) // 2
            parts.append(f"C{x} {mid} {nx} {mid} {nx} {ny}")
        else:
            parts.append(f"L{nx} {ny}")
        x, y = nx, ny
    return "".join(parts)


def _label(text: str) -> str:
    return escape(text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS - 1] + "…")


def _node(node: Node, at: Point) -> str:
    x, y = at
    summary = " · ".join(part for part in (node.kind, node.status) if part)
    name = ", ".join(part for part in (node.ref, node.kind, node.status, node.counts) if part)
    title = f"<title>{escape(name)}</title>"
    body = (f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="6"/>'
            f'<text x="{x + 8}" y="{y + 17}">{_label(node.ref)}</text>'
            f'<text class="sub" x="{x + 8}" y="{y + 32}">{_label(summary)}</text>')
    if node.counts:
        body += f'<text class="sub" x="{x + 8}" y="{y + 46}">{_label(node.counts)}</text>'
    if not node.href:
        return f'<g class="node {escape(node.tone)}">{title}{body}</g>'
    # The link carries the title: it is the link's accessible name (and its tooltip).
    return f'<a href="{escape(node.href)}">{title}<g class="node {escape(node.tone)}">{body}</g></a>'


def describe(nodes: Sequence[Node], edges: int, undrawn: int) -> str:
    """What the drawing shows, in words: its size and how many steps are in each status."""
    text = (f"{len(nodes)} step{'s' if len(nodes) != 1 else ''} and {edges} "
            f"dependenc{'ies' if edges != 1 else 'y'}, each step drawn below the steps it depends on.")
    statuses = Counter(n.status for n in nodes if n.status)
    if statuses:
        text += " " + ", ".join(f"{count} {status}" for status, count in statuses.most_common()) + "."
    if undrawn:
        text += f" {undrawn} dependencies are not drawn (too many to show)."
    return text


def svg(plan: Layout, nodes: Sequence[Node], title: str, ident: str) -> str:
    """The drawing of `nodes` placed by `plan`; `ident` makes the ids inside it unique on the page."""
    edges = len(plan.routes) + plan.undrawn_edges
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {plan.width} {plan.height}" '
            f'width="{plan.width}" height="{plan.height}" role="group" aria-labelledby="{ident}-title" '
            f'aria-describedby="{ident}-desc">'
            f'<title id="{ident}-title">{escape(title)}</title>'
            f'<desc id="{ident}-desc">{escape(describe(nodes, edges, plan.undrawn_edges))}</desc>'
            f'<defs><marker id="{ident}-arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="8" '
            f'markerHeight="8" orient="auto"><path d="M0 0L8 4L0 8z"/></marker></defs>')
    paths = "".join(f'<path class="edge" d="{_path(route)}"/>' for route in plan.routes)
    boxes = "".join(_node(node, plan.boxes[node.ref]) for node in nodes if node.ref in plan.boxes)
    return f'{head}<g class="edges" marker-end="url(#{ident}-arrow)">{paths}</g>{boxes}</svg>'
