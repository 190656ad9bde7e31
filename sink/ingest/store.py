"""Writing deliveries: one batch of deliveries becomes one call of ``sink.ingest``.

``PostgresStore`` is what the group-commit writer stores batches with. It says why a batch
was not stored in the writer's terms: ``BatchRefused`` when Postgres refused the batch's
content (split it and try the parts), ``DatabaseUnavailable`` when a retry may succeed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from sink.db.pool import DB_ERRORS, Conn, is_bad_data, retry_in_place, unavailable
from sink.db.queries import query
from sink.errors import BatchRefused
from sink.ingest.arrays import BatchItem, IngestArrays
from sink.ingest.cloudevents import Event


@dataclass(slots=True)
class ItemOutcome:
    stored: int
    duplicates: int
    rejected: int
    new_events: list[Event]


async def ingest(conn: Conn, items: Sequence[BatchItem]) -> list[ItemOutcome]:
    """Store a batch in one statement (one transaction, one round trip; a second
    statement in the same transaction when the batch holds an event more than once)."""
    arrays = IngestArrays()
    for item in items:
        arrays.add_item(item)
    new_idx: list[int]
    if arrays.repeats:
        keys = sorted(arrays.repeats)
        async with conn.transaction():
            new_idx = await conn.fetchval(query("ingest_batch"), *arrays.args())
            await conn.execute(
                query("count_batch_repeats"),
                [k[0] for k in keys],
                [k[1] for k in keys],
                [arrays.repeats[k] for k in keys],
            )
    else:
        new_idx = await conn.fetchval(query("ingest_batch"), *arrays.args())
    new = set(new_idx)
    outcomes: list[ItemOutcome] = []
    deliveries = arrays.deliveries
    for item, first, count, batch_dups in zip(
        items, deliveries["first"], deliveries["count"], deliveries["batch_duplicates"], strict=True
    ):
        new_events = [arrays.events[i - 1] for i in range(first, first + count) if i in new]
        outcomes.append(
            ItemOutcome(
                stored=len(new_events),
                duplicates=count + batch_dups - len(new_events),
                rejected=len(item.rejected),
                new_events=new_events,
            )
        )
    return outcomes


class PostgresStore:
    """Stores batches through a pool, retrying deadlocks in place."""

    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self._pool = pool

    async def store(self, items: list[BatchItem]) -> list[ItemOutcome]:
        async def attempt() -> list[ItemOutcome]:
            async with self._pool.acquire() as conn:
                return await ingest(conn, items)

        try:
            return await retry_in_place(attempt)
        except asyncpg.PostgresError as exc:
            if is_bad_data(exc):
                raise BatchRefused(
                    f"Postgres refused this event: [{exc.sqlstate}] {exc}"[:2000],
                    sqlstate=exc.sqlstate,
                ) from exc
            raise unavailable(exc) from exc
        except DB_ERRORS as exc:
            raise unavailable(exc) from exc
