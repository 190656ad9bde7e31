"""``studio-sink backfill``: queue a backfill and run it in the foreground, with progress.

Each item is fetched with its account's REST credentials, from the accounts file
(``SINK_ACCOUNTS_FILE``) and the one-account settings; ``--account AC...`` names the account
whose credentials fetch what the stored rows do not place (and, with ``--missing``, limits
the request to that account's executions)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

import asyncpg
from tqdm import tqdm

from sink.accounts.model import Accounts
from sink.backfill import queue as q
from sink.backfill.accounts import AccountClients, callable_accounts
from sink.backfill.runner import Summary, run_foreground
from sink.commands._common import iso_datetime, open_database, open_route
from sink.config import Settings
from sink.db.route import create_route_pool
from sink.errors import ConfigError
from sink.ingest import redact
from sink.twilio import is_sid, sid_rule


class _Bar:
    """tqdm fed from the request's progress: items finished of items known so far."""

    def __init__(self, request_id: int, disable: bool) -> None:
        self._bar = tqdm(
            total=None,
            unit="item",
            desc=f"backfill #{request_id}",
            file=sys.stderr,
            dynamic_ncols=True,
            disable=disable,
        )

    def __call__(self, current: Summary) -> None:
        if current.items_total != self._bar.total:
            self._bar.total = current.items_total
            self._bar.refresh()
        delta = current.items_finished - self._bar.n
        if delta > 0:
            self._bar.update(delta)
        if current.items_failed or current.items_gone:
            self._bar.set_postfix(failed=current.items_failed, gone=current.items_gone)

    def close(self) -> None:
        self._bar.close()


async def _queue(args: argparse.Namespace, conn: asyncpg.Connection[Any]) -> int:
    if args.request is not None:
        if await q.progress(conn, args.request) is None:
            raise ConfigError(f"there is no backfill request {args.request}")
        rid: int = args.request
    elif args.execution:
        rid = await q.enqueue(
            conn, "executions", "cli", execution_sids=args.execution, account_sid=args.account
        )
    elif args.flow:
        if args.since is None:
            raise ConfigError("--flow needs --since (and optionally --until)")
        until = args.until or datetime.now(UTC)
        rid = await q.enqueue(
            conn,
            "flow",
            "cli",
            flow_sid=args.flow,
            since=args.since,
            until=until,
            account_sid=args.account,
        )
    elif args.flows is not None:  # "" (no value): every flow of the account(s)
        rid = await q.enqueue(
            conn, "flows", "cli", flow_sid=args.flows or None, account_sid=args.account
        )
    else:
        rid = await q.enqueue(conn, "missing", "cli", account_sid=args.account)
    return rid


def _check_credentials(accounts: Accounts, account: str | None) -> None:
    """Refuse early, before queuing, when no item could be fetched."""
    if account is not None:
        if not accounts.rest_credentials(account):
            raise ConfigError(
                f"account {account} has no REST credentials: give its table in"
                " SINK_ACCOUNTS_FILE an API key (api_key_sid, api_key_secret) or auth_tokens,"
                " or set SINK_TWILIO_ACCOUNT_SID to it with SINK_TWILIO_AUTH_TOKEN"
            )
        return
    if not callable_accounts(accounts) and accounts.fallback is None:
        raise ConfigError(
            "no Studio REST API credentials: list your accounts with an API key (api_key_sid,"
            " api_key_secret) or auth_tokens in SINK_ACCOUNTS_FILE, or set"
            " SINK_TWILIO_API_KEY_SID and SINK_TWILIO_API_KEY_SECRET (preferred), or"
            " SINK_TWILIO_ACCOUNT_SID with SINK_TWILIO_AUTH_TOKEN"
        )


