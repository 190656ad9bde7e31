"""Tombstones checked once per batch by ``sink.ingest`` (migration 0015) stop exactly what
the per-row triggers of 0010 stopped, in a batch that mixes erased and live executions, and
the triggers still stop every other writer, in the same transaction too."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from sink.ingest import store
from sink.ingest.arrays import BatchItem
from sink.ingest.cloudevents import parse_delivery
from tests.support.studio import execution_story

HEADERS = {"Content-Type": "application/json"}


def _item(events: list[dict[str, Any]], request_id: str) -> BatchItem:
    parsed = parse_delivery(HEADERS, json.dumps(events).encode())
    return BatchItem(request_id, parsed.events, parsed.rejected)


async def _counts(conn: asyncpg.Connection[Any], sid: str) -> tuple[int, int, int]:
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM sink.events WHERE data ->> 'execution_sid' = $1),"
        " (SELECT count(*) FROM sink.executions WHERE execution_sid = $1),"
        " (SELECT count(*) FROM sink.steps WHERE execution_sid = $1)",
        sid,
    )
    assert row is not None
    return (row[0], row[1], row[2])


async def test_a_batch_stores_its_live_executions_and_nothing_of_an_erased_one(
    conn: asyncpg.Connection[Any],
) -> None:
    erased, live = execution_story(3), execution_story(3)
    erased_sid, live_sid = erased[0]["data"]["execution_sid"], live[0]["data"]["execution_sid"]
    await conn.execute("INSERT INTO sink.erased_executions (execution_sid) VALUES ($1)", erased_sid)

    # one batch, two deliveries, the erased execution's events interleaved with the live ones
    mixed = [e for pair in zip(erased, live, strict=True) for e in pair]
    outcomes = await store.ingest(conn, [_item(mixed[:5], "a"), _item(mixed[5:], "b")])

    assert sum(o.stored for o in outcomes) == len(mixed)  # keys kept: retries are duplicates
    assert await _counts(conn, erased_sid) == (0, 0, 0)
    assert await _counts(conn, live_sid) == (5, 1, 3)
    rollup_flows = await conn.fetch("SELECT DISTINCT flow_sid FROM sink.flow_rollup")
    assert [r["flow_sid"] for r in rollup_flows] == [live[0]["data"]["flow_sid"]]
    again = await store.ingest(conn, [_item(erased, "retry")])
    assert again[0].duplicates == len(erased) and await _counts(conn, erased_sid) == (0, 0, 0)


async def test_the_triggers_still_stop_other_writers_after_an_ingest_in_the_same_transaction(
    conn: asyncpg.Connection[Any],
) -> None:
    story = execution_story(2)
    sid, flow = story[0]["data"]["execution_sid"], story[0]["data"]["flow_sid"]
    await conn.execute("INSERT INTO sink.erased_executions (execution_sid) VALUES ($1)", sid)
    async with conn.transaction():
        await store.ingest(conn, [_item(execution_story(2), "live")])
        # a writer other than sink.ingest (a backfill merge), after it, in its transaction
        await conn.execute(
            "SELECT sink.merge_api_executions(ARRAY[$1], ARRAY[$2], ARRAY[NULL], ARRAY['ended'],"
            " ARRAY[NULL], ARRAY[1], ARRAY[NULL], ARRAY[now()], ARRAY[now()])",
            sid,
            flow,
        )
    assert await _counts(conn, sid) == (0, 0, 0)
