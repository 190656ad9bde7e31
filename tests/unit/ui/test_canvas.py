"""The flow canvas's layout (pure): offsets honoured, the layered fallback, edges, widths."""

from __future__ import annotations

import time
from typing import Any

from sink.ui.canvas import (
    BOX_H,
    MAX_EDGE,
    MIN_EDGE,
    PAD,
    Canvas,
    Node,
    Transition,
    WidgetStats,
    draw,
    edge_width,
)
from tests.support.flow_pages import definition, small_ivr, state


def by_name(canvas: Canvas) -> dict[str, Node]:
    return {n.name: n for n in canvas.nodes}


def overlaps(a: Node, b: Node) -> bool:
    return (
        a.x < b.x + b.width
        and b.x < a.x + a.width
        and a.y < b.y + b.height
        and b.y < a.y + a.height
    )


def test_widgets_sit_at_their_offsets_shifted_to_the_padding() -> None:
    canvas = draw(small_ivr(), [], {})
    nodes = by_name(canvas)
    assert canvas.laid_out == "offsets"
    assert (nodes["Trigger"].x, nodes["Trigger"].y) == (300 + PAD, PAD)
    assert (nodes["sales"].x, nodes["sales"].y) == (PAD, 800 + PAD)
    assert (nodes["support"].x, nodes["support"].y) == (600 + PAD, 800 + PAD)
    assert canvas.width == nodes["support"].x + nodes["support"].width + PAD
    assert nodes["menu"].widget_type == "gather-input-on-call"


def test_defined_edges_are_faint_until_taken_and_carry_counts_and_medians() -> None:
    observed = [
        Transition("route", "sales", ("match",), 30, 4.5),
        Transition("menu", "route", ("keypress",), 40, 1.0),
        Transition("sales", "Ended", ("callCompleted",), 30, None),
    ]
    canvas = draw(small_ivr(), observed, {"menu": WidgetStats(entered=40, drop_off_share=0.25)})
    edges = {(e.source, e.target): e for e in canvas.edges}
    assert ("sales", "Ended") not in edges  # ending shows as drop-off, not as an edge
    assert edges[("route", "sales")].count == 30 and not edges[("route", "sales")].faint
    assert "30 transitions, median 4.5 s" in edges[("route", "sales")].title
    assert edges[("route", "support")].faint and edges[("route", "support")].stroke == MIN_EDGE
    assert edges[("menu", "route")].stroke == MAX_EDGE
    assert MIN_EDGE < edges[("route", "sales")].stroke < MAX_EDGE
    assert edges[("route", "menu")].label == "noMatch"
    assert by_name(canvas)["menu"].entered == 40


def test_edge_path_label_sits_at_the_midpoint_between_the_boxes() -> None:
    canvas = draw(small_ivr(), [], {})
    nodes = by_name(canvas)
    e = next(e for e in canvas.edges if (e.source, e.target) == ("greet", "menu"))
    a, b = nodes["greet"], nodes["menu"]
    assert e.path.startswith(f"M{a.x + a.width / 2},{a.y + a.height} C")
    assert e.path.endswith(f" {b.x + b.width / 2},{b.y}")
    assert (e.label_x, e.label_y) == ((a.x + b.x) / 2 + a.width / 2, (a.y + a.height + b.y) / 2)


def test_edge_width_is_log_scaled() -> None:
    assert edge_width(0, 100) == MIN_EDGE
    assert edge_width(100, 100) == MAX_EDGE
    assert edge_width(10, 100) > (MIN_EDGE + MAX_EDGE) / 2  # log: 10 of 100 is past halfway


def test_without_a_definition_the_observed_graph_is_layered_without_overlaps() -> None:
    observed = [
        Transition("Trigger", "greet", ("incomingCall",), 10),
        Transition("greet", "menu", ("audioComplete",), 10),
        Transition("menu", "route", ("keypress",), 8),
        Transition("route", "menu", ("noMatch",), 2),  # a loop back up
        Transition("route", "sales", ("match",), 4),
        Transition("route", "support", ("match",), 2),
        Transition("sales", "survey", ("callCompleted",), 4),
        Transition("support", "survey", ("callCompleted",), 2),
        Transition("Trigger", "survey", ("incomingMessage",), 1),  # skips layers
    ]
    canvas = draw(None, observed, {})
    nodes = by_name(canvas)
    assert canvas.laid_out == "layered"
    layer = {name: (n.y - PAD) / (BOX_H + 90) for name, n in nodes.items()}
    assert layer == {
        "Trigger": 0,
        "greet": 1,
        "menu": 2,
        "route": 3,
        "sales": 4,
        "support": 4,
        "survey": 5,
    }  # longest path: survey sits below both of its parents
    values = list(nodes.values())
    assert not any(overlaps(a, b) for i, a in enumerate(values) for b in values[i + 1 :])
    assert nodes["Trigger"].widget_type == "trigger" and nodes["menu"].widget_type == "?"


def test_barycentre_ordering_uncrosses_edges() -> None:
    observed = [
        Transition("Trigger", "a", ("x",), 1),
        Transition("Trigger", "b", ("x",), 1),
        Transition("b", "b_child", ("x",), 1),
        Transition("a", "a_child", ("x",), 1),
    ]
    nodes = by_name(draw(None, observed, {}))
    # the children are listed in crossing order; the sweep puts each below its parent
    assert (nodes["a"].x < nodes["b"].x) == (nodes["a_child"].x < nodes["b_child"].x)


def test_a_definition_without_offsets_is_layered_from_its_initial_state() -> None:
    states = [
        {
            "name": "start",
            "type": "trigger",
            "transitions": [{"event": "incomingCall", "next": "b"}],
        },
        {"name": "b", "type": "say-play", "transitions": [{"event": "audioComplete"}]},
        {"name": 7, "type": "junk"},  # attacker-influenced JSON: ignored, not a crash
        "not a state",
    ]
    canvas = draw({"initial_state": "start", "states": states}, [], {})
    nodes = by_name(canvas)
    assert canvas.laid_out == "layered" and set(nodes) == {"start", "b"}
    assert nodes["start"].y < nodes["b"].y


def test_junk_definitions_draw_an_empty_canvas() -> None:
    junk: list[Any] = [None, "text", [], {"states": "x"}, {"states": [{"name": None}]}]
    for body in junk:
        canvas = draw(body, [], {})
        assert canvas.nodes == [] and canvas.width > 0


def test_a_definition_of_1000_states_is_laid_out_quickly() -> None:
    states = [state("Trigger", "trigger", 0, 0, ("incomingCall", "w0"))]
    for n in range(1000):
        nxt = [("next", f"w{n + 1}"), ("failed", f"w{(n * 7) % 1000}")] if n < 999 else []
        states.append(state(f"w{n}", "set-variables", 0, 0, *nxt))
    for body in (definition(states), {"states": [{**s, "properties": {}} for s in states]}):
        started = time.perf_counter()
        canvas = draw(body, [Transition("w1", "w2", ("next",), 5)], {})
        elapsed = time.perf_counter() - started
        assert len(canvas.nodes) == 1001 and len(canvas.edges) == 1999
        assert elapsed < 5, f"{elapsed:.2f} s"  # loose: quadratic work would take minutes
