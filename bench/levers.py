"""``python -m bench.levers``: the DB ceiling of schema variants, A/B in one run.

Each variant (``name:upto:files``) is the migrations up to version ``upto`` (empty: all)
plus SQL files applied after them (a lever under test: a changed ``sink.ingest``, a dropped
index). Every round runs each variant's DB ceiling (``sink.ingest`` in batches of 1000
events over 2 connections, as ``python -m bench ingest`` does) on a fresh clone of its
template, in an order that rotates, so all of them see the same background load. Printed:
per variant the median events/s, Postgres CPU microseconds per event, and the ratio to the
first variant.

    python -m bench.levers --rounds 5 --raw --variant base:14 \\
        --variant fillfactor50:14:bench/variants/rollup_fillfactor50.sql --variant all:

The SQL files under bench/variants/ are the levers and probes of issue 17
(docs/benchmarks.md); a variant may name several, comma-separated.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from bench import baselines
from sink.db.migrate import load_migrations
from tests.support.pg import FreshDatabases, clone, drop, with_database


@dataclass
class Variant:
    name: str
    upto: int | None
    extra: list[Path]
    template: str = ""
    events_per_s: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> Variant:
        """``name[:upto[:file.sql[,file.sql...]]]``; upto empty: every migration."""
        name, _, rest = text.partition(":")
        upto, _, files = rest.partition(":")
        return cls(name, int(upto) if upto else None, [Path(f) for f in files.split(",") if f])


async def _template(server_url: str, variant: Variant) -> str:
    name = f"lever_{variant.name}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    conn = await asyncpg.connect(with_database(server_url, name))
    try:
        for migration in load_migrations():
            if variant.upto is None or migration.version <= variant.upto:
                await conn.execute(migration.sql)
        for path in variant.extra:
            await conn.execute(path.read_text())
    finally:
        await conn.close()
    return name


async def run(variants: list[Variant], rounds: int, deliveries: int, raw: bool, batch: int) -> None:
    db = await FreshDatabases.start(None, prefix="sink_levers")
    try:
        for v in variants:
            v.template = await _template(db.server_url, v)
        raw_eps: list[float] = []
        for r in range(rounds):
            events = baselines.parsed_deliveries(seed=10 + r, count=deliveries)
            order = variants[r % len(variants) :] + variants[: r % len(variants)]
            for v in order:
                name = await clone(db.server_url, v.template, "lever")
                try:
                    dsn = with_database(db.server_url, name)
                    res = await baselines.db_ceiling(dsn, events, 2, db.postgres_pid, batch)
                finally:
                    await drop(db.server_url, name)
                v.events_per_s.append(res.events_per_s)
                v.cpu_us.append(res.postgres_cpu_us_per_event or 0.0)
                print(
                    f"[{time.strftime('%H:%M:%S')}] round {r + 1} {v.name}:"
                    f" {res.events_per_s:,.0f} events/s,"
                    f" postgres {res.postgres_cpu_us_per_event} us/event",
                    flush=True,
                )
            if raw:
                name = await clone(db.server_url, variants[0].template, "lever")
                try:
                    dsn = with_database(db.server_url, name)
                    res = await baselines.raw_ceiling(dsn, events, 2, db.postgres_pid)
                finally:
                    await drop(db.server_url, name)
                raw_eps.append(res.events_per_s)
                print(f"  raw-insert ceiling: {res.events_per_s:,.0f} events/s", flush=True)
        for v in variants:
            await drop(db.server_url, v.template)
    finally:
        await db.close()
    base = variants[0]
    print("\nvariant: median events/s (ratio to first, per round), postgres us/event")
    for v in variants:
        ratios = [round(a / b, 2) for a, b in zip(v.events_per_s, base.events_per_s, strict=True)]
        print(
            f"{v.name}: {statistics.median(v.events_per_s):,.0f} events/s {ratios},"
            f" {statistics.median(v.cpu_us)} us/event"
        )
    if raw_eps:
        print(f"raw-insert ceiling: {statistics.median(raw_eps):,.0f} events/s")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.levers", description=__doc__)
    parser.add_argument("--variant", action="append", required=True, type=Variant.parse)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--deliveries", type=int, default=400, help="x50 events per round")
    parser.add_argument("--raw", action="store_true", help="the raw-insert ceiling too")
    parser.add_argument("--batch", type=int, default=1000, help="events per sink.ingest call")
    args = parser.parse_args()
    asyncio.run(run(args.variant, args.rounds, args.deliveries, args.raw, args.batch))


if __name__ == "__main__":
    main()
