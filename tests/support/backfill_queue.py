"""An in-memory backfill queue: the SQL of ``sql/queries/backfill.sql`` as Python.

``InMemoryQueue`` implements ``sink.backfill.queue.WorkQueue`` the way the named queries do
(``claim_item``, ``next_due``, ``extend_leases``, ``retry_item``, ``finish_item``,
``wait_for_credentials``, ``request_progress``/``request_failures``), so the runner's loops are
unit-tested without Postgres. Times are ``clock()`` seconds (``time.monotonic`` by default);
every write is also appended to ``log`` so a test can see what the runner asked for.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sink.backfill import queue as q

OPEN = ("queued", "running")


@dataclass
class Row:
    """One row of ``sink.backfill_items``."""

    item_id: int
    request_id: int
    kind: str
    flow_sid: str | None
    execution_sid: str | None
    since: datetime | None = None
    until: datetime | None = None
    listed: bool = False
    state: str = "queued"
    attempts: int = 0
    not_before: float = 0.0
    locked_by: str | None = None
    locked_until: float | None = None
    reason: str | None = None
    finished_at: datetime | None = None
    account_sid: str | None = None

    def item(self) -> q.Item:
        return q.Item(
            item_id=self.item_id,
            request_id=self.request_id,
            kind=self.kind,
            flow_sid=self.flow_sid,
            execution_sid=self.execution_sid,
            since=self.since,
            until=self.until,
            listed=self.listed,
            attempts=self.attempts,
            account_sid=self.account_sid,
        )


@dataclass
class Request:
    """One row of ``sink.backfill_requests``."""

    request_id: int
    kind: str
    requested_by: str
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    error: str | None = None


class InMemoryQueue:
    """The backfill queue in memory; one instance is one database."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.items: dict[int, Row] = {}
        self.requests: dict[int, Request] = {}
        # ("claim", item_id, attempts, at), ("extend", item_id, at),
        # ("retry", item_id, delay, refund, reason, at), ("finish", item_id, state, reason),
        # ("wait", item_id, account_sid, reason)
        self.log: list[tuple[Any, ...]] = []

    # -- setting up --------------------------------------------------------------------

    def request(self, kind: str = "executions", requested_by: str = "cli") -> int:
        rid = len(self.requests) + 1
        self.requests[rid] = Request(rid, kind, requested_by)
        return rid

    def add(
        self,
        request_id: int,
        execution_sid: str | None = None,
        *,
        kind: str = "execution",
        flow_sid: str | None = None,
        attempts: int = 0,
        state: str = "queued",
        delay: float = 0.0,
        locked_by: str | None = None,
    ) -> int:
        """Queue an item due ``delay`` s from now; ``locked_by`` leases it to someone else."""
        item_id = len(self.items) + 1
        now = self.clock()
        self.items[item_id] = Row(
            item_id=item_id,
            request_id=request_id,
            kind=kind,
            flow_sid=flow_sid,
            execution_sid=execution_sid,
            attempts=attempts,
            state=state,
            not_before=now + delay,
            locked_by=locked_by,
            locked_until=now + delay if locked_by is not None else None,
        )
        return item_id

    def entries(self, what: str, item_id: int | None = None) -> list[tuple[Any, ...]]:
        return [e for e in self.log if e[0] == what and (item_id is None or e[1] == item_id)]

    # -- the WorkQueue protocol ----------------------------------------------------------

    async def claim(self, token: str, lease: float, request_id: int | None) -> q.Item | None:
        now = self.clock()
        due = [
            row
            for row in self.items.values()
            if row.state in OPEN
            and row.not_before <= now
            and (request_id is None or row.request_id == request_id)
        ]
        if not due:
            return None
        row = min(due, key=lambda r: (r.not_before, r.item_id))
        row.state = "running"
        row.attempts += 1
        row.locked_by = token
        row.locked_until = row.not_before = now + lease
        self.log.append(("claim", row.item_id, row.attempts, now))
        return row.item()

    async def next_due(self, request_id: int | None) -> float | None:
        due = [
            row.not_before
            for row in self.items.values()
            if row.state in OPEN and (request_id is None or row.request_id == request_id)
        ]
        return min(due) - self.clock() if due else None

    async def extend(self, tokens: Sequence[str], lease: float) -> None:
        now = self.clock()
        for row in self.items.values():
            if row.locked_by in tokens and row.state == "running":
                row.locked_until = row.not_before = now + lease
                self.log.append(("extend", row.item_id, now))

    async def retry(
        self, item: q.Item, token: str, reason: str, delay: float, *, refund: bool = False
    ) -> bool:
        row = self._locked(item, token)
        if row is None:
            return False
        now = self.clock()
        row.state = "queued"
        row.reason = reason
        row.not_before = now + delay
        row.attempts -= 1 if refund else 0
        row.locked_by = row.locked_until = None
        self.log.append(("retry", row.item_id, delay, refund, reason, now))
        return True

    async def finish(
        self, item: q.Item, token: str, state: q.FinalState, reason: str | None = None
    ) -> bool:
        row = self._locked(item, token)
        if row is None:
            return False
        row.state = state
        row.reason = reason
        row.finished_at = datetime.now(UTC)
        row.locked_by = row.locked_until = None
        self.log.append(("finish", row.item_id, state, reason))
        return True

    async def wait_for_credentials(
        self, item: q.Item, token: str, account_sid: str | None, reason: str
    ) -> bool:
        row = self._locked(item, token)
        if row is None:
            return False
        row.state = "waiting_for_credentials"
        row.account_sid = account_sid or row.account_sid
        row.reason = reason
        row.attempts = max(0, row.attempts - 1)
        row.not_before = self.clock()
        row.locked_by = row.locked_until = None
        self.log.append(("wait", row.item_id, account_sid, reason))
        return True

    async def progress(self, request_id: int, *, failures: int = 0) -> q.Progress | None:
        request = self.requests.get(request_id)
        if request is None:
            return None
        rows = sorted(
            (r for r in self.items.values() if r.request_id == request_id),
            key=lambda r: r.item_id,
        )
        states = [r.state for r in rows]
        still_open = any(s in OPEN for s in states)
        waiting = states.count("waiting_for_credentials")
        started = any(r.state != "queued" or r.attempts > 0 for r in rows)
        finished_times = [r.finished_at for r in rows if r.finished_at is not None]
        finished_at = None if still_open or waiting else max([request.created_at, *finished_times])
        status = "running" if started else "queued"
        if not still_open:
            status = "waiting_for_credentials" if waiting else "finished"
        found = q.Progress(
            request_id=request_id,
            kind=request.kind,
            status=status,
            items_total=len(rows),
            items_done=states.count("done"),
            items_failed=states.count("failed"),
            items_gone=states.count("gone"),
            created_at=request.created_at,
            finished_at=finished_at,
            requested_by=request.requested_by,
            error=request.error,
            items_waiting=waiting,
        )
        if failures and (found.items_failed or found.items_gone or waiting):
            found.failures = [
                (r.execution_sid or r.flow_sid or r.account_sid, r.state, r.reason)
                for r in rows
                if r.state in ("failed", "gone", "waiting_for_credentials")
            ][:failures]
        return found

    def _locked(self, item: q.Item, token: str) -> Row | None:
        row = self.items.get(item.item_id)
        return row if row is not None and row.locked_by == token else None
