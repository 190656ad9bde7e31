"""The studio-sink command, as a newcomer uses it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.support.process import SinkProcess
from tests.support.twilio import TOKEN, signed_request

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "event-streams-delivery.json"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SINK_")}
    return subprocess.run(
        [sys.executable, "-m", "sink", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_serve_refuses_without_a_token(tmp_path: Path) -> None:
    result = run("serve", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "SINK_TWILIO_AUTH_TOKEN is not set" in result.stderr
    assert "SINK_VERIFY_SIGNATURE=false" in result.stderr


def test_invalid_setting_is_named(tmp_path: Path) -> None:
    result = run("serve", env={"SINK_PORT": "eighty"})
    assert result.returncode == 2
    assert "SINK_PORT" in result.stderr


def test_db_url_prints_the_configured_url() -> None:
    url = "postgresql://u:secret@db.example:5432/sink"
    result = run("db-url", env={"SINK_DATABASE_URL": url})
    assert result.returncode == 0
    assert result.stdout.strip() == url


def test_migrate_reports_what_it_applied(pg_server: str) -> None:
    import asyncio

    from tests.support import pg

    name = f"sink_cli_{os.getpid()}"

    async def create() -> None:
        conn = await asyncpg.connect(pg_server)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()

    asyncio.run(create())
    try:
        env = {"SINK_DATABASE_URL": pg.with_database(pg_server, name)}
        first = run("migrate", env=env)
        assert first.returncode == 0, first.stderr
        assert "applied 0001_init.sql" in first.stdout
        again = run("migrate", env=env)
        assert "nothing to apply" in again.stdout
    finally:
        asyncio.run(pg.drop(pg_server, name))


@pytest.mark.slow
async def test_embedded_quickstart_keeps_data_across_restarts(tmp_path: Path) -> None:
    """The README's path: serve with no database URL, send the example, query with psql."""
    data_dir = tmp_path / "data"
    env = {"SINK_DATABASE_URL": "", "SINK_DATA_DIR": str(data_dir)}
    sink = SinkProcess("", tmp_path / "sink.log", env=env)
    body = EXAMPLE.read_bytes()
    try:
        sink.start()
        await sink.wait_ready(timeout=60)
        url, headers = signed_request(f"{sink.base_url}/events", body)
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=body, headers=headers) as response,
        ):
            assert response.status == 200
        sink.send(signal.SIGTERM)
        assert sink.wait(30) == 0
        # restart on the same data directory: the data is still there
        sink.start()
        await sink.wait_ready(timeout=60)
        sent = run(
            "send-example",
            "--url",
            f"{sink.base_url}/events",
            env={**env, "SINK_TWILIO_AUTH_TOKEN": TOKEN},
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert '"stored": 5' in sent.stdout
        db_url = run("db-url", env=env)
        assert db_url.returncode == 0, db_url.stderr
        conn: Any = await asyncpg.connect(db_url.stdout.strip())
        try:
            assert await conn.fetchval("SELECT count(*) FROM studio.events") == 9
            statuses = await conn.fetch("SELECT status FROM studio.executions")
            assert [r["status"] for r in statuses] == ["ended", "ended"]
            assert await conn.fetchval("SELECT count(*) FROM studio.steps") == 3
        finally:
            await conn.close()
    finally:
        sink.stop()
        run("db-stop", env=env)


@pytest.mark.parametrize("command", ["serve", "migrate", "db-url", "db-stop", "send-example"])
def test_help(command: str) -> None:
    result = run(command, "--help")
    assert result.returncode == 0
    assert "usage: studio-sink" in result.stdout
