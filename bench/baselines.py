"""The baselines the sink is measured against, on the same events and the same tables.

Both call ``sink.ingest.store.ingest``, the sink's own writer (one call of the SQL function
``sink.ingest``: dedup on (source, id) through sink.event_keys, the raw event into
sink.events, order-independent merges into sink.executions and sink.steps, a row in
sink.deliveries). Reusing it rather than re-typing the SQL keeps the work per event
identical, so the ratios isolate what the sink adds (HTTP, signatures, parsing, group
commit) or saves (batching). Bodies are parsed before the clock starts.

- DB ceiling: batches of 1000 events (20 deliveries of 50), no HTTP.
- Raw-insert ceiling: the physical limit of one Postgres here for these events, whatever
  the sink chose to do with them: the same batches as one ``INSERT ... SELECT FROM unnest
  ... ON CONFLICT DO NOTHING`` each into one table keyed on (source, id) holding the
  event's columns (data as jsonb), and nothing else: no typed rows, no second index.
- Naive sink: one statement and one commit per event, as a handler that writes each
  event as it reads it would do.

Each baseline also reports the CPU time Postgres spent on it, per event.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg

from bench import load
from sink.ingest import store
from sink.ingest.arrays import BatchItem, IngestArrays
from sink.ingest.cloudevents import Event, parse_delivery
from tests.support.process import Monitor

CEILING_BATCH = 1000
_HEADERS = {"Content-Type": "application/json"}
# The raw-insert ceiling's one table and statement (bench only: nothing of the sink's)
RAW_TABLE = """
CREATE TABLE IF NOT EXISTS bench_raw_events (
    source text NOT NULL, event_id text NOT NULL, received_at timestamptz NOT NULL DEFAULT now(),
    type text NOT NULL, specversion text NOT NULL, time timestamptz, dataschema text,
    datacontenttype text, subject text, data jsonb, extensions jsonb,
    PRIMARY KEY (source, event_id))
"""
RAW_INSERT = """
INSERT INTO bench_raw_events (source, event_id, type, specversion, time, dataschema,
                              datacontenttype, subject, data, extensions)
SELECT u.source, u.event_id, u.type, u.specversion, u.time, u.dataschema, u.datacontenttype,
       u.subject, u.data::jsonb, u.extensions::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[],
            $7::text[], $8::text[], $9::text[], $10::text[])
     AS u(source, event_id, type, specversion, time, dataschema, datacontenttype, subject,
          data, extensions)
ORDER BY u.source, u.event_id
ON CONFLICT (source, event_id) DO NOTHING
"""


@dataclass
class BaselineResult:
    name: str
    events: int
    seconds: float
    events_per_s: float
    connections: int
    postgres_cpu_us_per_event: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parsed_deliveries(seed: int, count: int) -> list[list[Event]]:
    factory = load.EventFactory(seed)
    return [parse_delivery(_HEADERS, body).events for body in load.bodies(factory, count)]


Writer = Callable[["asyncpg.Connection[Any]", list[BatchItem]], Awaitable[object]]


async def _sink_ingest(conn: asyncpg.Connection[Any], batch: list[BatchItem]) -> None:
    await store.ingest(conn, batch)


async def _raw_insert(conn: asyncpg.Connection[Any], batch: list[BatchItem]) -> None:
    arrays = IngestArrays()
    for item in batch:
        arrays.add_item(item)
    await conn.execute(RAW_INSERT, *arrays.event_arrays())


async def _run(
    dsn: str,
    batches: list[list[BatchItem]],
    connections: int,
    seconds: float | None,
    write: Writer = _sink_ingest,
    postgres_pid: int | None = None,
) -> tuple[int, float, float | None]:
    """Events written, seconds, and Postgres CPU microseconds per event (when known)."""
    queue = iter(batches)
    written = 0
    deadline = float("inf")

    async def worker(conn: asyncpg.Connection[Any]) -> None:
        nonlocal written
        for batch in queue:
            if time.perf_counter() >= deadline:
                return
            await write(conn, batch)
            written += sum(len(item.events) for item in batch)

    conns = [await asyncpg.connect(dsn) for _ in range(connections)]
    try:
        if write is _raw_insert:
            await conns[0].execute(RAW_TABLE)
        monitor = Monitor(os.getpid(), postgres_pid)  # Postgres's backends, while they live
        monitor.start()
        started = time.perf_counter()
        if seconds is not None:
            deadline = started + seconds
        await asyncio.gather(*(worker(c) for c in conns))
        elapsed = time.perf_counter() - started
        await monitor.stop()
    finally:
        for c in conns:
            await c.close()
    cpu_us = None
    if monitor.postgres_cpu_share is not None and written:
        cpu_us = round(monitor.postgres_cpu_share * elapsed / written * 1e6, 1)
    return written, elapsed, cpu_us


def _batches(deliveries: list[list[Event]], events: int = CEILING_BATCH) -> list[list[BatchItem]]:
    per_batch = max(1, events // load.EVENTS_PER_DELIVERY)
    return [
        [
            BatchItem(f"ceiling-{i + j}", events, [])
            for j, events in enumerate(deliveries[i : i + per_batch])
        ]
        for i in range(0, len(deliveries), per_batch)
    ]


async def db_ceiling(
    dsn: str,
    deliveries: list[list[Event]],
    connections: int,
    postgres_pid: int | None = None,
    batch: int = CEILING_BATCH,
) -> BaselineResult:
    """``sink.ingest`` in batches of 1000 events: what the sink's own SQL allows."""
    written, elapsed, cpu = await _run(
        dsn, _batches(deliveries, batch), connections, None, postgres_pid=postgres_pid
    )
    return BaselineResult(
        "db_ceiling", written, round(elapsed, 3), round(written / elapsed, 1), connections, cpu
    )


async def raw_ceiling(
    dsn: str, deliveries: list[list[Event]], connections: int, postgres_pid: int | None = None
) -> BaselineResult:
    """The same batches into one keyed table, ON CONFLICT DO NOTHING: the physical limit."""
    written, elapsed, cpu = await _run(
        dsn, _batches(deliveries), connections, None, _raw_insert, postgres_pid
    )
    return BaselineResult(
        "raw_ceiling", written, round(elapsed, 3), round(written / elapsed, 1), connections, cpu
    )


async def naive(
    dsn: str,
    deliveries: list[list[Event]],
    connections: int,
    seconds: float,
    postgres_pid: int | None = None,
) -> BaselineResult:
    batches = [
        [BatchItem(f"naive-{i}", [event], [])]
        for i, events in enumerate(deliveries)
        for event in events
    ]
    written, elapsed, cpu = await _run(
        dsn, batches, connections, seconds, postgres_pid=postgres_pid
    )
    return BaselineResult(
        "naive", written, round(elapsed, 3), round(written / elapsed, 1), connections, cpu
    )
