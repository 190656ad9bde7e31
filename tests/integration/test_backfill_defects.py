"""Review defects of the backfill (issue 13), against a real Postgres and the fake Studio API.

1. A NUL or a lone surrogate in a context was refused by jsonb and failed the item for good;
   a context Postgres refuses must hold back nothing else of the execution.
7. The rate limit was per process: replicas sharing a database must share one limit.
8. ``Retry-After`` was capped at 30 s and slept inside the client, holding a worker: the item
   must wait in the queue instead, its attempt not counted.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest

from sink.backfill import item as item_module
from sink.backfill import queue as q
from sink.backfill.accounts import AccountClients
from sink.backfill.ratelimit import RateLimitPaused, SharedRateLimiter
from sink.backfill.runner import run_foreground
from sink.config import Settings
from sink.db.route import create_route_pool, route_for
from tests.conftest import Sink
from tests.fakes.studio_data import Execution, FakeStudio
from tests.integration import test_backfill as base
from tests.integration.test_backfill import API_KEY, SECRET, backfill, client_for, contexts
from tests.support.studio import fake_execution_events as events_for

pytestmark = pytest.mark.through_pgbouncer

WAIT = 10.0  # a hang guard for polling, never a speed requirement


fake, studio_url, pool = base.fake, base.studio_url, base.pool  # the same fixtures


async def open_pool(database_url: str) -> asyncpg.Pool[Any]:
    """One more pool, as another replica has its own."""
    settings = Settings(database_url=database_url)
    return await create_route_pool(settings, await route_for(settings, database_url), size=4)


async def known(sink: Sink, *executions: Execution) -> None:
    """The executions' events delivered: the backfill then knows their flows."""
    for e in executions:
        status, answer = await sink.post(events_for(e, steps=0))
        assert status == 200, answer


# -- 1. contexts Postgres cannot store -------------------------------------------------


async def test_a_nul_or_a_lone_surrogate_in_a_context_is_stored_replaced(
    sink: Sink,
    fake: FakeStudio,
    studio_url: str,
    pool: asyncpg.Pool[Any],
    conn: asyncpg.Connection[Any],
) -> None:
    [execution] = fake.populate(executions=1, steps=3)
    execution.context["trigger"] = {"message": {"Body": "stop\x00now", "key\x00": "x"}}
    execution.steps[0].context = {"widgets": {"reply": {"inbound": {"Body": "half \ud83d"}}}}
    execution.steps[1].context = {"emoji": "\U0001f600 kept"}
    await known(sink, execution)

    async with client_for(fake, studio_url) as client:
        summary = await backfill(pool, client, execution_sids=[execution.sid], max_attempts=1)

    assert (summary.items_done, summary.items_failed) == (1, 0), summary.failures
    stored = await contexts(conn)
    replaced = "\ufffd"  # U+FFFD, the replacement character
    message = stored[execution.sid]["trigger"]["message"]
    assert message == {"Body": f"stop{replaced}now", f"key{replaced}": "x"}
    assert stored[execution.steps[0].sid]["widgets"]["reply"]["inbound"] == {
        "Body": f"half {replaced}"
    }
    assert stored[execution.steps[1].sid] == {"emoji": "\U0001f600 kept"}
    assert stored[execution.steps[2].sid] == execution.steps[2].context


