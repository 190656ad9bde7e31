"""The backfill queue and backfilled data in Postgres: the only backfill module talking SQL.

Functions take a connection (or pool proxy); the SQL behind them lives in
``sql/0002_backfill.sql`` where it is more than one statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Final, Literal

from sink import jsontext
from sink.db import Conn

CHANNEL: Final = "studio_sink_backfill"

RequestedBy = Literal["http", "sql", "cli", "auto", "ui"]
FinalState = Literal["done", "gone", "failed"]

ENQUEUE: Final = "SELECT sink.enqueue_backfill($1, $2, $3::text[], $4, $5, $6)"
ENQUEUE_LISTED: Final = "SELECT sink.enqueue_listed_executions($1, $2, $3::text[])"

CLAIM: Final = """
WITH next AS (
    SELECT item_id FROM sink.backfill_items
    WHERE state IN ('queued', 'running') AND not_before <= now()
      AND ($3::bigint IS NULL OR request_id = $3)
    ORDER BY not_before, item_id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE sink.backfill_items i
SET state = 'running', attempts = i.attempts + 1, locked_by = $1,
    locked_until = now() + $2 * interval '1 second',
    not_before = now() + $2 * interval '1 second'
FROM next
WHERE i.item_id = next.item_id
RETURNING i.item_id, i.request_id, i.kind, i.flow_sid, i.execution_sid, i.since, i.until,
          i.listed, i.attempts
"""

EXTEND: Final = """
UPDATE sink.backfill_items
SET locked_until = now() + $2 * interval '1 second', not_before = now() + $2 * interval '1 second'
WHERE locked_by = ANY($1::text[]) AND state = 'running'
"""

FINISH: Final = """
UPDATE sink.backfill_items
SET state = $3, reason = $4, finished_at = now(), locked_by = NULL, locked_until = NULL
WHERE item_id = $1 AND locked_by = $2
"""

RETRY: Final = """
UPDATE sink.backfill_items
SET state = 'queued', reason = $3, not_before = now() + $4 * interval '1 second',
    attempts = attempts - CASE WHEN $5 THEN 1 ELSE 0 END, locked_by = NULL, locked_until = NULL
WHERE item_id = $1 AND locked_by = $2
"""

FAIL_REQUEST: Final = """
WITH failed AS (
    UPDATE sink.backfill_items
    SET state = 'failed', reason = $2, finished_at = now(), locked_by = NULL, locked_until = NULL
    WHERE request_id = $1 AND state IN ('queued', 'running')
    RETURNING 1
), request AS (
    UPDATE sink.backfill_requests SET error = $2 WHERE request_id = $1
)
SELECT count(*)::integer FROM failed
"""

PROGRESS: Final = "SELECT * FROM studio.backfill_requests WHERE request_id = $1"

FAILURES: Final = """
SELECT coalesce(execution_sid, flow_sid) AS sid, state, reason
FROM sink.backfill_items
WHERE request_id = $1 AND state IN ('failed', 'gone')
ORDER BY item_id
LIMIT $2
"""

QUEUE_DEPTH: Final = "SELECT count(*) FROM sink.backfill_items WHERE state IN ('queued', 'running')"

NEXT_DUE: Final = """
SELECT extract(epoch FROM min(not_before) - now())::float8 FROM sink.backfill_items
WHERE state IN ('queued', 'running') AND ($1::bigint IS NULL OR request_id = $1)
"""

FLOW_OF: Final = "SELECT flow_sid FROM sink.executions WHERE execution_sid = $1"

MERGE_EXECUTIONS: Final = """
SELECT sink.merge_api_executions($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                 $6::int[], $7::text[], $8::timestamptz[], $9::timestamptz[])
"""

SET_EXECUTION_CONTEXT: Final = """
UPDATE sink.executions e
SET context = $2::jsonb, context_fetched_at = now(), gone_at = NULL, updated_at = now()
WHERE execution_sid = $1
RETURNING e.flow_revision,
          EXISTS (SELECT 1 FROM sink.flows f WHERE f.flow_sid = e.flow_sid) AS flow_known,
          EXISTS (SELECT 1 FROM sink.flow_revisions r
                  WHERE r.flow_sid = e.flow_sid AND r.revision = e.flow_revision)
              AS revision_known
"""

MERGE_STEPS: Final = """
SELECT sink.merge_api_steps($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                            $6::text[], $7::text[], $8::text[], $9::text[],
                            $10::timestamptz[], $11::timestamptz[])
"""

STEPS_WITHOUT_CONTEXT: Final = """
SELECT step_sid FROM sink.steps
WHERE execution_sid = $1 AND context_fetched_at IS NULL AND gone_at IS NULL
ORDER BY date_created, step_sid
"""

SET_STEP_CONTEXTS: Final = """
UPDATE sink.steps s
SET context = c.context::jsonb, context_fetched_at = now(), gone_at = NULL, updated_at = now()
FROM (SELECT * FROM unnest($1::text[], $2::text[]) AS u(step_sid, context) ORDER BY 1) c
WHERE s.step_sid = c.step_sid
"""

EXECUTION_GONE: Final = "UPDATE sink.executions SET gone_at = now() WHERE execution_sid = $1"
STEPS_GONE: Final = "UPDATE sink.steps SET gone_at = now() WHERE step_sid = ANY($1::text[])"

UPSERT_FLOW: Final = """
INSERT INTO sink.flows AS t (flow_sid, account_sid, friendly_name, status, revision, definition,
                             commit_message, valid, date_created, date_updated)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10)
