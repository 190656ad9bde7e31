"""The layered layout of a flow graph without offsets (pure: no I/O).

Longest-path layering from the root after a depth-first search sets the back edges (loops)
aside, then barycentre sweeps order each layer by the mean position of its neighbours in
the layer above (going down) or below (going up), which removes most crossings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, Protocol

SWEEPS: Final = 4  # barycentre passes (down and up)


class Box(Protocol):
    name: str
    x: float
    y: float
    width: int
    height: int


def layered(
    nodes: Sequence[Box], pairs: Sequence[tuple[str, str]], root: str, gap_x: float, gap_y: float
) -> None:
    """Place nodes in layers (top to bottom), ordered within each to shorten edges."""
    names = [n.name for n in nodes]
    forward = _acyclic(names, pairs, root)
    layer = _longest_path_layers(names, forward)
    rows: dict[int, list[str]] = {}
    for name in names:
        rows.setdefault(layer[name], []).append(name)
    order = [rows[i] for i in sorted(rows)]
    _barycentre(order, forward)
    widest = max((len(row) for row in order), default=0)
    step_x = max((n.width for n in nodes), default=0) + gap_x
    step_y = max((n.height for n in nodes), default=0) + gap_y
    by_name = {n.name: n for n in nodes}
    for depth, row in enumerate(order):
        shift = (widest - len(row)) * step_x / 2
        for index, name in enumerate(row):
            node = by_name[name]
            node.x = shift + index * step_x
            node.y = depth * step_y


def _acyclic(
    names: Sequence[str], pairs: Sequence[tuple[str, str]], root: str
) -> list[tuple[str, str]]:
    """The edges minus the back edges of a depth-first search from root (then the rest)."""
    out: dict[str, list[str]] = {name: [] for name in names}
    for source, target in pairs:
        if source != target:
            out[source].append(target)
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    forward: list[tuple[str, str]] = []
    starts = [root] if root in out else []
    starts += [n for n in names if n != root]
    for start in starts:
        if start in state:
            continue
        state[start] = 1
        stack = [(start, iter(out[start]))]
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
            elif state.get(child) == 1:
                continue  # a back edge: a loop, drawn but not layered
            else:
                forward.append((node, child))
                if child not in state:
                    state[child] = 1
                    stack.append((child, iter(out[child])))
    return forward


def _longest_path_layers(
    names: Sequence[str], forward: Sequence[tuple[str, str]]
) -> dict[str, int]:
    incoming = {name: 0 for name in names}
    out: dict[str, list[str]] = {name: [] for name in names}
    for source, target in forward:
        out[source].append(target)
        incoming[target] += 1
    layer = {name: 0 for name in names}
    ready = [name for name in names if incoming[name] == 0]
    while ready:
        node = ready.pop()
        for child in out[node]:
            layer[child] = max(layer[child], layer[node] + 1)
            incoming[child] -= 1
            if incoming[child] == 0:
                ready.append(child)
    return layer


def _barycentre(order: list[list[str]], forward: Sequence[tuple[str, str]]) -> None:
    parents: dict[str, list[str]] = {}
    children: dict[str, list[str]] = {}
    for source, target in forward:
        parents.setdefault(target, []).append(source)
        children.setdefault(source, []).append(target)
    for sweep in range(SWEEPS):
        down = sweep % 2 == 0
        indices = range(1, len(order)) if down else range(len(order) - 2, -1, -1)
        for i in indices:
            fixed = order[i - 1] if down else order[i + 1]
            _order_row(order[i], fixed, parents if down else children)


def _order_row(row: list[str], fixed: Sequence[str], links: Mapping[str, list[str]]) -> None:
    """Sort a layer by the mean position of each node's links in the neighbouring layer."""
    position = {name: p for p, name in enumerate(fixed)}
    current = {name: p for p, name in enumerate(row)}

    def key(name: str) -> float:
        near = [position[n] for n in links.get(name, ()) if n in position]
        return sum(near) / len(near) if near else float(current[name])

    row.sort(key=key)
