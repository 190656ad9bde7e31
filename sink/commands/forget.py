"""``studio-sink forget``: erase one contact (or one execution) everywhere (GDPR art. 17)."""

from __future__ import annotations

import argparse

from sink.commands._common import open_database
from sink.config import Settings
from sink.ingest import redact
from sink.maintenance import privacy
from sink.twilio import is_sid, sid_rule


def _execution_sid(text: str) -> str:
    if not is_sid(text, "FN"):
        raise argparse.ArgumentTypeError(f"not an Execution SID: {sid_rule('FN')}")
    return text


async def cmd_forget(args: argparse.Namespace, settings: Settings) -> int:
    policy = redact.policy(settings)
    conn = await open_database(settings)
    try:
        if args.execution is not None:
            report = await privacy.forget_execution(
                conn, args.execution, policy, requested_by="cli", dry_run=args.dry_run
            )
        else:
            report = await privacy.forget_contact(
                conn, args.contact, policy, requested_by="cli", dry_run=args.dry_run
            )
    finally:
        await conn.close()
    if args.dry_run:
        print("dry run: nothing was changed")
    for line in report.lines():
        print(line)
    if args.contact is not None and not policy.key:
        print(
            "note: SINK_PII_KEY is not set, so hashed copies could not be matched and the"
            " erasure record holds no HMAC of the contact"
        )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "forget",
        help="erase a contact (or one execution) from every table: an erasure request",
        description=(
            "Erases the executions of a contact (matched plain, hashed with SINK_PII_KEY, or"
            " masked: a masked form is shared by every address with the same prefix, length"
            " and last four characters, and all of them are erased), their steps, contexts,"
            " raw events, backfill items and the rejected events that contain the address."
            " Dedup keys and aggregate counts stay; a Twilio retry is dropped and nothing"
            " stores the executions again. Each erasure is recorded in studio.erasures"
            " without the address. See docs/privacy.md."
        ),
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--contact", help="the contact address, e.g. '+15551234567'")
    target.add_argument("--execution", type=_execution_sid, help="one Execution SID (FN...)")
    parser.add_argument(
        "--dry-run", action="store_true", help="count what would be removed; change nothing"
    )
    parser.add_argument("--data-dir", help="embedded Postgres data (SINK_DATA_DIR)")
    parser.set_defaults(handler=cmd_forget)
