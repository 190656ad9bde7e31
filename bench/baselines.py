"""The baselines the sink is measured against, on the same events and the same tables.

Both call ``sink.ingest.store.ingest``, the sink's own writer (one call of the SQL function
``sink.ingest``: dedup on (source, id) through sink.event_keys, the raw event into
sink.events, order-independent merges into sink.executions and sink.steps, a row in
sink.deliveries). Reusing it rather than re-typing the SQL keeps the work per event
identical, so the ratios isolate what the sink adds (HTTP, signatures, parsing, group
commit) or saves (batching). Bodies are parsed before the clock starts.

- DB ceiling: batches of 1000 events (20 deliveries of 50), no HTTP.
- Naive sink: one statement and one commit per event, as a handler that writes each
  event as it reads it would do.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg

from bench import load
from sink.ingest import store
from sink.ingest.arrays import BatchItem
from sink.ingest.cloudevents import Event, parse_delivery

CEILING_BATCH = 1000
_HEADERS = {"Content-Type": "application/json"}


@dataclass
class BaselineResult:
    name: str
    events: int
    seconds: float
    events_per_s: float
    connections: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parsed_deliveries(seed: int, count: int) -> list[list[Event]]:
    factory = load.EventFactory(seed)
    return [parse_delivery(_HEADERS, body).events for body in load.bodies(factory, count)]


async def _run(
    dsn: str, batches: list[list[BatchItem]], connections: int, seconds: float | None
) -> tuple[int, float]:
    queue = iter(batches)
    written = 0
    deadline = float("inf")

    async def worker(conn: asyncpg.Connection[Any]) -> None:
        nonlocal written
        for batch in queue:
            if time.perf_counter() >= deadline:
                return
            await store.ingest(conn, batch)
            written += sum(len(item.events) for item in batch)

    conns = [await asyncpg.connect(dsn) for _ in range(connections)]
    try:
        started = time.perf_counter()
        if seconds is not None:
            deadline = started + seconds
        await asyncio.gather(*(worker(c) for c in conns))
        elapsed = time.perf_counter() - started
    finally:
        for c in conns:
            await c.close()
    return written, elapsed


async def db_ceiling(dsn: str, deliveries: list[list[Event]], connections: int) -> BaselineResult:
    per_batch = CEILING_BATCH // load.EVENTS_PER_DELIVERY
    batches = [
        [
            BatchItem(f"ceiling-{i + j}", events, [])
            for j, events in enumerate(deliveries[i : i + per_batch])
        ]
        for i in range(0, len(deliveries), per_batch)
    ]
    written, elapsed = await _run(dsn, batches, connections, None)
    return BaselineResult(
        "db_ceiling", written, round(elapsed, 3), round(written / elapsed, 1), connections
    )


async def naive(
    dsn: str, deliveries: list[list[Event]], connections: int, seconds: float
) -> BaselineResult:
    batches = [
        [BatchItem(f"naive-{i}", [event], [])]
        for i, events in enumerate(deliveries)
        for event in events
    ]
    written, elapsed = await _run(dsn, batches, connections, seconds)
    return BaselineResult(
        "naive", written, round(elapsed, 3), round(written / elapsed, 1), connections
    )
