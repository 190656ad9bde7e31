"""StudioClient against the fake Studio v2 API served over real HTTP."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from sink.backfill.client import (
    PAGE_SIZE,
    RateLimiter,
    StudioApiError,
    StudioClient,
    StudioCredentials,
    StudioCredentialsError,
    StudioGone,
    StudioRetryLater,
    StudioUnavailable,
    parse_retry_after,
)
from tests.fakes.studio_api import create_app
from tests.fakes.studio_data import FakeStudio

SECRET = "s3cr3t-api-key-secret"


@pytest.fixture
def fake() -> FakeStudio:
    return FakeStudio(password=SECRET)


@pytest.fixture
async def base_url(fake: FakeStudio, aiohttp_server: AiohttpServer) -> str:
    server = await aiohttp_server(create_app(fake))
    return str(server.make_url("")).rstrip("/")


def client_for(fake: FakeStudio, base_url: str, **kwargs: Any) -> StudioClient:
    options: dict[str, Any] = {
        "rate_per_second": 1000.0,
        "backoff_base": 0.001,
        "backoff_cap": 0.01,
        "timeout": 5.0,
    }
    options.update(kwargs)
    return StudioClient(base_url, StudioCredentials(*fake.credentials), **options)


@pytest.mark.parametrize("legacy_shape", [False, True])
async def test_fetches_parse_both_spec_shapes(
    aiohttp_server: AiohttpServer, legacy_shape: bool
) -> None:
    fake = FakeStudio(legacy_shape=legacy_shape)
    server = await aiohttp_server(create_app(fake))
    [execution] = fake.populate(executions=1, steps=2)
    flow, step = execution.flow_sid, execution.steps[1]
    async with client_for(fake, str(server.make_url(""))) as client:
        got = await client.fetch_execution(flow, execution.sid)
        ctx = await client.fetch_execution_context(flow, execution.sid)
        steps = [s async for s in client.iter_steps(flow, execution.sid)]
        step_ctx = await client.fetch_step_context(flow, execution.sid, step.sid)
        flow_body = await client.fetch_flow(flow)
        revision = await client.fetch_flow_revision(flow, 1)
        latest = await client.fetch_flow_revision(flow, "LatestPublished")

    assert got["sid"] == execution.sid and got["status"] == "ended"
    assert got["date_created"] == "2019-05-10T20:51:29Z"
    assert ("initiated_by" in got) is not legacy_shape
    assert got["links"]["execution_context"].endswith(f"/Executions/{execution.sid}/Context")
    assert ctx["context"]["trigger"] == {"request": {"n": 0}}
    assert [s["sid"] for s in steps] == [s.sid for s in execution.steps]
    assert ("parent_step_sid" in steps[0]) is not legacy_shape
    assert step_ctx["step_sid"] == step.sid and step_ctx["context"] == step.context
    assert flow_body["sid"] == flow and flow_body["revision"] == 1
    assert revision["definition"] == latest["definition"] == fake.flows[flow].latest.definition


async def test_paging_follows_next_page_url_one_page_at_a_time(
    fake: FakeStudio, base_url: str
) -> None:
    made = fake.populate(executions=2 * PAGE_SIZE + 5)
    flow = made[0].flow_sid
    async with client_for(fake, base_url) as client:
        pages = client.iter_executions(flow, date_from=None, date_to=None)
        got = [await anext(pages)]
        assert fake.count("executions") == 1
        got += [await anext(pages) for _ in range(PAGE_SIZE - 1)]
        assert fake.count("executions") == 1  # the first page is used up before the next
        got += [e async for e in pages]

    assert [e["sid"] for e in got] == [e.sid for e in reversed(made)]  # newest first
    queries = [parse_qs(r.query_string) for r in fake.log]
    assert [q["PageSize"] for q in queries] == [["1000"]] * 3
    assert "PageToken" not in queries[0]
    assert [q["Page"] for q in queries[1:]] == [["1"], ["2"]]


async def test_date_filters_keep_offset_and_bounds(fake: FakeStudio, base_url: str) -> None:
    made = fake.populate(executions=10, spacing=timedelta(hours=1))
    flow = made[0].flow_sid
    plus2 = timezone(timedelta(hours=2))
    date_from = made[3].date_created.astimezone(plus2)  # inclusive
    date_to = made[7].date_created.astimezone(plus2)  # exclusive
    async with client_for(fake, base_url) as client:
        got = [
            e["sid"]
            async for e in client.iter_executions(flow, date_from=date_from, date_to=date_to)
        ]

    assert sorted(got) == sorted(e.sid for e in made[3:7])
    raw = fake.log[0].query_string
    assert "%2B02" in raw and "+" not in raw
    assert parse_qs(raw)["DateCreatedFrom"] == [date_from.isoformat()]


async def test_date_to_rounds_up_and_naive_dates_are_refused(
    fake: FakeStudio, base_url: str
) -> None:
    made = fake.populate(executions=3)
    async with client_for(fake, base_url) as client:
        until = made[1].date_created + timedelta(microseconds=1)
        got = [
            e["sid"]
            async for e in client.iter_executions(made[0].flow_sid, date_from=None, date_to=until)
        ]
        assert sorted(got) == sorted(e.sid for e in made[:2])
        naive = datetime(2020, 1, 1)
        with pytest.raises(ValueError, match="naive"):
            client.iter_executions(made[0].flow_sid, date_from=naive, date_to=None)


async def test_429_without_retry_after_is_retried(fake: FakeStudio, base_url: str) -> None:
    [execution] = fake.populate(executions=1)
    calls: list[tuple[str, int | None]] = []
    retries: list[str] = []
    fake.inject(429, 2)
    async with client_for(
        fake, base_url, on_call=lambda *a: calls.append(a), on_retry=retries.append
    ) as client:
        got = await client.fetch_execution(execution.flow_sid, execution.sid)

    assert got["sid"] == execution.sid
    assert calls == [("execution", 429), ("execution", 429), ("execution", 200)]
    assert retries == ["execution", "execution"]
    assert client.rate_limiter.rate < 1000.0  # a 429 slows the shared limiter


async def test_429_retry_after_is_honoured_and_capped(fake: FakeStudio, base_url: str) -> None:
    [execution] = fake.populate(executions=1)
    fake.inject(429, retry_after=1)
    async with client_for(fake, base_url, backoff_cap=30.0) as client:
        await client.fetch_execution(execution.flow_sid, execution.sid)
    first, retry = fake.log
    assert retry.started - first.finished >= 0.9

    fake.reset_log()
    fake.inject(429, retry_after=3600)
    async with client_for(fake, base_url, backoff_cap=0.2) as client:
        with pytest.raises(StudioRetryLater) as later:  # the item waits in the queue
            await client.fetch_execution(execution.flow_sid, execution.sid)
    assert later.value.retry_after == 300.0 and fake.count() == 1  # capped at the maximum


async def test_retries_stop_after_max_retries(fake: FakeStudio, base_url: str) -> None:
    [execution] = fake.populate(executions=1)
    fake.inject(429, 10)
    async with client_for(fake, base_url, max_retries=3) as client:
        with pytest.raises(StudioUnavailable, match="after 4 attempts") as caught:
            await client.fetch_execution(execution.flow_sid, execution.sid)
    assert fake.count() == 4
    assert caught.value.status == 429


async def test_503_is_retried(fake: FakeStudio, base_url: str) -> None:
    [execution] = fake.populate(executions=1, steps=1)
    fake.inject(503, 2, endpoint="step_context")
    step = execution.steps[0]
    async with client_for(fake, base_url) as client:
        got = await client.fetch_step_context(execution.flow_sid, execution.sid, step.sid)
    assert got["context"] == step.context
    assert [r.status for r in fake.log] == [503, 503, 200]


async def test_transport_errors_are_retried_then_unavailable(fake: FakeStudio) -> None:
    calls: list[tuple[str, int | None]] = []
    client = client_for(
        fake, "http://127.0.0.1:9", max_retries=2, on_call=lambda *a: calls.append(a)
    )
    async with client:
        with pytest.raises(StudioUnavailable) as caught:
            await client.fetch_flow(fake.new_sid("FW"))
    assert calls == [("flow", None)] * 3
    assert SECRET not in str(caught.value)


async def test_timeout_is_retried(fake: FakeStudio, base_url: str) -> None:
    flow = fake.add_flow()
    fake.latency = 0.3
    calls: list[tuple[str, int | None]] = []
    client = client_for(
        fake, base_url, timeout=0.05, max_retries=1, on_call=lambda *a: calls.append(a)
    )
    async with client:
        with pytest.raises(StudioUnavailable, match="TimeoutError"):
            await client.fetch_flow(flow.sid)
    assert calls == [("flow", None)] * 2


async def test_404_is_gone_without_retry(fake: FakeStudio, base_url: str) -> None:
    gone, expired = fake.populate(executions=2)
    fake.mark_gone(gone.sid)
    fake.expire_execution(expired.sid)
    async with client_for(fake, base_url) as client:
        with pytest.raises(StudioGone, match="20404") as caught:
            await client.fetch_execution(gone.flow_sid, gone.sid)
        with pytest.raises(StudioGone):
            await client.fetch_execution_context(expired.flow_sid, expired.sid)
        with pytest.raises(StudioGone):
            await anext(client.iter_steps(expired.flow_sid, expired.sid))
    assert caught.value.status == 404 and caught.value.code == 20404
    assert fake.count() == 3


async def test_401_fails_at_once_and_hides_the_password(fake: FakeStudio, base_url: str) -> None:
    flow = fake.add_flow()
    client = client_for(fake, base_url)
    fake.credentials = (fake.credentials[0], "rotated")  # the secret was revoked
    async with client:
        with pytest.raises(StudioCredentialsError) as caught:
            await client.fetch_flow(flow.sid)
    message = str(caught.value)
    assert "SINK_TWILIO_API_KEY_SID" in message and "SINK_TWILIO_API_KEY_SECRET" in message
    assert SECRET not in message
    assert fake.count() == 1


async def test_other_4xx_summarizes_twilio_error(fake: FakeStudio, base_url: str) -> None:
    flow = fake.add_flow()
    fake.inject(400)
    async with client_for(fake, base_url) as client:
        with pytest.raises(StudioApiError) as caught:
            await client.fetch_flow(flow.sid)
    assert type(caught.value) is StudioApiError
    assert "HTTP 400" in str(caught.value) and "20001" in str(caught.value)
    assert fake.count() == 1


def test_password_not_in_repr() -> None:
    credentials = StudioCredentials("SK" + "0" * 32, SECRET)
    assert SECRET not in repr(credentials)
    assert "SK" in repr(credentials)


async def test_bad_sids_are_refused_before_any_request(fake: FakeStudio, base_url: str) -> None:
    flow = fake.add_flow()
    async with client_for(fake, base_url) as client:
        with pytest.raises(StudioApiError, match="Execution SID"):
            await client.fetch_execution(flow.sid, "FN../../Flows")
        with pytest.raises(StudioApiError, match="revision"):
            await client.fetch_flow_revision(flow.sid, "../x")
    assert fake.count() == 0


async def test_rate_limit_is_respected_at_the_fake(fake: FakeStudio, base_url: str) -> None:
    flow = fake.add_flow()
    limiter = RateLimiter(20.0, burst=2)
    async with client_for(fake, base_url, rate_limiter=limiter, max_concurrency=30) as client:
        await asyncio.gather(*(client.fetch_flow(flow.sid) for _ in range(30)))
    assert fake.count("flow", 200) == 30
    assert fake.max_in_window(1.0) <= 20 + 2 + 1  # rate + burst, one for timer jitter


async def test_concurrency_cap_is_respected_at_the_fake(fake: FakeStudio, base_url: str) -> None:
    flow = fake.add_flow()
    fake.latency = 0.05
    async with client_for(fake, base_url, max_concurrency=3) as client:
        await asyncio.gather(*(client.fetch_flow(flow.sid) for _ in range(15)))
    assert fake.max_in_flight == 3


async def test_next_page_url_on_another_host_is_refused(aiohttp_server: AiohttpServer) -> None:
    flow = "FW" + "a" * 32

    async def page(request: web.Request) -> web.Response:
        meta = {"key": "executions", "next_page_url": "https://evil.example/v2/x?Page=1"}
        return web.json_response({"executions": [{"sid": "FN" + "b" * 32}], "meta": meta})

    app = web.Application()
    app.router.add_get(f"/v2/Flows/{flow}/Executions", page)
    server = await aiohttp_server(app)
    client = StudioClient(str(server.make_url("")), StudioCredentials("AC", SECRET))
    async with client:
        pages = client.iter_executions(flow, date_from=None, date_to=None)
        assert (await anext(pages))["sid"] == "FN" + "b" * 32
        with pytest.raises(StudioApiError, match=r"evil\.example"):
            await anext(pages)


def test_parse_retry_after() -> None:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert (
        parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now)
        == 30.0
    )
    assert (
        parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now) == 0.0
    )
    assert parse_retry_after("-5") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_limiter_slows_after_429_then_recovers() -> None:
    clock = [0.0]
    limiter = RateLimiter(10.0, slowdown_seconds=60.0, clock=lambda: clock[0])
    limiter.penalize(1.0)
    assert limiter.rate == 5.0
    limiter.penalize(1.0)
    assert limiter.rate == 2.5
    clock[0] = 61.0
    assert limiter.rate == 10.0
