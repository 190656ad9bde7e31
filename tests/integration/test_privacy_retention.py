"""Context retention and rejected raw bytes purge, in batches; the data inventory view."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from sink.backfill import queue as q
from sink.maintenance import privacy
from tests.support.studio import sid

NOW = datetime.now(UTC)


async def _execution(conn: asyncpg.Connection[Any], age_days: float) -> tuple[str, str]:
    execution, step = sid("FN"), sid("FT")
    created = NOW - timedelta(days=age_days)
    await conn.execute(
        "INSERT INTO sink.executions (execution_sid, flow_sid, contact_channel_address,"
        " date_created, context, context_fetched_at) VALUES ($1, $2, '+15551230123', $3,"
        " '{\"trigger\": {\"message\": {\"Body\": \"hi\"}}}', now())",
        execution, sid("FW"), created,
    )  # fmt: skip
    await conn.execute(
        "INSERT INTO sink.steps (step_sid, execution_sid, flow_sid, date_created, context,"
        " context_fetched_at) VALUES ($1, $2, $3, $4, '{\"widgets\": {}}', now())",
        step, execution, sid("FW"), created,
    )  # fmt: skip
    return execution, step


async def test_context_retention_nulls_old_contexts_only_and_keeps_the_rows(
    conn: asyncpg.Connection[Any],
) -> None:
    old = [await _execution(conn, 40 + n) for n in range(5)]
    young = [await _execution(conn, 10) for _ in range(2)]
    report = await privacy.expire(
        conn, context_retention_days=30, rejected_retention_days=None, batch_rows=2
    )
    assert (report.execution_contexts, report.step_contexts) == (5, 5)
    rows = await conn.fetch(
        "SELECT execution_sid, context, context_expired_at, context_fetched_at FROM sink.executions"
    )
    by_sid = {r["execution_sid"]: r for r in rows}
    assert len(by_sid) == 7  # typed rows stay
    for execution, _ in old:
        assert by_sid[execution]["context"] is None
        assert by_sid[execution]["context_expired_at"] is not None
    for execution, _ in young:
        assert by_sid[execution]["context"] is not None
        assert by_sid[execution]["context_expired_at"] is None
    steps = await conn.fetch("SELECT step_sid, context FROM sink.steps")
    expired = {s for _, s in old}
    assert {r["step_sid"] for r in steps if r["context"] is None} == expired

    # a backfill neither queues an expired context again nor stores one it fetched
    rid = await q.enqueue(conn, "missing", "cli")
    assert await conn.fetchval(
        "SELECT count(*) FROM sink.backfill_items WHERE request_id = $1", rid
    ) == 0  # fmt: skip
    await q.set_execution_context(conn, old[0][0], {"trigger": {"again": 1}})
    await q.set_step_contexts(conn, [(old[0][1], {"widgets": {"again": 1}})])
    assert await conn.fetchval(
        "SELECT context FROM sink.executions WHERE execution_sid = $1", old[0][0]
    ) is None  # fmt: skip
    assert await conn.fetchval(
        "SELECT context FROM sink.steps WHERE step_sid = $1", old[0][1]
    ) is None  # fmt: skip
    again = await privacy.expire(conn, context_retention_days=30, rejected_retention_days=None)
    assert not again.any


async def test_rejected_raw_bytes_are_purged_after_their_retention(
    conn: asyncpg.Connection[Any],
) -> None:
    for age in (8, 9, 1):
        await conn.execute(
            "INSERT INTO sink.rejected_events (received_at, reason, detail, raw, raw_text)"
            " VALUES ($1, 'not_json', 'x', 'raw +15551230123', 'raw +15551230123')",
            NOW - timedelta(days=age),
        )
    report = await privacy.expire(
        conn, context_retention_days=None, rejected_retention_days=7, batch_rows=1
    )
    assert report.rejected_raw == 2
    rows = await conn.fetch(
        "SELECT length(raw) AS n, raw_text, raw_purged_at, reason FROM sink.rejected_events"
        " ORDER BY received_at"
    )
    assert [(r["n"], r["raw_purged_at"] is not None) for r in rows] == [
        (0, True),
        (0, True),
        (16, False),
    ]
    assert all(r["reason"] == "not_json" for r in rows)  # the record of the rejection stays


async def test_data_inventory_says_what_is_kept_in_which_form_since_when(
    conn: asyncpg.Connection[Any],
) -> None:
    await _execution(conn, 3)
    await conn.execute(
        "UPDATE sink.executions SET contact_channel_address = 'h:' || repeat('a', 64)"
        " WHERE execution_sid = (SELECT execution_sid FROM sink.executions LIMIT 1)"
    )
    await _execution(conn, 1)
    rows = {r["relation"]: r for r in await conn.fetch("SELECT * FROM studio.data_inventory")}
    assert {"sink.executions", "sink.steps", "sink.events", "sink.rejected_events"} <= set(rows)
    executions = rows["sink.executions"]
    assert executions["contact_forms"] == "plain 1, hashed 1, masked 0"
    assert executions["row_count"] == 2
    assert executions["oldest_context"] < NOW - timedelta(days=2)
    assert "SINK_CONTEXT_RETENTION_DAYS" in executions["retained_by"]