ON CONFLICT (flow_sid) DO UPDATE SET
    account_sid = coalesce(EXCLUDED.account_sid, t.account_sid),
    friendly_name = EXCLUDED.friendly_name, status = EXCLUDED.status,
    revision = EXCLUDED.revision, definition = EXCLUDED.definition,
    commit_message = EXCLUDED.commit_message, valid = EXCLUDED.valid,
    date_created = coalesce(EXCLUDED.date_created, t.date_created),
    date_updated = EXCLUDED.date_updated, fetched_at = now()
WHERE t.revision IS NULL OR EXCLUDED.revision >= t.revision
"""

UPSERT_REVISION: Final = """
INSERT INTO sink.flow_revisions AS t (flow_sid, account_sid, friendly_name, status, revision,
                                      definition, commit_message, valid, date_created,
                                      date_updated)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10)
ON CONFLICT (flow_sid, revision) DO UPDATE SET
    account_sid = coalesce(EXCLUDED.account_sid, t.account_sid),
    friendly_name = EXCLUDED.friendly_name, status = EXCLUDED.status,
    definition = EXCLUDED.definition, commit_message = EXCLUDED.commit_message,
    valid = EXCLUDED.valid, date_created = coalesce(EXCLUDED.date_created, t.date_created),
    date_updated = EXCLUDED.date_updated, fetched_at = now()
"""


@dataclass(frozen=True, slots=True)
class Item:
    """One claimed queue item."""

    item_id: int
    request_id: int
    kind: str  # 'execution' | 'flow_range'
    flow_sid: str | None
    execution_sid: str | None
    since: datetime | None
    until: datetime | None
    listed: bool
    attempts: int


@dataclass(slots=True)
class Progress:
    """A request's state as ``studio.backfill_requests`` shows it."""

    request_id: int
    kind: str
    status: str  # 'queued' | 'running' | 'finished'
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
    kind: Literal["executions", "flow", "missing"],
    requested_by: RequestedBy,
    *,
    execution_sids: Sequence[str] | None = None,
    flow_sid: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """Queue a request; raises asyncpg's InvalidParameterValueError on bad SIDs/ranges."""
    sids = list(execution_sids) if execution_sids is not None else None
    rid: int = await conn.fetchval(ENQUEUE, kind, requested_by, sids, flow_sid, since, until)
    return rid


async def enqueue_listed(conn: Conn, request_id: int, flow_sid: str, sids: Sequence[str]) -> int:
    added: int = await conn.fetchval(ENQUEUE_LISTED, request_id, flow_sid, list(sids))
    return added


