"""Writing deliveries: one batch of deliveries becomes one call of ``sink.ingest``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from sink.db import Conn
from sink.events import Event, Rejection
from sink.studio_events import ExecutionFacts, StepFacts

INGEST: Final = """
SELECT sink.ingest(
    $1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[], $7::text[],
    $8::text[], $9::text[], $10::text[],
    $11::int[], $12::text[], $13::text[], $14::text[], $15::text[], $16::text[], $17::text[],
    $18::int[], $19::text[], $20::timestamptz[], $21::timestamptz[],
    $22::int[], $23::text[], $24::text[], $25::text[], $26::text[], $27::text[], $28::text[],
    $29::text[], $30::text[], $31::timestamptz[],
    $32::text[], $33::text[], $34::text[], $35::text[], $36::text[], $37::bytea[], $38::text[],
    $39::text[],
    $40::text[], $41::int[], $42::int[], $43::int[], $44::int[])
"""

# Repeats of an event inside one batch never reach sink.ingest (a key may appear once per
# statement); they are counted on the key in the same transaction, as any duplicate is.
COUNT_BATCH_REPEATS: Final = """
UPDATE sink.event_keys AS k
SET duplicates = k.duplicates + r.n, last_duplicate_at = now()
FROM unnest($1::text[], $2::text[], $3::int[]) AS r(source, event_id, n)
WHERE k.source = r.source AND k.event_id = r.event_id
"""


@dataclass(slots=True)
class BatchItem:
    """One delivery's share of a batch."""

    request_id: str
    events: list[Event]
    rejected: list[Rejection]


@dataclass(slots=True)
class ItemOutcome:
    stored: int
    duplicates: int
    rejected: int
    new_events: list[Event]


def _raw_text(raw: bytes) -> str | None:
    if b"\x00" in raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


class IngestArrays:
    """Column arrays for sink.ingest, filled delivery by delivery."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.seen: set[tuple[str, str]] = set()
        self.repeats: dict[tuple[str, str], int] = {}
        self.x: list[list[Any]] = [[] for _ in range(11)]
        self.s: list[list[Any]] = [[] for _ in range(10)]
        self.r: list[list[Any]] = [[] for _ in range(8)]
        self.d: list[list[Any]] = [[] for _ in range(5)]

    def add_item(self, item: BatchItem) -> None:
        first = len(self.events) + 1
        batch_duplicates = 0
        for event in item.events:
            key = (event.source, event.event_id)
            if key in self.seen:
                batch_duplicates += 1
                self.repeats[key] = self.repeats.get(key, 0) + 1
                continue
            self.seen.add(key)
            self.events.append(event)
            self._add_facts(len(self.events), event)
        for rejection in item.rejected:
            self._add_rejection(rejection, item.request_id)
        count = len(self.events) + 1 - first
        for column, value in zip(
            self.d,
            (item.request_id, first, count, batch_duplicates, len(item.rejected)),
            strict=True,
        ):
            column.append(value)

    def _add_facts(self, idx: int, event: Event) -> None:
        facts = event.studio
        if isinstance(facts, ExecutionFacts):
            self._add_execution(idx, facts)
        elif isinstance(facts, StepFacts):
            # a step for an execution never seen still creates the execution row
            execution = (idx, facts.execution_sid, facts.flow_sid, facts.account_sid, "active")
            for column, value in zip(self.x, (*execution, *(None,) * 6), strict=True):
                column.append(value)
            values: tuple[Any, ...] = (
                idx,
                facts.step_sid,
                facts.execution_sid,
                facts.flow_sid,
                facts.account_sid,
                facts.name,
                facts.transitioned_from,
                facts.transitioned_to,
                facts.parent_step_sid,
                facts.date_created,
            )
            for column, value in zip(self.s, values, strict=True):
                column.append(value)

    def _add_execution(self, idx: int, f: ExecutionFacts) -> None:
        values = (
            idx,
            f.execution_sid,
            f.flow_sid,
            f.account_sid,
            f.status,
            f.contact_channel_address,
            f.started_by,
            f.flow_revision,
            f.ended_reason,
            f.date_created,
            f.date_updated,
        )
        for column, value in zip(self.x, values, strict=True):
            column.append(value)

    def _add_rejection(self, r: Rejection, request_id: str) -> None:
        values = (
            r.reason,
            r.detail,
            r.event_type,
            r.event_id,
            r.source,
            r.raw,
            _raw_text(r.raw),
            request_id,
        )
        for column, value in zip(self.r, values, strict=True):
            column.append(value)

    def args(self) -> list[Any]:
        ev = self.events
        event_columns = [
            [e.source for e in ev],
            [e.event_id for e in ev],
            [e.type for e in ev],
            [e.specversion for e in ev],
            [e.time for e in ev],
            [e.dataschema for e in ev],
            [e.datacontenttype for e in ev],
            [e.subject for e in ev],
            [e.data_json for e in ev],
            [e.extensions_json for e in ev],
        ]
        return [*event_columns, *self.x, *self.s, *self.r, *self.d]


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
            new_idx = await conn.fetchval(INGEST, *arrays.args())
            await conn.execute(
                COUNT_BATCH_REPEATS,
                [k[0] for k in keys],
                [k[1] for k in keys],
                [arrays.repeats[k] for k in keys],
            )
    else:
        new_idx = await conn.fetchval(INGEST, *arrays.args())
    new = set(new_idx)
    outcomes: list[ItemOutcome] = []
    for item, first, count, batch_dups in zip(
        items, arrays.d[1], arrays.d[2], arrays.d[3], strict=True
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
