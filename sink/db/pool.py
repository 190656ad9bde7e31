"""Connecting to Postgres (each host of a multi-host URL in turn, TCP keepalives, a pool
that drops connections to a server that stopped answering), and translating driver errors
into the project's own."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import asyncpg.pool

from sink.db.hosts import HostOrder, no_usable_host
from sink.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

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


# TCP keepalive: after SINK_DB_KEEPALIVE_IDLE s of silence, this many probes this far apart;
# unanswered, the kernel drops the connection (TCP_USER_TIMEOUT bounds unacknowledged data
# the same way). A paused VM or a network partition then ends the connection by itself.
KEEPALIVE_INTERVAL: Final = 2
KEEPALIVE_PROBES: Final = 3


def set_keepalive(conn: asyncpg.Connection[Any], idle: float) -> None:
    """TCP keepalive on the connection's socket (asyncpg has no option for it); 0: off."""
    transport = getattr(conn, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if idle <= 0 or sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    options = {
        "TCP_KEEPIDLE": max(1, round(idle)),
        "TCP_KEEPINTVL": KEEPALIVE_INTERVAL,
        "TCP_KEEPCNT": KEEPALIVE_PROBES,
        "TCP_USER_TIMEOUT": (max(1, round(idle)) + KEEPALIVE_INTERVAL * KEEPALIVE_PROBES) * 1000,
    }
    for name, value in options.items():
        if hasattr(socket, name):  # Linux names; other systems keep their defaults
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


async def connect(
    dsn: str,
    *,
    host_timeout: float,
    keepalive_idle: float = 0.0,
    hosts: HostOrder | None = None,
    **options: Any,
) -> asyncpg.Connection[Any]:
    """``asyncpg.connect`` with ``host_timeout`` for *each* host of a multi-host URL, tried in
    turn (asyncpg's own timeout covers all hosts together: a first host that hangs rather
    than refuses would use it all and the next would never be tried)."""
    order = hosts or HostOrder(dsn)
    failures: list[tuple[str, BaseException]] = []
    for url in order.attempts():
        try:
            conn: asyncpg.Connection[Any] = await asyncpg.connect(
                url, timeout=host_timeout, **options
            )
        except asyncio.CancelledError:
            order.hung(url)  # the caller gave up before this host answered
            raise
        except TimeoutError as exc:
            order.hung(url)
            if len(order) == 1:
                raise
            failures.append((url, exc))
            continue
        except DB_ERRORS as exc:
            if len(order) == 1:
                raise
            failures.append((url, exc))
            continue
        order.worked(url)
        set_keepalive(conn, keepalive_idle)
        return conn
    raise no_usable_host(failures, order.role, host_timeout)


if TYPE_CHECKING:
    _Connection: TypeAlias = asyncpg.Connection[Any]
else:
    _Connection = asyncpg.Connection  # not subscriptable at run time


class PoolConnection(_Connection):
    """asyncpg's connection, which tells its pool when it had to be terminated: asyncpg
    terminates a connection whose timed-out command the server never acknowledged (a
    frozen server), and the pool's idle connections to that server would hang the same way."""

    __slots__ = ("on_terminate",)
    on_terminate: Callable[[], None]

    def terminate(self) -> None:
        callback = getattr(self, "on_terminate", None)
        if callback is not None and not self.is_closed():
            callback()
        super().terminate()


async def create_pool(
    dsn: str,
    *,
    size: int,
    connect_timeout: float,
    command_timeout: float | None,
    statement_cache: int,
    keepalive_idle: float = 0.0,
) -> asyncpg.Pool[Any]:
    """A pool that connects lazily, so the sink starts (and answers 503) while Postgres is
    down. ``command_timeout`` turns a connection that hangs without an answer (a frozen
    primary) into an error the caller can retry; one terminated for it expires the others,
    so none is reused untested. Each host gets ``connect_timeout`` (see ``connect``)."""
    hosts = HostOrder(dsn)
    expiring: set[asyncio.Task[None]] = set()

    def expire_all() -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # terminated outside the event loop: nothing to protect
            return
        if pool.is_closing():
            return
        log.warning(
            "a database connection was terminated (a command or its cancellation went"
            " unanswered): the pool replaces its other connections before reusing them"
        )
        task = loop.create_task(pool.expire_connections())
        expiring.add(task)
        task.add_done_callback(expiring.discard)

    async def connect_one(*args: Any, **options: Any) -> asyncpg.Connection[Any]:
        conn = await connect(
            *args,
            host_timeout=connect_timeout,
            keepalive_idle=keepalive_idle,
            hosts=hosts,
            **options,
        )
        if isinstance(conn, PoolConnection):
            conn.on_terminate = expire_all
        return conn

    pool: asyncpg.Pool[Any] = await asyncpg.create_pool(
        dsn,
        min_size=0,
        max_size=size,
        connect=cast(Any, connect_one),
        connection_class=PoolConnection,
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
