"""Group commit: the events of concurrent deliveries are written together.

A request hands its parsed delivery to ``GroupCommitWriter.submit`` and awaits the
outcome; writer tasks drain the queue (up to ``batch_max_events``, waiting at most
``batch_max_wait_ms`` for company), store each batch in one statement, and only then
resolve the waiting requests. A failed batch fails every request in it (503), except that
a batch Postgres refuses for its *content* is split, so one bad event cannot hold back
the others: each delivery is retried alone, and events Postgres still refuses alone are
kept in rejected_events with the database's reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from sink import db, jsontext, store
from sink.errors import DatabaseUnavailable, Overloaded, ShuttingDown
from sink.events import Event, Rejection

log = logging.getLogger(__name__)

_IN_PLACE_RETRIES = 3


@dataclass(slots=True)
class _Pending:
    item: store.BatchItem
    size: int
    future: asyncio.Future[store.ItemOutcome]
    enqueued: float = field(default_factory=time.perf_counter)


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
        self._pool: asyncpg.Pool[Any] | None = None
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

    def bind(self, pool: asyncpg.Pool[Any]) -> None:
        self._pool = pool

    def start(self) -> None:
        for n in range(self._writers):
            self._tasks.append(asyncio.create_task(self._run(), name=f"writer-{n}"))

    def submit(
        self, request_id: str, events: list[Event], rejected: list[Rejection]
    ) -> asyncio.Future[store.ItemOutcome]:
        """Queue a delivery; the future resolves after its commit. Raises when full."""
        if self._closing:
            raise ShuttingDown("the sink is shutting down; Twilio will retry this delivery")
        size = max(1, len(events) + len(rejected))
        if self._pending_events and self._pending_events + size > self._max_pending:
            raise Overloaded(
                f"{self._pending_events} events are waiting to be written (limit"
                f" {self._max_pending}, SINK_MAX_PENDING_EVENTS); retry shortly"
            )
        future: asyncio.Future[store.ItemOutcome] = asyncio.get_running_loop().create_future()
        self._pending_events += size
        item = store.BatchItem(request_id, events, rejected)
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
                log.exception("unexpected error writing a batch")
                self._fail(batch, db.unavailable(exc))
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
        except asyncpg.PostgresError as exc:
            if db.is_transient(exc):
                self._fail(live, db.unavailable(exc))
                return
            log.warning(
                "database refused a batch of %d deliveries (%s); writing them one by one",
                len(live),
                exc.sqlstate,
            )
            for pending in live:
                await self._write_alone(pending)
            return
        except (OSError, TimeoutError, asyncpg.InterfaceError) as exc:
            self._fail(live, db.unavailable(exc))
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
            except asyncpg.PostgresError as exc:
                if db.is_transient(exc):
                    raise
                outcome = await self._write_event_by_event(item)
        except (asyncpg.PostgresError, OSError, TimeoutError, asyncpg.InterfaceError) as exc:
            self._fail([pending], db.unavailable(exc))
            return
        self._resolve(pending, outcome)

    async def _write_event_by_event(self, item: store.BatchItem) -> store.ItemOutcome:
        """Last resort for a delivery Postgres refuses: isolate the refused events."""
        total = store.ItemOutcome(0, 0, 0, [])
        pieces: list[store.BatchItem] = [store.BatchItem(item.request_id, [], item.rejected)]
        pieces += [store.BatchItem(item.request_id, [e], []) for e in item.events]
        for piece in pieces:
            try:
                outcome = (await self._store([piece]))[0]
            except asyncpg.PostgresError as exc:
                if db.is_transient(exc):
                    raise
                kept = [_refused(e, exc, item.request_id) for e in piece.events]
                kept += [_refused_rejection(r, exc) for r in piece.rejected]
                outcome = (await self._store([store.BatchItem(item.request_id, [], kept)]))[0]
            total.stored += outcome.stored
            total.duplicates += outcome.duplicates
            total.rejected += outcome.rejected
            total.new_events += outcome.new_events
        return total

    async def _store(self, items: list[store.BatchItem]) -> list[store.ItemOutcome]:
        assert self._pool is not None, "bind() the writer to a pool before start()"
        for attempt in range(_IN_PLACE_RETRIES):
            try:
                async with self._pool.acquire() as conn:
                    return await store.ingest(conn, items)
            except asyncpg.PostgresError as exc:
                if exc.sqlstate in db.RETRYABLE_IN_PLACE and attempt + 1 < _IN_PLACE_RETRIES:
                    await asyncio.sleep(0.005 * (attempt + 1))
                    continue
                raise
        raise AssertionError("unreachable")

    def _resolve(self, pending: _Pending, outcome: store.ItemOutcome) -> None:
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


def _refused(event: Event, exc: asyncpg.PostgresError, request_id: str) -> Rejection:
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
        detail=f"Postgres refused this event: [{exc.sqlstate}] {exc}"[:2000],
        raw=jsontext.dumps(element).encode("utf-8", "backslashreplace"),
        event_type=event.type,
        event_id=event.event_id,
        source=event.source,
    )


def _refused_rejection(rejection: Rejection, exc: asyncpg.PostgresError) -> Rejection:
    return Rejection(
        reason=rejection.reason,
        detail=f"{rejection.detail} (stored without its text: [{exc.sqlstate}])",
        raw=rejection.raw,
    )
