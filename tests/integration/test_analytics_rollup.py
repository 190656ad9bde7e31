"""The rollup stays exact: after any sequence of deliveries (the writer's sink.ingest),
duplicates, reordering, backfill merges, replays and retention deletes, sink.flow_rollup
equals a recomputation from sink.steps and sink.executions."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sink import jsontext
from sink.analytics.rollup import rebuild_flow_rollup, rebuild_rollup
from sink.db.queries import query
from sink.ingest import store
from sink.ingest.arrays import BatchItem
from sink.ingest.cloudevents import parse_structured
from tests.support.ivr import ACCOUNT, Ivr, build_ivr, merge_as_backfill, merge_as_replay

RECOMPUTED = """
SELECT * FROM sink.rollup_grains(ARRAY(
    SELECT r FROM sink.rollup_contrib(ARRAY(SELECT DISTINCT execution_sid FROM sink.steps)) r))
"""
STORED = """
SELECT * FROM sink.flow_rollup WHERE transitions <> 0 OR executions <> 0 OR ended <> 0
"""
# four executions across two revisions (one has a subflow), two weeks ago
IVR = build_ivr(8, start=datetime(2026, 11, 1, 10, tzinfo=UTC), span=timedelta(hours=3), seed=3)
EVENTS = IVR.events()
STEPS = [(e, s) for e in IVR.executions for s in e.steps]


async def rollup_matches(conn: asyncpg.Connection[Any]) -> None:
    stored = sorted(map(repr, map(tuple, await conn.fetch(STORED))))
    recomputed = sorted(map(repr, map(tuple, await conn.fetch(RECOMPUTED))))
    assert stored == recomputed


async def deliver(conn: asyncpg.Connection[Any], indexes: list[int]) -> None:
    """One batch through the writer's statement (in-batch repeats included)."""
    delivery = parse_structured(jsontext.dumps([EVENTS[i] for i in indexes]).encode())
    await store.ingest(conn, [BatchItem("prop", delivery.events, delivery.rejected)])


async def backfill(conn: asyncpg.Connection[Any], ivr: Ivr, picks: list[int]) -> None:
    """Steps (and their executions' facts) as the backfill merges them from the REST API."""
    rows = [STEPS[i] for i in sorted(set(picks))]
    executions = {e.sid: e for e, _ in rows}.values()
    await conn.execute(
        query("merge_api_executions"),
        [e.sid for e in executions],
        [ivr.flow_sid] * len(executions),
        [ACCOUNT] * len(executions),
        [e.status for e in executions],
        [None] * len(executions),
        [e.revision for e in executions],
        [None] * len(executions),
        [e.started for e in executions],
        [e.ended_at for e in executions],
    )
    await merge_as_backfill(conn, ivr, rows)


async def replay(conn: asyncpg.Connection[Any], ivr: Ivr, picks: list[int]) -> None:
    """Steps merged again from stored events, as ``studio-sink replay`` does."""
    await merge_as_replay(conn, ivr, [STEPS[i] for i in picks])


async def expire(conn: asyncpg.Connection[Any], n: int) -> None:
    """Typed retention with a cutoff just after the n-th oldest stored execution's activity."""
    times = await conn.fetch(
        "SELECT coalesce(date_updated, date_created, first_seen_at) AS t FROM sink.executions"
        " ORDER BY 1"
    )
    if times:
        cutoff = times[min(n, len(times) - 1)]["t"] + timedelta(microseconds=1)
        await conn.fetchrow(query("delete_expired_typed"), cutoff)


OPERATION = st.one_of(
    st.tuples(
        st.just("deliver"), st.lists(st.integers(0, len(EVENTS) - 1), min_size=1, max_size=12)
    ),
    st.tuples(
        st.just("backfill"), st.lists(st.integers(0, len(STEPS) - 1), min_size=1, max_size=6)
    ),
    st.tuples(st.just("replay"), st.lists(st.integers(0, len(STEPS) - 1), min_size=1, max_size=6)),
    st.tuples(st.just("expire"), st.lists(st.integers(0, 3), min_size=1, max_size=1)),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations=st.lists(OPERATION, min_size=1, max_size=8))
async def test_rollup_equals_a_recomputation_after_any_history(
    conn: asyncpg.Connection[Any], operations: list[tuple[str, list[int]]]
) -> None:
    await conn.execute(
        "TRUNCATE sink.events, sink.event_keys, sink.executions, sink.steps, sink.deliveries,"
        " sink.flow_rollup"
    )
    for name, args in operations:
        if name == "deliver":
            await deliver(conn, args)
        elif name == "backfill":
            await backfill(conn, IVR, args)
        elif name == "replay":
            await replay(conn, IVR, args)
        else:
            await expire(conn, args[0])
        await rollup_matches(conn)


async def test_everything_delivered_in_reverse_then_again(conn: asyncpg.Connection[Any]) -> None:
    for i in reversed(range(len(EVENTS))):
        await deliver(conn, [i])
    await deliver(conn, list(range(len(EVENTS))))  # all duplicates
    await rollup_matches(conn)
    steps = await conn.fetchval(
        "SELECT sum(transitions) FROM sink.flow_rollup WHERE grain = 'd' AND kind = 't'"
    )
    assert steps == len(STEPS)
    assert await rebuild_flow_rollup(conn, IVR.flow_sid) > 0
    await rollup_matches(conn)
    # a day's repair, after a write that bypassed the merges
    await conn.execute("UPDATE sink.flow_rollup SET transitions = transitions + 5")
    await rebuild_rollup(conn, datetime(2026, 10, 1, tzinfo=UTC))
    await rollup_matches(conn)


async def test_concurrent_writers_of_one_execution_take_turns(
    conn: asyncpg.Connection[Any], direct_database_url: str
) -> None:
    """Two transactions merging steps of the same execution: the second waits for the
    first, so its "before" includes the first one's step and the pair is timed."""
    e = next(e for e in IVR.executions if len(e.steps) >= 3)
    other = await asyncpg.connect(direct_database_url)
    try:
        first = [(e, s) for s in e.steps[:1]]
        second = [(e, s) for s in e.steps[1:2]]
        tx = conn.transaction()
        await tx.start()
        await merge_as_replay(conn, IVR, first)
        racing = asyncio.ensure_future(merge_as_replay(other, IVR, second))
        await asyncio.sleep(0.5)
        await tx.commit()
        await racing
    finally:
        await other.close()
    await rollup_matches(conn)
    timed = await conn.fetchval(
        "SELECT sum(transitions) FROM sink.flow_rollup WHERE kind = 't' AND dwell_bucket >= 0"
        " AND grain = 'h'"
    )
    assert timed == 1
