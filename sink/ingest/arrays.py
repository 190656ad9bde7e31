"""The column arrays of one ``sink.ingest`` call, built delivery by delivery. Pure: no I/O.

A batch becomes four groups of named columns (executions, steps, rejections, deliveries)
besides the events' own; ``sink.ingest`` takes them as arrays and ``unnest``s them, so a
batch of any size is one statement. Replay builds the same groups from stored events and
merges the fact columns, so ingestion and replay map facts to rows in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from sink.ingest.cloudevents import Event, Rejection
from sink.ingest.studio_facts import ExecutionFacts, StepFacts


@dataclass(slots=True)
class BatchItem:
    """One delivery's share of a batch."""

    request_id: str
    events: list[Event]
    rejected: list[Rejection]


class ColumnGroup:
    """One list per named column, appended to a row at a time."""

    COLUMNS: ClassVar[tuple[str, ...]]

    def __init__(self) -> None:
        self._columns: dict[str, list[Any]] = {name: [] for name in self.COLUMNS}

    def append(self, *values: Any) -> None:
        for name, value in zip(self.COLUMNS, values, strict=True):
            self._columns[name].append(value)

    def __getitem__(self, name: str) -> list[Any]:
        return self._columns[name]

    def __len__(self) -> int:
        return len(self._columns[self.COLUMNS[0]])

    def arrays(self, *, skip: tuple[str, ...] = ()) -> list[list[Any]]:
        """The columns in declaration order (less those named in ``skip``)."""
        return [column for name, column in self._columns.items() if name not in skip]


class ExecutionColumns(ColumnGroup):
    """Execution facts; ``idx`` is the event's 1-based position in the batch."""

    COLUMNS = (
        "idx",
        "execution_sid",
        "flow_sid",
        "account_sid",
        "status",
        "contact_channel_address",
        "started_by",
        "flow_revision",
        "ended_reason",
        "date_created",
        "date_updated",
    )


class StepColumns(ColumnGroup):
    COLUMNS = (
        "idx",
        "step_sid",
        "execution_sid",
        "flow_sid",
        "account_sid",
        "name",
        "transitioned_from",
        "transitioned_to",
        "parent_step_sid",
        "date_created",
    )


class RejectionColumns(ColumnGroup):
    COLUMNS = (
        "reason",
        "detail",
        "event_type",
        "event_id",
        "source",
        "raw",
        "raw_text",
        "request_id",
    )


class DeliveryColumns(ColumnGroup):
    """Per delivery: its events are positions ``first`` .. ``first + count - 1``."""

    COLUMNS = ("request_id", "first", "count", "batch_duplicates", "rejected")


def _raw_text(raw: bytes) -> str | None:
    if b"\x00" in raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


class IngestArrays:
    """The arguments of one ``sink.ingest`` call, filled delivery by delivery.

    An event repeated inside the batch is sent once (a key may appear once per statement);
    ``repeats`` counts the others so they are recorded as duplicates.
    """

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.seen: set[tuple[str, str]] = set()
        self.repeats: dict[tuple[str, str], int] = {}
        self.executions = ExecutionColumns()
        self.steps = StepColumns()
        self.rejections = RejectionColumns()
        self.deliveries = DeliveryColumns()

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
        self.deliveries.append(item.request_id, first, count, batch_duplicates, len(item.rejected))

    def _add_facts(self, idx: int, event: Event) -> None:
        facts = event.studio
        if isinstance(facts, ExecutionFacts):
            self.executions.append(
                idx,
                facts.execution_sid,
                facts.flow_sid,
                facts.account_sid,
                facts.status,
                facts.contact_channel_address,
                facts.started_by,
                facts.flow_revision,
                facts.ended_reason,
                facts.date_created,
                facts.date_updated,
            )
        elif isinstance(facts, StepFacts):
            # a step for an execution never seen still creates the execution row
            self.executions.append(
                idx,
                facts.execution_sid,
                facts.flow_sid,
                facts.account_sid,
                "active",
                *(None,) * 6,
            )
            self.steps.append(
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

    def _add_rejection(self, r: Rejection, request_id: str) -> None:
        self.rejections.append(
            r.reason,
            r.detail,
            r.event_type,
            r.event_id,
            r.source,
            r.raw,
            _raw_text(r.raw),
            request_id,
        )

    def event_arrays(self) -> list[list[Any]]:
        ev = self.events
        return [
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

    def args(self) -> list[Any]:
        """``sink.ingest``'s 44 arguments: events, executions, steps, rejections, deliveries."""
        return [
            *self.event_arrays(),
            *self.executions.arrays(),
            *self.steps.arrays(),
            *self.rejections.arrays(),
            *self.deliveries.arrays(),
        ]
