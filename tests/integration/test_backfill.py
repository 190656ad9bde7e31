"""Backfill from the fake Studio v2 API into a real Postgres, run in the foreground."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from pytest_aiohttp import AiohttpServer

from sink.backfill import queue as q
from sink.backfill.client import RateLimiter, StudioClient, StudioCredentials
from sink.backfill.runner import Summary, run_foreground
from sink.config import Settings
from sink.db.route import create_route_pool, route_for
from tests.conftest import Sink
from tests.fakes.studio_api import create_app
from tests.fakes.studio_data import EPOCH, Execution, FakeStudio
from tests.support.studio import fake_execution_events as events_for
from tests.support.studio import sid

pytestmark = pytest.mark.through_pgbouncer


API_KEY = "SK" + "5" * 32
SECRET = "backfill-api-key-secret"


@pytest.fixture
def fake() -> FakeStudio:
    return FakeStudio(username=API_KEY, password=SECRET)


@pytest.fixture
async def studio_url(fake: FakeStudio, aiohttp_server: AiohttpServer) -> str:
    server = await aiohttp_server(create_app(fake))
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool[Any]]:
    settings = Settings(database_url=database_url)
    created = await create_route_pool(settings, await route_for(settings, database_url), size=8)
    yield created
    await created.close()


def client_for(fake: FakeStudio, url: str, **kwargs: Any) -> StudioClient:
    options: dict[str, Any] = {
        "rate_per_second": 1000.0,
        "backoff_base": 0.001,
        "backoff_cap": 0.01,
        "timeout": 5.0,
    }
    options.update(kwargs)
    return StudioClient(url, StudioCredentials(*fake.credentials), **options)


async def backfill(
    pool: asyncpg.Pool[Any], client: StudioClient, kind: Any = "executions", **spec: Any
) -> Summary:
    options = {k: spec.pop(k) for k in ("max_attempts", "progress", "workers") if k in spec}
    async with pool.acquire() as conn:
        rid = await q.enqueue(conn, kind, "cli", **spec)
    return await run_foreground(
        pool,
        client,
        rid,
        options.get("progress"),
        retry_base=0.001,
        max_attempts=options.get("max_attempts", 3),
        workers=options.get("workers", 4),
    )


async def contexts(conn: asyncpg.Connection[Any]) -> dict[str, Any]:
    rows = await conn.fetch(
        "SELECT execution_sid AS sid, context FROM studio.executions"
        " UNION ALL SELECT step_sid, context FROM studio.steps"
    )
    return {r["sid"]: None if r["context"] is None else json.loads(r["context"]) for r in rows}


def expected_contexts(executions: list[Execution]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for e in executions:
        found[e.sid] = e.context
        found.update({s.sid: s.context for s in e.steps})
    return found


async def test_execution_backfill_fills_contexts_missed_steps_and_flows(
    database_url: str,
    sink: Sink,
    fake: FakeStudio,
    studio_url: str,
    pool: asyncpg.Pool[Any],
    conn: asyncpg.Connection[Any],
) -> None:
    [execution] = fake.populate(executions=1, steps=3)
    status, _ = await sink.post(events_for(execution, steps=1, ended=False))
    assert status == 200
    before = await conn.fetchrow("SELECT * FROM studio.executions")
    assert before["status"] == "active" and before["context"] is None

    async with client_for(fake, studio_url) as client:
        summary = await backfill(pool, client, execution_sids=[execution.sid])

    assert (summary.items_total, summary.items_done, summary.status) == (1, 1, "finished")
    assert await contexts(conn) == expected_contexts([execution])
    row = await conn.fetchrow("SELECT * FROM studio.executions")
    assert row["status"] == "ended"  # the API knows it ended; no event said so
    assert row["context_fetched_at"] is not None and row["initiated_by"] is not None
    steps = await conn.fetch("SELECT * FROM studio.steps")
    assert {s["step_sid"]: s["widget_type"] for s in steps} == {
        s.sid: s.type for s in execution.steps
    }
    assert {s["transitioned_to"] for s in steps} == {"widget_1", "widget_2", "Ended"}
    assert all(s["context_fetched_at"] is not None for s in steps)
    flow = fake.flows[execution.flow_sid]
    stored_flow = await conn.fetchrow("SELECT * FROM studio.flows")
    assert stored_flow["flow_sid"] == flow.sid and stored_flow["friendly_name"] == "Test Flow"
    revision = await conn.fetchrow("SELECT * FROM studio.flow_revisions")
    assert (revision["flow_sid"], revision["revision"]) == (flow.sid, 1)
    assert json.loads(revision["definition"]) == flow.latest.definition
    # a second backfill fetches no step context again and no flow again
    fake.reset_log()
    async with client_for(fake, studio_url) as client:
        await backfill(pool, client, execution_sids=[execution.sid])
    assert fake.count("step_context") == fake.count("flow") == 0


async def test_flow_range_pages_through_and_inserts_missed_executions(
    fake: FakeStudio,
    studio_url: str,
    pool: asyncpg.Pool[Any],
    conn: asyncpg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sink.backfill.client.PAGE_SIZE", 20)
    monkeypatch.setattr("sink.backfill.item.LISTING_BATCH", 15)
    executions = fake.populate(executions=70, steps=2)
    seen: list[Summary] = []
    async with client_for(fake, studio_url) as client:
        summary = await backfill(
            pool,
            client,
            "flow",
            flow_sid=executions[0].flow_sid,
            since=EPOCH + timedelta(seconds=5),
            until=EPOCH + timedelta(seconds=65),
            progress=seen.append,
        )
    wanted = executions[5:65]
    assert (summary.items_total, summary.items_done, summary.items_failed) == (61, 61, 0)
    assert fake.count("executions") == 3  # 60 executions in pages of 20
    queries = [r.query_string for r in fake.log if r.endpoint == "executions"]
    assert all("PageSize=20" in qs for qs in queries) and "PageToken" in queries[-1]
    assert await contexts(conn) == expected_contexts(wanted)
    assert seen and seen[-1].finished


async def test_retries_happen_and_stop(
    database_url: str,
    sink: Sink,
    fake: FakeStudio,
    studio_url: str,
    pool: asyncpg.Pool[Any],
    conn: asyncpg.Connection[Any],
) -> None:
    first, second = fake.populate(executions=2, steps=1)
    for e in (first, second):
        assert (await sink.post(events_for(e, steps=0)))[0] == 200
    fake.inject(503, 2, endpoint="execution_context")
    fake.inject(429, 1, retry_after="0", endpoint="steps")
    async with client_for(fake, studio_url, max_retries=3) as client:
        summary = await backfill(pool, client, execution_sids=[first.sid])
    assert summary.items_done == 1
    assert fake.count("execution_context", 503) == 2 and fake.count("steps", 429) == 1
    assert await conn.fetchval("SELECT count(*) FROM studio.steps WHERE context IS NOT NULL") == 1

    fake.reset_log()
    fake.inject(503, 1000, endpoint="execution")
    async with client_for(fake, studio_url, max_retries=1) as client:
        summary = await backfill(pool, client, execution_sids=[second.sid], max_attempts=3)
    assert (summary.items_failed, summary.items_done) == (1, 0)
    [(failed_sid, state, reason)] = summary.failures
    assert failed_sid == second.sid and state == "failed"
    assert "still failing after 2 attempts" in str(reason) and "gave up after 3" in str(reason)
    assert fake.count("execution") == 2 * 3  # client retries x item attempts, then it stops
    fake.faults.clear()


async def test_rate_limit_is_respected(
    fake: FakeStudio,
    studio_url: str,
    pool: asyncpg.Pool[Any],
) -> None:
    executions = fake.populate(executions=6, steps=3)
    rate = 20.0
    limiter = RateLimiter(rate, burst=1)
    async with client_for(fake, studio_url, rate_limiter=limiter, max_concurrency=8) as client:
        summary = await backfill(
            pool,
            client,
            "flow",
            flow_sid=executions[0].flow_sid,
            since=EPOCH,
            until=EPOCH + timedelta(hours=1),
        )
    assert summary.items_done == 7
    assert len(fake.log) == 1 + 6 * (1 + 1 + 3) + 2  # listing, executions, flow + revision
    assert fake.max_in_window(1.0) <= rate + 1


async def test_404_marks_gone_and_is_not_retried(
    database_url: str,
    sink: Sink,
    fake: FakeStudio,
    studio_url: str,
    pool: asyncpg.Pool[Any],
    conn: asyncpg.Connection[Any],
) -> None:
    expired, partly = fake.populate(executions=2, steps=2)
    for e in (expired, partly):
        assert (await sink.post(events_for(e)))[0] == 200
    fake.expire_execution(expired.sid)
    fake.mark_gone(partly.steps[1].sid)
    async with client_for(fake, studio_url) as client:
        summary = await backfill(pool, client, execution_sids=[expired.sid, partly.sid])
    assert (summary.items_gone, summary.items_done, summary.items_failed) == (1, 1, 0)
    assert summary.failures[0][:2] == (expired.sid, "gone")
    assert fake.count("execution", 404) == 1 and fake.count("step_context", 404) == 1
    gone = await conn.fetch(
        "SELECT execution_sid AS sid FROM studio.executions WHERE gone_at IS NOT NULL"
        " UNION ALL SELECT step_sid FROM studio.steps WHERE gone_at IS NOT NULL"
    )
    assert {r["sid"] for r in gone} == {expired.sid, partly.steps[1].sid}
    # --missing skips what is gone
    async with pool.acquire() as c:
        rid = await q.enqueue(c, "missing", "cli")
    assert (
        await conn.fetchval(
            "SELECT items_total FROM studio.backfill_requests WHERE request_id = $1", rid
        )
    ) == 0


async def test_backfill_racing_events_gives_no_duplicates(
    database_url: str,
    sink: Sink,
    fake: FakeStudio,
    studio_url: str,
    pool: asyncpg.Pool[Any],
    conn: asyncpg.Connection[Any],
) -> None:
    executions = fake.populate(executions=8, steps=4)
    fake.latency = 0.002
    rng = random.Random(7)
    deliveries = []
    for e in executions:
        events = events_for(e)
        rng.shuffle(events)
        deliveries += [events[i : i + 2] for i in range(0, len(events), 2)]
    rng.shuffle(deliveries)

    async def post_all() -> None:
        for chunk in deliveries:
            status, answer = await sink.post(chunk)
            assert status == 200, answer

    async with client_for(fake, studio_url, max_concurrency=4) as client:
        _, summary = await asyncio.gather(
            post_all(),
            backfill(
                pool,
                client,
                "flow",
                flow_sid=executions[0].flow_sid,
                since=EPOCH,
                until=EPOCH + timedelta(hours=1),
            ),
        )
    assert summary.items_done == 9
    # the same steps delivered again later, as new events: contexts stay
    for e in executions:
        assert (await sink.post(events_for(e)))[0] == 200
    assert await conn.fetchval("SELECT count(*) FROM studio.executions") == 8
    assert await conn.fetchval("SELECT count(*) FROM studio.steps") == 32
    assert await contexts(conn) == expected_contexts(executions)
    statuses = await conn.fetch("SELECT DISTINCT status, ended_reason FROM studio.executions")
    assert [tuple(r) for r in statuses] == [("ended", "FLOW_END")]


async def test_refused_credentials_park_the_items_until_credentials_work(
    database_url: str,
    sink: Sink,
    fake: FakeStudio,
    studio_url: str,
    pool: asyncpg.Pool[Any],
    conn: asyncpg.Connection[Any],
) -> None:
    executions = fake.populate(executions=3, steps=1)
    for e in executions:
        assert (await sink.post(events_for(e)))[0] == 200
    wrong = StudioClient(studio_url, StudioCredentials(API_KEY, "wrong"), backoff_base=0.001)
    async with wrong:
        summary = await backfill(pool, wrong, execution_sids=[e.sid for e in executions], workers=1)
    assert (summary.items_waiting, summary.items_failed, summary.error) == (3, 0, None)
    assert summary.status == "waiting_for_credentials" and summary.finished_at is None
    reasons = [reason or "" for _, _, reason in summary.failures]
    assert all("refused the credentials" in r and "wrong" not in r for r in reasons)
    assert fake.count(status=401) == 2  # the first item's two calls; the others were parked
    attempts = await conn.fetch("SELECT state, attempts FROM studio.backfill_items")
    assert {tuple(r) for r in attempts} == {("waiting_for_credentials", 0)}

    async with client_for(fake, studio_url) as right:  # the credentials work again
        summary = await run_foreground(pool, right, summary.request_id, max_attempts=3)
    assert (summary.items_done, summary.items_waiting, summary.status) == (3, 0, "finished")
    assert await contexts(conn) == expected_contexts(executions)


async def test_unknown_execution_and_bad_sids(
    fake: FakeStudio,
    studio_url: str,
    pool: asyncpg.Pool[Any],
    conn: asyncpg.Connection[Any],
) -> None:
    unknown = sid("FN")
    async with client_for(fake, studio_url) as client:
        summary = await backfill(pool, client, execution_sids=[unknown])
    assert summary.items_failed == 1 and "its flow is unknown" in str(summary.failures[0][2])
    assert fake.log == []
    with pytest.raises(asyncpg.InvalidParameterValueError, match="not an Execution SID"):
        await conn.fetchval("SELECT studio.request_backfill('FW' || repeat('0', 32))")
    with pytest.raises(asyncpg.InvalidParameterValueError, match="not a Flow SID"):
        await conn.fetchval("SELECT studio.request_backfill('FN1', now() - interval '1 day')")
    with pytest.raises(asyncpg.InvalidParameterValueError, match="is empty"):
        await conn.fetchval(
            "SELECT studio.request_backfill($1, now() + interval '1 day')", sid("FW")
        )


async def test_a_crashed_workers_item_is_claimed_again_once(
    database_url: str,
    sink: Sink,
    fake: FakeStudio,
    studio_url: str,
    pool: asyncpg.Pool[Any],
    conn: asyncpg.Connection[Any],
) -> None:
    [execution] = fake.populate(executions=1, steps=1)
    assert (await sink.post(events_for(execution)))[0] == 200
    rid = await q.enqueue(conn, "executions", "sql", execution_sids=[execution.sid])
    crashed = await q.claim(conn, "crashed-worker", 60.0, rid)
    assert crashed is not None
    assert await q.claim(conn, "other-worker", 60.0, rid) is None  # leased: nobody else
    await conn.execute("UPDATE sink.backfill_items SET not_before = now() - interval '1 s'")
    async with client_for(fake, studio_url) as client:
        summary = await run_foreground(pool, client, rid, max_attempts=3)
    assert summary.items_done == 1
    assert not await q.finish(conn, crashed, "crashed-worker", "failed", "late")
    item = await conn.fetchrow("SELECT state, attempts FROM studio.backfill_items")
    assert tuple(item) == ("done", 2)


def test_summary_counts_finished_items() -> None:
    make: Callable[..., Summary] = Summary
    summary = make(1, "flow", "running", 5, 2, 1, 1, EPOCH, None, "cli", None)
    assert summary.items_finished == 4 and not summary.finished
