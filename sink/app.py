"""``create_app(settings)``: the sink assembled. Routes, middleware, and the life cycle of
the resources every stage shares (the pool, the group-commit writer, the backfill service,
the maintenance task), each opened and closed in an aiohttp cleanup context."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from sink.accounts.store import sync_accounts
from sink.accounts.watch import AccountsHolder
from sink.backfill.service import BackfillService
from sink.config import Settings
from sink.db.embedded import resolve_dsn
from sink.db.replication import log_replication_warning
from sink.db.route import create_route_pool, route_for
from sink.ingest.store import PostgresStore
from sink.ingest.writer import GroupCommitWriter
from sink.maintenance.quarantine import Keeper
from sink.maintenance.schedule import run_periodically
from sink.metrics import Metrics
from sink.ui import setup_ui
from sink.web import admin, probes
from sink.web.health import Health
from sink.web.keys import (
    ACCOUNTS,
    BACKFILL,
    DSN,
    HEALTH,
    METRICS,
    POOL,
    QUARANTINE,
    ROUTE,
    SETTINGS,
    WRITER,
)
from sink.web.receiver import handle_events
from sink.web.responses import Handler, error_middleware, error_response

log = logging.getLogger(__name__)


async def _database_ctx(app: web.Application) -> AsyncIterator[None]:
    """The pool and the writer; on the way out, drain the writer before the pool closes."""
    settings = app[SETTINGS]
    dsn = app.get(DSN) or await resolve_dsn(settings)
    app[DSN] = dsn
    route = app[ROUTE] = await route_for(settings, dsn)
    pool = await create_route_pool(settings, route, size=settings.db_pool_size)
    app[POOL] = pool
    health = app[HEALTH]
    if not await probes.check_database(app):
        if health.schema_behind is not None:
            await pool.close()
            raise health.schema_behind
        log.warning("starting without the database: %s", health.last_db_error)
    else:
        await log_replication_warning(pool)
    writer = app[WRITER]
    writer.bind(PostgresStore(pool))
    writer.start()
    maintenance = asyncio.create_task(run_periodically(pool, settings), name="maintenance")
    try:
        yield
    finally:
        health.draining = True
        maintenance.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await maintenance
        drained = await writer.drain(settings.shutdown_grace)
        if not drained:
            log.warning("shutdown grace ended with %d events unwritten", writer.pending_events)
        await writer.close()
        await asyncio.wait_for(pool.close(), timeout=5)


async def _sync_accounts(app: web.Application) -> None:
    """Copy the accounts' SIDs and labels to ``sink.accounts`` (for the views and the UI)."""
    pool = app.get(POOL)
    if pool is None or not app[HEALTH].schema_ok:
        return
    try:
        await sync_accounts(pool, app[ACCOUNTS].current)
    except (OSError, asyncpg.PostgresError) as exc:
        log.warning("the accounts could not be copied to sink.accounts: %s", exc)


async def _accounts_ctx(app: web.Application) -> AsyncIterator[None]:
    """The accounts copied to the database, then reloaded whenever the file changes."""
    holder = app[ACCOUNTS]
    pending: set[asyncio.Task[None]] = set()

    def changed(_accounts: object) -> None:
        task = asyncio.get_running_loop().create_task(_sync_accounts(app))
        pending.add(task)
        task.add_done_callback(pending.discard)

    holder.on_change(changed)
    await _sync_accounts(app)
    watch = asyncio.create_task(holder.watch(), name="accounts-watch")
    try:
        yield
    finally:
        for task in (watch, *pending):
            task.cancel()
        for task in (watch, *pending):
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _backfill_ctx(app: web.Application) -> AsyncIterator[None]:
    """Registered after the database's context: starts after it, stops before it."""
    service = app[BACKFILL]
    pool = app.get(POOL)
    if pool is not None:
        await service.start(pool, app[ROUTE].session_dsn)
    try:
        yield
    finally:
        await service.stop()


def _writer(settings: Settings, metrics: Metrics, service: BackfillService) -> GroupCommitWriter:
    def observe_batch(deliveries: int, events: int, seconds: float) -> None:
        metrics.batch_size.observe(events)
        metrics.batch_deliveries.observe(deliveries)
        metrics.commit_seconds.observe(seconds)

    return GroupCommitWriter(
        max_events=settings.batch_max_events,
        max_wait=settings.batch_max_wait_ms / 1000,
        writers=settings.writers,
        max_pending=settings.max_pending_events,
        on_batch=observe_batch,
        on_committed=service.on_committed,
    )


def create_app(settings: Settings, *, dsn: str | None = None) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=settings.max_body_bytes)
    metrics = Metrics()
    app[SETTINGS] = settings
    app[ACCOUNTS] = AccountsHolder(settings)
    app[METRICS] = metrics
    app[HEALTH] = Health()
    if dsn is not None:
        app[DSN] = dsn
    app[BACKFILL] = BackfillService(settings, metrics, app[ACCOUNTS])
    app[WRITER] = _writer(settings, metrics, app[BACKFILL])
    app[QUARANTINE] = Keeper(
        max_bytes=settings.quarantine_max_bytes,
        max_bytes_per_hour=settings.quarantine_max_bytes_per_hour,
    )
    app.cleanup_ctx.append(_database_ctx)
    app.cleanup_ctx.append(_accounts_ctx)
    app.cleanup_ctx.append(_backfill_ctx)
    admin.add_routes(app)
    app.router.add_post("/events", _ready_guard(handle_events))
    app.router.add_post("/events/{account_sid}", _ready_guard(handle_events))
    probes.add_routes(app.router)
    setup_ui(app)
    return app


def _ready_guard(handler: Handler) -> Handler:
    """Until the schema is known current, each delivery checks the database first (503)."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        health = request.app[HEALTH]
        if not health.schema_ok and not await probes.check_database(request.app):
            return error_response(
                503,
                "database_unavailable",
                health.last_db_error or "the database is not ready",
                retry_after=2,
            )
        return await handler(request)

    return guarded
