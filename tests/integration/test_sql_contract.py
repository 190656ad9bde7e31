"""The consumer contract: schema studio's columns, docs/sql.md, and the read-only role."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tests.conftest import Sink
from tests.support.docs import TSTZ, code_blocks, column_tables
from tests.support.studio import ACCOUNT, ENDED, STARTED, execution_story, sid, sink_test_event

pytestmark = pytest.mark.through_pgbouncer


DOCS = Path(__file__).resolve().parents[2] / "docs" / "sql.md"

# Every column of every relation in schema studio, in order. A change here is a change of
# the consumer contract: append columns, never rename, retype or drop; update docs/sql.md.
EXPECTED: dict[str, list[tuple[str, str]]] = {
    # accounts (0011): docs/sql.md
    "accounts": [
        ("account_sid", "text"),
        ("label", "text"),
        ("configured", "boolean"),
        ("credentials_status", "text"),
        ("credentials_checked_at", TSTZ),
    ],
    "backfill_items": [
        ("item_id", "bigint"),
        ("request_id", "bigint"),
        ("kind", "text"),
        ("flow_sid", "text"),
        ("execution_sid", "text"),
        ("since", TSTZ),
        ("until", TSTZ),
        ("state", "text"),
        ("attempts", "integer"),
        ("not_before", TSTZ),
        ("reason", "text"),
        ("created_at", TSTZ),
        ("finished_at", TSTZ),
        ("account_sid", "text"),  # 0013
    ],
    "backfill_requests": [
        ("request_id", "bigint"),
        ("kind", "text"),
        ("flow_sid", "text"),
        ("since", TSTZ),
        ("until", TSTZ),
        ("status", "text"),
        ("items_total", "integer"),
        ("items_done", "integer"),
        ("items_failed", "integer"),
        ("items_gone", "integer"),
        ("created_at", TSTZ),
        ("finished_at", TSTZ),
        ("requested_by", "text"),
        ("error", "text"),
        ("items_waiting", "integer"),  # 0013
        ("account_sid", "text"),
    ],
    "deliveries": [
        ("delivery_id", "bigint"),
        ("received_at", TSTZ),
        ("request_id", "text"),
        ("events", "integer"),
        ("stored", "integer"),
        ("duplicates", "integer"),
        ("rejected", "integer"),
    ],
    "events": [
        ("event_id", "text"),
        ("source", "text"),
        ("type", "text"),
        ("specversion", "text"),
        ("time", TSTZ),
        ("dataschema", "text"),
        ("datacontenttype", "text"),
        ("subject", "text"),
        ("data", "jsonb"),
        ("extensions", "jsonb"),
        ("received_at", TSTZ),
        ("duplicates", "integer"),
    ],
    "execution_summary": [
        ("execution_sid", "text"),
        ("flow_sid", "text"),
        ("status", "text"),
        ("ended_reason", "text"),
        ("contact_channel_address", "text"),
        ("flow_revision", "integer"),
        ("date_created", TSTZ),
        ("date_updated", TSTZ),
        ("duration", "interval"),
        ("steps", "bigint"),
        ("last_step_name", "text"),
        ("last_step_at", TSTZ),
    ],
    "execution_timeline": [
        ("execution_sid", "text"),
        ("flow_sid", "text"),
        ("step_number", "bigint"),
        ("step_sid", "text"),
        ("name", "text"),
        ("widget_type", "text"),
        ("transitioned_from", "text"),
        ("transitioned_to", "text"),
        ("date_created", TSTZ),
        ("since_previous_step", "interval"),
        ("since_execution_start", "interval"),
        ("has_context", "boolean"),
    ],
    "executions": [
        ("execution_sid", "text"),
        ("flow_sid", "text"),
        ("account_sid", "text"),
        ("status", "text"),
        ("contact_channel_address", "text"),
        ("started_by", "text"),
        ("flow_revision", "integer"),
        ("ended_reason", "text"),
        ("date_created", TSTZ),
        ("date_updated", TSTZ),
        ("context", "jsonb"),
        ("context_fetched_at", TSTZ),
        ("first_seen_at", TSTZ),
        ("updated_at", TSTZ),
        ("initiated_by", "text"),
        ("gone_at", TSTZ),
    ],
    "executions_daily": [
        ("day", "date"),
        ("flow_sid", "text"),
        ("started", "bigint"),
        ("ended", "bigint"),
        ("active", "bigint"),
        ("ended_reasons", "jsonb"),
    ],
    "flow_revisions": [
        ("flow_sid", "text"),
        ("revision", "integer"),
        ("account_sid", "text"),
        ("friendly_name", "text"),
        ("status", "text"),
        ("definition", "jsonb"),
        ("commit_message", "text"),
        ("valid", "boolean"),
        ("date_created", TSTZ),
        ("date_updated", TSTZ),
        ("fetched_at", TSTZ),
    ],
    "flows": [
        ("flow_sid", "text"),
        ("account_sid", "text"),
        ("friendly_name", "text"),
        ("status", "text"),
        ("revision", "integer"),
        ("definition", "jsonb"),
        ("commit_message", "text"),
        ("valid", "boolean"),
        ("date_created", TSTZ),
        ("date_updated", TSTZ),
        ("fetched_at", TSTZ),
    ],
    "quarantine": [
        ("quarantine_id", "bigint"),
        ("received_at", TSTZ),
        ("reason", "text"),
        ("url_seen", "text"),
        ("url_checked", "text"),
        ("body_bytes", "integer"),
        ("request_id", "text"),
    ],
    "rejected_events": [
        ("rejected_id", "bigint"),
        ("received_at", TSTZ),
        ("reason", "text"),
        ("detail", "text"),
        ("event_type", "text"),
        ("event_id", "text"),
        ("source", "text"),
        ("raw", "bytea"),
        ("raw_text", "text"),
        ("request_id", "text"),
    ],
    "steps": [
        ("step_sid", "text"),
        ("execution_sid", "text"),
        ("flow_sid", "text"),
        ("account_sid", "text"),
        ("name", "text"),
        ("transitioned_from", "text"),
        ("transitioned_to", "text"),
        ("parent_step_sid", "text"),
        ("date_created", TSTZ),
        ("context", "jsonb"),
        ("context_fetched_at", TSTZ),
        ("first_seen_at", TSTZ),
        ("updated_at", TSTZ),
        ("widget_type", "text"),
        ("date_updated", TSTZ),
        ("gone_at", TSTZ),
    ],
    "steps_missing_context": [
        ("step_sid", "text"),
        ("execution_sid", "text"),
        ("flow_sid", "text"),
        ("name", "text"),
        ("date_created", TSTZ),
        ("first_seen_at", TSTZ),
    ],
    # flow analytics (0008): docs/analytics.md, pinned with the functions by
    # tests/integration/test_analytics_docs.py
    "flow_outcomes": [
        ("flow_sid", "text"),
        ("flow_revision", "integer"),
        ("day", "date"),
        ("executions", "bigint"),
        ("ended", "bigint"),
        ("active", "bigint"),
        ("stuck", "bigint"),
        ("completion_rate", "double precision"),
        ("by_ended_reason", "jsonb"),
    ],
    "flows_overview": [
        ("flow_sid", "text"),
        ("friendly_name", "text"),
        ("executions_24h", "bigint"),
        ("executions_7d", "bigint"),
        ("completion_rate_7d", "double precision"),
        ("stuck_share_7d", "double precision"),
        ("last_execution_at", TSTZ),
    ],
    # privacy (0010): docs/privacy.md
    "erasures": [
        ("erasure_id", "bigint"),
        ("erased_at", TSTZ),
        ("requested_by", "text"),
        ("subject", "text"),
        ("contact_hmac", "text"),
        ("execution_sid", "text"),
        ("removed", "jsonb"),
    ],
    "erased_executions": [
        ("execution_sid", "text"),
        ("erased_at", TSTZ),
        ("erasure_id", "bigint"),
    ],
    "data_inventory": [
        ("relation", "text"),
        ("personal_data", "text"),
        ("contact_forms", "text"),
        ("row_count", "bigint"),
        ("oldest", TSTZ),
        ("oldest_context", TSTZ),
        ("retained_by", "text"),
    ],
}

STUDIO_COLUMNS = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) AS type
FROM pg_class c
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relnamespace = 'studio'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
ORDER BY c.relname, a.attnum
"""
_roles = itertools.count()


