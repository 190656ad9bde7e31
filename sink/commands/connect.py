"""``studio-sink connect``: set up Twilio Event Streams to deliver Studio events here.

For each account: find or create the webhook sink for the URL, ask Twilio for its test
event and wait for it in this sink's database, then find or create the subscription to
the three Studio event types at their current schema versions (``sink.connect``).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from urllib.parse import urlsplit

import aiohttp
from tqdm import tqdm

from sink.accounts.load import load_accounts
from sink.accounts.model import Account, Accounts
from sink.commands._common import open_database
from sink.config import Settings
from sink.connect.plan import account_url
from sink.connect.setup import Options, Outcome, connect_account
from sink.db.pool import DB_ERRORS, Conn
from sink.errors import ConfigError, SinkError
from sink.twilio import is_sid, sid_rule


def _webhook_url(text: str) -> str:
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a URL ({exc})") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not the sink's public URL: give the full https URL Twilio will"
            " call, e.g. https://sink.example.com/events"
        )
    return text


def _account_sid(text: str) -> str:
    if not is_sid(text, "AC"):
        raise argparse.ArgumentTypeError(f"{text!r}: {sid_rule('AC')}")
    return text


def chosen(args: argparse.Namespace, accounts: Accounts) -> list[tuple[Account, str]]:
    """(account, destination) for each account to connect."""
    if args.all:
        if not len(accounts):
            raise ConfigError(
                "--all: no account is configured. List them in SINK_ACCOUNTS_FILE (or set"
                " SINK_TWILIO_ACCOUNT_SID)"
            )
        return [(a, account_url(args.url, a.sid)) for a in accounts.listed()]
    if args.account:
        account = accounts.get(args.account)
        if account is None:
            raise ConfigError(
                f"account {args.account} is not configured: add [accounts.{args.account}]"
                " to SINK_ACCOUNTS_FILE (or set SINK_TWILIO_ACCOUNT_SID to it)"
            )
        return [(account, account_url(args.url, account.sid))]
    listed = accounts.listed()
    if len(listed) == 1:
        return [(listed[0], args.url)]
    if not listed:
        raise ConfigError(
            "no Twilio account is configured: set SINK_TWILIO_ACCOUNT_SID (with its auth token"
            " or API key), or list accounts in SINK_ACCOUNTS_FILE"
        )
    raise ConfigError(
        f"{len(listed)} accounts are configured: pass --account AC... for one of them (its"
        " URL becomes <url>/<AccountSid>) or --all for every one"
    )


async def _database(settings: Settings, args: argparse.Namespace) -> Conn | None:
    if args.dry_run or args.wait <= 0:
        return None
    try:
        return await open_database(settings)
    except (*DB_ERRORS, SinkError, OSError) as exc:
        print(
            f"studio-sink connect: this sink's database cannot be reached ({exc}), so the"
            " test events cannot be waited for; check SINK_DATABASE_URL",
            file=sys.stderr,
        )
        return None


async def cmd_connect(args: argparse.Namespace, settings: Settings) -> int:
    accounts = load_accounts(settings)
    targets = chosen(args, accounts)
    if urlsplit(args.url).scheme != "https":
        print(
            "studio-sink connect: warning: the URL is not https; Twilio's deliveries and their"
            " signatures would cross the internet in clear",
            file=sys.stderr,
        )
    options = Options(settings.events_base_url, dry_run=args.dry_run, wait=args.wait)
    conn = await _database(settings, args)
    outcomes: list[Outcome] = []
    try:
        async with aiohttp.ClientSession(headers={"User-Agent": "studio-sink"}) as session:
            with tqdm(
                targets, unit="account", desc="connect", file=sys.stderr, disable=not args.all
            ) as bar:
                for account, destination in bar:
                    outcome = await connect_account(
                        session, accounts, account, destination, options, conn
                    )
                    outcomes.append(outcome)
                    tqdm.write(outcome.report(), file=sys.stdout)
    finally:
        if conn is not None:
            with contextlib.suppress(*DB_ERRORS):
                await conn.close()
    return _summary(outcomes, args.dry_run)


def _summary(outcomes: list[Outcome], dry_run: bool) -> int:
    failed = sum(not o.ok for o in outcomes)
    changed = sum(o.changed for o in outcomes)
    unchanged = sum(o.ok and not o.changed for o in outcomes)
    if len(outcomes) > 1 or failed:
        verb = "would change" if dry_run else "changed"
        print(
            f"{len(outcomes)} account(s): {changed} {verb}, {unchanged} already set up,"
            f" {failed} failed"
        )
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "connect",
        help="set up Twilio Event Streams: the webhook sink, its test, the subscription",
        description=(
            "Finds or creates the account's Event Streams webhook sink for the URL, asks"
            " Twilio for its test event and waits for it in this sink's database, then finds"
            " or creates the subscription to the three Studio event types at their current"
            " schema versions. Idempotent: a second run changes nothing and says so. Uses"
            " the account's REST credentials (API key first, then its auth tokens) against"
            " SINK_EVENTS_BASE_URL. Exits 1 when an account could not be set up."
        ),
    )
    parser.add_argument(
        "--url",
        required=True,
        type=_webhook_url,
        help="the sink's public URL, e.g. https://sink.example.com/events",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--account",
        type=_account_sid,
        help="this account only; its sink sends to <url>/<AccountSid>",
    )
    which.add_argument(
        "--all",
        action="store_true",
        help="every configured account, each to <url>/<AccountSid>",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the plan; change nothing at Twilio"
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for Twilio's test event to arrive (default 30; 0: do not wait)",
    )
    parser.add_argument("--data-dir", help="embedded Postgres data (SINK_DATA_DIR)")
    parser.set_defaults(handler=cmd_connect)
