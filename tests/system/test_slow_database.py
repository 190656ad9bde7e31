"""A commit slower than the delivery budget: 503, never a 2xx for uncommitted data."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from tests.conftest import Sink
from tests.support.studio import execution_story

pytestmark = pytest.mark.slow  # real processes: outside the quick run


BUDGET = 0.3  # SINK_DELIVERY_TIMEOUT, seconds


async def post_until_acked(sink: Sink, events: list[Any], attempts: int = 50) -> int:
    """Redeliver as Twilio would (503 is retried); returns the final status."""
    for _ in range(attempts):
        status, _ = await sink.post(events)
        if status != 503:
            return status
        await asyncio.sleep(0.05)
    return status


async def stored_ids(conn: asyncpg.Connection[Any], ids: list[str]) -> list[str]:
    rows = await conn.fetch("SELECT event_id FROM studio.events WHERE event_id = ANY($1)", ids)
    return [r["event_id"] for r in rows]


async def test_commit_over_budget_is_503_and_the_sink_stays_healthy(
    start_sink: Callable[..., Any], database_url: str, conn: asyncpg.Connection[Any]
) -> None:
    sink: Sink = await start_sink(delivery_timeout=BUDGET)
    stories = [execution_story(2) for _ in range(12)]
    ids = [e["id"] for story in stories for e in story]

    locker = await asyncpg.connect(database_url)
    transaction = locker.transaction()
    await transaction.start()
    # another session holds the dedup table: every commit waits past the budget
    await locker.execute("LOCK TABLE sink.event_keys IN EXCLUSIVE MODE")
    try:
        answers = await asyncio.gather(*(sink.post(story) for story in stories))
        assert [status for status, _ in answers] == [503] * len(stories)
        assert {a["error"] for _, a in answers} == {"commit_timeout"}
        assert all("SINK_DELIVERY_TIMEOUT" in a["message"] for _, a in answers)
        assert await stored_ids(conn, ids) == []  # nothing answered 2xx, nothing committed
        for path in ("/healthz", "/readyz"):
            response = await sink.client.get(path)
            assert response.status == 200, (path, await response.text())
        status, _ = await sink.post(stories[0])
        assert status == 503
    finally:
        await transaction.rollback()
        await locker.close()

    # Twilio retries: every event lands exactly once, with the right final status
    statuses = await asyncio.gather(*(post_until_acked(sink, story) for story in stories))
    assert statuses == [200] * len(stories)
    assert sorted(await stored_ids(conn, ids)) == sorted(ids)
    ended = await conn.fetchval("SELECT count(*) FROM studio.executions WHERE status = 'ended'")
    assert ended == len(stories)


async def test_a_trigger_sleeping_past_the_budget(
    start_sink: Callable[..., Any], conn: asyncpg.Connection[Any]
) -> None:
    """pg_sleep inside the ingest transaction (a trigger made in this test's database)."""
    await conn.execute(
        """
        CREATE FUNCTION sink.test_slow() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_sleep(1); RETURN NEW; END $$;
        """
    )
    await conn.execute(
        "CREATE TRIGGER test_slow BEFORE INSERT ON sink.deliveries"
        " FOR EACH STATEMENT EXECUTE FUNCTION sink.test_slow()"
    )
    sink: Sink = await start_sink(delivery_timeout=BUDGET)
    story = execution_story(1)
    status, answer = await sink.post(story)
    assert status == 503 and answer["error"] == "commit_timeout"
    await conn.execute("DROP TRIGGER test_slow ON sink.deliveries")
    assert await post_until_acked(sink, story) == 200
    count = await conn.fetchval(
        "SELECT count(*) FROM studio.events WHERE event_id = ANY($1)", [e["id"] for e in story]
    )
    assert count == len(story)
    assert (await sink.client.get("/readyz")).status == 200
