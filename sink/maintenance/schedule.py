"""The sink's own maintenance runs: ``studio-sink maintain`` every SINK_MAINTAIN_INTERVAL s."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg

from sink.config import Settings
from sink.db.pool import DB_ERRORS
from sink.maintenance import privacy, retention

log = logging.getLogger(__name__)


async def run_periodically(pool: asyncpg.Pool[Any], settings: Settings) -> None:
    """Maintain every ``maintain_interval`` s; with 0, create the partitions once and stop
    (retention is then left to ``studio-sink maintain``)."""
    interval = settings.maintain_interval
    while True:
        try:
            async with pool.acquire(timeout=2.0) as conn:
                report = await retention.maintain(
                    conn,
                    retention_days=settings.retention_days if interval else None,
                    typed_retention_days=settings.typed_retention_days if interval else None,
                )
                if interval:  # contexts and rejected raw bytes past their retention
                    await privacy.expire_for(conn, settings)
            if report.partitions_dropped or any(report.deleted.values()):
                log.info("maintenance: %s", "; ".join(report.lines()))
        except DB_ERRORS as exc:
            if _cancelled():  # shutting down: asyncpg may raise this in place of the cancel
                raise
            log.warning("maintenance failed, retried in %.0f s: %s", interval or 60, exc)
            await asyncio.sleep(interval or 60)
            continue
        if not interval:
            return
        await asyncio.sleep(interval)


def _cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
