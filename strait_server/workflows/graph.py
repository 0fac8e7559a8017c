"""The shape of a workflow's DAG: an order that runs every step after its parents, cycles, ancestors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class Cycle(Exception):
    """depends_on forms a cycle; `path` walks it (first ref repeated at the end)."""

    def __init__(self, path: list[str]) -> None:
        super().__init__(" -> ".join(path))
        self.path = path


def topological_order(parents: Mapping[str, Sequence[str]]) -> list[str]:
    """Refs ordered so that every step comes after the steps it depends on (ties in definition order).
    `parents` maps each ref to the refs it depends on, all of which are keys. Raises Cycle."""
    children: dict[str, list[str]] = {ref: [] for ref in parents}
    waiting = {ref: len(set(deps)) for ref, deps in parents.items()}
    for ref, deps in parents.items():
        for parent in set(deps):
            children[parent].append(ref)
    ready = [ref for ref, n in waiting.items() if n == 0]
    order: list[str] = []
    while ready:
        ref = ready.pop(0)
        order.append(ref)
        for child in children[ref]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    if len(order) < len(parents):
        raise Cycle(_a_cycle(parents, set(parents) - set(order)))
    return order


def _a_cycle(parents: Mapping[str, Sequence[str]], left: set[str]) -> list[str]:
    """One cycle among the refs no order could place (each of them has a parent among them)."""
    start = min(left)
    seen: dict[str, int] = {}
    path: list[str] = []
    ref = start
    while ref not in seen:
        seen[ref] = len(path)
        path.append(ref)
        ref = min(p for p in parents[ref] if p in left)
    return [*path[seen[ref]:], ref]


def ancestors(parents: Mapping[str, Sequence[str]]) -> dict[str, frozenset[str]]:
    """Every ref's transitive parents. `parents` must be acyclic."""
    out: dict[str, frozenset[str]] = {}
    for ref in topological_order(parents):
        found: set[str] = set()
        for parent in parents[ref]:
            found.add(parent)
            found |= out[parent]
        out[ref] = frozenset(found)
    return out
