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

from sink.analytics import queries as analytics
from sink.backfill import queue as backfill_queue
from sink.db.pool import Conn
from sink.db.queries import query
from sink.maintenance import quarantine
from sink.twilio import TEST_EVENT_TYPE

PAGE_SIZE: Final = 50
RAW_PREVIEW_BYTES: Final = 65536  # as written in query("ui_rejected_page")
NO_UPPER_BOUND: Final = 2**63 - 1


EXECUTIONS_ORDER: Final = "ORDER BY date_created DESC NULLS FIRST, execution_sid DESC"
FILTER_ACCOUNT: Final = "account_sid = ${}"
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


@dataclass(frozen=True, slots=True)
class ExecutionFilters:
    account_sid: str | None = None
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
        (FILTER_ACCOUNT, filters.account_sid),
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
    sql = query("ui_executions_select")
    if where:
        sql += " WHERE " + " AND ".join(where)
    args.append(limit)
    sql += f" {EXECUTIONS_ORDER} LIMIT ${len(args)}"
    return sql, args


async def has_relation(conn: Conn, name: str) -> bool:
    return bool(await conn.fetchval(query("relation_exists"), name))


async def overview(conn: Conn, minutes: int, account_sid: str | None) -> dict[str, Any]:
    """The overview's figures. Deliveries and rejected events belong to no one account and
    are counted for all; the test events and the backfill queue are ``account_sid``'s."""
    result: dict[str, Any] = {
        "per_minute": await conn.fetch(query("ui_deliveries_per_minute"), minutes),
        "last_delivery": await conn.fetchval(query("ui_last_delivery")),
        "test_events": await conn.fetch(
            query("ui_test_events_per_account"), TEST_EVENT_TYPE, account_sid
        ),
        "rejected_last_day": await conn.fetchval(query("ui_rejected_last_day")),
        "last_rejected": await conn.fetchval(query("ui_last_rejected")),
        "backfill": None,
        "backfill_recent": [],
        "quarantined": {},  # reason -> deliveries refused for their signature, last hour
    }
    if await has_relation(conn, "studio.quarantine"):
        result["quarantined"] = await quarantine.recent_by_reason(conn, 3600)
    if await has_relation(conn, "studio.backfill_requests"):
        result["backfill"] = await conn.fetch(query("ui_backfill_summary"), account_sid)
        result["backfill_recent"] = await conn.fetch(query("ui_backfill_recent"), account_sid)
    return result


async def executions(
    conn: Conn, filters: ExecutionFilters, after: Cursor | None, limit: int = PAGE_SIZE
) -> list[asyncpg.Record]:
    sql, args = executions_query(filters, after, limit)
    rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
    return rows


async def execution(conn: Conn, execution_sid: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(query("ui_execution"), execution_sid)
    return row


async def steps(conn: Conn, execution_sid: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(query("ui_steps"), execution_sid)
    return rows


async def flow_revision(conn: Conn, flow_sid: str, revision: int) -> Any | None:
    """The revision's definition, or None when not backfilled (or no such table yet)."""
    if not await has_relation(conn, "studio.flow_revisions"):
        return None
    return await conn.fetchval(query("ui_flow_revision"), flow_sid, revision)


async def has_flow_revision(conn: Conn, flow_sid: str, revision: int) -> bool:
    if not await has_relation(conn, "studio.flow_revisions"):
        return False
    return bool(await conn.fetchval(query("ui_flow_revision_exists"), flow_sid, revision))


async def rejected(conn: Conn, before: int | None, limit: int = PAGE_SIZE) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        query("ui_rejected_page"), before if before is not None else NO_UPPER_BOUND, limit
    )
    return rows


async def request_backfill(conn: Conn, execution_sid: str) -> int | None:
    """Queue a backfill of one execution; None when the database has no backfill yet."""
    if not await conn.fetchval(query("function_exists"), "studio.request_backfill(text)"):
        return None
    request_id: int = await conn.fetchval(query("ui_request_backfill"), execution_sid)
    return request_id


async def backfill_request(conn: Conn, request_id: int) -> asyncpg.Record | None:
    if not await has_relation(conn, "studio.backfill_requests"):
        return None
    row: asyncpg.Record | None = await conn.fetchrow(query("ui_backfill_request"), request_id)
    return row


# -- the flow pages -------------------------------------------------------------------


async def flows(conn: Conn, account_sid: str | None) -> list[analytics.FlowOverview]:
    """Every flow seen, or those of ``account_sid``."""
    every = await analytics.flows_overview(conn)
    if account_sid is None:
        return every
    mine = {r["flow_sid"] for r in await conn.fetch(query("ui_account_flows"), account_sid)}
    return [f for f in every if f.flow_sid in mine]


async def flow_names(conn: Conn, flow_sids: list[str]) -> dict[str, str]:
    """Friendly names of the fetched flows among ``flow_sids``."""
    if not flow_sids:
        return {}
    rows = await conn.fetch(query("ui_flow_names"), sorted(set(flow_sids)))
    return {r["flow_sid"]: r["friendly_name"] for r in rows}


async def flow(conn: Conn, flow_sid: str) -> asyncpg.Record:
    row: asyncpg.Record | None = await conn.fetchrow(query("ui_flow"), flow_sid)
    assert row is not None  # one row, whether or not the flow was fetched
    return row


async def flow_revisions(conn: Conn, flow_sid: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(query("ui_flow_revisions"), flow_sid)
    return rows


async def flow_definition(conn: Conn, flow_sid: str, revision: int) -> Any | None:
    return await conn.fetchval(query("ui_flow_definition"), flow_sid, revision)


@dataclass(frozen=True, slots=True)
class FlowWindow:
    """Which executions a flow page counts: created in [since, until), of one revision."""

    flow_sid: str
    since: datetime
    until: datetime
    revision: int | None

    def args(self) -> tuple[str, datetime, datetime, int | None]:
        return self.flow_sid, self.since, self.until, self.revision


async def transition_stats(conn: Conn, window: FlowWindow) -> list[analytics.TransitionStat]:
    return await analytics.transition_stats(conn, *window.args())


async def widget_stats(conn: Conn, window: FlowWindow) -> list[analytics.WidgetStat]:
    return await analytics.widget_stats(conn, *window.args())


async def ended_at_widget(conn: Conn, window: FlowWindow, widget: str) -> list[asyncpg.Record]:
    """The 20 latest executions whose last step is at ``widget``."""
    rows: list[asyncpg.Record] = await conn.fetch(
        query("ui_flow_ended_at_widget"), *window.args(), widget
    )
    return rows


async def request_flows_backfill(conn: Conn, flow_sid: str) -> int | None:
    """Queue a fetch of the flow's definitions; None when the database lacks the 'flows' kind."""
    if not await conn.fetchval(query("function_exists"), "sink.enqueue_flows(text,text)"):
        return None
    return await backfill_queue.enqueue(conn, "flows", "ui", flow_sid=flow_sid)
