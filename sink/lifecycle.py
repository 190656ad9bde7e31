"""The data's life cycle: event partitions and retention (``studio-sink maintain``).

Everything here talks SQL through the named constants below. Replay and export live in
``sink.replay`` and ``sink.export``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import asyncpg

from sink.db import Conn

log = logging.getLogger(__name__)

PARTITION_DAYS_AHEAD: Final = 7
MAINTAIN_LOCK: Final = 0x53_54_55_44_4D_54  # "STUDMT": one maintenance run at a time
DROP_LOCK_TIMEOUT: Final = "3s"  # never queue ingestion behind a drop for long

# --- partitions and retention ----------------------------------------------------------

LOCK: Final = "SELECT pg_advisory_lock($1)"  # runs (replicas, CronJob) take turns
UNLOCK: Final = "SELECT pg_advisory_unlock($1)"
ENSURE_PARTITIONS: Final = "SELECT sink.ensure_event_partitions($1)"
MISSING_PARTITIONS: Final = """
SELECT count(*) FROM generate_series((now() AT TIME ZONE 'UTC')::date - 1,
                                     (now() AT TIME ZONE 'UTC')::date + $1::integer,
                                     interval '1 day') AS d
WHERE to_regclass(format('sink.events_%s', to_char(d, 'YYYYMMDD'))) IS NULL
"""
# Start of the UTC day `days` days before today: partitions end on day boundaries, so the
# events, their dedup keys and the partitions expire together.
EVENT_CUTOFF: Final = """
SELECT (date_trunc('day', now() AT TIME ZONE 'UTC') - make_interval(days => $1))
       AT TIME ZONE 'UTC'
"""
TYPED_CUTOFF: Final = "SELECT now() - make_interval(days => $1)"
EXPIRED_PARTITIONS: Final = r"""
SELECT name, lo, hi FROM (
    SELECT c.relname AS name,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid),
                         $re$FROM \('([^']+)'\) TO \('([^']+)'\)$re$))[1]::timestamptz AS lo,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid),
                         $re$FROM \('([^']+)'\) TO \('([^']+)'\)$re$))[2]::timestamptz AS hi
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'sink.events'::regclass
) p
WHERE hi <= $1
ORDER BY lo
"""
SET_DROP_LOCK_TIMEOUT: Final = f"SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}'"
DROP_PARTITION: Final = "DROP TABLE sink.{name}"  # name quoted by the caller
DELETE_KEYS_BETWEEN: Final = (
    "DELETE FROM sink.event_keys WHERE received_at >= $1 AND received_at < $2"
)
# Rows the default partition caught before the cutoff, and any key left without its event.
DELETE_DEFAULT_EVENTS: Final = "DELETE FROM sink.events_default WHERE received_at < $1"
COUNT_DEFAULT_EVENTS: Final = "SELECT count(*) FROM sink.events_default WHERE received_at < $1"
DELETE_OLD_ROWS: Final = {
    "event_keys": "DELETE FROM sink.event_keys WHERE received_at < $1",
    "rejected_events": "DELETE FROM sink.rejected_events WHERE received_at < $1",
    "deliveries": "DELETE FROM sink.deliveries WHERE received_at < $1",
}
COUNT_OLD_ROWS: Final = {
    "event_keys": "SELECT count(*) FROM sink.event_keys WHERE received_at < $1",
    "rejected_events": "SELECT count(*) FROM sink.rejected_events WHERE received_at < $1",
    "deliveries": "SELECT count(*) FROM sink.deliveries WHERE received_at < $1",
}
# An execution expires with its steps when its last known activity is before the cutoff.
DELETE_TYPED: Final = """
WITH gone AS (
    DELETE FROM sink.executions
    WHERE coalesce(date_updated, date_created, first_seen_at) < $1
    RETURNING execution_sid
), steps_gone AS (
    DELETE FROM sink.steps s USING gone WHERE s.execution_sid = gone.execution_sid
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone) AS executions, (SELECT count(*) FROM steps_gone) AS steps
"""
COUNT_TYPED: Final = """
WITH gone AS (
    SELECT execution_sid FROM sink.executions
    WHERE coalesce(date_updated, date_created, first_seen_at) < $1
)
SELECT (SELECT count(*) FROM gone) AS executions,
       (SELECT count(*) FROM sink.steps s JOIN gone USING (execution_sid)) AS steps
