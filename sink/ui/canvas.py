"""A flow drawn as Studio's canvas draws it: SVG geometry computed on the server (pure: no I/O).

``draw(definition, transitions, widgets)`` places each widget at its ``properties.offset``
from the revision's definition; without a definition (or without offsets) it lays the graph
out in layers: longest-path layering from the initial state (``Trigger``) after back edges
are set aside, then barycentre ordering within the layers. Edges are cubic paths with the
label at their midpoint; their width grows with the count on a log scale, and a defined
transition never taken is drawn faint.

Names and events are attacker-influenced: they leave here as plain strings, and only the
template (autoescaped) puts them into the page.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sink.ui.layered import layered

BOX_W: Final = 200
BOX_H: Final = 64
GAP_X: Final = 60
GAP_Y: Final = 90
PAD: Final = 40
MIN_EDGE: Final = 1.0
MAX_EDGE: Final = 9.0
ENDED: Final = "Ended"  # transitioned_to when an execution ends: not a widget
TRIGGER: Final = "Trigger"


@dataclass(frozen=True, slots=True)
class Transition:
    """Observed traffic from one widget to another (a row of studio.transition_stats)."""

    source: str
    target: str
    events: tuple[str, ...]
    count: int
    median_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class WidgetStats:
    """A widget's traffic (a row of studio.widget_stats)."""

    entered: int = 0
    drop_off_share: float | None = None
    widget_type: str | None = None


@dataclass(slots=True)
class Node:
    name: str
    widget_type: str
    x: float
    y: float
    entered: int = 0
    drop_off_share: float | None = None
    defined: bool = True
    width: int = BOX_W
    height: int = BOX_H


@dataclass(slots=True)
class Edge:
    source: str
    target: str
    label: str
    count: int
    median_seconds: float | None
    path: str = ""
    label_x: float = 0.0
    label_y: float = 0.0
    stroke: float = MIN_EDGE
    faint: bool = False
    title: str = ""


@dataclass(slots=True)
class Canvas:
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    width: float = 0.0
    height: float = 0.0
    laid_out: str = "offsets"  # or "layered"


def states_of(definition: Any) -> list[Mapping[str, Any]]:
    """The definition's states that have a name (a definition is attacker-influenced JSON)."""
    if not isinstance(definition, Mapping):
        return []
    states = definition.get("states")
    if not isinstance(states, list):
        return []
    return [s for s in states if isinstance(s, Mapping) and isinstance(s.get("name"), str)]


def _offset(state: Mapping[str, Any]) -> tuple[float, float] | None:
    props = state.get("properties")
    offset = props.get("offset") if isinstance(props, Mapping) else None
    if not isinstance(offset, Mapping):
        return None
    x: Any = offset.get("x")
    y: Any = offset.get("y")
    if _finite(x) and _finite(y):
        return float(x), float(y)
    return None


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def defined_edges(states: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list[str]]:
    """(from, to) -> the events of the definition's transitions between them, in order."""
    edges: dict[tuple[str, str], list[str]] = {}
    for state in states:
        transitions = state.get("transitions")
        for t in transitions if isinstance(transitions, list) else []:
            if not isinstance(t, Mapping) or not isinstance(t.get("next"), str) or not t["next"]:
                continue
            events = edges.setdefault((state["name"], t["next"]), [])
            event = t.get("event")
            if isinstance(event, str) and event not in events:
                events.append(event)
    return edges


def draw(
    definition: Any,
    transitions: Sequence[Transition],
    widgets: Mapping[str, WidgetStats],
) -> Canvas:
    """The canvas of one revision: nodes, edges and the SVG size."""
    states = states_of(definition)
    nodes: dict[str, Node] = {}
    for state in states:
        kind = state.get("type")
        nodes.setdefault(
            state["name"], Node(state["name"], kind if isinstance(kind, str) else "?", 0, 0)
        )
    edges = _edges(defined_edges(states), transitions)
    for edge in edges:
        for name in (edge.source, edge.target):
            if name not in nodes:
                kind = TRIGGER.lower() if name == TRIGGER else "?"
                nodes[name] = Node(name, kind, 0, 0, defined=not states)
    for name, stats in widgets.items():
        node = nodes.get(name)
        if node is not None:
            node.entered = stats.entered
            node.drop_off_share = stats.drop_off_share
            if node.widget_type == "?" and stats.widget_type:
                node.widget_type = stats.widget_type
    canvas = Canvas(nodes=list(nodes.values()), edges=edges)
    offsets = {s["name"]: _offset(s) for s in states}
    if states and all(offsets.get(n.name) is not None for n in canvas.nodes):
        for node in canvas.nodes:
            node.x, node.y = offsets[node.name] or (0.0, 0.0)
    else:
        canvas.laid_out = "layered"
        initial = definition.get("initial_state") if isinstance(definition, Mapping) else None
        root = initial if isinstance(initial, str) and initial in nodes else TRIGGER
        layered(canvas.nodes, [(e.source, e.target) for e in edges], root, GAP_X, GAP_Y)
    _fit(canvas)
    _route(canvas)
    return canvas


