"""Retry-After beyond a few seconds: the client hands the item back (StudioRetryLater), and the
runner queues it for then, a 429's attempt not counted, claiming nothing meanwhile."""

from __future__ import annotations

import time
from typing import Any

import pytest
from pytest_aiohttp import AiohttpServer

from sink.backfill.client import StudioClient, StudioCredentials, StudioRetryLater
from sink.backfill.ratelimit import RateLimiter
from tests.fakes.studio_api import create_app
from tests.fakes.studio_data import FakeStudio
from tests.support.backfill_queue import InMemoryQueue
from tests.unit.backfill.test_runner import EXECUTIONS, ScriptedItems, foreground, runner


@pytest.fixture
def fake() -> FakeStudio:
    return FakeStudio()


@pytest.fixture
async def base_url(fake: FakeStudio, aiohttp_server: AiohttpServer) -> str:
    server = await aiohttp_server(create_app(fake))
    return str(server.make_url("")).rstrip("/")


def client_for(fake: FakeStudio, base_url: str, **kwargs: Any) -> StudioClient:
    return StudioClient(base_url, StudioCredentials(*fake.credentials), **kwargs)


def later(seconds: float, *, refund: bool = True) -> StudioRetryLater:
    status = 429 if refund else 503
    message = f"Studio API execution_context: HTTP {status}, Retry-After {seconds} (test)"
    return StudioRetryLater(message, retry_after=seconds, refund=refund, status=status)


# -- the client -----------------------------------------------------------------------


async def test_a_long_retry_after_is_handed_back_at_once(fake: FakeStudio, base_url: str) -> None:
    [execution] = fake.populate(executions=1)
    fake.inject(429, retry_after=120)
    limiter = RateLimiter(100.0)
    started = time.monotonic()
    async with client_for(fake, base_url, rate_limiter=limiter) as client:
        with pytest.raises(StudioRetryLater, match="Retry-After 120") as caught:
            await client.fetch_execution(execution.flow_sid, execution.sid)
        # every other call of this process waits too, handed back without a request
        with pytest.raises(StudioRetryLater, match="paused") as paused:
            await client.fetch_flow(execution.flow_sid)

    assert time.monotonic() - started < 2.0  # nobody slept in the client (it slept 30 s)
    assert (caught.value.retry_after, caught.value.refund, caught.value.status) == (120, True, 429)
    assert 119 < paused.value.retry_after <= 120 and paused.value.refund
    assert fake.count() == 1
    assert limiter.rate == 50.0  # slowed, as after any 429


async def test_retry_after_beyond_the_maximum_waits_the_maximum(
    fake: FakeStudio, base_url: str
) -> None:
    [execution] = fake.populate(executions=1)
    fake.inject(429, retry_after=86400)
    async with client_for(fake, base_url, max_retry_after=600.0) as client:
        with pytest.raises(StudioRetryLater, match="honoured up to 600 s") as caught:
            await client.fetch_execution(execution.flow_sid, execution.sid)
    assert caught.value.retry_after == 600.0


async def test_a_long_retry_after_on_a_503_counts_its_attempt(
    fake: FakeStudio, base_url: str
) -> None:
    """A 503 says the service is unwell, not that we asked too often: the item waits as
    told, and its attempt counts (a 503 forever must end, as max attempts end it)."""
    [execution] = fake.populate(executions=1)
    fake.inject(503, retry_after=90)
    limiter = RateLimiter(100.0)
    async with client_for(fake, base_url, rate_limiter=limiter) as client:
        with pytest.raises(StudioRetryLater) as caught:
            await client.fetch_execution(execution.flow_sid, execution.sid)
        await client.fetch_execution(execution.flow_sid, execution.sid)  # not paused
    assert (caught.value.retry_after, caught.value.refund, caught.value.status) == (90, False, 503)
    assert limiter.rate == 100.0


async def test_a_short_retry_after_is_waited_out_in_place(fake: FakeStudio, base_url: str) -> None:
    [execution] = fake.populate(executions=1)
    fake.inject(429, retry_after=0.3)
    async with client_for(fake, base_url, backoff_cap=0.01) as client:
        await client.fetch_execution(execution.flow_sid, execution.sid)
    first, retry = fake.log
    assert retry.status == 200 and retry.started - first.finished >= 0.25  # not capped


# -- the runner -----------------------------------------------------------------------


async def test_a_429_hands_the_item_back_for_then_without_counting_the_attempt() -> None:
    queue, items = InMemoryQueue(), ScriptedItems({1: [later(0.05), later(0.05)]})
    rid = queue.request()
    queue.add(rid, EXECUTIONS[0])

    await foreground(runner(queue, items, max_attempts=1), rid)

    assert queue.items[1].state == "done"  # with one attempt allowed, after two 429s
    assert queue.items[1].attempts == 1
    assert [e[2:5] for e in queue.entries("retry")] == [(0.05, True, str(later(0.05)))] * 2


async def test_the_runner_claims_nothing_while_twilio_asks_to_wait() -> None:
    """Every item would be handed back the same way: the loops wait instead of claiming."""
    queue, items = InMemoryQueue(), ScriptedItems({1: [later(0.2)]})
    rid = queue.request()
    queue.add(rid, EXECUTIONS[0])
    queue.add(rid, EXECUTIONS[1])  # due all along

    await foreground(runner(queue, items), rid)

    [(_, _, _, _, _, handed_back)] = queue.entries("retry")
    claims_after = [at for _, _, _, at in queue.entries("claim") if at >= handed_back]
    assert len(claims_after) == 2 and min(claims_after) >= handed_back + 0.2
    assert [item_id for item_id, _ in items.runs] == [1, 2, 1]
    assert {row.state for row in queue.items.values()} == {"done"}


async def test_a_503_retry_later_counts_and_fails_at_max_attempts() -> None:
    queue, items = InMemoryQueue(), ScriptedItems({1: [later(0.01, refund=False)] * 2})
    rid = queue.request()
    queue.add(rid, EXECUTIONS[0])

    await foreground(runner(queue, items, max_attempts=2), rid)

    row = queue.items[1]
    assert (row.state, row.attempts) == ("failed", 2)
    assert row.reason == f"{later(0.01, refund=False)} (gave up after 2 attempts)"
    assert [e[2:4] for e in queue.entries("retry")] == [(0.01, False)]
