"""The sink behind a real PgBouncer in pool_mode=transaction, the most common Kubernetes
topology: two sink processes share a small server pool, and no acknowledged event is lost,
none is filed as refused, and no answer but 2xx/429/503 is given."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from sink.config import Settings
from sink.db.route import find_route
from tests.support import pg
from tests.support.pgbouncer import PgBouncer, find_pgbouncer
from tests.support.process import SinkProcess
from tests.system import Load, assert_nothing_lost, report

pytestmark = [
    pytest.mark.slow,  # real processes: outside the quick run
    pytest.mark.skipif(find_pgbouncer() is None, reason="needs pgbouncer (apt-get install)"),
]

DELIVERIES = 400


@pytest.fixture
def small_bouncer(pg_server: str) -> Iterator[PgBouncer]:
    """Fewer server connections than the sinks have clients: they must share them."""
    bouncer = PgBouncer.start(
        pg_server, Path(tempfile.mkdtemp(prefix="studio-sink-pgb-")), pool_size=3
    )
    yield bouncer
    bouncer.stop()


def through(bouncer: PgBouncer, direct_url: str) -> str:
    return bouncer.url(pg.database_of(direct_url))


async def run_two_sinks(
    url: str, tmp_path: Path, env: dict[str, str], conn: asyncpg.Connection[Any]
) -> Load:
    sinks = [
        SinkProcess(url, tmp_path / f"sink-{n}.log", env={"SINK_WRITERS": "3", **env})
        for n in range(2)
    ]
    for sink in sinks:
        sink.start()
    try:
        await asyncio.gather(*(sink.wait_ready() for sink in sinks))
        turn = iter(range(10**9))
        load = Load(lambda: sinks[next(turn) % 2].base_url, workers=12, steps=3)
        async with load.running():
            await load.until_acked(DELIVERIES)
    finally:
        for sink in sinks:
            sink.stop()
    return load


@pytest.mark.timeout(180)
async def test_two_sinks_behind_pgbouncer_lose_nothing_and_refuse_nothing(
    small_bouncer: PgBouncer,
    direct_database_url: str,
    conn: asyncpg.Connection[Any],
    tmp_path: Path,
) -> None:
    url = through(small_bouncer, direct_database_url)
    load = await run_two_sinks(url, tmp_path, {}, conn)
    stored = await assert_nothing_lost(conn, load.ledger)
    report("behind pgbouncer (transaction pooling)", load.ledger, stored)
    assert not load.problems
    assert set(load.ledger.statuses) == {"200"}, load.ledger.statuses  # not even a 503
    refused = await conn.fetch("SELECT reason, detail FROM studio.rejected_events LIMIT 5")
    assert refused == [], refused
    assert "transaction pooler" in (tmp_path / "sink-0.log").read_text()


async def test_the_route_says_pooled_through_pgbouncer_and_direct_otherwise(
    small_bouncer: PgBouncer, direct_database_url: str
) -> None:
    url = through(small_bouncer, direct_database_url)
    pooled = await find_route(Settings(database_url=url), url)
    assert pooled.pooled and pooled.statement_cache == 0 and pooled.session_dsn is None
    direct = await find_route(Settings(database_url=direct_database_url), direct_database_url)
    assert not direct.pooled and direct.statement_cache > 0
    assert direct.session_dsn == direct_database_url
    given = await find_route(
        Settings(database_url=url, database_direct_url=direct_database_url), url
    )
    assert given.pooled and given.session_dsn == direct_database_url


def migrate(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sink", "migrate"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_migrate_needs_the_direct_url_behind_a_pooler(
    small_bouncer: PgBouncer, direct_database_url: str
) -> None:
    url = through(small_bouncer, direct_database_url)
    refused = migrate({"SINK_DATABASE_URL": url})
    assert refused.returncode == 2
    assert "SINK_DATABASE_DIRECT_URL" in refused.stderr and "pooler" in refused.stderr
    done = migrate({"SINK_DATABASE_URL": url, "SINK_DATABASE_DIRECT_URL": direct_database_url})
    assert done.returncode == 0, done.stderr
    assert "schema is current" in done.stdout
