"""Backfill inside ``studio-sink serve``: workers, LISTEN/NOTIFY wake-ups, auto mode.

``BackfillService`` lives for the app's lifetime: ``start(pool, listen_dsn)`` after the pool is
open, ``stop()`` before it closes (``sink.app`` does both in an aiohttp cleanup
context). Workers start when ``SINK_BACKFILL_WORKERS`` > 0; each item is fetched with its
account's credentials (``sink.backfill.accounts``), and the items of an account without
credentials that work wait (``waiting_for_credentials``). They are queued again at start,
after each accepted reload of the accounts, and every ``RECHECK_SECONDS`` for accounts that
have credentials (so an account whose credentials Twilio refused is tried again now and
then, and a replica that reloaded late cannot leave them parked for good).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from sink.accounts.model import Accounts
from sink.accounts.watch import AccountsHolder
from sink.backfill import queue as q
from sink.backfill.accounts import REFUSED_SECONDS, AccountClients
from sink.backfill.runner import POLL_SECONDS, Runner, make_runner, resume_waiting
from sink.config import Settings
from sink.constants import BACKFILL_CHANNEL
from sink.db.pool import DB_ERRORS
from sink.ingest import redact
from sink.ingest.cloudevents import Event
from sink.ingest.studio_facts import ExecutionFacts
from sink.metrics import Metrics
from sink.twilio import EXECUTION_ENDED

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 5.0
AUTO_BATCH_SECONDS = 0.5
RECHECK_SECONDS = REFUSED_SECONDS  # waiting items of accounts with credentials, queued again


class AutoBackfill:
    """SINK_AUTO_BACKFILL: each stored execution.ended event queues its execution."""

    def __init__(self) -> None:
        self._sids: list[str] = []
        self._ready = asyncio.Event()

    def collect(self, events: list[Event]) -> None:
        """The writer's on_committed hook: cheap, synchronous, never touches the database."""
        for event in events:
            if event.type == EXECUTION_ENDED and isinstance(event.studio, ExecutionFacts):
                self._sids.append(event.studio.execution_sid)
                self._ready.set()

    async def run(self, pool: asyncpg.Pool[Any]) -> None:
        try:
            while True:
                await self._ready.wait()
                await asyncio.sleep(AUTO_BATCH_SECONDS)  # gather a batch per request
                await self.flush(pool)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.flush(pool))

    async def flush(self, pool: asyncpg.Pool[Any]) -> None:
        self._ready.clear()
        sids, self._sids = self._sids, []
        if not sids:
            return
        try:
            async with pool.acquire() as conn:
                rid = await q.enqueue(conn, "executions", "auto", execution_sids=sids)
            log.info("backfill request %d queued for %d ended executions", rid, len(sids))
        except DB_ERRORS as exc:
            log.warning(
                "%d ended executions not queued for backfill (`studio-sink backfill --missing`"
                " catches up): %s",
                len(sids),
                exc,
            )


