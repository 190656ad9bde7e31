"""``studio-sink privacy``: ``apply`` (rewrite stored data to the current privacy settings),
``contact-key`` (the hashed form of an address, for a lookup) and ``expire``."""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from sink.commands._common import open_database
from sink.config import Settings
from sink.errors import ConfigError
from sink.ingest import redact
from sink.maintenance import privacy, privacy_apply


async def cmd_apply(args: argparse.Namespace, settings: Settings) -> int:
    policy = redact.policy(settings)
    if not policy.active:
        print("SINK_CONTACT_MODE=keep and no SINK_REDACT_CONTEXT_PATHS: nothing to rewrite")
        return 0
    conn = await open_database(settings)
    try:
        with tqdm(unit="row", desc="privacy apply", file=sys.stderr, disable=args.quiet) as bar:

            def progress(table: str, rows: int) -> None:
                bar.set_postfix_str(table)
                bar.update(rows)

            report = await privacy_apply.apply(
                conn, policy, batch_rows=args.batch_size, progress=progress
            )
    finally:
        await conn.close()
    for line in report.lines():
        print(line)
    return 0


async def cmd_contact_key(args: argparse.Namespace, settings: Settings) -> int:
    if settings.pii_key is None:
        raise ConfigError(
            "SINK_PII_KEY is not set: the contact key is HMAC-SHA256(SINK_PII_KEY, address);"
            " set SINK_PII_KEY to the key the sink runs with"
        )
    print(redact.contact_key(args.contact, settings.pii_key.get_secret_value().encode()))
    return 0


async def cmd_expire(args: argparse.Namespace, settings: Settings) -> int:
    conn = await open_database(settings)
    try:
        report = await privacy.expire_for(conn, settings)
    finally:
        await conn.close()
    for line in report.lines():
        print(line)
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "privacy", help="apply the privacy settings to stored data; compute contact keys"
    )
    commands = parser.add_subparsers(dest="privacy_command", required=True)
    apply = commands.add_parser(
        "apply",
        help="rewrite stored data as SINK_CONTACT_MODE and SINK_REDACT_CONTEXT_PATHS"
        " store new data",
        description=(
            "Hashes or masks the stored contact addresses (typed executions, raw events,"
            " rejected events, addresses in contexts) and redacts the configured context"
            " paths, in batches of short transactions. Idempotent. A hashed or masked value"
            " cannot be turned back: changing from hash to mask (or back) leaves those as"
            " they are."
        ),
    )
    apply.add_argument("--batch-size", type=_positive, default=privacy.BATCH_ROWS)
    apply.add_argument("--quiet", action="store_true", help="no progress bar")
    apply.add_argument("--data-dir", help="embedded Postgres data (SINK_DATA_DIR)")
    apply.set_defaults(handler=cmd_apply)
    key = commands.add_parser(
        "contact-key",
        help="print h:<hex>, the stored form of an address in hash mode (for SQL lookups)",
    )
    key.add_argument("contact", help="the address, e.g. '+15551234567'")
    key.set_defaults(handler=cmd_contact_key)
    expire = commands.add_parser(
        "expire",
        help="null contexts past SINK_CONTEXT_RETENTION_DAYS, purge rejected raw bytes past"
        " SINK_REJECTED_RETENTION_DAYS (serve does this every SINK_MAINTAIN_INTERVAL)",
    )
    expire.add_argument("--data-dir", help="embedded Postgres data (SINK_DATA_DIR)")
    expire.set_defaults(handler=cmd_expire)
