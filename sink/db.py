"""Connecting to Postgres, and translating driver errors into the project's own."""

from __future__ import annotations

import asyncio
from typing import Any, Final, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import asyncpg.pool

from sink.errors import DatabaseUnavailable

# SQLSTATE classes a retry can fix: connection exception, insufficient resources,
# operator intervention (shutdown, crash recovery), transaction rollback (deadlock,
# serialization), system error.
_TRANSIENT_CLASSES: Final = frozenset({"08", "53", "57", "40", "58"})
RETRYABLE_IN_PLACE: Final = frozenset({"40001", "40P01"})  # serialization, deadlock


Conn: TypeAlias = "asyncpg.Connection[Any] | asyncpg.pool.PoolConnectionProxy[Any]"
"""A connection, or a pool's proxy for one."""


def is_transient(exc: BaseException) -> bool:
    """True when the failure says nothing about the data: a retry later may succeed."""
    if isinstance(exc, asyncpg.PostgresError):
        state = exc.sqlstate or ""
        return state[:2] in _TRANSIENT_CLASSES
    return isinstance(
        exc,
        OSError
        | TimeoutError
        | asyncio.TimeoutError
        | asyncpg.InterfaceError
        | asyncpg.exceptions.ConnectionDoesNotExistError,
    )


def unavailable(exc: BaseException) -> DatabaseUnavailable:
    state = getattr(exc, "sqlstate", None)
    what = f"{type(exc).__name__}{f' [{state}]' if state else ''}"
    return DatabaseUnavailable(
        f"Postgres is unavailable ({what}); deliveries are answered 503 so Twilio retries."
        " Check that the database is up and SINK_DATABASE_URL points at it."
    )


async def create_pool(dsn: str, *, size: int, connect_timeout: float) -> asyncpg.Pool[Any]:
    """A pool that connects lazily, so the sink starts (and answers 503) while Postgres is down."""
    pool: asyncpg.Pool[Any] = await asyncpg.create_pool(
        dsn,
        min_size=0,
        max_size=size,
        timeout=connect_timeout,
        command_timeout=None,
        max_inactive_connection_lifetime=300,
        server_settings={"application_name": "studio-sink"},
    )
    return pool


def redact_url(url: str) -> str:
    """The URL with its password replaced, for logs and messages."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
