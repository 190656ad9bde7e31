"""``studio-sink export``: executions or steps for a time range, as CSV or JSON Lines."""

from __future__ import annotations

import argparse
import contextlib
import csv
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, TextIO

import asyncpg
import orjson

from sink.commands._common import iso_datetime, open_database
from sink.config import Settings
from sink.maintenance import export as export_mod
from sink.maintenance.export import Column

JSON_TYPES = frozenset({"json", "jsonb"})


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class CsvWriter:
    """A header line, then one line per row; NULL is an empty field, JSON is its text."""

    def __init__(self, stream: TextIO) -> None:
        self._writer = csv.writer(stream, lineterminator="\n")

    def start(self, columns: Sequence[Column]) -> None:
        self._writer.writerow([c.name for c in columns])

    def row(self, values: asyncpg.Record) -> None:
        self._writer.writerow([_csv_value(v) for v in values.values()])


class JsonLinesWriter:
    """One JSON object per line; JSON columns are embedded as JSON, times in RFC 3339."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._json: frozenset[str] = frozenset()

    def start(self, columns: Sequence[Column]) -> None:
        self._json = frozenset(c.name for c in columns if c.type in JSON_TYPES)

    def row(self, values: asyncpg.Record) -> None:
        obj = {
            k: orjson.Fragment(v) if k in self._json and v is not None else v
            for k, v in values.items()
        }
        self._stream.write(orjson.dumps(obj, option=orjson.OPT_UTC_Z).decode())
        self._stream.write("\n")


@contextlib.contextmanager
def _output(path: str) -> Iterator[TextIO]:
    if path == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    with open(path, "w", encoding="utf-8", newline="") as stream:
        yield stream


async def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    conn = await open_database(settings)
    try:
        with _output(args.output) as stream:
            writer = CsvWriter(stream) if args.format == "csv" else JsonLinesWriter(stream)
            written = await export_mod.export(
                conn, args.what, writer, since=args.since, until=args.until
            )
    finally:
        await conn.close()
    where = "stdout" if args.output == "-" else args.output
    print(f"exported {written} {args.what} to {where}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "export",
        help="write executions or steps for a time range as CSV or JSON Lines",
        description=(
            "Streams the rows of studio.executions or studio.steps (the documented"
            " columns) whose date_created (first_seen_at when unknown) is in"
            " [--since, --until), oldest first, without holding them in memory."
        ),
    )
    parser.add_argument("--what", required=True, choices=["executions", "steps"])
    parser.add_argument("--since", type=iso_datetime, help="from this time (inclusive)")
    parser.add_argument("--until", type=iso_datetime, help="to this time (exclusive)")
    parser.add_argument("--format", choices=["csv", "jsonl"], default="csv", help="(csv)")
    parser.add_argument("--output", default="-", help="a file, or - for stdout (default)")
    parser.add_argument("--data-dir", help="embedded Postgres data (SINK_DATA_DIR)")
    parser.set_defaults(handler=cmd_export)