def as_user(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    where = parts.netloc.rsplit("@", 1)[-1]  # host:port, or empty with ?host=/socket/dir
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{where}"))


@pytest.fixture
async def reader(
    direct_database_url: str, conn: asyncpg.Connection[Any]
) -> AsyncIterator[asyncpg.Connection[Any]]:
    """A login role created exactly as docs/sql.md says, connected."""
    name = f"analyst_{os.getpid()}_{next(_roles)}"
    (admin,) = code_blocks(DOCS, "sql admin")
    await conn.execute(re.sub(r"\banalyst\b", name, admin))
    connection = await asyncpg.connect(as_user(direct_database_url, name, "change-me"))
    try:
        assert await connection.fetchval("SELECT current_user") == name
        yield connection
    finally:
        await connection.close()
        await conn.execute(f'DROP ROLE "{name}"')


async def load_data(sink: Sink, conn: asyncpg.Connection[Any]) -> None:
    """Executions of two flows in several states, through the HTTP receiver."""
    now = datetime.now(UTC).replace(microsecond=0)
    flow_a, flow_b = sid("FW"), sid("FW")
    deliveries = [
        execution_story(3, flow_sid=flow_a, start=now - timedelta(hours=2)),
        execution_story(2, flow_sid=flow_a, start=now - timedelta(hours=1)),
        execution_story(4, flow_sid=flow_b, start=now - timedelta(minutes=30)),
    ]
    # one execution of flow B that is still active: started and a step, no end
    active = [e for e in execution_story(1, flow_sid=flow_b, start=now) if e["type"] != ENDED]
    assert active[0]["type"] == STARTED
    deliveries.append(active)
    # a sink test event, and an element without an id next to a valid event
    broken = dict(active[0], id=None)
    deliveries.append([sink_test_event(), broken])
    for delivery in [*deliveries, deliveries[0]]:  # and one retry
        status, answer = await sink.post(delivery)
        assert status == 200, answer
    # a delivery signed with a token the sink does not know: refused, kept in quarantine
    status, answer = await sink.post(deliveries[0], token="not-the-auth-token")
    assert status == 401, answer
    # what a backfill would have written: one execution's and one step's context
    await conn.execute(
        """
        WITH e AS (
            UPDATE sink.executions SET context = '{"trigger": {"message": {"Body": "hi"}}}',
                   context_fetched_at = now()
            WHERE execution_sid = (SELECT min(execution_sid) FROM sink.executions)
            RETURNING execution_sid)
        UPDATE sink.steps SET context = '{"widgets": {"w": {"Body": "hello"}}}',
               context_fetched_at = now()
        WHERE step_sid = (SELECT min(step_sid) FROM sink.steps JOIN e USING (execution_sid))
        """
    )


async def test_studio_columns_are_pinned(conn: asyncpg.Connection[Any]) -> None:
    actual: dict[str, list[tuple[str, str]]] = {}
    for row in await conn.fetch(STUDIO_COLUMNS):
        actual.setdefault(row["relname"], []).append((row["attname"], row["type"]))
    assert actual == EXPECTED, (
        "schema studio changed: if deliberate, update EXPECTED and docs/sql.md (append"
        " columns; never rename, retype or drop one)"
    )


def test_docs_describe_every_view_with_its_columns() -> None:
    documented = column_tables(DOCS, "###")
    text = DOCS.read_text("utf-8")
    for name, columns in EXPECTED.items():
        assert f"studio.{name}" in text, f"docs/sql.md does not mention studio.{name}"
        if name in documented:
            assert documented[name] == columns, f"docs/sql.md's table for studio.{name}"
    # every view with its own section has a full column table
    for heading in re.findall(r"^### studio\.(\w+)$", text, re.M):
        assert heading in documented, f"studio.{heading} has no column table"


async def test_reader_runs_every_documented_query(
    start_sink: Callable[..., Any],
    conn: asyncpg.Connection[Any],
    reader: asyncpg.Connection[Any],
) -> None:
    await load_data(await start_sink(), conn)
    queries = code_blocks(DOCS, "sql")
    assert len(queries) >= 10
    for query in queries:
        rows = await reader.fetch(query)
        assert rows, f"documented query returned nothing:\n{query}"


async def test_tenant_reader_runs_the_documented_queries_on_its_rows(
    start_sink: Callable[..., Any], conn: asyncpg.Connection[Any], direct_database_url: str
) -> None:
    """A tenant reader made as docs/sql.md says ("Per-tenant readers") runs every documented
    query but the request_* ones (not granted to tenants) and sees its account's rows."""
    await load_data(await start_sink(), conn)
    name = f"acme_analyst_{os.getpid()}_{next(_roles)}"
    (admin,) = code_blocks(DOCS, "sql tenant")
    await conn.execute(re.sub(r"\bacme_analyst\b", name, admin))
    tenant = await asyncpg.connect(as_user(direct_database_url, name, "change-me"))
    try:
        for query in code_blocks(DOCS, "sql"):
            if "studio.request_" in query:
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await tenant.fetch(query)
                continue
            await tenant.fetch(query)
        accounts = await tenant.fetch("SELECT DISTINCT account_sid FROM studio.executions")
        assert [r[0] for r in accounts] == [ACCOUNT]
        await conn.execute("UPDATE sink.executions SET account_sid = $1", sid("AC"))
        assert await tenant.fetch("SELECT * FROM studio.execution_summary") == []
    finally:
        await tenant.close()
        await conn.execute(f'DROP ROLE "{name}"')


async def test_views_show_what_the_events_say(
    start_sink: Callable[..., Any], conn: asyncpg.Connection[Any]
) -> None:
    sink: Sink = await start_sink()
    start = datetime(2026, 11, 20, 23, 59, 58, tzinfo=UTC)
    story = execution_story(3, start=start)
    for event in reversed(story):  # any order gives the same rows
        status, _ = await sink.post([event])
        assert status == 200
    execution_sid = story[0]["data"]["execution_sid"]
    timeline = await conn.fetch(
        "SELECT * FROM studio.execution_timeline WHERE execution_sid = $1 ORDER BY step_number",
        execution_sid,
    )
    assert [r["step_number"] for r in timeline] == [1, 2, 3]
    assert [r["name"] for r in timeline] == ["incomingRequest", "next", "next"]
    assert [r["transitioned_from"] for r in timeline] == ["Trigger", "widget_0", "widget_1"]
    assert [r["transitioned_to"] for r in timeline] == ["widget_0", "widget_1", "Ended"]
    assert [r["since_previous_step"] for r in timeline] == [timedelta(seconds=1)] * 3
    assert [r["since_execution_start"].seconds for r in timeline] == [1, 2, 3]
    summary = await conn.fetchrow("SELECT * FROM studio.execution_summary")
    assert summary is not None
    assert summary["steps"] == 3 and summary["last_step_name"] == "next"
    assert summary["duration"] == timedelta(seconds=5)
    daily = await conn.fetchrow("SELECT * FROM studio.executions_daily")
    assert daily is not None
    assert str(daily["day"]) == "2026-11-20"  # the UTC day it started, not ended
    assert (daily["started"], daily["ended"], daily["active"]) == (1, 1, 0)
    assert daily["ended_reasons"] == '{"FLOW_END": 1}'
    assert await conn.fetchval("SELECT count(*) FROM studio.steps_missing_context") == 3


async def test_reader_cannot_write_or_read_internal_tables(
    reader: asyncpg.Connection[Any],
) -> None:
    denied = asyncpg.InsufficientPrivilegeError
    for statement in (
        "INSERT INTO studio.executions (execution_sid, flow_sid) VALUES ('FNx', 'FWx')",
        "UPDATE studio.executions SET status = 'ended'",
        "DELETE FROM studio.steps",
        "INSERT INTO studio.backfill_items (request_id, kind) VALUES (1, 'execution')",
        "UPDATE studio.flows SET friendly_name = 'mine'",
        "DELETE FROM studio.deliveries",
        # the views read their tables with the reader's rights (0014), so it may read those,
        # and no other: not the quarantine's bodies, not the sink's bookkeeping
        "SELECT body FROM sink.quarantine",
        "SELECT count(*) FROM sink.quarantine_usage",
        "SELECT count(*) FROM sink.rate_limits",
        "UPDATE sink.executions SET status = 'ended'",
        "DELETE FROM sink.events",
        "SELECT sink.enqueue_missing('sql')",
        "SELECT sink.grant_tenant_reader('x', ARRAY['AC00000000000000000000000000000000'])",
        "CREATE VIEW studio.mine AS SELECT 1 AS one",
    ):
        with pytest.raises(denied):
            await reader.execute(statement)
    for view in EXPECTED:
        await reader.fetch(f"SELECT * FROM studio.{view} LIMIT 1")


async def test_reader_can_request_a_backfill(
    conn: asyncpg.Connection[Any], reader: asyncpg.Connection[Any]
) -> None:
    exists = await conn.fetchval(
        "SELECT count(*) FROM pg_proc WHERE proname = 'request_backfill'"
        " AND pronamespace = 'studio'::regnamespace"
    )
    if not exists:
        pytest.skip("studio.request_backfill is not defined by the migrations")
    execution_sid = sid("FN")
    request_id = await reader.fetchval("SELECT studio.request_backfill($1::text)", execution_sid)
    row = await reader.fetchrow(
        "SELECT kind, requested_by, items_total FROM studio.backfill_requests"
        " WHERE request_id = $1",
        request_id,
    )
    assert row is not None
    assert dict(row) == {"kind": "executions", "requested_by": "sql", "items_total": 1}
