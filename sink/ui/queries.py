"""The UI's SQL: the only place the execution browser talks to Postgres.

It reads the consumer views in schema ``studio`` only. Lists are keyset-paged on indexed
columns and always ``LIMIT``ed, so a page costs the same with ten rows or ten million.
Optional objects (the backfill queue, flow revisions) are looked up with ``to_regclass``
first, so the UI works against a schema that does not have them yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg

from sink.db import Conn

TEST_EVENT_TYPE: Final = "com.twilio.eventstreams.test-event"
PAGE_SIZE: Final = 50
RAW_PREVIEW_BYTES: Final = 65536  # as written in REJECTED_PAGE
NO_UPPER_BOUND: Final = 2**63 - 1

PER_MINUTE: Final = """
SELECT date_trunc('minute', received_at) AS minute, count(*) AS deliveries,
       coalesce(sum(events), 0) AS events
FROM studio.deliveries
WHERE received_at >= now() - make_interval(mins => $1)
GROUP BY 1
ORDER BY 1
"""
LAST_DELIVERY: Final = "SELECT max(received_at) FROM studio.deliveries"
LAST_TEST_EVENT: Final = """
SELECT received_at, time, data FROM studio.events
WHERE type = $1
ORDER BY received_at DESC
LIMIT 1
"""
REJECTED_LAST_DAY: Final = """
SELECT count(*) FROM studio.rejected_events WHERE received_at >= now() - interval '24 hours'
"""
LAST_REJECTED: Final = "SELECT max(received_at) FROM studio.rejected_events"
RELATION_EXISTS: Final = "SELECT to_regclass($1) IS NOT NULL"
FUNCTION_EXISTS: Final = "SELECT to_regprocedure($1) IS NOT NULL"
BACKFILL_SUMMARY: Final = """
SELECT status, count(*) AS requests, coalesce(sum(items_total), 0) AS items_total,
       coalesce(sum(items_done), 0) AS items_done,
       coalesce(sum(items_failed), 0) AS items_failed,
       coalesce(sum(items_gone), 0) AS items_gone
FROM studio.backfill_requests
GROUP BY status
ORDER BY status
"""
BACKFILL_RECENT: Final = """
SELECT request_id, kind, flow_sid, status, items_total, items_done, items_failed, items_gone,
       created_at, finished_at, requested_by
FROM studio.backfill_requests
ORDER BY created_at DESC
LIMIT 5
"""
BACKFILL_REQUEST: Final = """
SELECT request_id, kind, status, items_total, items_done, items_failed, items_gone,
       created_at, finished_at
FROM studio.backfill_requests
WHERE request_id = $1
"""
REQUEST_BACKFILL: Final = "SELECT studio.request_backfill($1)"

# The executions list: fixed fragments, composed by executions_query(); values are bound.
EXECUTIONS_SELECT: Final = """
SELECT execution_sid, flow_sid, account_sid, status, contact_channel_address, started_by,
       flow_revision, ended_reason, date_created, date_updated, first_seen_at
FROM studio.executions"""
EXECUTIONS_ORDER: Final = "ORDER BY date_created DESC NULLS FIRST, execution_sid DESC"
FILTER_FLOW: Final = "flow_sid = ${}"
FILTER_STATUS: Final = "status = ${}"
FILTER_ENDED_REASON: Final = "ended_reason = ${}"
FILTER_CONTACT: Final = "contact_channel_address = ${}"
FILTER_FROM: Final = "date_created >= ${}"
FILTER_UNTIL: Final = "date_created < ${}"
# after a row with a date: rows with an earlier date, or the same date and a smaller SID
AFTER_DATED: Final = "date_created <= ${0} AND (date_created < ${0} OR execution_sid < ${1})"
# after a row without a date (they sort first): undated rows with a smaller SID, then all dated
AFTER_UNDATED: Final = "(date_created IS NOT NULL OR execution_sid < ${0})"

EXECUTION: Final = """
SELECT execution_sid, flow_sid, account_sid, status, contact_channel_address, started_by,
       flow_revision, ended_reason, date_created, date_updated, first_seen_at,
       context, context_fetched_at, updated_at
FROM studio.executions WHERE execution_sid = $1
"""
STEPS: Final = """
SELECT step_sid, name, transitioned_from, transitioned_to, parent_step_sid, date_created,
       context, context_fetched_at, first_seen_at
FROM studio.steps
WHERE execution_sid = $1
ORDER BY date_created NULLS LAST, first_seen_at, step_sid
LIMIT 1000  -- a Studio execution has at most 1000 steps
"""
FLOW_REVISION: Final = """
SELECT definition FROM studio.flow_revisions WHERE flow_sid = $1 AND revision = $2
"""
FLOW_REVISION_EXISTS: Final = """
SELECT EXISTS (SELECT FROM studio.flow_revisions WHERE flow_sid = $1 AND revision = $2)
"""
REJECTED_PAGE: Final = """
SELECT rejected_id, received_at, reason, detail, event_type, event_id, source, request_id,
       octet_length(raw) AS raw_bytes,
       left(raw_text, 65536) AS raw_text,
       CASE WHEN raw_text IS NULL
            THEN encode(substring(raw FROM 1 FOR 65536), 'hex') END AS raw_hex
