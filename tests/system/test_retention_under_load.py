"""Retention of a large day never stalls ingestion: the DROP commits first, keys go in batches."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from sink.maintenance import retention
from tests.conftest import Sink
from tests.support.studio import execution_story

pytestmark = pytest.mark.slow  # a large day of data: outside the quick run

DAY_OF_KEYS = 2_000_000


async def fill_an_old_day(conn: asyncpg.Connection[Any], keys: int) -> None:
    """A partition ten days back with events, and ``keys`` dedup keys of that day."""
    day = "(now() AT TIME ZONE 'UTC')::date - 10"
    await conn.execute(f"SELECT sink.create_event_partition({day})")
    at = f"({day})::timestamp AT TIME ZONE 'UTC' + interval '1 hour'"
    await conn.execute(
        f"INSERT INTO sink.event_keys (source, event_id, received_at)"
        f" SELECT '/bulk', 'EZ' || n, {at} FROM generate_series(1, $1) AS n",
        keys,
    )
    await conn.execute(
        f"INSERT INTO sink.events (received_at, source, event_id, type, specversion)"
        f" SELECT {at}, '/bulk', 'EZ' || n, 'bulk', '1.0' FROM generate_series(1, 1000) AS n"
    )


async def test_expiring_a_large_day_never_holds_ingestion_for_a_second(
    start_sink: Callable[..., Any], conn: asyncpg.Connection[Any], database_url: str
) -> None:
    sink: Sink = await start_sink(maintain_interval=0)
    await fill_an_old_day(conn, DAY_OF_KEYS)
    maintainer = await asyncpg.connect(database_url)
    latencies: list[float] = []
    try:
        run = asyncio.create_task(
            retention.maintain(maintainer, retention_days=5, batch_rows=50_000)
        )
        while not run.done():
            started = time.monotonic()
            status, _ = await sink.post(execution_story(1))
            latencies.append(time.monotonic() - started)
            assert status == 200
        report = await run
    finally:
        await maintainer.close()
    assert report.deleted["event_keys"] == DAY_OF_KEYS
    assert report.partitions_dropped and not report.partitions_busy
    assert len(latencies) > 5, "maintenance ended before ingestion could be observed"
    assert max(latencies) < 1.0, f"a delivery waited {max(latencies):.2f} s on maintenance"
    assert await conn.fetchval("SELECT count(*) FROM sink.event_keys WHERE source = '/bulk'") == 0
