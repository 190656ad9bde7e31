"""Group commit: the events of concurrent deliveries are written together.

A request hands its parsed delivery to ``GroupCommitWriter.submit`` and awaits the
outcome; writer tasks drain the queue (up to ``batch_max_events``, waiting at most
``batch_max_wait_ms`` for company), store each batch in one statement, and only then
resolve the waiting requests. A failed batch fails every request in it (503), except that
a batch Postgres refuses for its *content* is split, so one bad event cannot hold back
the others: each delivery is retried alone, and events Postgres still refuses alone are
kept in rejected_events with the database's reason.

The writer knows nothing of Postgres: it stores batches through a ``BatchStore`` (the
real one is ``sink.ingest.store.PostgresStore``), which answers with outcomes or raises
``BatchRefused`` (the content was refused: split it) or ``DatabaseUnavailable`` (fail the
batch: 503, Twilio retries). Tests bind an in-memory store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from sink import jsontext
from sink.db.pool import unavailable
from sink.errors import BatchRefused, DatabaseUnavailable, Overloaded, ShuttingDown
from sink.ingest.arrays import BatchItem
from sink.ingest.cloudevents import Event, Rejection
from sink.ingest.store import ItemOutcome

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pending:
    item: BatchItem
    size: int
    future: asyncio.Future[ItemOutcome]
    enqueued: float = field(default_factory=time.perf_counter)


class BatchStore(Protocol):
    """Where batches go: outcomes in order, or BatchRefused / DatabaseUnavailable."""

    async def store(self, items: list[BatchItem]) -> list[ItemOutcome]: ...


BatchObserver = Callable[[int, int, float], None]  # (deliveries, events, commit seconds)


class GroupCommitWriter:
    def __init__(
        self,
        *,
        max_events: int,
        max_wait: float,
        writers: int,
        max_pending: int,
        on_batch: BatchObserver | None = None,
        on_committed: Callable[[list[Event]], None] | None = None,
    ) -> None:
        self._store_to: BatchStore | None = None
        self._max_events = max_events
        self._max_wait = max_wait
        self._writers = writers
        self._max_pending = max_pending
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._pending_events = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._idle = asyncio.Event()
        self._on_batch = on_batch
        self._on_committed = on_committed

    @property
    def pending_events(self) -> int:
        return self._pending_events

    def bind(self, store: BatchStore) -> None:
        self._store_to = store

    def start(self) -> None:
        for n in range(self._writers):
            self._tasks.append(asyncio.create_task(self._run(), name=f"writer-{n}"))

    def submit(
        self, request_id: str, events: list[Event], rejected: list[Rejection]
    ) -> asyncio.Future[ItemOutcome]:
        """Queue a delivery; the future resolves after its commit. Raises when full."""
        if self._closing:
            raise ShuttingDown("the sink is shutting down; Twilio will retry this delivery")
        size = max(1, len(events) + len(rejected))
        if self._pending_events and self._pending_events + size > self._max_pending:
            raise Overloaded(
                f"{self._pending_events} events are waiting to be written (limit"
                f" {self._max_pending}, SINK_MAX_PENDING_EVENTS); retry shortly"
            )
        future: asyncio.Future[ItemOutcome] = asyncio.get_running_loop().create_future()
        self._pending_events += size
        item = BatchItem(request_id, events, rejected)
        self._queue.put_nowait(_Pending(item, size, future))
        return future

    async def _collect(self) -> list[_Pending]:
        first = await self._queue.get()
        batch = [first]
        total = first.size
        if total < self._max_events and self._queue.empty() and self._max_wait > 0:
            await asyncio.sleep(self._max_wait)
        while total < self._max_events and not self._queue.empty():
            nxt = self._queue.get_nowait()
            batch.append(nxt)
            total += nxt.size
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            try:
                await self._write(batch)
            except Exception as exc:  # a writer must outlive any one batch
                self._fail(batch, unavailable(exc))
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # closing: asyncpg can raise this in place of the cancellation
                log.exception("unexpected error writing a batch")
            finally:
                for pending in batch:
                    self._pending_events -= pending.size
                if self._pending_events == 0:
                    self._idle.set()

    async def _write(self, batch: list[_Pending]) -> None:
        live = [p for p in batch if not p.future.done()]
        if not live:
            return
        started = time.perf_counter()
        try:
            outcomes = await self._store([p.item for p in live])
        except DatabaseUnavailable as exc:
            self._fail(live, exc)
            return
        except BatchRefused as exc:
            log.warning(
                "database refused a batch of %d deliveries (%s); writing them one by one",
                len(live),
                exc.sqlstate,
            )
            for pending in live:
                await self._write_alone(pending)
            return
        elapsed = time.perf_counter() - started
        if self._on_batch:
            self._on_batch(len(live), sum(p.size for p in live), elapsed)
        for pending, outcome in zip(live, outcomes, strict=True):
            self._resolve(pending, outcome)

    async def _write_alone(self, pending: _Pending) -> None:
        item = pending.item
        try:
            try:
                outcome = (await self._store([item]))[0]
            except BatchRefused:
                outcome = await self._write_event_by_event(item)
        except DatabaseUnavailable as exc:
            self._fail([pending], exc)
            return
        self._resolve(pending, outcome)

    async def _write_event_by_event(self, item: BatchItem) -> ItemOutcome:
        """Last resort for a delivery Postgres refuses: isolate the refused events."""
        total = ItemOutcome(0, 0, 0, [])
        pieces: list[BatchItem] = [BatchItem(item.request_id, [], item.rejected)]
        pieces += [BatchItem(item.request_id, [e], []) for e in item.events]
        for piece in pieces:
            try:
                outcome = (await self._store([piece]))[0]
            except BatchRefused as exc:
                kept = [_refused(e, exc, item.request_id) for e in piece.events]
                kept += [_refused_rejection(r, exc) for r in piece.rejected]
                outcome = (await self._store([BatchItem(item.request_id, [], kept)]))[0]
            total.stored += outcome.stored
            total.duplicates += outcome.duplicates
            total.rejected += outcome.rejected
            total.new_events += outcome.new_events
        return total

    async def _store(self, items: list[BatchItem]) -> list[ItemOutcome]:
        assert self._store_to is not None, "bind() the writer to a store before start()"
        return await self._store_to.store(items)

    def _resolve(self, pending: _Pending, outcome: ItemOutcome) -> None:
        if self._on_committed and outcome.new_events:
            self._on_committed(outcome.new_events)
        if not pending.future.done():
            pending.future.set_result(outcome)

    @staticmethod
    def _fail(batch: list[_Pending], error: DatabaseUnavailable) -> None:
        log.warning("batch of %d deliveries not stored: %s", len(batch), error)
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(error)
                # the handler may have timed out already; mark the exception retrieved
                pending.future.exception()

    async def drain(self, grace: float) -> bool:
        """Stop taking deliveries and wait until everything queued is written."""
        self._closing = True
        if self._pending_events:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
        return self._pending_events == 0

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(ShuttingDown("the sink stopped before writing"))
                pending.future.exception()


def _refused(event: Event, exc: BatchRefused, request_id: str) -> Rejection:
    element = {
        "specversion": event.specversion,
        "id": event.event_id,
        "source": event.source,
        "type": event.type,
        "data": event.data_json,
        "request_id": request_id,
    }
    return Rejection(
        reason="database_refused",
        detail=str(exc),
        raw=jsontext.dumps(element).encode("utf-8", "backslashreplace"),
        event_type=event.type,
        event_id=event.event_id,
        source=event.source,
    )


def _refused_rejection(rejection: Rejection, exc: BatchRefused) -> Rejection:
    return Rejection(
        reason=rejection.reason,
        detail=f"{rejection.detail} (stored without its text: [{exc.sqlstate}])",
        raw=rejection.raw,
    )
