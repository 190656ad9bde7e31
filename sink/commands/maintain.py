"""``studio-sink maintain``: future partitions, and retention of old data."""

from __future__ import annotations

import argparse

from sink.commands._common import open_database
from sink.config import Settings
from sink.maintenance import retention


async def cmd_maintain(args: argparse.Namespace, settings: Settings) -> int:
    keep_days = args.retention_days or settings.retention_days
    typed_days = args.typed_retention_days or settings.typed_retention_days
    conn = await open_database(settings)
    try:
        report = await retention.maintain(
            conn,
            retention_days=keep_days,
            typed_retention_days=typed_days,
            dry_run=args.dry_run,
        )
    finally:
        await conn.close()
    if args.dry_run:
        print("dry run: nothing was changed")
    for line in report.lines():
        print(line)
    return 0


def _days(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a whole number of days, at least 1")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "maintain",
        help="create future event partitions and drop data past its retention",
        description=(
            "Creates the event partitions for the coming days, drops raw-event partitions"
            " (and their dedup keys, rejected events and delivery records) older than the"
            " retention, and, when a typed retention is set, executions and their steps"
            " whose last activity is older than that. Safe to run concurrently: one run"
            " at a time does the work."
        ),
    )
    parser.add_argument(
        "--retention-days",
        type=_days,
        help="keep raw events this many whole UTC days back (SINK_RETENTION_DAYS;"
        " default: keep everything)",
    )
    parser.add_argument(
        "--typed-retention-days",
        type=_days,
        help="keep executions and steps this many days after their last activity"
        " (SINK_TYPED_RETENTION_DAYS; default: keep everything)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="report what would be done, change nothing"
    )
    parser.add_argument("--data-dir", help="embedded Postgres data (SINK_DATA_DIR)")
    parser.set_defaults(handler=cmd_maintain)
