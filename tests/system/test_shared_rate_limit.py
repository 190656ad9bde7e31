"""Three replicas of the sink backfilling together keep to one Studio API rate limit.

The limit is per Twilio account, but the Helm chart runs 2 to 10 replicas: with a bucket per
process Twilio saw N times SINK_BACKFILL_RATE_LIMIT. Three real ``studio-sink serve``
processes share one flow backfill against the fake Studio API, which records when each call
arrives. Two checks, both on arrival times in this process's monotonic clock:

- the k-th call (from 0) arrives no sooner than k / rate seconds after the request was
  queued: the shared slots are 1 / rate apart and no call starts before its slot, so no
  tolerance is needed (a call that starts late only makes the bound easier);
- no 1-second window holds more than rate + 1 calls. Slots 1 / rate apart put ``rate``
  of them in any half-open second; calls arrive a few milliseconds after their slots (a
  wake-up, the HTTP request), unevenly, so a window whose first call came late ends just
  after its 11th came on time: every run reaches rate + 1. Rate + 2 would need one call
  more than a whole interval (100 ms) later than another. There is no first-second
  allowance: the shared limiter has no burst, so the first second is held to it too.

The control runs the same backfill through three stacks each with a per-process bucket
(what ``make_client`` built before): they exceed both, so the checks can fail.

With two accounts (an accounts file), the replicas keep each account to its own limit (one
row of ``sink.rate_limits`` per account), and both run at it at once.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pytest_aiohttp import AiohttpServer

from sink.backfill import queue as q
from sink.backfill.client import StudioClient, StudioCredentials
from sink.backfill.ratelimit import RateLimiter
from sink.backfill.runner import run_foreground
from sink.config import Settings
from sink.db.route import create_route_pool, route_for
from tests.fakes.studio_api import create_app
from tests.fakes.studio_data import EPOCH, FakeStudio
from tests.support.process import SinkProcess

pytestmark = pytest.mark.slow  # real processes, and seconds of paced calls

RATE = 10.0
REPLICAS = 3
EXECUTIONS, STEPS = 15, 2  # about 65 calls: 6.5 s at the shared rate, 2 s at three times it
WAIT = 90.0  # a hang guard, not a speed requirement


@pytest.fixture
async def fake(aiohttp_server: AiohttpServer) -> tuple[FakeStudio, str]:
    studio = FakeStudio(seed=13)
    studio.latency = 0.005
    studio.populate(executions=EXECUTIONS, steps=STEPS)
    server = await aiohttp_server(create_app(studio))
    return studio, str(server.make_url("")).rstrip("/")


async def queue_flow_backfill(conn: asyncpg.Connection[Any], fake: FakeStudio) -> int:
    [flow] = fake.flows
    until = EPOCH + timedelta(hours=1)
    return await q.enqueue(conn, "flow", "sql", flow_sid=flow, since=EPOCH, until=until)


async def wait_until_done(conn: asyncpg.Connection[Any], items: int = EXECUTIONS + 1) -> None:
    deadline = time.monotonic() + WAIT
    while await conn.fetchval(
        "SELECT count(*) FROM sink.backfill_items WHERE state IN ('queued', 'running')"
    ):
        assert time.monotonic() < deadline, "the backfill did not finish"
        await asyncio.sleep(0.1)
    states = await conn.fetch("SELECT state, count(*) FROM sink.backfill_items GROUP BY 1")
    assert {r["state"]: r["count"] for r in states} == {"done": items}


def early_calls(fake: FakeStudio, queued_at: float) -> list[int]:
    arrivals = sorted(r.started for r in fake.log)
    return [k for k, t in enumerate(arrivals) if t < queued_at + k / RATE - 0.001]


async def calls_made(session: aiohttp.ClientSession, sink: SinkProcess) -> float:
    async with session.get(f"{sink.base_url}/metrics") as response:
        text = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "sink_studio_api_calls"
        for sample in family.samples
        if sample.name.endswith("_total")
    )


@pytest.mark.timeout(180)
async def test_three_replicas_keep_to_one_rate_limit(
    database_url: str,
    conn: asyncpg.Connection[Any],
    tmp_path: Path,
    fake: tuple[FakeStudio, str],
) -> None:
    studio, studio_url = fake
    user, password = studio.credentials
    env = {
        "SINK_BACKFILL_WORKERS": "4",
        "SINK_STUDIO_BASE_URL": studio_url,
        "SINK_TWILIO_API_KEY_SID": user,
        "SINK_TWILIO_API_KEY_SECRET": password,
        "SINK_BACKFILL_RATE_LIMIT": str(RATE),
    }
    sinks = [SinkProcess(database_url, tmp_path / f"sink-{n}.log", env=env) for n in range(3)]
    for sink in sinks:
        sink.start()
    try:
        await asyncio.gather(*(sink.wait_ready() for sink in sinks))
        queued_at = time.monotonic()
        await queue_flow_backfill(conn, studio)
        await wait_until_done(conn)
        async with aiohttp.ClientSession() as session:
            shares = [await calls_made(session, sink) for sink in sinks]
    finally:
        for sink in sinks:
            sink.stop()

    assert sum(shares) == len(studio.log) and all(share > 0 for share in shares), shares
    assert early_calls(studio, queued_at) == []
    busiest = studio.max_in_window(1.0)
    assert busiest <= RATE + 1
    span = studio.log[-1].started - queued_at
    print(
        f"\n{REPLICAS} replicas, one limit of {RATE:g}/s: {len(studio.log)} calls in {span:.1f} s,"
        f" at most {busiest} in any second; calls per replica {shares}"
    )


@pytest.mark.timeout(120)
async def test_three_per_process_buckets_exceed_it(
    database_url: str,
    conn: asyncpg.Connection[Any],
    fake: tuple[FakeStudio, str],
) -> None:
    """The control: each stack has its own bucket, as every replica had before."""
    studio, studio_url = fake
    settings = Settings(database_url=database_url)
    route = await route_for(settings, database_url)
    pools = [await create_route_pool(settings, route, size=6) for _ in range(REPLICAS)]
    clients = [
        StudioClient(
            studio_url,
            StudioCredentials(*studio.credentials),
            rate_limiter=RateLimiter(RATE, burst=1),
            max_concurrency=8,
        )
        for _ in range(REPLICAS)
    ]
    try:
        queued_at = time.monotonic()
        rid = await queue_flow_backfill(conn, studio)
        await asyncio.gather(
            *(
                run_foreground(pool, client, rid, workers=4)
                for pool, client in zip(pools, clients, strict=True)
            )
        )
    finally:
        for client in clients:
            await client.close()
        for pool in pools:
            await pool.close()
    await wait_until_done(conn)

    busiest = studio.max_in_window(1.0)
    assert busiest > RATE + 1
    assert early_calls(studio, queued_at) != []
    print(f"\n{REPLICAS} per-process buckets of {RATE:g}/s: at most {busiest} calls in a second")


def busiest_second(fake: FakeStudio, account: str | None = None) -> int:
    """Most calls (made as ``account``, or by anyone) that arrived within any one second."""
    times = sorted(r.started for r in fake.log if account is None or r.account_sid == account)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


@pytest.mark.timeout(180)
async def test_two_accounts_each_keep_to_their_own_limit_across_replicas(
    database_url: str,
    conn: asyncpg.Connection[Any],
    tmp_path: Path,
    aiohttp_server: AiohttpServer,
) -> None:
    """Twilio's limits are per account: the replicas share one limit per account (a row of
    sink.rate_limits each), so two accounts backfilled at once make twice the calls of one,
    and neither account's calls exceed its own limit."""
    studio = FakeStudio(seed=21)
    studio.latency = 0.005
    accounts = [studio.account_sid, studio.add_account(None).sid]
    table = []
    for n, account in enumerate(accounts):
        studio.accept(account, (account, f"token-{n}"))
        flow = studio.add_flow(account_sid=account)
        studio.populate(executions=EXECUTIONS, steps=STEPS, flow=flow)
        table.append(f'[accounts.{account}]\nlabel = "tenant-{n}"\nauth_tokens = ["token-{n}"]\n')
    accounts_file = tmp_path / "accounts.toml"
    accounts_file.write_text("\n".join(table), "utf-8")
    server = await aiohttp_server(create_app(studio))
    env = {
        "SINK_BACKFILL_WORKERS": "4",
        "SINK_STUDIO_BASE_URL": str(server.make_url("")).rstrip("/"),
        "SINK_ACCOUNTS_FILE": str(accounts_file),
        "SINK_BACKFILL_RATE_LIMIT": str(RATE),
    }
    sinks = [SinkProcess(database_url, tmp_path / f"sink-{n}.log", env=env) for n in range(3)]
    for sink in sinks:
        sink.start()
    try:
        await asyncio.gather(*(sink.wait_ready() for sink in sinks))
        queued_at = time.monotonic()
        until = EPOCH + timedelta(hours=1)
        for account, flow in zip(accounts, studio.flows, strict=True):
            await q.enqueue(
                conn, "flow", "sql", flow_sid=flow, since=EPOCH, until=until, account_sid=account
            )
        await wait_until_done(conn, 2 * (EXECUTIONS + 1))
    finally:
        for sink in sinks:
            sink.stop()

    assert studio.count(status=401) == 0 and studio.wrong_account_calls() == 0
    keys = await conn.fetch("SELECT key FROM sink.rate_limits ORDER BY key")
    assert [r["key"] for r in keys] == sorted(accounts)
    each = [busiest_second(studio, account) for account in accounts]
    assert all(busiest <= RATE + 1 for busiest in each), each
    for account in accounts:
        arrivals = sorted(r.started for r in studio.log if r.account_sid == account)
        early = [k for k, t in enumerate(arrivals) if t < queued_at + k / RATE - 0.001]
        assert early == [], account
    together = busiest_second(studio)
    assert together > RATE + 1, together  # the limits are per account, not one for all
    print(
        f"\ntwo accounts at {RATE:g}/s each: at most {each} calls in a second, {together} together"
    )
