"""How the sink reaches Postgres: directly, or through a transaction pooler (PgBouncer).

Behind PgBouncer in ``pool_mode=transaction`` consecutive transactions of one client
connection may run on different server connections. Three things then break: named
prepared statements (asyncpg's statement cache: errors 26000 and 42P05, and, across
replicas, even another statement's results), ``LISTEN`` (notifications reach whichever
client holds the server connection), and session advisory locks. So the sink finds out
which way it is connected, and:

- turns asyncpg's statement cache off behind a pooler (``SINK_DB_STATEMENT_CACHE``
  overrides: ``auto``, or a size, ``0`` for off);
- uses ``SINK_DATABASE_DIRECT_URL`` for ``LISTEN`` and session locks, and without it
  falls back to polling (backfill) or refuses (``migrate``).

A transaction pooler is recognised two ways: the operator gave a different direct URL
(so the main one is pooled), or two client connections turn out to share one server
backend (``pg_backend_pid()``), which a direct connection never does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final

import asyncpg

from sink.config import Settings
from sink.db.pool import DB_ERRORS, connect, create_pool
from sink.db.queries import query

log = logging.getLogger(__name__)

ASYNCPG_STATEMENT_CACHE: Final = 100  # asyncpg's default
PROBES: Final = 3


@dataclass(frozen=True, slots=True)
class Route:
    dsn: str  # every pooled query: ingest, backfill, the UI
    direct_dsn: str | None  # a session of its own (LISTEN, session advisory locks), if any
    pooled: bool  # dsn goes through a transaction pooler
    statement_cache: int  # asyncpg's statement_cache_size for dsn

    def connect_options(self) -> dict[str, Any]:
        return {"statement_cache_size": self.statement_cache}

    @property
    def session_dsn(self) -> str | None:
        """A URL with session semantics: the direct URL, or dsn when it is not pooled."""
        return self.direct_dsn or (None if self.pooled else self.dsn)


async def shares_backends(dsn: str, *, connect_timeout: float) -> bool:
    """Whether two client connections of ``dsn`` land on one server backend."""
    first = await connect(dsn, host_timeout=connect_timeout, statement_cache_size=0)
    try:
        second = await connect(dsn, host_timeout=connect_timeout, statement_cache_size=0)
        try:
            for _ in range(PROBES):
                a = await first.fetchval(query("backend_pid"))
                b = await second.fetchval(query("backend_pid"))
                if a == b:
                    return True
            return False
        finally:
            await second.close()
    finally:
        await first.close()


async def find_route(settings: Settings, dsn: str) -> Route:
    """The route to ``dsn``; probes it when the settings do not say (Postgres must answer)."""
    direct = settings.database_direct_url
    direct_dsn = direct.get_secret_value() if direct is not None else None
    if direct_dsn == dsn:
        direct_dsn = None
    if direct_dsn is not None:
        pooled = True
    elif settings.db_statement_cache != "auto" and settings.db_statement_cache > 0:
        pooled = False  # the operator says prepared statements work: no pooler in between
    else:
        pooled = await shares_backends(dsn, connect_timeout=settings.db_connect_timeout)
    cache = settings.db_statement_cache
    if cache == "auto":
        cache = 0 if pooled else ASYNCPG_STATEMENT_CACHE
    if pooled:
        log.info(
            "the database URL goes through a transaction pooler: statement cache %s,"
            " LISTEN and session locks %s",
            "off" if cache == 0 else cache,
            "on SINK_DATABASE_DIRECT_URL" if direct_dsn else "not used (polling instead)",
        )
    return Route(dsn=dsn, direct_dsn=direct_dsn, pooled=pooled, statement_cache=cache)


async def route_for(settings: Settings, dsn: str) -> Route:
    """The route the sink uses: direct for the embedded server; found by ``find_route``
    otherwise, or, while Postgres does not answer, the route that is safe on both (no
    statement cache, no LISTEN)."""
    if settings.embedded:
        return direct_route(dsn)
    try:
        return await find_route(settings, dsn)
    except DB_ERRORS as exc:
        log.warning(
            "cannot tell yet whether the database URL goes through a pooler (%s): statement"
            " cache off and backfill polling until the next start",
            type(exc).__name__,
        )
        direct = settings.database_direct_url
        return Route(
            dsn=dsn,
            direct_dsn=direct.get_secret_value() if direct is not None else None,
            pooled=True,
            statement_cache=0,
        )


async def create_route_pool(settings: Settings, route: Route, *, size: int) -> asyncpg.Pool[Any]:
    return await create_pool(
        route.dsn,
        size=size,
        connect_timeout=settings.db_connect_timeout,
        command_timeout=settings.db_command_timeout,
        statement_cache=route.statement_cache,
        keepalive_idle=settings.db_keepalive_idle,
    )


def direct_route(dsn: str) -> Route:
    """A route known to be direct (the embedded server, a test's own server)."""
    return Route(dsn=dsn, direct_dsn=None, pooled=False, statement_cache=ASYNCPG_STATEMENT_CACHE)
