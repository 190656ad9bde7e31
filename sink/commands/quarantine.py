"""``studio-sink quarantine``: deliveries refused for their signature (``list``, ``retry``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import datetime

from sink.accounts.load import load_accounts
from sink.commands._common import open_database
from sink.config import Settings
from sink.errors import ConfigError
from sink.ingest import redact
from sink.ingest.signature import SignatureCheck
from sink.maintenance import quarantine
from sink.web.verify import check_signature


def size(n: int) -> str:
    """Bytes for people: ``512 B``, ``3.4 kB``, ``50.0 MB`` (powers of 1024)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _when(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ")


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as left-aligned columns, two spaces apart; the first row is the heading."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


async def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    conn = await open_database(settings)
    try:
        held = await quarantine.usage(conn)
        groups = await quarantine.summary(conn)
    finally:
        await conn.close()
    print(
        f"quarantine: {held.deliveries} deliveries, {size(held.bytes)} of"
        f" {size(settings.quarantine_max_bytes)} (SINK_QUARANTINE_MAX_BYTES); this hour"
        f" {size(held.hour_bytes)} of {size(settings.quarantine_max_bytes_per_hour)}"
        " (SINK_QUARANTINE_MAX_BYTES_PER_HOUR)"
    )
    if not groups:
        print("no delivery is quarantined")
        return 0
    heading = ("reason", "deliveries", "first seen", "last seen", "URL seen", "URL checked")
    rows = [
        (
            g["reason"],
            str(g["deliveries"]),
            _when(g["first_seen"]),
            _when(g["last_seen"]),
            g["url_seen"],
            g["url_checked"],
        )
        for g in groups
    ]
    for line in table([heading, *rows]):
        print(line)
    if any(g["reason"] == "unknown_account" for g in groups):
        print(
            "unknown_account: add each account its URL names (/events/AC...) to the accounts"
            " file (SINK_ACCOUNTS_FILE) with its auth_tokens."
        )
    print(
        "Fix SINK_PUBLIC_URL (the URL configured in Twilio) or the token"
        " (SINK_TWILIO_AUTH_TOKEN, or auth_tokens in SINK_ACCOUNTS_FILE), then run"
        " `studio-sink quarantine retry`."
    )
    return 0


async def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.verify_signature:
        raise ConfigError(
            "SINK_VERIFY_SIGNATURE=false: a retry would store every quarantined delivery"
            " unverified, forged ones included. Run it with the sink's real configuration"
            " (SINK_TWILIO_AUTH_TOKEN, SINK_PUBLIC_URL) and verification on."
        )
    privacy = redact.policy(settings)
    accounts = load_accounts(settings)

    def check(request: quarantine.KeptRequest, body: bytes) -> SignatureCheck:
        return check_signature(request, body, settings, accounts)

    conn = await open_database(settings)
    try:
        report = await quarantine.retry(conn, check, privacy=privacy, dry_run=args.dry_run)
    finally:
        await conn.close()
    if args.dry_run:
        print("dry run: nothing was stored or removed")
    for line in report.lines():
        print(line)
    return 1 if report.errors else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "quarantine",
        help="deliveries refused for their signature: list them, retry them after a fix",
        description=(
            "A delivery whose signature check fails is answered 401 (Twilio then drops it)"
            " and kept in quarantine, within SINK_QUARANTINE_MAX_BYTES(_PER_HOUR). `list`"
            " shows them by reason and URL; `retry` checks each again with the current"
            " configuration and stores those that now pass, like a live delivery."
        ),
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="counts by reason and URL, with first and last seen")
    listing.set_defaults(handler=cmd_list)
    retry = actions.add_parser(
        "retry",
        help="check every kept delivery again; store and remove those that now pass",
        description=(
            "Uses the current SINK_TWILIO_AUTH_TOKEN, SINK_ACCOUNTS_FILE,"
            " SINK_TWILIO_SHARED_KEYS, SINK_PUBLIC_URL and SINK_TRUST_FORWARDED, exactly as"
            " the receiver would (a delivery to /events/AC... against that account's tokens)."
            " What still fails stays in quarantine."
        ),
    )
    retry.add_argument(
        "--dry-run", action="store_true", help="only count what would pass, store nothing"
    )
    retry.set_defaults(handler=cmd_retry)
    for command in (listing, retry):
        command.add_argument("--data-dir", help="embedded Postgres data (SINK_DATA_DIR)")
