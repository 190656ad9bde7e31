"""The analytics functions against a generated IVR whose answers are computed here, in
Python, from the generator's own record of what happened (tests/support/ivr.py).

The events reach the sink over real HTTP, shuffled, some twice; some steps never arrive as
events and come in through the backfill's merge instead; some are merged again as a
replay does. None of that may change a number.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from sink.analytics import queries as aq
from tests.conftest import Sink
from tests.support.ivr import (
    Ivr,
    IvrExecution,
    IvrStep,
    build_ivr,
    merge_as_backfill,
    merge_as_replay,
    store_definitions,
)

HOUR = timedelta(hours=1)


def bucket(seconds: float) -> int:
    """docs/analytics.md: bucket b holds t ms with 4*log2(t) in [b, b+1)."""
    ms = max(seconds * 1000, 1.0)
    return min(127, max(0, math.floor(4 * math.log(ms) / math.log(2))))


def quantile(values: list[float], numerator: int, denominator: int) -> float | None:
    """Nearest rank, as the middle of its bucket."""
    if not values:
        return None
    rank = max(1, -(-numerator * len(values) // denominator))
    return float(2 ** ((bucket(sorted(values)[rank - 1]) + 0.5) / 4) / 1000)


def main_steps(e: IvrExecution) -> list[IvrStep]:
    return sorted((s for s in e.steps if s.parent_step_sid is None), key=lambda s: (s.at, s.sid))


def hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def inside(t: datetime, lo: datetime, hi: datetime) -> bool:
    """The functions round since down and until up to whole UTC hours."""
    top = hi if hour(hi) == hi else hour(hi) + HOUR
    return hour(lo) <= t < top


def expected_transitions(
    ivr: Ivr, lo: datetime, hi: datetime, revision: int | None = None
) -> dict[tuple[int, str, str], dict[str, Any]]:
    out: dict[tuple[int, str, str], dict[str, Any]] = {}
    for e in ivr.executions:
        if revision is not None and e.revision != revision:
            continue
        steps = main_steps(e)
        seen: set[tuple[str, str]] = set()
        for k, s in enumerate(steps):
            key = (e.revision, s.transitioned_from, s.transitioned_to)
            first = (s.transitioned_from, s.transitioned_to) not in seen
            seen.add((s.transitioned_from, s.transitioned_to))
            if not inside(s.at, lo, hi):
                continue
            row = out.setdefault(key, {"events": set(), "n": 0, "x": 0, "dwell": []})
            row["events"].add(s.name)
            row["n"] += 1
            row["x"] += first
            if k > 0:
                row["dwell"].append((s.at - steps[k - 1].at).total_seconds())
    return out


def expected_widgets(ivr: Ivr, lo: datetime, hi: datetime) -> dict[tuple[int, str], dict[str, Any]]:
    out: dict[tuple[int, str], dict[str, Any]] = defaultdict(
        lambda: {"entered": 0, "exits": Counter(), "ended": 0, "dwell": []}
    )
    for e in ivr.executions:
        steps = main_steps(e)
        touched: set[str] = set()
        for k, s in enumerate(steps):
            for w in (s.transitioned_from, s.transitioned_to):
                if w != "Ended" and w not in touched:
                    touched.add(w)
                    if inside(s.at, lo, hi):
                        out[(e.revision, w)]["entered"] += 1
            if inside(s.at, lo, hi):
                row = out[(e.revision, s.transitioned_from)]
                row["exits"][s.transitioned_to] += 1
                if k > 0:
                    row["dwell"].append((s.at - steps[k - 1].at).total_seconds())
        last = steps[-1]
        finished = (
            last.transitioned_from
            if last.transitioned_to == "Ended"
            else last.transitioned_to
            if e.status == "ended"
            else None
        )
        if finished is not None and inside(last.at, lo, hi):
            out[(e.revision, finished)]["ended"] += 1
    return dict(out)


def widget_type(ivr: Ivr, revision: int, widget: str) -> str | None:
    states = ivr.definitions[revision]["states"]
    return next((s["type"] for s in states if s["name"] == widget), None)


def check_transitions(rows: list[aq.TransitionStat], want: dict[Any, dict[str, Any]]) -> None:
    got = {(r.flow_revision, r.transitioned_from, r.transitioned_to): r for r in rows}
    assert set(got) == set(want)
    for key, w in want.items():
        r = got[key]
        assert (r.events, r.transitions, r.executions) == (sorted(w["events"]), w["n"], w["x"]), key
        assert r.median_seconds == quantile(w["dwell"], 1, 2), key
        assert r.p90_seconds == quantile(w["dwell"], 9, 10), key


async def deliver(sink: Sink, conn: asyncpg.Connection[Any], ivr: Ivr, seed: int) -> None:
    """Shuffled, in batches, one event in 6 twice; every 7th step through the backfill's merge
    instead, and every 5th step merged again as a replay does."""
    rng = random.Random(seed)
    steps = [(e, s) for e in ivr.executions for s in e.steps]
    backfilled = {s.sid for _, s in steps[::7]}
    events = [ev for ev in ivr.events() if ev["data"].get("step_sid") not in backfilled]
    events += rng.sample(events, len(events) // 6)
    rng.shuffle(events)
    for n in range(0, len(events), 40):
        status, answer = await sink.post(events[n : n + 40])
        assert status == 200, answer
    await merge_as_backfill(conn, ivr, [(e, s) for e, s in steps if s.sid in backfilled])
    await merge_as_replay(conn, ivr, steps[::5])


@pytest.fixture
async def ivr(start_sink: Callable[..., Any], conn: asyncpg.Connection[Any]) -> Ivr:
    built = build_ivr(
        90, start=datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=4)
    )
    await store_definitions(conn, built)
    await deliver(await start_sink(), conn, built, seed=11)
    return built


def window(ivr: Ivr) -> tuple[datetime, datetime]:
    first = min(s.at for e in ivr.executions for s in e.steps)
    return first - timedelta(days=1), first + timedelta(days=3)


async def test_transition_stats_are_the_known_answers(
    ivr: Ivr, conn: asyncpg.Connection[Any]
) -> None:
    lo, hi = window(ivr)
    rows = await aq.transition_stats(conn, ivr.flow_sid, lo, hi)
    check_transitions(rows, expected_transitions(ivr, lo, hi))
    # the split: route's three match transitions are three edges, told apart by destination
    matches = {
        r.transitioned_to for r in rows if r.transitioned_from == "route" and r.events == ["match"]
    }
    assert matches == {"sales", "support_sub", "billing"}
    # one revision alone
    check_transitions(
        await aq.transition_stats(conn, ivr.flow_sid, lo, hi, 2),
        expected_transitions(ivr, lo, hi, 2),
    )


async def test_a_range_inside_the_data_rounds_to_hours(
    ivr: Ivr, conn: asyncpg.Connection[Any]
) -> None:
    first = min(s.at for e in ivr.executions for s in e.steps)
    for lo, hi in (
        (first + timedelta(hours=5, minutes=20), first + timedelta(hours=29, minutes=10)),
        (first + timedelta(hours=2, minutes=59), first + timedelta(hours=3, minutes=1)),
        (first + timedelta(hours=1), first + timedelta(days=1, hours=20)),
    ):
        rows = await aq.transition_stats(conn, ivr.flow_sid, lo, hi)
        check_transitions(rows, expected_transitions(ivr, lo, hi))
        widgets = await aq.widget_stats(conn, ivr.flow_sid, lo, hi)
        want = expected_widgets(ivr, lo, hi)
        got = {(w.flow_revision, w.widget): (w.entered, w.exits, w.ended_here) for w in widgets}
        assert got == {
            k: (v["entered"], dict(v["exits"]), v["ended"])
            for k, v in want.items()
            if v["entered"] or v["exits"] or v["ended"]
        }


async def test_widget_stats_are_the_known_answers(ivr: Ivr, conn: asyncpg.Connection[Any]) -> None:
    lo, hi = window(ivr)
    rows = await aq.widget_stats(conn, ivr.flow_sid, lo, hi)
    want = expected_widgets(ivr, lo, hi)
    got = {(r.flow_revision, r.widget): r for r in rows}
    assert set(got) == set(want)
    for (rev, widget), w in want.items():
        r = got[(rev, widget)]
        assert r.widget_type == widget_type(ivr, rev, widget)
        assert (r.entered, r.exits, r.ended_here) == (w["entered"], dict(w["exits"]), w["ended"])
        assert r.drop_off_share == (w["ended"] / w["entered"] if w["entered"] else None)
        assert r.median_seconds == quantile(w["dwell"], 1, 2)
        assert r.p90_seconds == quantile(w["dwell"], 9, 10)
    # callers who hung up in the menu finished there, though no step went to Ended
    hangups = sum(
        1
        for e in ivr.executions
        if e.ended_reason == "HANGUP" and main_steps(e)[-1].transitioned_to == "menu"
    )
    assert hangups > 0
    assert sum(r.ended_here for r in rows if r.widget == "menu") == hangups
    # revision 2 has no VIP check at all
    assert {r.widget for r in rows if r.flow_revision == 2}.isdisjoint({"check_vip"})


async def test_subflow_steps_are_counted_apart(ivr: Ivr, conn: asyncpg.Connection[Any]) -> None:
    lo, hi = window(ivr)
    flow_edges = await aq.transition_stats(conn, ivr.flow_sid, lo, hi)
    assert not {r.transitioned_from for r in flow_edges} & {"ask_issue", "create_ticket"}
    want: dict[tuple[str, str], dict[str, Any]] = {}
    for e in ivr.executions:
        sub = sorted((s for s in e.steps if s.parent_step_sid), key=lambda s: (s.at, s.sid))
        seen: set[tuple[str, str]] = set()
        for k, s in enumerate(sub):
            row = want.setdefault(
                (s.transitioned_from, s.transitioned_to),
                {"events": set(), "n": 0, "x": 0, "dwell": []},
            )
            row["events"].add(s.name)
            row["n"] += 1
            row["x"] += (s.transitioned_from, s.transitioned_to) not in seen
            seen.add((s.transitioned_from, s.transitioned_to))
            if k > 0:
                row["dwell"].append((s.at - sub[k - 1].at).total_seconds())
    rows = await aq.subflow_stats(conn, ivr.flow_sid, lo, hi)
    assert want and {r.subflow_widget for r in rows} == {"support_sub"}
    got = {(r.transitioned_from, r.transitioned_to): r for r in rows}
    assert set(got) == set(want)
    for key, w in want.items():
        r = got[key]
        assert (r.events, r.transitions, r.executions) == (sorted(w["events"]), w["n"], w["x"])
        assert (r.median_seconds, r.p90_seconds) == (
            quantile(w["dwell"], 1, 2),
            quantile(w["dwell"], 9, 10),
        )


async def test_funnel_and_outcomes_are_the_known_answers(
    ivr: Ivr, conn: asyncpg.Connection[Any]
) -> None:
    lo, hi = window(ivr)
    path = ["Trigger", "menu", "route", "support_sub", "survey"]
    reached = [0] * len(path)
    for e in ivr.executions:
        j = 0
        for s in main_steps(e):
            for w in (s.transitioned_from, s.transitioned_to):
                if j < len(path) and w == path[j]:
                    j += 1
        for i in range(j):
            reached[i] += 1
    funnel = await aq.flow_funnel(conn, ivr.flow_sid, path, lo, hi)
    assert [(f.step, f.widget, f.executions) for f in funnel] == [
        (i + 1, w, reached[i]) for i, w in enumerate(path)
    ]
    previous = [len(ivr.executions), *reached[:-1]]
    assert [f.conversion for f in funnel] == [r / p for r, p in zip(reached, previous, strict=True)]

    outcomes = await aq.flow_outcomes(conn, ivr.flow_sid, lo.date(), hi.date())
    want: dict[tuple[int, Any], Counter[str]] = defaultdict(Counter)
    for e in ivr.executions:
        c = want[(e.revision, e.started.date())]
        c["executions"] += 1
        c[e.status] += 1
        if e.status == "ended":
            c["reason:" + str(e.ended_reason)] += 1
    got = {(o.flow_revision, o.day): o for o in outcomes}
    assert set(got) == set(want)
    for key, c in want.items():
        o = got[key]
        assert (o.executions, o.ended, o.active) == (c["executions"], c["ended"], c["active"])
        assert o.stuck == c["active"]  # all days old: every active one is stuck
        assert o.completion_rate == c["ended"] / c["executions"]
        assert o.by_ended_reason == {
            k.removeprefix("reason:"): v for k, v in c.items() if k.startswith("reason:")
        }
    overview = await aq.flows_overview(conn)
    assert [(f.flow_sid, f.friendly_name, f.executions_7d) for f in overview] == [
        (ivr.flow_sid, "Support line", len(ivr.executions))
    ]