class BackfillService:
    def __init__(
        self, settings: Settings, metrics: Metrics, accounts: AccountsHolder | None = None
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._holder = accounts if accounts is not None else AccountsHolder(settings)
        self._auto = AutoBackfill() if settings.auto_backfill else None
        self._clients: AccountClients | None = None
        self._runner: Runner | None = None
        self._pool: asyncpg.Pool[Any] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._resuming: set[asyncio.Task[None]] = set()
        self.unavailable_reason: str | None = None
        self._holder.on_change(self._reloaded)

    @property
    def on_committed(self) -> Callable[[list[Event]], None] | None:
        """The writer hook for SINK_AUTO_BACKFILL; None (no cost at all) when it is off."""
        return self._auto.collect if self._auto is not None else None

    @property
    def running(self) -> bool:
        return self._runner is not None

    @property
    def clients(self) -> AccountClients | None:
        """The Studio clients per account while workers run (None otherwise)."""
        return self._clients

    async def start(self, pool: asyncpg.Pool[Any], listen_dsn: str | None) -> None:
        """Start the workers; ``listen_dsn`` is a session for LISTEN (None: poll only, as
        behind a transaction pooler without SINK_DATABASE_DIRECT_URL)."""
        if self._auto is not None:
            self._spawn(self._auto.run(pool), "auto-backfill")
        workers = self._settings.backfill_workers
        if workers == 0:
            self.unavailable_reason = "SINK_BACKFILL_WORKERS=0 in this process"
            return
        self._clients = AccountClients(self._settings, self._holder, self._metrics)
        runner = make_runner(
            pool,
            self._clients,
            max_attempts=self._settings.backfill_max_attempts,
            metrics=self._metrics,
            privacy=redact.policy(self._settings),
        )
        self._runner, self._pool = runner, pool
        if listen_dsn is None:
            self._spawn(self._poll_only(pool, runner), "backfill-poll")
        else:
            self._spawn(self._listen(listen_dsn, pool, runner), "backfill-listen")
        self._spawn(runner.heartbeat(), "backfill-heartbeat")
        self._spawn(self._recheck(), "backfill-recheck")
        for n in range(workers):
            self._spawn(runner.work(), f"backfill-worker-{n}")
        log.info("%d backfill workers started", workers)

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        if self._runner is not None:
            self._runner.stop()
            workers = [t for t in self._tasks if t.get_name().startswith("backfill-worker")]
            if workers:
                await asyncio.wait(workers, timeout=grace)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:  # stopping goes on whatever one task died of
                log.exception("backfill task %s failed", task.get_name())
        for resuming in list(self._resuming):
            resuming.cancel()
            with contextlib.suppress(asyncio.CancelledError, *DB_ERRORS):
                await resuming
        self._tasks.clear()
        self._runner = self._pool = None
        if self._clients is not None:
            await self._clients.close()
            self._clients = None

    # -- items waiting for credentials ---------------------------------------------------

    async def resume(self) -> int:
        """Queue again the items waiting for credentials that are configured now, and wake
        the workers; how many (0 while no workers run here)."""
        if self._runner is None or self._pool is None or self._clients is None:
            return 0
        resumed = await resume_waiting(self._pool, self._clients)
        if resumed:
            log.info("%d backfill items waiting for credentials are queued again", resumed)
            self._runner.wake.set()
        return resumed

    async def _recheck(self) -> None:
        """At start, then every RECHECK_SECONDS."""
        while True:
            try:
                await self.resume()
            except DB_ERRORS as exc:
                log.debug("waiting backfill items not rechecked (%s)", type(exc).__name__)
            await asyncio.sleep(RECHECK_SECONDS)

    def _reloaded(self, _accounts: Accounts) -> None:
        """The accounts were reloaded: the waiting items may have credentials now."""
        if self._runner is None:
            return

        async def resume() -> None:
            try:
                await self.resume()
            except DB_ERRORS as exc:  # the periodic recheck catches up
                log.warning("waiting backfill items not queued again yet: %s", exc)

        task = asyncio.get_running_loop().create_task(resume(), name="backfill-resume")
        self._resuming.add(task)
        task.add_done_callback(self._resuming.discard)

    async def _listen(self, dsn: str, pool: asyncpg.Pool[Any], runner: Runner) -> None:
        """LISTEN on a dedicated connection; wake the workers every POLL_SECONDS anyway."""

        def notified(*_: object) -> None:
            runner.wake.set()

        while True:
            conn: asyncpg.Connection[Any] | None = None
            try:
                conn = await asyncpg.connect(dsn, timeout=self._settings.db_connect_timeout)
                await conn.add_listener(BACKFILL_CHANNEL, notified)
                while not conn.is_closed():
                    await self._poll(pool, runner)
            except DB_ERRORS as exc:
                log.debug("backfill LISTEN connection lost (%s); polling", type(exc).__name__)
                await self._poll(pool, runner)
            finally:
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(*DB_ERRORS):
                        await asyncio.shield(conn.close(timeout=2))

    async def _poll_only(self, pool: asyncpg.Pool[Any], runner: Runner) -> None:
        """Wake the workers every POLL_SECONDS: LISTEN needs a session of its own."""
        while True:
            await self._poll(pool, runner)

    async def _poll(self, pool: asyncpg.Pool[Any], runner: Runner) -> None:
        await asyncio.sleep(POLL_SECONDS)
        runner.wake.set()
        with contextlib.suppress(*DB_ERRORS):
            async with pool.acquire(timeout=1.0) as conn:
                self._metrics.backfill_queue_depth.set(await q.queue_depth(conn))
                self._metrics.backfill_items_waiting.set(await q.items_waiting(conn))
