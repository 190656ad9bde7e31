"""Replay: rebuild the typed tables from the stored raw events.

The merge rules live in SQL (``sink.merge_executions`` / ``sink.merge_steps``) and the
parsing in ``sink.events``, so replay rebuilds rows exactly as ingestion builds them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from sink import jsontext
from sink.db.pool import Conn, retry_in_place
from sink.db.queries import query
from sink.ingest.arrays import BatchItem, IngestArrays
from sink.ingest.cloudevents import Delivery, ElementError, Event, build_event
from sink.ingest.redact import KEEP, Policy
from sink.twilio import STUDIO_TYPES

log = logging.getLogger(__name__)


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
    total: int = await conn.fetchval(query("count_replay_events"), list(types), since)
    return total


async def replay(
    conn: Conn,
    *,
    since: datetime | None = None,
    types: Sequence[str] = tuple(sorted(STUDIO_TYPES)),
    batch_size: int = 1000,
    on_batch: Callable[[int], object] | None = None,
    privacy: Policy = KEEP,
) -> ReplayReport:
    """Merge the facts of stored raw events into the typed tables again, batch by batch.

    Idempotent: the merges only move values forward and never touch contexts.
    """
    report = ReplayReport()
    after: tuple[Any, Any, Any] = (None, None, None)
    while True:
        rows = await conn.fetch(query("replay_batch"), list(types), since, *after, batch_size)
        if not rows:
            return report
        events: list[Event] = []
        for row in rows:
            try:
                events.append(build_event(stored_element(row), check_storable=False))
            except ElementError as exc:
                report.invalid += 1
                log.warning("stored event %s is no longer valid: %s", row["event_id"], exc)
        await _merge(conn, privacy.delivery(Delivery(events=events)).events, report)
        last = rows[-1]
        after = (last["received_at"], last["source"], last["event_id"])
        report.events += len(rows)
        report.batches += 1
        if on_batch is not None:
            on_batch(len(rows))


async def _merge(conn: Conn, events: list[Event], report: ReplayReport) -> None:
    arrays = IngestArrays()  # the same fact-to-row mapping ingestion uses
    arrays.add_item(BatchItem(request_id="replay", events=events, rejected=[]))
    executions = arrays.executions.arrays(skip=("idx",))  # the facts, not their positions
    steps = arrays.steps.arrays(skip=("idx",))

    async def attempt() -> None:  # a deadlock with live ingestion is tried again
        async with conn.transaction():
            if arrays.executions:
                await conn.execute(query("merge_event_executions"), *executions)
            if arrays.steps:
                await conn.execute(query("merge_event_steps"), *steps)

    await retry_in_place(attempt)
    report.executions += len(arrays.executions)
    report.steps += len(arrays.steps)