async def claim(conn: Conn, token: str, lease: float, request_id: int | None) -> Item | None:
    row = await conn.fetchrow(CLAIM, token, lease, request_id)
    return Item(**dict(row)) if row is not None else None


async def extend(conn: Conn, tokens: Sequence[str], lease: float) -> None:
    await conn.execute(EXTEND, list(tokens), lease)


async def finish(
    conn: Conn, item: Item, token: str, state: FinalState, reason: str | None = None
) -> bool:
    status: str = await conn.execute(FINISH, item.item_id, token, state, reason)
    return status.endswith(" 1")


async def retry(
    conn: Conn, item: Item, token: str, reason: str, delay: float, *, refund: bool = False
) -> bool:
    """Back to the queue after ``delay`` s; ``refund`` gives the attempt back (shutdown)."""
    status: str = await conn.execute(RETRY, item.item_id, token, reason, delay, refund)
    return status.endswith(" 1")


async def fail_request(conn: Conn, request_id: int, reason: str) -> int:
    """Fail every open item of the request at once; how many there were."""
    failed: int = await conn.fetchval(FAIL_REQUEST, request_id, reason)
    return failed


async def progress(conn: Conn, request_id: int, *, failures: int = 0) -> Progress | None:
    row = await conn.fetchrow(PROGRESS, request_id)
    if row is None:
        return None
    found = Progress(**dict(row))
    if failures and (found.items_failed or found.items_gone):
        rows = await conn.fetch(FAILURES, request_id, failures)
        found.failures = [(r["sid"], r["state"], r["reason"]) for r in rows]
    return found


async def queue_depth(conn: Conn) -> int:
    depth: int = await conn.fetchval(QUEUE_DEPTH)
    return depth


async def next_due(conn: Conn, request_id: int | None) -> float | None:
    """Seconds until an open item (of the request, or any) may be claimed; None if none."""
    due: float | None = await conn.fetchval(NEXT_DUE, request_id)
    return due


async def flow_of(conn: Conn, execution_sid: str) -> str | None:
    flow: str | None = await conn.fetchval(FLOW_OF, execution_sid)
    return flow


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
        await conn.execute(MERGE_EXECUTIONS, *_columns(unique, ExecutionRow))


async def set_execution_context(conn: Conn, execution_sid: str, context: Any) -> FlowNeeds | None:
    row = await conn.fetchrow(SET_EXECUTION_CONTEXT, execution_sid, jsontext.dumps(context))
    if row is None:
        return None
    return FlowNeeds(row["flow_revision"], row["flow_known"], row["revision_known"])


async def merge_steps(conn: Conn, rows: Sequence[StepRow]) -> None:
    if rows:
        unique = list({row.step_sid: row for row in rows}.values())
        await conn.execute(MERGE_STEPS, *_columns(unique, StepRow))


async def steps_without_context(conn: Conn, execution_sid: str) -> list[str]:
    rows = await conn.fetch(STEPS_WITHOUT_CONTEXT, execution_sid)
    return [r["step_sid"] for r in rows]


async def set_step_contexts(conn: Conn, contexts: Sequence[tuple[str, Any]]) -> None:
    if contexts:
        ordered = sorted(contexts, key=lambda pair: pair[0])  # lock rows as ingest does
        sids = [sid for sid, _ in ordered]
        texts = [jsontext.dumps(ctx) for _, ctx in ordered]
        await conn.execute(SET_STEP_CONTEXTS, sids, texts)


async def mark_execution_gone(conn: Conn, execution_sid: str) -> None:
    await conn.execute(EXECUTION_GONE, execution_sid)


async def mark_steps_gone(conn: Conn, step_sids: Sequence[str]) -> None:
    if step_sids:
        await conn.execute(STEPS_GONE, list(step_sids))


async def store_flow(conn: Conn, flow: FlowRow) -> None:
    await conn.execute(UPSERT_FLOW, *flow.args())


async def store_revision(conn: Conn, revision: FlowRow) -> None:
    await conn.execute(UPSERT_REVISION, *revision.args())
