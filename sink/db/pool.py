"""Connecting to Postgres, and translating driver errors into the project's own."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeAlias, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import asyncpg.pool

from sink.errors import DatabaseUnavailable

# SQLSTATE classes that blame the data: data exception (a NUL, a bad date), integrity
# constraint violation, program limit exceeded (a value too large). Everything else
# (connection trouble, a pooler's prepared-statement errors 26000/42P05, a lock timeout
# 55P03, an internal error XX000, a schema the code does not match) says nothing about the
# data: the delivery is answered 503 and Twilio retries it, rather than keeping a valid
# event as refused.
_BAD_DATA_CLASSES: Final = frozenset({"22", "23", "54"})
RETRYABLE_IN_PLACE: Final = frozenset({"40001", "40P01"})  # serialization, deadlock
IN_PLACE_ATTEMPTS: Final = 3
# What a transaction pooler answers to asyncpg's named prepared statements.
POOLER_STATES: Final = frozenset({"26000", "42P05"})

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
        return not is_bad_data(exc)
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
    return (exc.sqlstate or "")[:2] in _BAD_DATA_CLASSES


def unavailable(exc: BaseException) -> DatabaseUnavailable:
    state = getattr(exc, "sqlstate", None)
    what = f"{type(exc).__name__}{f' [{state}]' if state else ''}"
    fix = (
        "Prepared statements do not survive a transaction pooler (PgBouncer): set"
        " SINK_DB_STATEMENT_CACHE=0, or leave it at auto."
        if state in POOLER_STATES
        else "Check that the database is up and SINK_DATABASE_URL points at it."
    )
    return DatabaseUnavailable(
        f"Postgres is unavailable ({what}); deliveries are answered 503 so Twilio retries. {fix}"
    )


async def create_pool(
    dsn: str,
    *,
    size: int,
    connect_timeout: float,
    command_timeout: float | None,
    statement_cache: int,
) -> asyncpg.Pool[Any]:
    """A pool that connects lazily, so the sink starts (and answers 503) while Postgres is
    down. ``command_timeout`` turns a connection that hangs without an answer (a frozen
    primary) into an error the caller can retry."""
    pool: asyncpg.Pool[Any] = await asyncpg.create_pool(
        dsn,
        min_size=0,
        max_size=size,
        timeout=connect_timeout,
        command_timeout=command_timeout,
        max_inactive_connection_lifetime=300,
        server_settings={"application_name": "studio-sink"},
        statement_cache_size=statement_cache,
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
