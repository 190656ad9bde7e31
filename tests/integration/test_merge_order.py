"""Every arrival order and repetition of an execution's events gives the same rows."""

from __future__ import annotations

import itertools
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Sink
from tests.support.studio import execution_story

pytestmark = pytest.mark.through_pgbouncer


STORY = execution_story(2)
COLUMNS = (
    "status, ended_reason, flow_revision, contact_channel_address, started_by,"
    " date_created, date_updated, flow_sid, account_sid"
)


async def snapshot(conn: asyncpg.Connection[Any]) -> tuple[Any, ...]:
    execution = await conn.fetchrow(f"SELECT {COLUMNS} FROM studio.executions")
    steps = await conn.fetch(
        "SELECT step_sid, name, transitioned_from, transitioned_to, date_created"
        " FROM studio.steps ORDER BY step_sid"
    )
    return (tuple(execution), tuple(tuple(s) for s in steps))


async def reset(conn: asyncpg.Connection[Any]) -> None:
    await conn.execute(
        "TRUNCATE sink.events, sink.event_keys, sink.executions, sink.steps, sink.deliveries"
    )


async def test_every_permutation_of_a_story(sink: Sink, conn: asyncpg.Connection[Any]) -> None:
    await sink.post(STORY)
    expected = await snapshot(conn)
    assert expected[0][0] == "ended"
    for order in itertools.permutations(STORY):
        await reset(conn)
        for event in order:
            status, _ = await sink.post([event])
            assert status == 200
        assert await snapshot(conn) == expected


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.lists(
        st.lists(st.sampled_from(range(len(STORY))), min_size=1, max_size=6),
        min_size=1,
        max_size=5,
    )
)
async def test_repeats_and_batches_in_any_order(
    sink: Sink, conn: asyncpg.Connection[Any], data: list[list[int]]
) -> None:
    await reset(conn)
    await sink.post(STORY)
    expected = await snapshot(conn)
    await reset(conn)
    delivered: set[int] = set()
    for batch in data:
        await sink.post([STORY[i] for i in batch])
        delivered.update(batch)
    # then the rest, so every event arrived at least once
    rest = [STORY[i] for i in range(len(STORY)) if i not in delivered]
    if rest:
        await sink.post(rest)
    assert await snapshot(conn) == expected
    assert await conn.fetchval("SELECT count(*) FROM studio.events") == len(STORY)
