"""Backfill workers: claim queue items, run them, record the outcome.

One ``Runner`` per process holds the Studio client (so one rate limiter and one
concurrency cap for every worker) and runs worker loops. ``studio-sink serve`` runs them
in ``BackfillService`` (woken by LISTEN/NOTIFY, polling every ``POLL_SECONDS`` as a
fallback); ``studio-sink backfill`` runs the same loops in the foreground for one request
through ``run_foreground``.

A ``Runner`` knows the queue only as a ``WorkQueue`` and the item work only as an
``ItemRunner``; ``make_runner`` builds the real one (``PostgresQueue``, ``ItemWorker`` over
the Studio clients of every account, ``sink.backfill.accounts``), and the unit tests build
one over stand-ins. An item whose account has no REST credentials that work is parked in
state ``waiting_for_credentials`` (its attempt not counted): never failed for that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable
from typing import Any, Final, Protocol

import asyncpg

from sink.backfill import account_rows
from sink.backfill import queue as q
from sink.backfill.accounts import (
    AccountClients,
    AccountUnknown,
    Callers,
    OneClient,
    WaitForCredentials,
    callable_accounts,
)
from sink.backfill.client import (
    StudioApiError,
    StudioClient,
    StudioCredentialsError,
    StudioGone,
    StudioRetryLater,
    StudioUnavailable,
)
from sink.backfill.item import ItemWorker, UnknownFlow, UnstorableContext
from sink.db.pool import DB_ERRORS, is_transient, unavailable
from sink.errors import ConfigError
from sink.ingest.redact import KEEP, Policy
from sink.metrics import Metrics

log = logging.getLogger(__name__)

POLL_SECONDS: Final = 2.0
LEASE_SECONDS: Final = 60.0
FAILURES_SHOWN: Final = 20

Summary = q.Progress
"""What a request came to: counts by outcome, and the first failures."""

ProgressCallback = Callable[[Summary], None]


class ItemRunner(Protocol):
    """Does one item; raises the Studio client's errors, ``UnknownFlow`` or a database
    error when it cannot (``sink.backfill.item.ItemWorker`` is the real one)."""

    async def run(self, item: q.Item) -> None: ...


class Runner:
    """Worker loops sharing one item runner: claim an item, run it, record its outcome."""

    def __init__(
        self,
        queue: q.WorkQueue,
        items: ItemRunner,
        *,
        max_attempts: int,
        metrics: Metrics | None = None,
        lease: float = LEASE_SECONDS,
        retry_base: float = 1.0,
    ) -> None:
        self._queue = queue
        self._items = items
        self._metrics = metrics
        self._max_attempts = max_attempts
        self._lease = lease
        self._retry_base = retry_base
        self._tokens: set[str] = set()
        self._resume_at = 0.0  # time.monotonic(): no claim before, after a 429's long pause
        self.wake = asyncio.Event()
        self.stopping = False  # set by stop(): loops end after their current item
        self._random = random.SystemRandom()

    async def work(self, request_id: int | None = None) -> None:
        """One worker loop: every request's items, or (foreground) one request's until done."""
        while not self.stopping:
            self.wake.clear()
            paused = self._resume_at - time.monotonic()
            if paused > 0:  # Twilio asked to wait: every item would be handed back
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), paused)
                continue
            token = uuid.uuid4().hex
            wait = POLL_SECONDS
            try:
                item = await self._queue.claim(token, self._lease, request_id)
                if item is None:
                    due = await self._queue.next_due(request_id)
                    if due is None and request_id is not None:
                        return  # the request has no open item left
                    wait = min(POLL_SECONDS, max(0.01, due or POLL_SECONDS))
            except DB_ERRORS as exc:
                log.warning("backfill worker cannot reach the queue: %s", unavailable(exc))
                item = None
            if item is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), wait)
                continue
            await self._handle(item, token)
            self.wake.set()  # idle loops look again: the item may have finished a request

    def stop(self) -> None:
        """Ask the loops to end after their current item (cancelling a query mid-way
        leaves asyncpg connections in a bad state; cancel only what does not end)."""
        self.stopping = True
        self.wake.set()

    async def heartbeat(self) -> None:
        """Renews the leases of the items being worked on, so no one else claims them."""
        while True:
            await asyncio.sleep(self._lease / 3)
            if not self._tokens:
                continue
            try:
                await self._queue.extend(list(self._tokens), self._lease)
            except DB_ERRORS as exc:
                log.warning("cannot renew backfill leases: %s", unavailable(exc))

    async def _handle(self, item: q.Item, token: str) -> None:
        self._tokens.add(token)
        try:
            await self._run(item, token)
        except asyncio.CancelledError:
            # stopping: hand the item back at once, without counting the attempt
            with contextlib.suppress(Exception):
                await asyncio.shield(self._record_retry(item, token, "worker stopped", 0, True))
            raise
        finally:
            self._tokens.discard(token)

    async def _run(self, item: q.Item, token: str) -> None:
        if item.attempts > self._max_attempts:
            reason = f"its worker stopped {item.attempts - 1} times while running it"
            await self._finish(item, token, "failed", reason)
            return
        try:
            await self._items.run(item)
        except StudioGone as exc:
            await self._finish(item, token, "gone", str(exc))
        except WaitForCredentials as exc:
            await self._wait(item, token, exc.account_sid, str(exc))
        except StudioCredentialsError as exc:  # an item runner that names no account
            await self._wait(item, token, None, str(exc))
        except StudioRetryLater as exc:
            await self._retry_later(item, token, exc)
        except (StudioApiError, UnknownFlow, UnstorableContext, AccountUnknown) as exc:
            # includes StudioUnavailable: retried below unless out of attempts
            if not isinstance(exc, StudioUnavailable):
                await self._finish(item, token, "failed", str(exc))
            else:
                await self._retry_or_fail(item, token, str(exc))
        except DB_ERRORS as exc:
            if isinstance(exc, asyncpg.PostgresError) and not is_transient(exc):
                log.exception("backfill request %d: the database refused", item.request_id)
                await self._finish(item, token, "failed", f"Postgres refused: {exc}")
            else:
                await self._retry_or_fail(item, token, str(unavailable(exc)))
        except Exception as exc:  # a worker must outlive any one item
            log.exception("backfill request %d: unexpected error", item.request_id)
            await self._retry_or_fail(item, token, f"unexpected error: {exc!r}")
        else:
            await self._finish(item, token, "done")

    async def _retry_later(self, item: q.Item, token: str, exc: StudioRetryLater) -> None:
        """Twilio said when to come back: the item waits until then, holding no worker. After
        a 429 its attempt is not counted, and this runner claims nothing before then."""
        if not exc.refund:
            await self._retry_or_fail(item, token, str(exc), delay=exc.retry_after)
            return
        self._resume_at = max(self._resume_at, time.monotonic() + exc.retry_after)
        log.info(
            "backfill request %d: item %d waits %.1f s: %s",
            item.request_id,
            item.item_id,
            exc.retry_after,
            exc,
        )
        await self._record_retry(item, token, str(exc), exc.retry_after, True)

    async def _retry_or_fail(
        self, item: q.Item, token: str, reason: str, *, delay: float | None = None
    ) -> None:
        if item.attempts >= self._max_attempts:
            await self._finish(
                item, token, "failed", f"{reason} (gave up after {item.attempts} attempts)"
            )
            return
        if delay is None:
            delay = min(300.0, self._retry_base * 2 ** (item.attempts - 1))
            delay *= self._random.uniform(0.5, 1.0)
        log.info(
            "backfill request %d: item %d retried in %.1f s: %s",
            item.request_id,
            item.item_id,
            delay,
            reason,
        )
        await self._record_retry(item, token, reason, delay, False)

    async def _record_retry(
        self, item: q.Item, token: str, reason: str, delay: float, refund: bool
    ) -> None:
        try:
            await self._queue.retry(item, token, reason, delay, refund=refund)
        except DB_ERRORS as exc:
            log.warning("backfill item %d stays leased: %s", item.item_id, unavailable(exc))

    async def _finish(
        self, item: q.Item, token: str, state: q.FinalState, reason: str | None = None
    ) -> None:
        try:
            recorded = await self._queue.finish(item, token, state, reason)
        except DB_ERRORS as exc:
            log.warning("backfill item %d stays leased: %s", item.item_id, unavailable(exc))
            return
        if recorded and self._metrics is not None:
            self._metrics.backfill_items.labels(state).inc()
        if state == "failed":
            log.warning(
                "backfill request %d: item %d failed: %s", item.request_id, item.item_id, reason
            )

    async def _wait(self, item: q.Item, token: str, account_sid: str | None, reason: str) -> None:
        """No credentials of the item's account work: it waits, its attempt not counted,
        until they do (``resume_waiting``: a reload, a restart, a periodic check)."""
        try:
            await self._queue.wait_for_credentials(item, token, account_sid, reason)
        except DB_ERRORS as exc:
            log.warning("backfill item %d stays leased: %s", item.item_id, unavailable(exc))
            return
        log.info(
            "backfill request %d: item %d waits for credentials: %s",
            item.request_id,
            item.item_id,
            reason,
        )


def make_runner(
    pool: asyncpg.Pool[Any],
    clients: Callers | StudioClient,
    *,
    max_attempts: int,
    metrics: Metrics | None = None,
    retry_base: float = 1.0,
    privacy: Policy = KEEP,
) -> Runner:
    """The runner over Postgres and the Studio API: ``AccountClients`` (each item as its
    account), or one client for every item. Executions an item queues (a flow's listing)
    wake the runner's idle loops."""

    def queued() -> None:  # called only from runner.work(), so after runner is bound
        runner.wake.set()

    callers: Callers = OneClient(clients) if isinstance(clients, StudioClient) else clients
    if isinstance(clients, AccountClients):  # the shared rate limits live in Postgres
        clients.bind(pool)

    runner = Runner(
        q.PostgresQueue(pool),
        ItemWorker(pool, callers, on_queued=queued, privacy=privacy),
        max_attempts=max_attempts,
        metrics=metrics,
        retry_base=retry_base,
    )
    return runner


async def resume_waiting(
    pool: asyncpg.Pool[Any], clients: Callers | StudioClient, request_id: int | None = None
) -> int:
    """Queue again the items waiting for credentials that are configured now (of one
    request, or all); how many."""
    callable_now: list[str] = []
    every = True  # one client for every account
    if isinstance(clients, AccountClients):
        callable_now = callable_accounts(clients.accounts)
        every = clients.accounts.fallback is not None
    async with pool.acquire() as conn:
        return await account_rows.resume_waiting(
            conn, callable_now, every=every, request_id=request_id
        )


async def run_foreground(
    pool: asyncpg.Pool[Any],
    client: Callers | StudioClient,
    request_id: int,
    progress: ProgressCallback | None = None,
    *,
    workers: int = 4,
    max_attempts: int = 8,
    retry_base: float = 1.0,
    metrics: Metrics | None = None,
    progress_interval: float = 0.25,
    privacy: Policy = KEEP,
) -> Summary:
    """Run one request's items in this process until none is left; its final summary.

    Items other processes hold are waited for, not taken; items waiting for credentials
    that are configured now are queued again first, and those still without credentials
    that work are left waiting (the summary counts them). ``progress`` is called with the
    request's state every ``progress_interval`` seconds and once at the end.
    """
    await resume_waiting(pool, client, request_id)
    runner = make_runner(
        pool,
        client,
        max_attempts=max_attempts,
        metrics=metrics,
        retry_base=retry_base,
        privacy=privacy,
    )
    queue = q.PostgresQueue(pool)

    async def report() -> None:
        while True:
            current = await queue.progress(request_id)
            if current is not None and progress is not None:
                progress(current)
            await asyncio.sleep(progress_interval)

    helpers = [asyncio.create_task(runner.heartbeat())]
    if progress is not None:
        helpers.append(asyncio.create_task(report()))
    try:
        await asyncio.gather(*(runner.work(request_id) for _ in range(max(1, workers))))
    finally:
        for task in helpers:
            task.cancel()
        for task in helpers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    summary = await queue.progress(request_id, failures=FAILURES_SHOWN)
    if summary is None:
        raise ConfigError(f"backfill request {request_id} does not exist")
    if progress is not None:
        progress(summary)
    return summary
