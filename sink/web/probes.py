"""``/healthz``, ``/readyz`` and ``/metrics``, and the database check behind readiness."""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from sink.db import migrate
from sink.db.hosts import NoUsableHost, host_urls
from sink.db.pool import DB_ERRORS, unavailable
from sink.db.queries import query
from sink.errors import SchemaBehind
from sink.web.keys import HEALTH, METRICS, POOL, ROUTE, SETTINGS, WRITER

READY_BUDGET: Final = 1.5  # seconds /readyz (and a delivery before the schema is known) waits
# The database probe in flight, per app: a second check waits for it rather than start another.
_PROBES: weakref.WeakKeyDictionary[web.Application, asyncio.Task[None]] = (
    weakref.WeakKeyDictionary()
)


async def handle_healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def handle_readyz(request: web.Request) -> web.Response:
    health = request.app[HEALTH]
    if health.draining:
        return web.json_response({"status": "draining"}, status=503)
    if not health.fresh(1.0):
        await check_database(request.app)
    ok = health.schema_ok and health.last_db_ok >= health.last_db_check
    body = {
        "status": "ready" if ok else "not ready",
        "database": "reachable" if health.last_db_ok >= health.last_db_check else "unreachable",
        "schema": "current" if health.schema_ok else "not checked or behind",
    }
    if not ok and health.last_db_error:
        body["error"] = health.last_db_error
    return web.json_response(body, status=200 if ok else 503)


async def handle_metrics(request: web.Request) -> web.Response:
    update_gauges(request.app)
    response = web.Response(body=request.app[METRICS].exposition())
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


def update_gauges(app: web.Application) -> None:
    """The gauges read from the app's state: the pool and the writer's queue."""
    metrics = app[METRICS]
    pool = app.get(POOL)
    if pool is not None:
        metrics.db_pool_size.set(pool.get_size())
        metrics.db_pool_in_use.set(pool.get_size() - pool.get_idle_size())
    metrics.pending_events.set(app[WRITER].pending_events)


async def check_database(app: web.Application) -> bool:
    """Whether the database answers through the pool within READY_BUDGET s, with a current
    schema (``health.schema_behind`` keeps the error when it is behind).

    The check runs as a task of its own, at most one at a time, that this call stops
    waiting for after READY_BUDGET s: a frozen server cannot hang readiness, and a new
    connection that takes longer (the next host of a multi-host URL after one that hangs)
    still lands in the pool for the next check instead of being cancelled every time."""
    health = app[HEALTH]
    health.last_db_check = time.monotonic()
    probe = _PROBES.get(app)
    if probe is None or probe.done():
        probe = _PROBES[app] = asyncio.create_task(_probe(app), name="database probe")
        probe.add_done_callback(_retrieve)
    try:
        await asyncio.wait_for(asyncio.shield(probe), READY_BUDGET)
        health.last_db_ok = time.monotonic()
        health.last_db_error = None
        health.schema_behind = None
        return True
    except SchemaBehind as exc:
        health.last_db_error = str(exc)
        health.schema_behind = exc
        return False
    except TimeoutError:
        health.last_db_error = (
            f"Postgres did not answer within {READY_BUDGET:g} s (a hung or unreachable"
            " server); deliveries are answered 503 so Twilio retries. Check that the database"
            " is up and SINK_DATABASE_URL points at it."
        )
        return False
    except DB_ERRORS as exc:
        hosts = f" {exc}" if isinstance(exc, NoUsableHost) else ""  # each host's reason
        health.last_db_error = f"{unavailable(exc)}{hosts}"
        return False


async def _probe(app: web.Application) -> None:
    """A round trip on a pooled connection, and the schema check until it has passed."""
    health = app[HEALTH]
    settings = app[SETTINGS]
    # a new connection may take SINK_DB_CONNECT_TIMEOUT per host before it is refused
    limit = settings.db_connect_timeout * len(host_urls(app[ROUTE].dsn)) + READY_BUDGET
    async with asyncio.timeout(limit), app[POOL].acquire() as conn:
        await conn.fetchval(query("ping"), timeout=READY_BUDGET)
        if not health.schema_ok:
            await migrate.check_current(conn)
            health.schema_ok = True


def _retrieve(task: asyncio.Task[None]) -> None:
    """A probe nobody waited for to the end: its outcome was reported as a timeout."""
    if not task.cancelled():
        task.exception()


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/healthz", handle_healthz)
    router.add_get("/readyz", handle_readyz)
    router.add_get("/metrics", handle_metrics)