FROM studio.rejected_events
WHERE rejected_id < $1
ORDER BY rejected_id DESC
LIMIT $2
"""


@dataclass(frozen=True, slots=True)
class ExecutionFilters:
    flow_sid: str | None = None
    status: str | None = None
    ended_reason: str | None = None
    contact: str | None = None
    created_from: datetime | None = None
    created_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Cursor:
    """The last row of the previous page: (date_created, execution_sid)."""

    date_created: datetime | None
    execution_sid: str


def executions_query(
    filters: ExecutionFilters, after: Cursor | None, limit: int
) -> tuple[str, list[Any]]:
    """The list query and its arguments; only the constant fragments above go into the SQL."""
    where: list[str] = []
    args: list[Any] = []

    def add(fragment: str, *values: Any) -> None:
        numbers = range(len(args) + 1, len(args) + 1 + len(values))
        args.extend(values)
        where.append(fragment.format(*numbers))

    for fragment, value in (
        (FILTER_FLOW, filters.flow_sid),
        (FILTER_STATUS, filters.status),
        (FILTER_ENDED_REASON, filters.ended_reason),
        (FILTER_CONTACT, filters.contact),
        (FILTER_FROM, filters.created_from),
        (FILTER_UNTIL, filters.created_until),
    ):
        if value is not None:
            add(fragment, value)
    if after is not None:
        if after.date_created is None:
            add(AFTER_UNDATED, after.execution_sid)
        else:
            add(AFTER_DATED, after.date_created, after.execution_sid)
    sql = EXECUTIONS_SELECT
    if where:
        sql += " WHERE " + " AND ".join(where)
    args.append(limit)
    sql += f" {EXECUTIONS_ORDER} LIMIT ${len(args)}"
    return sql, args


async def has_relation(conn: Conn, name: str) -> bool:
    return bool(await conn.fetchval(RELATION_EXISTS, name))


async def overview(conn: Conn, minutes: int) -> dict[str, Any]:
    result: dict[str, Any] = {
        "per_minute": await conn.fetch(PER_MINUTE, minutes),
        "last_delivery": await conn.fetchval(LAST_DELIVERY),
        "last_test_event": await conn.fetchrow(LAST_TEST_EVENT, TEST_EVENT_TYPE),
        "rejected_last_day": await conn.fetchval(REJECTED_LAST_DAY),
        "last_rejected": await conn.fetchval(LAST_REJECTED),
        "backfill": None,
        "backfill_recent": [],
    }
    if await has_relation(conn, "studio.backfill_requests"):
        result["backfill"] = await conn.fetch(BACKFILL_SUMMARY)
        result["backfill_recent"] = await conn.fetch(BACKFILL_RECENT)
    return result


async def executions(
    conn: Conn, filters: ExecutionFilters, after: Cursor | None, limit: int = PAGE_SIZE
) -> list[asyncpg.Record]:
    sql, args = executions_query(filters, after, limit)
    rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
    return rows


async def execution(conn: Conn, execution_sid: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(EXECUTION, execution_sid)
    return row


async def steps(conn: Conn, execution_sid: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(STEPS, execution_sid)
    return rows


async def flow_revision(conn: Conn, flow_sid: str, revision: int) -> Any | None:
    """The revision's definition, or None when not backfilled (or no such table yet)."""
    if not await has_relation(conn, "studio.flow_revisions"):
        return None
    return await conn.fetchval(FLOW_REVISION, flow_sid, revision)


async def has_flow_revision(conn: Conn, flow_sid: str, revision: int) -> bool:
    if not await has_relation(conn, "studio.flow_revisions"):
        return False
    return bool(await conn.fetchval(FLOW_REVISION_EXISTS, flow_sid, revision))


async def rejected(conn: Conn, before: int | None, limit: int = PAGE_SIZE) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        REJECTED_PAGE, before if before is not None else NO_UPPER_BOUND, limit
    )
    return rows


async def request_backfill(conn: Conn, execution_sid: str) -> int | None:
    """Queue a backfill of one execution; None when the database has no backfill yet."""
    if not await conn.fetchval(FUNCTION_EXISTS, "studio.request_backfill(text)"):
        return None
    request_id: int = await conn.fetchval(REQUEST_BACKFILL, execution_sid)
    return request_id


async def backfill_request(conn: Conn, request_id: int) -> asyncpg.Record | None:
    if not await has_relation(conn, "studio.backfill_requests"):
        return None
    row: asyncpg.Record | None = await conn.fetchrow(BACKFILL_REQUEST, request_id)
    return row
