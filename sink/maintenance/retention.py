"""The data's life cycle: event partitions and retention (``studio-sink maintain``).

Replay and export live in ``sink.maintenance.replay`` and ``sink.maintenance.export``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import asyncpg

from sink.constants import MAINTAIN_LOCK
from sink.db.pool import Conn
from sink.db.queries import query

log = logging.getLogger(__name__)

PARTITION_DAYS_AHEAD: Final = 7
DELETE_BATCH_ROWS: Final = 5000  # rows per expiry transaction: each holds its locks briefly
QUARANTINE_DAYS: Final = 7  # quarantined deliveries expire after this without a retention

# --- partitions and retention ----------------------------------------------------------


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
    batch_rows: int = DELETE_BATCH_ROWS,
) -> MaintainReport:
    """Create future partitions; expire raw events (and typed rows) past their retention.

    Every step is its own short transaction, and the steps that must not run twice at once
    take a transaction-level advisory lock: this works the same through a transaction
    pooler (PgBouncer), where a session lock would be lost between statements.
    """
    report = MaintainReport(dry_run=dry_run)
    if dry_run:
        report.partitions_created = await conn.fetchval(
            query("count_missing_partitions"), days_ahead
        )
    else:
        async with conn.transaction():
            await conn.execute(query("advisory_xact_lock"), MAINTAIN_LOCK)
            report.partitions_created = await conn.fetchval(query("ensure_partitions"), days_ahead)
    if retention_days is not None:
        report.event_cutoff = await conn.fetchval(query("event_cutoff"), retention_days)
        await _expire_events(conn, report, batch_rows)
    await _expire_quarantine(conn, report, retention_days or QUARANTINE_DAYS, batch_rows)
    if typed_retention_days is not None:
        report.typed_cutoff = await conn.fetchval(query("typed_cutoff"), typed_retention_days)
        await _expire_typed(conn, report)
    return report


async def _drop_partition(conn: Conn, name: str) -> bool:
    """Drop one partition in a transaction of its own, waiting at most a moment for its
    lock (ingestion queues behind a waiting DROP); False when it is busy."""
    try:
        async with conn.transaction():
            await conn.execute(query("advisory_xact_lock"), MAINTAIN_LOCK)
            await conn.execute(query("set_drop_lock_timeout"))
            await conn.execute(query("drop_partition").format(name=_quote_ident(name)))
    except asyncpg.LockNotAvailableError:
        log.warning("partition sink.%s is busy (a long query reads it); next run", name)
        return False
    log.info("dropped event partition sink.%s", name)
    return True


async def _delete_in_batches(conn: Conn, statement: str, *args: object, batch_rows: int) -> int:
    """Run a ``LIMIT``ed delete until it deletes nothing; each batch commits on its own, so
    no lock is held for long. Returns the rows deleted."""
    total = 0
    while True:
        deleted = _count(await conn.execute(statement, *args, batch_rows))
        total += deleted
        if deleted < batch_rows:
            return total


async def _expire_events(conn: Conn, report: MaintainReport, batch_rows: int) -> None:
    cutoff = report.event_cutoff
    keys = 0
    for row in await conn.fetch(query("expired_partitions"), cutoff):
        name, lo, hi = row["name"], row["lo"], row["hi"]
        if report.dry_run:  # its keys are counted with the others below
            report.partitions_dropped.append(name)
        elif await _drop_partition(conn, name):
            report.partitions_dropped.append(name)
            # the events are gone and committed; their keys outlive them, briefly
            keys += await _delete_in_batches(
                conn, query("delete_keys_between"), lo, hi, batch_rows=batch_rows
            )
        else:
            report.partitions_busy.append(name)
    if report.partitions_busy:
        # keys must outlive their events: leave the rest for the next run
        report.deleted["event_keys"] = keys
        return
    names = ("default_partition_events", "event_keys", "rejected_events", "deliveries")
    for name in names:
        if report.dry_run:
            n = await conn.fetchval(query(f"count_old_{name}"), cutoff)
        else:
            n = await _delete_in_batches(
                conn, query(f"delete_old_{name}"), cutoff, batch_rows=batch_rows
            )
        report.deleted[name] = n + (keys if name == "event_keys" else 0)


async def _expire_quarantine(
    conn: Conn, report: MaintainReport, days: int, batch_rows: int
) -> None:
    """Deliveries refused for their signature, kept for a retry, older than ``days``."""
    if report.dry_run:
        n = await conn.fetchval(query("count_old_quarantine"), days)
    else:
        statement = query("delete_old_quarantine")
        n = await _delete_in_batches(conn, statement, days, batch_rows=batch_rows)
    if n:
        report.deleted["quarantine"] = n


async def _expire_typed(conn: Conn, report: MaintainReport) -> None:
    statement = query("count_expired_typed") if report.dry_run else query("delete_expired_typed")
    row = await conn.fetchrow(statement, report.typed_cutoff)
    assert row is not None
    report.deleted["executions"] = row["executions"]
    report.deleted["steps"] = row["steps"]


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