def _edges(
    defined: Mapping[tuple[str, str], list[str]], observed: Sequence[Transition]
) -> list[Edge]:
    """Defined transitions (faint until taken) and observed ones, one edge per (from, to)."""
    by_pair: dict[tuple[str, str], Edge] = {}
    for (source, target), events in defined.items():
        by_pair[(source, target)] = Edge(source, target, ", ".join(events), 0, None)
    for t in observed:
        if t.target == ENDED or not t.source or not t.target:
            continue  # ending is shown as the widget's drop-off, not as an edge
        edge = by_pair.get((t.source, t.target))
        if edge is None:
            edge = by_pair[(t.source, t.target)] = Edge(t.source, t.target, "", 0, None)
        # medians of two rows (two revisions) do not combine: keep one only when one row
        edge.median_seconds = t.median_seconds if edge.count == 0 else None
        edge.count += t.count
        if not edge.label:
            edge.label = ", ".join(t.events)
    return list(by_pair.values())


def _fit(canvas: Canvas) -> None:
    """Shift everything so the top-left box sits at (PAD, PAD); size the SVG to fit."""
    if not canvas.nodes:
        canvas.width, canvas.height = 2 * PAD + BOX_W, 2 * PAD + BOX_H
        return
    left = min(n.x for n in canvas.nodes)
    top = min(n.y for n in canvas.nodes)
    for node in canvas.nodes:
        node.x = round(node.x - left + PAD, 1)
        node.y = round(node.y - top + PAD, 1)
    canvas.width = max(n.x + n.width for n in canvas.nodes) + PAD
    canvas.height = max(n.y + n.height for n in canvas.nodes) + PAD


def edge_width(count: int, most: int) -> float:
    """Stroke width: log-scaled between MIN_EDGE and MAX_EDGE; MIN_EDGE for zero."""
    if count <= 0 or most <= 0:
        return MIN_EDGE
    return round(MIN_EDGE + (MAX_EDGE - MIN_EDGE) * math.log1p(count) / math.log1p(most), 2)


def _seconds(value: float | None) -> str:
    if value is None:
        return "no timing"
    if value < 120:
        return f"median {value:.1f} s"
    return f"median {value / 60:.1f} min"


def _route(canvas: Canvas) -> None:
    nodes = {n.name: n for n in canvas.nodes}
    most = max((e.count for e in canvas.edges), default=0)
    down = [e for e in canvas.edges if _downward(nodes[e.source], nodes[e.target])]
    starts = _ports(down, nodes, lambda e: e.source, lambda e: nodes[e.target])
    ends = _ports(down, nodes, lambda e: e.target, lambda e: nodes[e.source])
    for edge in canvas.edges:
        a, b = nodes[edge.source], nodes[edge.target]
        edge.stroke = edge_width(edge.count, most)
        edge.faint = edge.count == 0
        event = edge.label or "(no event)"
        edge.title = (
            f"{edge.source} → {edge.target} ({event}): {edge.count} transitions,"
            f" {_seconds(edge.median_seconds)}"
        )
        if id(edge) in starts:
            x1, y1 = starts[id(edge)], a.y + a.height
            x2, y2 = ends[id(edge)], b.y
            bend = max(abs(y2 - y1) / 2, 40.0)
            edge.path = f"M{x1},{y1} C{x1},{y1 + bend} {x2},{y2 - bend} {x2},{y2}"
            # the midpoint of this cubic (symmetric control points) is the chord's midpoint
            edge.label_x, edge.label_y = round((x1 + x2) / 2, 1), round((y1 + y2) / 2, 1)
        elif a is not b and abs(a.y - b.y) < a.height:  # side by side: a dip below both
            x1, x2, y = a.x + a.width / 2, b.x + b.width / 2, max(a.y, b.y) + a.height
            edge.path = f"M{x1},{y} C{x1},{y + 50} {x2},{y + 50} {x2},{y}"
            edge.label_x, edge.label_y = round((x1 + x2) / 2, 1), round(y + 37.5, 1)
        else:  # a loop, or back up: around the right-hand side
            x1, y1 = a.x + a.width, a.y + a.height / 2 + (8 if a is not b else 12)
            x2, y2 = b.x + b.width, b.y + b.height / 2 - (8 if a is not b else 12)
            out = max(x1, x2) + (60 if a is b else 50 + abs(y1 - y2) / 8)
            edge.path = f"M{x1},{y1} C{out},{y1} {out},{y2} {x2},{y2}"
            edge.label_x = round((x1 + x2 + 6 * out) / 8, 1)
            edge.label_y = round((y1 + y2) / 2, 1)


def _downward(a: Node, b: Node) -> bool:
    return a is not b and b.y >= a.y + a.height


def _ports(
    edges: Sequence[Edge],
    nodes: Mapping[str, Node],
    end: Callable[[Edge], str],
    other: Callable[[Edge], Node],
) -> dict[int, float]:
    """x of each edge's end on its box: spread along the side, in the order of the far ends."""
    by_node: dict[str, list[Edge]] = {}
    for edge in edges:
        by_node.setdefault(end(edge), []).append(edge)
    ports: dict[int, float] = {}
    for name, group in by_node.items():
        node = nodes[name]
        group.sort(key=lambda e: other(e).x)
        for i, edge in enumerate(group):
            ports[id(edge)] = round(node.x + node.width * (i + 1) / (len(group) + 1), 1)
    return ports
