"""Migrations: forward-only, checksummed, safe to run concurrently, enforced at start."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from sink.db import migrate
from sink.errors import MigrationError, SchemaBehind
from tests.support import pg


@pytest.fixture
async def empty_db(pg_server: str) -> Any:
    name = f"sink_empty_{id(object())}"
    conn = await asyncpg.connect(pg_server)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    yield pg.with_database(pg_server, name)
    await pg.drop(pg_server, name)


async def test_concurrent_migrations_apply_each_file_once(empty_db: str) -> None:
    conns = [await asyncpg.connect(empty_db) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate.migrate(c) for c in conns))
        applied = sorted(m.version for result in results for m in result)
        assert applied == [m.version for m in migrate.load_migrations()]
        rows = await conns[0].fetch("SELECT version, checksum FROM sink.schema_migrations")
        assert {r["version"]: r["checksum"] for r in rows} == {
            m.version: m.checksum for m in migrate.load_migrations()
        }
        assert await migrate.migrate(conns[0]) == []
    finally:
        for c in conns:
            await c.close()


async def test_edited_migration_is_refused(conn: asyncpg.Connection[Any]) -> None:
    await conn.execute("UPDATE sink.schema_migrations SET checksum = 'edited' WHERE version = 1")
    with pytest.raises(MigrationError, match="was edited after it was applied"):
        await migrate.migrate(conn)


async def test_schema_behind_is_reported(empty_db: str) -> None:
    conn = await asyncpg.connect(empty_db)
    try:
        with pytest.raises(SchemaBehind, match="studio-sink migrate"):
            await migrate.check_current(conn)
    finally:
        await conn.close()


async def test_sink_refuses_to_start_on_a_schema_that_is_behind(empty_db: str) -> None:
    from aiohttp import web

    from sink.app import create_app
    from sink.config import Settings

    settings = Settings(database_url=empty_db, twilio_auth_token="t", backfill_workers=0)
    runner = web.AppRunner(create_app(settings))
    with pytest.raises(SchemaBehind, match="studio-sink migrate"):
        await runner.setup()
    await runner.cleanup()


async def test_template_matches_migrations(conn: asyncpg.Connection[Any]) -> None:
    await migrate.check_current(conn)
    tables = {
        r["table_name"]
        for r in await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'sink'"
        )
    }
    assert {"events", "event_keys", "executions", "steps", "rejected_events"} <= tables
