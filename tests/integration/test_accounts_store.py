"""``sink.accounts`` follows the accounts in force; ``studio.accounts`` shows no secret."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
from pydantic import SecretStr

from sink.accounts.model import Account, Accounts
from sink.accounts.store import list_accounts, sync_accounts
from sink.web.keys import ACCOUNTS

A = "AC" + "a" * 32
B = "AC" + "b" * 32
KEY = "SK" + "c" * 32


def accounts(*listed: Account) -> Accounts:
    return Accounts.of(listed)


async def test_sync_lists_configured_accounts_and_keeps_removed_ones(
    conn: asyncpg.Connection[Any],
) -> None:
    a = Account(sid=A, label="acme-prod", auth_tokens=(SecretStr("tok-a"),))
    b = Account(sid=B, label="beta", api_key_sid=KEY, api_key_secret=SecretStr("key-b"))
    await sync_accounts(conn, accounts(a, b))
    rows = {row.account_sid: row for row in await list_accounts(conn)}
    assert (rows[A].label, rows[A].configured, rows[A].credentials_status) == (
        "acme-prod",
        True,
        "unknown",
    )
    assert rows[B].credentials_status == "unknown"

    await sync_accounts(conn, accounts(Account(sid=A, label="acme")))
    rows = {row.account_sid: row for row in await list_accounts(conn)}
    assert (rows[A].label, rows[A].credentials_status) == ("acme", "missing")
    assert rows[B].configured is False


async def test_a_reload_lets_invalid_credentials_be_tried_again(
    conn: asyncpg.Connection[Any],
) -> None:
    a = Account(sid=A, label="acme", auth_tokens=(SecretStr("tok-a"),))
    await sync_accounts(conn, accounts(a))
    await conn.execute("UPDATE sink.accounts SET credentials_status = 'invalid'")
    await sync_accounts(conn, accounts(a))
    assert (await list_accounts(conn))[0].credentials_status == "unknown"
    await conn.execute("UPDATE sink.accounts SET credentials_status = 'ok'")
    await sync_accounts(conn, accounts(a))
    assert (await list_accounts(conn))[0].credentials_status == "ok"


async def test_the_view_names_accounts_without_secrets(conn: asyncpg.Connection[Any]) -> None:
    a = Account(sid=A, label="acme", auth_tokens=(SecretStr("tok-secret"),))
    await sync_accounts(conn, accounts(a))
    row = await conn.fetchrow("SELECT * FROM studio.accounts")
    assert row is not None
    assert set(row.keys()) == {
        "account_sid",
        "label",
        "configured",
        "credentials_status",
        "credentials_checked_at",
    }
    assert "tok-secret" not in repr(dict(row))


async def test_a_running_sink_copies_its_accounts_and_each_reload(
    start_sink: Callable[..., Any], conn: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    path = tmp_path / "accounts.toml"
    path.write_text(f'[accounts.{A}]\nlabel = "acme"\nauth_tokens = ["tok-a"]\n')
    sink = await start_sink(accounts_file=path)
    assert await conn.fetchval("SELECT label FROM studio.accounts") == "acme"
    path.write_text(
        f'[accounts.{A}]\nlabel = "acme-prod"\nauth_tokens = ["tok-a"]\n'
        f'[accounts.{B}]\nlabel = "beta"\nauth_tokens = ["tok-b"]\n'
    )
    assert sink.client.app[ACCOUNTS].reload()
    for _ in range(100):
        labels = await conn.fetch("SELECT label FROM studio.accounts ORDER BY label")
        if [row["label"] for row in labels] == ["acme-prod", "beta"]:
            break
        await asyncio.sleep(0.02)
    assert [row["label"] for row in labels] == ["acme-prod", "beta"]
