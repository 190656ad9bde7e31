"""The account selector every page carries: which account the pages show (``?account=AC...``,
kept across navigation), the accounts to choose from (``studio.accounts``, by label), and the
accounts whose REST credentials Twilio refused, with the fix."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import asyncpg
from aiohttp import web

from sink.accounts.store import AccountRow, list_accounts
from sink.db.pool import Conn
from sink.twilio import is_sid
from sink.ui.filters import ACCOUNT_PARAM, with_account
from sink.ui.queries import has_relation

__all__ = ["ACCOUNT_PARAM", "AccountChoice", "latest_tests", "load", "with_account"]
INVALID_FIX: Final = (
    "Twilio refused every REST credential of this account (HTTP 401): its backfill items wait."
    " Fix auth_tokens or api_key_sid/api_key_secret for it in SINK_ACCOUNTS_FILE (or"
    " SINK_TWILIO_AUTH_TOKEN / the API key settings), then reload the sink (SIGHUP, or save the"
    " file); the items proceed once a call succeeds."
)


@dataclass(frozen=True, slots=True)
class AccountChoice:
    """The selected account (None: every account), and the accounts to choose from."""

    selected: str | None = None
    accounts: list[AccountRow] = field(default_factory=list)

    @property
    def invalid(self) -> list[AccountRow]:
        """Configured accounts whose REST credentials Twilio refused."""
        return [a for a in self.accounts if a.credentials_status == "invalid"]

    def label(self, account_sid: str | None) -> str:
        for a in self.accounts:
            if a.account_sid == account_sid:
                return a.label
        return account_sid or ""

    def unknown_selected(self) -> bool:
        """An account asked for that studio.accounts does not list (still filtered by)."""
        return self.selected is not None and all(
            a.account_sid != self.selected for a in self.accounts
        )


ACCOUNTS_KEY: Final = web.RequestKey("ui_account_choice", AccountChoice)


def selected_account(request: web.Request) -> str | None:
    """``?account=`` when it is an Account SID, else None (every account)."""
    value = request.query.get(ACCOUNT_PARAM, "")
    return value if is_sid(value, "AC") else None


async def load(conn: Conn, request: web.Request) -> AccountChoice:
    """The page's choice, remembered on the request for the page's template."""
    rows = await list_accounts(conn) if await has_relation(conn, "sink.accounts") else []
    choice = AccountChoice(selected_account(request), rows)
    request[ACCOUNTS_KEY] = choice
    return choice


def latest_tests(choice: AccountChoice, rows: list[asyncpg.Record]) -> list[dict[str, Any]]:
    """The latest test event per account, for the overview: every configured account (or
    the selected one), "never" for those without one, then the other accounts seen."""
    by_account = {r["account_sid"]: r for r in rows}
    if choice.selected is not None:
        shown: list[str | None] = [choice.selected]
    else:
        shown = [a.account_sid for a in choice.accounts if a.configured]
        shown += sorted(sid for sid in by_account if sid is not None and sid not in shown)
        shown += [None] if None in by_account else []
    return [
        {
            "account_sid": sid,
            "label": choice.label(sid) if sid else "no account named",
            "event": by_account.get(sid),
        }
        for sid in shown
    ]


def template_values(request: web.Request) -> dict[str, Any]:
    """What base.html needs for the selector: the choice, and the current query to keep."""
    choice = request.get(ACCOUNTS_KEY) or AccountChoice(selected_account(request))
    keep = [
        (k, v)
        for k, v in request.query.items()
        if k not in (ACCOUNT_PARAM, "after_sid", "after_date", "before", "backfill", "notice")
    ]
    return {
        "account": choice.selected,
        "account_choice": choice,
        "account_keep": keep,
        "invalid_fix": INVALID_FIX,
    }
