"""Did Twilio reach this sink? Its database says: the sink test event, and the last delivery.

A test event is recognised by its ``data.test_id``: the wait counts only a test event of
the account received since the database's own clock read just before the test was asked
for, with a test_id not seen before then (the Test endpoint does not tell the id).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime

from sink.accounts.store import list_accounts
from sink.db.pool import Conn
from sink.db.queries import query

POLL_SECONDS = 0.25
LOOKBACK_DAYS = 30


@dataclass(frozen=True, slots=True)
class Arrived:
    test_id: str
    received_at: datetime
    elapsed: float  # seconds from the request to the test event's arrival in the database


async def clock(conn: Conn) -> datetime:
    now: datetime = await conn.fetchval(query("connect_clock"))
    return now


async def wait_for_test_event(
    conn: Conn, account_sid: str, since: datetime, seconds: float
) -> Arrived | None:
    """The account's new test event once stored, or None after ``seconds``."""
    started = time.monotonic()
    while True:
        row = await conn.fetchrow(query("connect_test_event"), account_sid, since)
        if row is not None and row["test_id"] is not None:
            elapsed = max(0.0, (row["received_at"] - since).total_seconds())
            return Arrived(row["test_id"], row["received_at"], elapsed)
        if time.monotonic() - started >= seconds:
            return None
        await asyncio.sleep(POLL_SECONDS)


@dataclass(frozen=True, slots=True)
class LastArrivals:
    last_delivery: datetime | None
    last_test_event: datetime | None


async def last_arrivals(conn: Conn, account_sid: str) -> LastArrivals:
    """When the account's latest event and latest test event arrived (last 30 days)."""
    row = await conn.fetchrow(query("doctor_last_arrivals"), account_sid, LOOKBACK_DAYS)
    return (
        LastArrivals(row["last_delivery"], row["last_test_event"])
        if row
        else LastArrivals(None, None)
    )


async def credentials_status(
    conn: Conn, account_sids: list[str]
) -> dict[str, tuple[str, datetime | None]]:
    """What the backfill last found of each account's REST credentials."""
    wanted = set(account_sids)
    return {
        row.account_sid: (row.credentials_status, row.credentials_checked_at)
        for row in await list_accounts(conn)
        if row.account_sid in wanted
    }