async def test_a_step_context_postgres_refuses_holds_back_no_other(
    sink: Sink,
    fake: FakeStudio,
    studio_url: str,
    pool: asyncpg.Pool[Any],
    conn: asyncpg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever Postgres refuses for its content (here a CHECK the test adds: SQLSTATE 23514,
    as a context over jsonb's limits would be) costs that one context only."""
    monkeypatch.setattr(item_module, "STEP_CONTEXT_CHUNK", 2)  # the bad one in the first chunk
    await conn.execute(
        "ALTER TABLE sink.steps ADD CONSTRAINT test_refused"
        " CHECK (context IS NULL OR NOT context ? 'refused')"
    )
    [execution] = fake.populate(executions=1, steps=5)
    bad = execution.steps[1]
    bad.context = {"refused": True}
    await known(sink, execution)

    async with client_for(fake, studio_url) as client:
        summary = await backfill(pool, client, execution_sids=[execution.sid], max_attempts=3)

    [(sid, state, reason)] = summary.failures
    assert (sid, state) == (execution.sid, "failed")
    assert bad.sid in str(reason) and "23514" in str(reason) and "the rest" in str(reason)
    assert fake.count("step_context") == 5  # failed for good: not fetched again
    stored = await contexts(conn)
    assert stored.pop(bad.sid) is None
    assert stored == {execution.sid: execution.context} | {
        s.sid: s.context for s in execution.steps if s is not bad
    }


async def test_an_execution_context_postgres_refuses_holds_back_no_step(
    sink: Sink,
    fake: FakeStudio,
    studio_url: str,
    pool: asyncpg.Pool[Any],
    conn: asyncpg.Connection[Any],
) -> None:
    await conn.execute(
        "ALTER TABLE sink.executions ADD CONSTRAINT test_refused"
        " CHECK (context IS NULL OR NOT context ? 'refused')"
    )
    [execution] = fake.populate(executions=1, steps=2)
    execution.context["refused"] = True
    await known(sink, execution)

    async with client_for(fake, studio_url) as client:
        summary = await backfill(pool, client, execution_sids=[execution.sid])

    [(_, state, reason)] = summary.failures
    assert state == "failed" and "23514" in str(reason) and execution.sid in str(reason)
    row = await conn.fetchrow("SELECT initiated_by, context FROM studio.executions")
    assert row["context"] is None
    assert row["initiated_by"] is not None  # the REST resource was merged all the same
    stored = await contexts(conn)
    assert {sid: stored[sid] for sid in stored if sid != execution.sid} == {
        s.sid: s.context for s in execution.steps
    }


# -- 8. Retry-After: the item waits in the queue -----------------------------------------


def sink_settings(database_url: str, studio_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "studio_base_url": studio_url,
        "twilio_api_key_sid": API_KEY,
        "twilio_api_key_secret": SECRET,
        "backfill_rate_limit": 200.0,
    }
    return Settings(**(values | overrides))


async def handed_back(conn: asyncpg.Connection[Any], count: int) -> list[asyncpg.Record]:
    deadline = time.monotonic() + WAIT
    while True:
        rows = await conn.fetch(
            "SELECT state, attempts, reason, extract(epoch FROM not_before - now()) AS wait"
            " FROM sink.backfill_items WHERE state = 'queued' AND reason IS NOT NULL"
        )
        if len(rows) >= count:
            return rows
        assert time.monotonic() < deadline, "the items were not handed back to the queue"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("retry_after", "max_retry_after", "waits"),
    [("45", 300.0, 45.0), ("3600", 120.0, 120.0)],
    ids=["honoured", "capped"],
)
async def test_a_long_retry_after_hands_items_back_without_counting_an_attempt(
    database_url: str,
    sink: Sink,
    fake: FakeStudio,
    studio_url: str,
    pool: asyncpg.Pool[Any],
    conn: asyncpg.Connection[Any],
    retry_after: str,
    max_retry_after: float,
    waits: float,
) -> None:
    executions = fake.populate(executions=2, steps=1)
    await known(sink, *executions)
    fake.inject(429, 2, retry_after=retry_after, endpoint="execution_context")
    rid = await q.enqueue(conn, "executions", "cli", execution_sids=[e.sid for e in executions])
    settings = sink_settings(database_url, studio_url, backfill_max_retry_after=max_retry_after)
    client = AccountClients.from_settings(settings)
    started = time.monotonic()
    run = asyncio.create_task(run_foreground(pool, client, rid, workers=2, max_attempts=1))
    try:
        rows = await handed_back(conn, 2)  # answered 429, or paused by the other's 429
        elapsed = time.monotonic() - started
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        await client.close()

    assert elapsed < 5.0  # not slept inside the client (it slept min(45, 30) s before)
    assert {(r["state"], r["attempts"]) for r in rows} == {("queued", 0)}  # nothing counted
    assert all(waits - 5 < r["wait"] <= waits for r in rows), [r["wait"] for r in rows]
    assert any(f"Retry-After {retry_after}" in r["reason"] for r in rows)
    assert fake.count("execution_context", 429) >= 1
    paused = await conn.fetchval(
        "SELECT extract(epoch FROM paused_until - now()) FROM sink.rate_limits"
    )
    assert waits - 5 < paused <= waits  # every replica holds off, not this process only


# -- 7. one rate limit for every replica ---------------------------------------------------


async def test_limiters_on_separate_pools_share_one_rate(database_url: str) -> None:
    """Three processes' worth of limiters (each its own pool, as replicas have): together they
    keep to the rate. The k-th call (from 0) starts k / rate seconds after the first lease was
    asked for, or later, whoever makes it: a bound a late wake-up cannot break."""
    rate, calls_each = 50.0, 20
    pools = [await open_pool(database_url) for _ in range(3)]
    starts: list[float] = []
    asked = time.monotonic()
    try:
        limiters = [SharedRateLimiter(rate, key="AC-shared") for _ in pools]
        for limiter, each_pool in zip(limiters, pools, strict=True):
            limiter.bind(q.PostgresSlots(each_pool, limiter.key))

        async def call(limiter: SharedRateLimiter) -> None:
            await limiter.acquire()
            starts.append(time.monotonic())

        await asyncio.gather(*(call(limiter) for limiter in limiters for _ in range(calls_each)))
    finally:
        for each_pool in pools:
            await each_pool.close()
    starts.sort()
    early = [k for k, t in enumerate(starts) if t < asked + k / rate - 0.001]
    assert early == []  # three per-process buckets of 50/s: the 2nd call would be early
    assert len(starts) == 3 * calls_each


async def test_a_429_pauses_and_slows_every_process_through_postgres(database_url: str) -> None:
    first, second = await open_pool(database_url), await open_pool(database_url)
    try:
        here, there = SharedRateLimiter(100.0, key="AC1"), SharedRateLimiter(100.0, key="AC1")
        elsewhere = SharedRateLimiter(100.0, key="AC2")  # another account: not paused
        here.bind(q.PostgresSlots(first, "AC1"))
        there.bind(q.PostgresSlots(second, "AC1"))
        elsewhere.bind(q.PostgresSlots(second, "AC2"))
        await here.record_429(0.6)

        with pytest.raises(RateLimitPaused) as paused:
            await there.acquire(max_pause=0.2)
        assert 0.3 < paused.value.seconds <= 0.6
        started = time.monotonic()
        await elsewhere.acquire()
        assert time.monotonic() - started < 0.3
        await there.acquire()  # waits the pause out
        assert time.monotonic() - started >= 0.3
        assert there.rate == pytest.approx(50.0)  # halved for everyone sharing the limit
        row = await first.fetchrow("SELECT slowdown, key FROM sink.rate_limits WHERE key = 'AC1'")
        assert tuple(row) == (0.5, "AC1")
    finally:
        await first.close()
        await second.close()