"""


@dataclass(slots=True)
class MaintainReport:
    """What one maintenance run did (or, with ``dry_run``, would do)."""

    dry_run: bool
    partitions_created: int = 0
    event_cutoff: datetime | None = None
    partitions_dropped: list[str] = field(default_factory=list)
    partitions_busy: list[str] = field(default_factory=list)  # lock timeout: next run
    deleted: dict[str, int] = field(default_factory=dict)
    typed_cutoff: datetime | None = None

    def lines(self) -> list[str]:
        verb = "would" if self.dry_run else "did"
        out = [f"partitions created: {self.partitions_created}"]
        if self.event_cutoff is None:
            out.append("raw events: kept (no retention set)")
        else:
            dropped = ", ".join(self.partitions_dropped) or "none"
            out.append(f"event cutoff {self.event_cutoff.isoformat()}: {verb} drop {dropped}")
        if self.partitions_busy:
            out.append(
                "busy (a reader held a lock; retried next run): " + ", ".join(self.partitions_busy)
            )
        if self.typed_cutoff is not None:
            out.append(f"typed cutoff {self.typed_cutoff.isoformat()}")
        out.extend(f"{name}: {verb} delete {n}" for name, n in self.deleted.items())
        return out


def _count(status: str) -> int:
    """Rows affected, from a command status such as ``DELETE 42``."""
    return int(status.rsplit(" ", 1)[-1])


async def maintain(
    conn: Conn,
    *,
    retention_days: int | None,
    typed_retention_days: int | None = None,
    dry_run: bool = False,
    days_ahead: int = PARTITION_DAYS_AHEAD,
) -> MaintainReport:
    """Create future partitions; expire raw events (and typed rows) past their retention."""
    report = MaintainReport(dry_run=dry_run)
    await conn.execute(LOCK, MAINTAIN_LOCK)
    try:
        if dry_run:
            report.partitions_created = await conn.fetchval(MISSING_PARTITIONS, days_ahead)
        else:
            report.partitions_created = await conn.fetchval(ENSURE_PARTITIONS, days_ahead)
        if retention_days is not None:
            report.event_cutoff = await conn.fetchval(EVENT_CUTOFF, retention_days)
            await _expire_events(conn, report)
        if typed_retention_days is not None:
            report.typed_cutoff = await conn.fetchval(TYPED_CUTOFF, typed_retention_days)
            await _expire_typed(conn, report)
    finally:
        await conn.execute(UNLOCK, MAINTAIN_LOCK)
    return report


async def _expire_events(conn: Conn, report: MaintainReport) -> None:
    cutoff = report.event_cutoff
    keys = 0
    for row in await conn.fetch(EXPIRED_PARTITIONS, cutoff):
        name, lo, hi = row["name"], row["lo"], row["hi"]
        if report.dry_run:  # its keys are counted with the others below
            report.partitions_dropped.append(name)
            continue
        try:
            # the day's events and their dedup keys go together, or not at all
            async with conn.transaction():
                await conn.execute(SET_DROP_LOCK_TIMEOUT)
                await conn.execute(DROP_PARTITION.format(name=_quote_ident(name)))
                keys += _count(await conn.execute(DELETE_KEYS_BETWEEN, lo, hi))
        except asyncpg.LockNotAvailableError:
            log.warning("partition sink.%s is busy (a long query reads it); next run", name)
            report.partitions_busy.append(name)
            continue
        report.partitions_dropped.append(name)
        log.info("dropped event partition sink.%s", name)
    if report.partitions_busy:
        # keys must outlive their events: leave the rest for the next run
        report.deleted["event_keys"] = keys
        return
    async with conn.transaction():
        if report.dry_run:
            report.deleted["default_partition_events"] = await conn.fetchval(
                COUNT_DEFAULT_EVENTS, cutoff
            )
        else:
            report.deleted["default_partition_events"] = _count(
                await conn.execute(DELETE_DEFAULT_EVENTS, cutoff)
            )
        for name in ("event_keys", "rejected_events", "deliveries"):
            if report.dry_run:
                n = await conn.fetchval(COUNT_OLD_ROWS[name], cutoff)
            else:
                n = _count(await conn.execute(DELETE_OLD_ROWS[name], cutoff))
            report.deleted[name] = n + (keys if name == "event_keys" else 0)


async def _expire_typed(conn: Conn, report: MaintainReport) -> None:
    query = COUNT_TYPED if report.dry_run else DELETE_TYPED
    row = await conn.fetchrow(query, report.typed_cutoff)
    assert row is not None
    report.deleted["executions"] = row["executions"]
    report.deleted["steps"] = row["steps"]


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
