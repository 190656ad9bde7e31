"""The backfill queue and backfilled data in Postgres: with ``account_rows`` (items waiting
for their account's credentials, whose item it is) the only backfill modules talking SQL.

Functions take a connection (or pool proxy); the SQL behind them lives in
``sql/migrations/0002_backfill.sql`` where it is more than one statement. ``WorkQueue`` is
what the runner's loops need of the queue, and ``PostgresQueue`` is that over a pool (the
unit tests use an in-memory one, ``tests/support/backfill_queue.py``). ``PostgresSlots`` is
the shared Studio API rate limit's slot source (``sink.backfill.ratelimit``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal, Protocol

import asyncpg

from sink import jsontext
from sink.backfill.ratelimit import SlotLease
from sink.db.pool import Conn, is_bad_data
from sink.db.queries import query

RequestedBy = Literal["http", "sql", "cli", "auto", "ui"]
FinalState = Literal["done", "gone", "failed"]


@dataclass(frozen=True, slots=True)
class Item:
    """One claimed queue item."""

    item_id: int
    request_id: int
    kind: str  # 'execution' | 'flow_range' | 'flows'
    flow_sid: str | None
    execution_sid: str | None
    since: datetime | None
    until: datetime | None
    listed: bool
    attempts: int
    account_sid: str | None = None  # whose credentials, when the stored rows do not say


@dataclass(slots=True)
class Progress:
    """A request's state as ``studio.backfill_requests`` shows it."""

    request_id: int
    kind: str
    status: str  # 'queued' | 'running' | 'waiting_for_credentials' | 'finished'
    items_total: int
    items_done: int
    items_failed: int
    items_gone: int
    created_at: datetime
    finished_at: datetime | None
    requested_by: str
    error: str | None
    flow_sid: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    items_waiting: int = 0  # waiting for their account's credentials
    account_sid: str | None = None  # the account the request names (--account)
    failures: list[tuple[str | None, str, str | None]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def items_finished(self) -> int:
        return self.items_done + self.items_failed + self.items_gone


@dataclass(frozen=True, slots=True)
class FlowNeeds:
    """After an execution's context is stored: its revision, and what is not stored yet."""

    revision: int | None
    flow_known: bool
    revision_known: bool


async def enqueue(
    conn: Conn,
    kind: Literal["executions", "flow", "missing", "flows"],
    requested_by: RequestedBy,
    *,
    execution_sids: Sequence[str] | None = None,
    flow_sid: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    account_sid: str | None = None,
) -> int:
    """Queue a request; raises asyncpg's InvalidParameterValueError on bad SIDs/ranges.
    ``account_sid``: the account whose credentials fetch its items when the stored rows do
    not name one (and, for ``missing``, the only account whose executions are queued)."""
    rid: int
    async with conn.transaction():
        if kind == "executions":
            sids = list(execution_sids) if execution_sids is not None else None
            rid = await conn.fetchval(query("enqueue_executions"), requested_by, sids)
        elif kind == "flow":
            rid = await conn.fetchval(
                query("enqueue_flow_range"), requested_by, flow_sid, since, until
            )
        elif kind == "flows":  # flow_sid None: every flow of the account
            rid = await conn.fetchval(query("enqueue_flows"), requested_by, flow_sid)
        elif account_sid is not None:
            rid = await conn.fetchval(
                query("enqueue_missing_of_account"), requested_by, account_sid
            )
        else:
            rid = await conn.fetchval(query("enqueue_missing"), requested_by)
        if account_sid is not None:
            await conn.execute(query("set_request_account"), rid, account_sid)
    return rid


async def enqueue_listed(conn: Conn, request_id: int, flow_sid: str, sids: Sequence[str]) -> int:
    added: int = await conn.fetchval(
        query("enqueue_listed_executions"), request_id, flow_sid, list(sids)
    )
    return added


async def claim(conn: Conn, token: str, lease: float, request_id: int | None) -> Item | None:
    row = await conn.fetchrow(query("claim_item"), token, lease, request_id)
    return Item(**dict(row)) if row is not None else None


async def extend(conn: Conn, tokens: Sequence[str], lease: float) -> None:
    await conn.execute(query("extend_leases"), list(tokens), lease)


async def finish(
    conn: Conn, item: Item, token: str, state: FinalState, reason: str | None = None
) -> bool:
    status: str = await conn.execute(query("finish_item"), item.item_id, token, state, reason)
    return status.endswith(" 1")


async def retry(
    conn: Conn, item: Item, token: str, reason: str, delay: float, *, refund: bool = False
) -> bool:
    """Back to the queue after ``delay`` s; ``refund`` gives the attempt back (shutdown)."""
    status: str = await conn.execute(
        query("retry_item"), item.item_id, token, reason, delay, refund
    )
    return status.endswith(" 1")


async def wait_for_credentials(
    conn: Conn, item: Item, token: str, account_sid: str | None, reason: str
) -> bool:
    """Park the item until its account's credentials work; its attempt is not counted."""
    status: str = await conn.execute(
        query("wait_for_credentials"), item.item_id, token, account_sid, reason
    )
    return status.endswith(" 1")


async def progress(conn: Conn, request_id: int, *, failures: int = 0) -> Progress | None:
    row = await conn.fetchrow(query("request_progress"), request_id)
    if row is None:
        return None
    found = Progress(**dict(row))
    if failures and (found.items_failed or found.items_gone or found.items_waiting):
        rows = await conn.fetch(query("request_failures"), request_id, failures)
        found.failures = [(r["sid"], r["state"], r["reason"]) for r in rows]
    return found


async def queue_depth(conn: Conn) -> int:
    depth: int = await conn.fetchval(query("queue_depth"))
    return depth


async def items_waiting(conn: Conn) -> int:
    """Items in state ``waiting_for_credentials``, of every request."""
    waiting: int = await conn.fetchval(query("items_waiting"))
    return waiting


async def next_due(conn: Conn, request_id: int | None) -> float | None:
    """Seconds until an open item (of the request, or any) may be claimed; None if none."""
    due: float | None = await conn.fetchval(query("next_due"), request_id)
    return due


async def flow_of(conn: Conn, execution_sid: str) -> str | None:
    flow: str | None = await conn.fetchval(query("flow_of_execution"), execution_sid)
    return flow


# -- the queue as the runner sees it ------------------------------------------------


class WorkQueue(Protocol):
    """The queue operations the runner's loops need; no transaction spans two of them."""

    async def claim(self, token: str, lease: float, request_id: int | None) -> Item | None:
        """The due item (of the request, or any) with the lowest (not_before, item_id),
        leased to ``token`` for ``lease`` s, its attempt counted; None if none is due."""
        ...

    async def next_due(self, request_id: int | None) -> float | None:
        """Seconds until an open item may be claimed; None if none is open."""
        ...

    async def extend(self, tokens: Sequence[str], lease: float) -> None:
        """Renew the leases of the running items held by ``tokens``."""
        ...

    async def retry(
        self, item: Item, token: str, reason: str, delay: float, *, refund: bool = False
    ) -> bool:
        """Back to the queue after ``delay`` s, if ``token`` still holds it."""
        ...

    async def finish(
        self, item: Item, token: str, state: FinalState, reason: str | None = None
    ) -> bool:
        """Record the item's final state, if ``token`` still holds it."""
        ...

    async def wait_for_credentials(
        self, item: Item, token: str, account_sid: str | None, reason: str
    ) -> bool:
        """Park the item (``waiting_for_credentials``, attempt not counted) if ``token``
        still holds it: its account has no credentials that work."""
        ...

    async def progress(self, request_id: int, *, failures: int = 0) -> Progress | None:
        """The request's state and its first ``failures`` failures; None if unknown."""
        ...


class PostgresQueue:
    """``WorkQueue`` over a pool: each operation on a connection of its own."""

    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self._pool = pool

    async def claim(self, token: str, lease: float, request_id: int | None) -> Item | None:
        async with self._pool.acquire() as conn:
            return await claim(conn, token, lease, request_id)

    async def next_due(self, request_id: int | None) -> float | None:
        async with self._pool.acquire() as conn:
            return await next_due(conn, request_id)

    async def extend(self, tokens: Sequence[str], lease: float) -> None:
        async with self._pool.acquire() as conn:
            await extend(conn, tokens, lease)

    async def retry(
        self, item: Item, token: str, reason: str, delay: float, *, refund: bool = False
    ) -> bool:
        async with self._pool.acquire() as conn:
            return await retry(conn, item, token, reason, delay, refund=refund)

    async def finish(
        self, item: Item, token: str, state: FinalState, reason: str | None = None
    ) -> bool:
        async with self._pool.acquire() as conn:
            return await finish(conn, item, token, state, reason)

    async def wait_for_credentials(
        self, item: Item, token: str, account_sid: str | None, reason: str
    ) -> bool:
        async with self._pool.acquire() as conn:
            return await wait_for_credentials(conn, item, token, account_sid, reason)

    async def progress(self, request_id: int, *, failures: int = 0) -> Progress | None:
        async with self._pool.acquire() as conn:
            return await progress(conn, request_id, failures=failures)


# -- backfilled data -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExecutionRow:
    execution_sid: str
    flow_sid: str
    account_sid: str | None
    status: str
    contact_channel_address: str | None
    flow_revision: int | None
    initiated_by: str | None
    date_created: datetime | None
    date_updated: datetime | None


@dataclass(frozen=True, slots=True)
class StepRow:
    step_sid: str
    execution_sid: str
    flow_sid: str
    account_sid: str | None
    name: str | None
    transitioned_from: str | None
    transitioned_to: str | None
    parent_step_sid: str | None
    widget_type: str | None
    date_created: datetime | None
    date_updated: datetime | None


@dataclass(frozen=True, slots=True)
class FlowRow:
    flow_sid: str
    account_sid: str | None
    friendly_name: str | None
    status: str | None
    revision: int | None
    definition: Any
    commit_message: str | None
    valid: bool | None
    date_created: datetime | None
    date_updated: datetime | None

    def args(self) -> list[Any]:
        definition = None if self.definition is None else jsontext.dumps(self.definition)
        return [
            self.flow_sid,
            self.account_sid,
            self.friendly_name,
            self.status,
            self.revision,
            definition,
            self.commit_message,
            self.valid,
            self.date_created,
            self.date_updated,
        ]


def _columns(rows: Sequence[Any], kind: type) -> list[list[Any]]:
    return [[getattr(row, f.name) for row in rows] for f in fields(kind)]


async def merge_executions(conn: Conn, rows: Sequence[ExecutionRow]) -> None:
    if rows:
        unique = list({row.execution_sid: row for row in rows}.values())
        await conn.execute(query("merge_api_executions"), *_columns(unique, ExecutionRow))


def refusal(exc: asyncpg.PostgresError) -> str:
    """Why Postgres refused a context: its message and SQLSTATE, without the detail and
    context lines, which quote the row and the data (a contact, an SMS)."""
    message = exc.args[0] if exc.args else type(exc).__name__
    return f"Postgres refused its context: {message} (SQLSTATE {exc.sqlstate})"


def _jsonb_text(value: Any) -> str:
    """A context as a ``jsonb`` parameter: NULs and lone surrogates, which Postgres cannot
    store, become U+FFFD (``jsontext.storable``). JsonError when it cannot be written."""
    return jsontext.dumps(jsontext.storable(value))


async def set_execution_context(conn: Conn, execution_sid: str, context: Any) -> FlowNeeds | None:
    """Stores a fetched context (as ``_jsonb_text``) in a savepoint of the caller's
    transaction: if Postgres refuses it, its error is raised and the caller's other writes
    can still commit. None when the execution is not stored."""
    text = _jsonb_text(context)
    async with conn.transaction():
        row = await conn.fetchrow(query("set_execution_context"), execution_sid, text)
    if row is None:
        return None
    return FlowNeeds(row["flow_revision"], row["flow_known"], row["revision_known"])


async def merge_steps(conn: Conn, rows: Sequence[StepRow]) -> None:
    if rows:
        unique = list({row.step_sid: row for row in rows}.values())
        await conn.execute(query("merge_api_steps"), *_columns(unique, StepRow))


async def steps_without_context(conn: Conn, execution_sid: str) -> list[str]:
    rows = await conn.fetch(query("steps_without_context"), execution_sid)
    return [r["step_sid"] for r in rows]


async def set_step_contexts(
    conn: Conn, contexts: Sequence[tuple[str, Any]]
) -> list[tuple[str, str]]:
    """Stores fetched step contexts (as ``_jsonb_text``) in one statement; when Postgres
    refuses that for its content, one by one, so a bad context holds back no other. The
    (step SID, reason) of each context not stored. Savepoints keep the caller's transaction
    usable."""
    refused: list[tuple[str, str]] = []
    rows: list[tuple[str, str]] = []
    for sid, context in sorted(contexts, key=lambda pair: pair[0]):  # lock rows as ingest does
        try:
            rows.append((sid, _jsonb_text(context)))
        except jsontext.JsonError as exc:
            refused.append((sid, f"its context cannot be stored: {exc}"))
    reason = await _try_step_contexts(conn, rows) if rows else None
    if reason is not None and len(rows) == 1:
        refused.append((rows[0][0], reason))
    elif reason is not None:
        for row in rows:
            alone = await _try_step_contexts(conn, [row])
            if alone is not None:
                refused.append((row[0], alone))
    return sorted(refused)


async def _try_step_contexts(conn: Conn, rows: Sequence[tuple[str, str]]) -> str | None:
    """Why Postgres refused these contexts for their content (None: stored); it raises what
    says nothing about the data."""
    try:
        async with conn.transaction():
            await conn.execute(
                query("set_step_contexts"), [sid for sid, _ in rows], [text for _, text in rows]
            )
    except asyncpg.PostgresError as exc:
        if not is_bad_data(exc):
            raise
        return refusal(exc)
    return None


async def mark_execution_gone(conn: Conn, execution_sid: str) -> None:
    await conn.execute(query("mark_execution_gone"), execution_sid)


async def mark_steps_gone(conn: Conn, step_sids: Sequence[str]) -> None:
    if step_sids:
        await conn.execute(query("mark_steps_gone"), list(step_sids))


async def store_flow(conn: Conn, flow: FlowRow) -> None:
    await conn.execute(query("upsert_flow"), *flow.args())


async def store_revision(conn: Conn, revision: FlowRow) -> None:
    await conn.execute(query("upsert_flow_revision"), *revision.args())


async def missing_revisions(conn: Conn, flow_sid: str) -> list[int]:
    """Revisions of the flow that stored executions ran and that are not stored."""
    rows = await conn.fetch(query("missing_flow_revisions"), flow_sid)
    return [r["flow_revision"] for r in rows]


# -- the shared Studio API rate limit ------------------------------------------------

MAX_PAUSE_ASKED = 1e7  # seconds: "wait out any pause", as a finite interval for Postgres


class PostgresSlots:
    """``SlotSource`` over a pool: the row ``key`` of ``sink.rate_limits``, changed only by
    single statements, so it works through a transaction pooler too."""

    def __init__(self, pool: asyncpg.Pool[Any], key: str) -> None:
        self._pool = pool
        self._key = key

    async def take(self, count: int, rate: float, max_pause: float) -> SlotLease:
        asked = min(max_pause, MAX_PAUSE_ASKED)
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(query("take_rate_slots"), self._key, rate, count, asked)
        assert row is not None  # an upsert ... RETURNING always returns its row
        interval: float = row["slot_seconds"]
        return SlotLease(
            granted=0 if row["paused_long"] else count,
            first=row["next_slot_in"] - count * interval,
            interval=interval,
            paused=row["paused_for"],
        )

    async def record_429(
        self, seconds: float, factor: float, min_factor: float, slowdown_seconds: float
    ) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                query("record_rate_429"), self._key, seconds, factor, min_factor, slowdown_seconds
            )