def _print_summary(summary: Summary) -> None:
    print(
        f"backfill request {summary.request_id}: {summary.items_total} items,"
        f" {summary.items_done} done, {summary.items_gone} gone (404: expired),"
        f" {summary.items_failed} failed"
        + (
            f", {summary.items_waiting} waiting for credentials (they proceed once the"
            " account's credentials work: fix them, then run `studio-sink backfill --request"
            f" {summary.request_id}` or let a running sink pick them up)"
            if summary.items_waiting
            else ""
        )
    )
    if summary.error:
        print(f"  the request failed: {summary.error}")
    for sid, state, reason in summary.failures:
        print(f"  {state} {sid or '-'}: {reason}")
    shown = len(summary.failures)
    if summary.items_failed + summary.items_gone + summary.items_waiting > shown:
        print(
            f"  ... the others are in studio.backfill_items (request_id"
            f" {summary.request_id}, state failed, gone or waiting_for_credentials)"
        )


async def cmd_backfill(args: argparse.Namespace, settings: Settings) -> int:
    clients = AccountClients.from_settings(settings)
    _check_credentials(clients.accounts, args.account)  # fails early, before queuing
    try:
        route = await open_route(settings)
        conn = await open_database(settings, route)
        try:
            try:
                rid = await _queue(args, conn)
            except asyncpg.InvalidParameterValueError as exc:
                hint = f" ({exc.hint})" if getattr(exc, "hint", None) else ""
                raise ConfigError(f"{exc}{hint}") from None
        finally:
            await conn.close()
        workers = max(1, settings.backfill_workers)
        pool = await create_route_pool(settings, route, size=workers + 2)
        bar = _Bar(rid, disable=args.quiet)
        try:
            summary = await run_foreground(
                pool,
                clients,
                rid,
                bar,
                workers=workers,
                max_attempts=settings.backfill_max_attempts,
                privacy=redact.policy(settings),
            )
        finally:
            bar.close()
            await pool.close()
    finally:
        await clients.close()
    _print_summary(summary)
    return 1 if summary.items_failed or summary.items_waiting else 0


def _account_sid(text: str) -> str:
    if not is_sid(text, "AC"):
        raise argparse.ArgumentTypeError(f"{text!r}: {sid_rule('AC')}")
    return text


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "backfill",
        help="fetch contexts and missed data from the Studio REST API, in the foreground",
        description=(
            "Queues a backfill and runs it here, with a progress bar: executions by SID, a"
            " flow's executions created in a time range, flow definitions (--flows), or"
            " (--missing) every stored"
            " execution whose context, or one of whose steps' contexts, was never fetched."
            " Each item is fetched with its account's credentials (SINK_ACCOUNTS_FILE and the"
            " SINK_TWILIO_* settings). Exits 0 when no item failed or waits for credentials"
            " (items gone from the API, 404, are reported), 1 otherwise."
        ),
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--execution",
        action="append",
        metavar="FN...",
        help="an Execution SID (repeat for several)",
    )
    what.add_argument("--flow", metavar="FW...", help="a Flow SID; needs --since")
    what.add_argument(
        "--flows",
        nargs="?",
        const="",
        metavar="FW...",
        help="flow definitions: every flow of the account (GET /v2/Flows), or the one named,"
        " with its latest revision and the revisions stored executions ran",
    )
    what.add_argument(
        "--missing", action="store_true", help="every stored execution or step lacking context"
    )
    what.add_argument(
        "--request", type=int, metavar="ID", help="run an already queued request (e.g. from SQL)"
    )
    parser.add_argument(
        "--since", type=iso_datetime, help="with --flow: executions created at or after (ISO 8601)"
    )
    parser.add_argument(
        "--until", type=iso_datetime, help="with --flow: created before (ISO 8601; default now)"
    )
    parser.add_argument(
        "--account",
        type=_account_sid,
        metavar="AC...",
        help="the account whose credentials fetch what the stored rows do not place (needed"
        " with several accounts for a flow no stored row names); with --missing, only that"
        " account's executions; with --flows, only that account's flows",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--data-dir", help="embedded Postgres data (SINK_DATA_DIR)")
    parser.set_defaults(handler=cmd_backfill)
