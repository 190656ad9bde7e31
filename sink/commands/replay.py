"""``studio-sink replay``: rebuild the typed tables from the stored raw events."""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from sink.commands._common import iso_datetime, open_database
from sink.config import Settings
from sink.ingest import redact
from sink.maintenance import replay as replay_mod
from sink.twilio import STUDIO_TYPES


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


async def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    types = sorted(set(args.type or STUDIO_TYPES))
    conn = await open_database(settings)
    try:
        total = await replay_mod.count_replay(conn, since=args.since, types=types)
        with tqdm(
            total=total, unit="event", desc="replay", file=sys.stderr, disable=args.quiet
        ) as bar:
            report = await replay_mod.replay(
                conn,
                since=args.since,
                types=types,
                batch_size=args.batch_size,
                on_batch=bar.update,
                privacy=redact.policy(settings),
            )
    finally:
        await conn.close()
    for line in report.lines():
        print(line)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "replay",
        help="rebuild the typed tables (executions, steps) from the stored raw events",
        description=(
            "Reads the stored Studio events in arrival order, in batches, and merges their"
            " facts into sink.executions and sink.steps with the same parser and merge"
            " functions as ingestion. Idempotent; contexts fetched by the backfill are"
            " kept. Merges never clear a value: to correct values a fixed bug wrote, empty"
            " the typed tables first."
        ),
    )
    parser.add_argument(
        "--since",
        type=iso_datetime,
        help="only events received at or after this time (ISO 8601, UTC if no offset)",
    )
    parser.add_argument(
        "--type",
        action="append",
        choices=sorted(STUDIO_TYPES),
        help="only this event type (repeatable; default: every Studio type)",
    )
    parser.add_argument(
        "--batch-size", type=_positive, default=1000, help="events per transaction (1000)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--data-dir", help="embedded Postgres data (SINK_DATA_DIR)")
    parser.set_defaults(handler=cmd_replay)
