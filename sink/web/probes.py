"""``/healthz``, ``/readyz`` and ``/metrics``, and the database check behind readiness."""

from __future__ import annotations

import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sink.db import migrate
from sink.db.pool import DB_ERRORS, unavailable
from sink.db.queries import query
from sink.errors import SchemaBehind
from sink.web.keys import HEALTH, METRICS, POOL, WRITER


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
    metrics = request.app[METRICS]
    pool = request.app.get(POOL)
    if pool is not None:
        metrics.db_pool_size.set(pool.get_size())
        metrics.db_pool_in_use.set(pool.get_size() - pool.get_idle_size())
    metrics.pending_events.set(request.app[WRITER].pending_events)
    body = generate_latest(metrics.registry)
    response = web.Response(body=body)
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


async def check_database(app: web.Application) -> bool:
    """Whether the database answers with a current schema (``health.schema_behind`` keeps
    the error when it is behind)."""
    health = app[HEALTH]
    health.last_db_check = time.monotonic()
    try:
        async with app[POOL].acquire(timeout=1.0) as conn:
            await conn.fetchval(query("ping"), timeout=1.0)
            if not health.schema_ok:
                await migrate.check_current(conn)
                health.schema_ok = True
        health.last_db_ok = time.monotonic()
        health.last_db_error = None
        health.schema_behind = None
        return True
    except SchemaBehind as exc:
        health.last_db_error = str(exc)
        health.schema_behind = exc
        return False
    except DB_ERRORS as exc:
        health.last_db_error = str(unavailable(exc))
        return False


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/healthz", handle_healthz)
    router.add_get("/readyz", handle_readyz)
    router.add_get("/metrics", handle_metrics)
