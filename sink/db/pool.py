"""Connecting to Postgres, and translating driver errors into the project's own."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeAlias, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import asyncpg.pool

from sink.errors import DatabaseUnavailable

# SQLSTATE classes a retry can fix: connection exception, insufficient resources,
# operator intervention (shutdown, crash recovery), transaction rollback (deadlock,
# serialization), system error.
_TRANSIENT_CLASSES: Final = frozenset({"08", "53", "57", "40", "58"})
RETRYABLE_IN_PLACE: Final = frozenset({"40001", "40P01"})  # serialization, deadlock
IN_PLACE_ATTEMPTS: Final = 3

# The connection failed rather than the statement: nothing is known about the data.
CONNECTION_ERRORS: Final = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a connection killed mid-query, e.g. by pg_terminate_backend
)
# Anything a database call can raise that is not a bug in the caller.
DB_ERRORS: Final = (asyncpg.PostgresError, *CONNECTION_ERRORS)

T = TypeVar("T")


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


def is_bad_data(exc: asyncpg.PostgresError) -> bool:
    """True when Postgres refused the statement for the data it was given."""
    return not is_transient(exc)


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


async def retry_in_place(attempt: Callable[[], Awaitable[T]]) -> T:
    """Run ``attempt`` (one transaction) again after a deadlock or serialization failure,
    up to IN_PLACE_ATTEMPTS times in all, with a short pause; other errors propagate."""
    for n in range(1, IN_PLACE_ATTEMPTS + 1):
        try:
            return await attempt()
        except asyncpg.PostgresError as exc:
            if exc.sqlstate not in RETRYABLE_IN_PLACE or n == IN_PLACE_ATTEMPTS:
                raise
        await asyncio.sleep(0.005 * n)
    raise AssertionError("unreachable")
