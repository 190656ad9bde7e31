"""The backfill's SQL about accounts (``sql/queries/backfill_accounts.sql``): whose item is
it, items waiting for their account's credentials, and ``sink.accounts.credentials_status``.

With ``sink.backfill.queue`` the only backfill modules that talk SQL. Every function takes a
connection (or a pool, for single statements).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sink.db.pool import Conn
from sink.db.queries import query

WAITING = "waiting_for_credentials"
"""The state of an item whose account has no REST credentials that work."""


@dataclass(frozen=True, slots=True)
class ItemAccounts:
    """What the stored rows say of an item's account, strongest first."""

    execution: str | None  # the execution's own account (from Twilio's signed events, or REST)
    flow: str | None  # the flow's (its flow row, else its executions' only account)
    request: str | None  # the account the request names (studio-sink backfill --account)


async def item_accounts(
    conn: Conn, execution_sid: str | None, flow_sid: str | None, request_id: int
) -> ItemAccounts:
    row = await conn.fetchrow(query("item_accounts"), execution_sid, flow_sid, request_id)
    assert row is not None  # a SELECT of scalar subqueries always returns its row
    return ItemAccounts(row["execution_account"], row["flow_account"], row["request_account"])


async def credentials_refused(conn: Conn, account_sid: str, reason: str) -> int:
    """Twilio refused every credential of the account: ``credentials_status`` 'invalid', and
    its queued items wait (``WAITING``) rather than each be refused in turn; how many."""
    parked: int = await conn.fetchval(query("credentials_refused"), account_sid, reason)
    return parked


async def credentials_worked(conn: Conn, account_sid: str) -> None:
    """A call with the account's credentials was answered: ``credentials_status`` 'ok'."""
    await conn.execute(query("credentials_worked"), account_sid)


async def resume_waiting(
    conn: Conn, accounts: Sequence[str], *, every: bool = False, request_id: int | None = None
) -> int:
    """Queue again the items waiting for the credentials of ``accounts`` (or every waiting
    item when ``every``: a fallback API key serves any account), of one request or all."""
    resumed: int = await conn.fetchval(query("resume_waiting"), list(accounts), every, request_id)
    return resumed


async def fan_out_flows(conn: Conn, request_id: int, accounts: Sequence[str]) -> int:
    """One 'flows' item per account on the request: every flow of each account."""
    added: int = await conn.fetchval(query("fan_out_flows"), request_id, list(accounts))
    return added
