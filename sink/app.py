"""create_app(settings): routes, middleware and the resources' life cycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sink import admin, db, embedded, lifecycle, migrate
from sink.backfill_service import BACKFILL, BackfillService, service_ctx
from sink.config import Settings
from sink.errors import SchemaBehind
from sink.health import Health
from sink.keys import DSN, HEALTH, METRICS, POOL, REQUEST_ID, SETTINGS, WRITER
from sink.logs import request_id_var
from sink.metrics import Metrics
from sink.receiver import error_response, handle_events
from sink.ui import setup_ui
from sink.writer import GroupCommitWriter

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request ids, and the one place unexpected errors become answers (5xx: retryable)."""
    rid = request.headers.get("X-Request-Id", "")[:64] or uuid.uuid4().hex[:16]
    request[REQUEST_ID] = rid
    token = request_id_var.set(rid)
    try:
        response = await handler(request)
    except web.HTTPException:
        raise
    except Exception:  # the error middleware: log it, answer 500 (Twilio retries)
        log.exception("unexpected error handling %s %s", request.method, request.path)
        response = error_response(
            500,
            "internal_error",
            "unexpected error; it is logged with this request id",
            request_id=rid,
        )
    finally:
        request_id_var.reset(token)
    response.headers["X-Request-Id"] = rid
    return response


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
    health = app[HEALTH]
    health.last_db_check = time.monotonic()
    try:
        async with app[POOL].acquire(timeout=1.0) as conn:
            await conn.fetchval("SELECT 1", timeout=1.0)
            if not health.schema_ok:
                await migrate.check_current(conn)
                health.schema_ok = True
        health.last_db_ok = time.monotonic()
        health.last_db_error = None
        return True
    except SchemaBehind as exc:
        health.last_db_error = str(exc)
        return False
    except (asyncpg.PostgresError, OSError, TimeoutError, asyncpg.InterfaceError) as exc:
        health.last_db_error = str(db.unavailable(exc))
        return False


async def resolve_dsn(settings: Settings) -> str:
    """The database URL in use: SINK_DATABASE_URL, or the embedded server's (migrated)."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    dsn = await embedded.prepare(settings.data_dir)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate.migrate(conn)
    finally:
        await conn.close()
    return dsn


async def _maintenance_loop(app: web.Application) -> None:
    """`studio-sink maintain` every SINK_MAINTAIN_INTERVAL s (0: only partitions, once)."""
    settings = app[SETTINGS]
    interval = settings.maintain_interval
    while True:
        try:
            async with app[POOL].acquire(timeout=2.0) as conn:
                report = await lifecycle.maintain(
                    conn,
                    retention_days=settings.retention_days if interval else None,
                    typed_retention_days=settings.typed_retention_days if interval else None,
                )
            if report.partitions_dropped or any(report.deleted.values()):
                log.info("maintenance: %s", "; ".join(report.lines()))
        except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
            log.warning("maintenance failed, retried in %.0f s: %s", interval or 60, exc)
            await asyncio.sleep(interval or 60)
            continue
        if not interval:
            return
        await asyncio.sleep(interval)


async def _database_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    dsn = app.get(DSN) or await resolve_dsn(settings)
    app[DSN] = dsn
    pool = await db.create_pool(
        dsn, size=settings.db_pool_size, connect_timeout=settings.db_connect_timeout
    )
    app[POOL] = pool
    if not await check_database(app):
        health = app[HEALTH]
        if health.last_db_error and "schema is behind" in health.last_db_error:
            await pool.close()
            raise SchemaBehind(health.last_db_error)
        log.warning("starting without the database: %s", health.last_db_error)
    writer = app[WRITER]
    writer.bind(pool)
    writer.start()
    maintenance = asyncio.create_task(_maintenance_loop(app), name="maintenance")
    try:
        yield
    finally:
        app[HEALTH].draining = True
        maintenance.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await maintenance
        drained = await writer.drain(settings.shutdown_grace)
        if not drained:
            log.warning("shutdown grace ended with %d events unwritten", writer.pending_events)
        await writer.close()
        await asyncio.wait_for(pool.close(), timeout=5)


def create_app(settings: Settings, *, dsn: str | None = None) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=settings.max_body_bytes)
    metrics = Metrics()
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[HEALTH] = Health()
    if dsn is not None:
        app[DSN] = dsn

    def observe_batch(deliveries: int, events: int, seconds: float) -> None:
        metrics.batch_size.observe(events)
        metrics.batch_deliveries.observe(deliveries)
        metrics.commit_seconds.observe(seconds)

    app[BACKFILL] = BackfillService(settings, metrics)
    app[WRITER] = GroupCommitWriter(
        max_events=settings.batch_max_events,
        max_wait=settings.batch_max_wait_ms / 1000,
        writers=settings.writers,
        max_pending=settings.max_pending_events,
        on_batch=observe_batch,
        on_committed=app[BACKFILL].on_committed,
    )
    app.cleanup_ctx.append(_database_ctx)
    app.cleanup_ctx.append(service_ctx)  # after the database: stops before the pool closes
    admin.add_routes(app)
    app.router.add_post("/events", _ready_guard(handle_events))
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/readyz", handle_readyz)
    app.router.add_get("/metrics", handle_metrics)
    setup_ui(app)
    return app


def _ready_guard(handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        health = request.app[HEALTH]
        if not health.schema_ok and not await check_database(request.app):
            return error_response(
                503,
                "database_unavailable",
                health.last_db_error or "the database is not ready",
                retry_after=2,
            )
        return await handler(request)

    return guarded
