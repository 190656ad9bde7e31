"""The copy of the accounts' SIDs and labels in ``sink.accounts`` (never a secret)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from sink.accounts.model import Accounts
from sink.db.pool import Conn
from sink.db.queries import query

Executor: TypeAlias = "Conn | asyncpg.Pool[Any]"


@dataclass(frozen=True, slots=True)
class AccountRow:
    account_sid: str
    label: str
    configured: bool
    credentials_status: str
    credentials_checked_at: datetime | None


async def sync_accounts(conn: Executor, accounts: Accounts) -> None:
    """Make ``sink.accounts`` list the accounts in force; the others stay, not configured."""
    listed = accounts.listed()
    await conn.execute(
        query("sync_accounts"),
        [account.sid for account in listed],
        [account.label for account in listed],
        [bool(accounts.rest_credentials(account.sid)) for account in listed],
    )


async def list_accounts(conn: Executor) -> list[AccountRow]:
    """Every account the sink knows (``sink.accounts``), configured ones first, by label."""
    rows = await conn.fetch(query("list_accounts"))
    return [AccountRow(**dict(row)) for row in rows]
