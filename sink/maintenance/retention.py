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

from sink.constants import MAINTAIN_LOCK
from sink.db.pool import Conn
from sink.db.queries import query

log = logging.getLogger(__name__)

PARTITION_DAYS_AHEAD: Final = 7

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
) -> MaintainReport:
    """Create future partitions; expire raw events (and typed rows) past their retention."""
    report = MaintainReport(dry_run=dry_run)
    await conn.execute(query("advisory_lock"), MAINTAIN_LOCK)
    try:
        if dry_run:
            report.partitions_created = await conn.fetchval(
                query("count_missing_partitions"), days_ahead
            )
        else:
            report.partitions_created = await conn.fetchval(query("ensure_partitions"), days_ahead)
        if retention_days is not None:
            report.event_cutoff = await conn.fetchval(query("event_cutoff"), retention_days)
            await _expire_events(conn, report)
        if typed_retention_days is not None:
            report.typed_cutoff = await conn.fetchval(query("typed_cutoff"), typed_retention_days)
            await _expire_typed(conn, report)
    finally:
        await conn.execute(query("advisory_unlock"), MAINTAIN_LOCK)
    return report


async def _expire_events(conn: Conn, report: MaintainReport) -> None:
    cutoff = report.event_cutoff
    keys = 0
    for row in await conn.fetch(query("expired_partitions"), cutoff):
        name, lo, hi = row["name"], row["lo"], row["hi"]
        if report.dry_run:  # its keys are counted with the others below
            report.partitions_dropped.append(name)
            continue
        try:
            # the day's events and their dedup keys go together, or not at all
            async with conn.transaction():
                await conn.execute(query("set_drop_lock_timeout"))
                await conn.execute(query("drop_partition").format(name=_quote_ident(name)))
                keys += _count(await conn.execute(query("delete_keys_between"), lo, hi))
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
                query("count_default_partition_events"), cutoff
            )
        else:
            report.deleted["default_partition_events"] = _count(
                await conn.execute(query("delete_default_partition_events"), cutoff)
            )
        for name in ("event_keys", "rejected_events", "deliveries"):
            if report.dry_run:
                n = await conn.fetchval(query(f"count_old_rows_{name}"), cutoff)
            else:
                n = _count(await conn.execute(query(f"delete_old_rows_{name}"), cutoff))
            report.deleted[name] = n + (keys if name == "event_keys" else 0)


async def _expire_typed(conn: Conn, report: MaintainReport) -> None:
    statement = query("count_expired_typed") if report.dry_run else query("delete_expired_typed")
    row = await conn.fetchrow(statement, report.typed_cutoff)
    assert row is not None
    report.deleted["executions"] = row["executions"]
    report.deleted["steps"] = row["steps"]


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
