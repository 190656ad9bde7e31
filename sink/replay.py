"""Replay: rebuild the typed tables from the stored raw events.

The merge rules live in SQL (``sink.merge_executions`` / ``sink.merge_steps``) and the
parsing in ``sink.events``, so replay rebuilds rows exactly as ingestion builds them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg

from sink import db, jsontext
from sink.db import Conn
from sink.events import ElementError, Event, build_event
from sink.store import BatchItem, IngestArrays
from sink.studio_events import STUDIO_TYPES

log = logging.getLogger(__name__)

_IN_PLACE_RETRIES: Final = 3  # a deadlock with live ingestion is retried this often


REPLAY_COUNT: Final = """
SELECT count(*) FROM sink.events
WHERE type = ANY($1::text[]) AND received_at >= coalesce($2::timestamptz, '-infinity')
"""
# Keyset pagination in (received_at, source, event_id) order: each batch is its own
# transaction, so a long replay neither holds a snapshot nor loses its work when stopped.
REPLAY_BATCH: Final = """
SELECT received_at, source, event_id, type, specversion, time, dataschema, datacontenttype,
       subject, data::text AS data, extensions::text AS extensions
FROM sink.events
WHERE type = ANY($1::text[]) AND received_at >= coalesce($2::timestamptz, '-infinity')
  AND ($3::timestamptz IS NULL OR (received_at, source, event_id) > ($3, $4, $5))
ORDER BY received_at, source, event_id
LIMIT $6
"""
MERGE_EXECUTIONS: Final = """
SELECT sink.merge_executions($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                             $6::text[], $7::int[], $8::text[], $9::timestamptz[],
                             $10::timestamptz[])
"""
MERGE_STEPS: Final = """
SELECT sink.merge_steps($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                        $6::text[], $7::text[], $8::text[], $9::timestamptz[])
"""


@dataclass(slots=True)
class ReplayReport:
    events: int = 0  # raw events read
    executions: int = 0  # execution facts merged (a step also names its execution)
    steps: int = 0  # step facts merged
    invalid: int = 0  # stored events today's parser refuses (left as they are)
    batches: int = 0

    def lines(self) -> list[str]:
        return [
            f"replayed {self.events} events in {self.batches} batches:"
            f" {self.executions} execution facts, {self.steps} step facts merged",
            f"events the parser now refuses (left untouched): {self.invalid}",
        ]


def stored_element(row: asyncpg.Record) -> dict[str, Any]:
    """The CloudEvent as received, rebuilt from its stored row (for ``build_event``)."""
    element: dict[str, Any] = {
        "specversion": row["specversion"],
        "id": row["event_id"],
        "source": row["source"],
        "type": row["type"],
    }
    if row["time"] is not None:
        element["time"] = row["time"].isoformat()
    for name in ("dataschema", "datacontenttype", "subject"):
        if row[name] is not None:
            element[name] = row[name]
    if row["data"] is not None:
        element["data"] = jsontext.loads(row["data"])
    if row["extensions"] is not None:
        element.update(jsontext.loads(row["extensions"]))
    return element


async def count_replay(conn: Conn, *, since: datetime | None, types: Sequence[str]) -> int:
    total: int = await conn.fetchval(REPLAY_COUNT, list(types), since)
    return total


async def replay(
    conn: Conn,
    *,
    since: datetime | None = None,
    types: Sequence[str] = tuple(sorted(STUDIO_TYPES)),
    batch_size: int = 1000,
    on_batch: Callable[[int], object] | None = None,
) -> ReplayReport:
    """Merge the facts of stored raw events into the typed tables again, batch by batch.

    Idempotent: the merges only move values forward and never touch contexts.
    """
    report = ReplayReport()
    after: tuple[Any, Any, Any] = (None, None, None)
    while True:
        rows = await conn.fetch(REPLAY_BATCH, list(types), since, *after, batch_size)
        if not rows:
            return report
        events: list[Event] = []
        for row in rows:
            try:
                events.append(build_event(stored_element(row), check_storable=False))
            except ElementError as exc:
                report.invalid += 1
                log.warning("stored event %s is no longer valid: %s", row["event_id"], exc)
        await _merge(conn, events, report)
        last = rows[-1]
        after = (last["received_at"], last["source"], last["event_id"])
        report.events += len(rows)
        report.batches += 1
        if on_batch is not None:
            on_batch(len(rows))


async def _merge(conn: Conn, events: list[Event], report: ReplayReport) -> None:
    arrays = IngestArrays()  # the same fact-to-row mapping ingestion uses
    arrays.add_item(BatchItem(request_id="replay", events=events, rejected=[]))
    executions, steps = arrays.x[1:], arrays.s[1:]  # without the batch positions
    for attempt in range(_IN_PLACE_RETRIES):
        try:
            async with conn.transaction():
                if executions[0]:
                    await conn.execute(MERGE_EXECUTIONS, *executions)
                if steps[0]:
                    await conn.execute(MERGE_STEPS, *steps)
            break
        except asyncpg.PostgresError as exc:  # a deadlock with live ingestion: try again
            if exc.sqlstate not in db.RETRYABLE_IN_PLACE or attempt + 1 == _IN_PLACE_RETRIES:
                raise
    report.executions += len(executions[0])
    report.steps += len(steps[0])
