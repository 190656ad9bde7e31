"""Backfill inside the running sink: SQL requests, the admin HTTP API, auto mode, metrics."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from pytest_aiohttp import AiohttpServer

from tests.conftest import Sink
from tests.fakes.studio_api import create_app
from tests.fakes.studio_data import FakeStudio
from tests.integration.test_backfill import API_KEY, SECRET, events_for

pytestmark = pytest.mark.through_pgbouncer


ADMIN = "admin-token-for-tests"
WAIT = 20.0  # generous: polled, never asserted on


@pytest.fixture
def fake() -> FakeStudio:
    return FakeStudio(username=API_KEY, password=SECRET)


@pytest.fixture
async def studio_url(fake: FakeStudio, aiohttp_server: AiohttpServer) -> str:
    server = await aiohttp_server(create_app(fake))
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
def studio_settings(studio_url: str) -> dict[str, Any]:
    return {
        "studio_base_url": studio_url,
        "twilio_api_key_sid": API_KEY,
        "twilio_api_key_secret": SECRET,
        "backfill_rate_limit": 500.0,
        "backfill_workers": 2,
        "admin_token": ADMIN,
    }


async def eventually(conn: asyncpg.Connection[Any], query: str, *args: Any) -> Any:
    deadline = time.monotonic() + WAIT
    while True:
        value = await conn.fetchval(query, *args)
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


async def without_context(conn: asyncpg.Connection[Any]) -> int:
    count: int = await conn.fetchval(
        "SELECT (SELECT count(*) FROM studio.steps WHERE context IS NULL)"
        " + (SELECT count(*) FROM studio.executions WHERE context IS NULL)"
    )
    return count


async def test_sql_request_is_picked_up_by_the_running_sink(
    direct_database_url: str,
    start_sink: Callable[..., Any],
    fake: FakeStudio,
    studio_settings: dict[str, Any],
) -> None:
    sink: Sink = await start_sink(**studio_settings)
    [execution] = fake.populate(executions=1, steps=3)
    assert (await sink.post(events_for(execution)))[0] == 200

    consumer = await asyncpg.connect(direct_database_url)
    try:
        rid = await consumer.fetchval("SELECT studio.request_backfill($1)", execution.sid)
        finished = await eventually(
            consumer,
            "SELECT status = 'finished' FROM studio.backfill_requests WHERE request_id = $1",
            rid,
        )
        assert finished
        assert await without_context(consumer) == 0
        row = await consumer.fetchrow(
            "SELECT requested_by, items_done FROM studio.backfill_requests"
        )
        assert tuple(row) == ("sql", 1)
        contexts = await consumer.fetch("SELECT step_sid, context FROM studio.steps")
        assert {r["step_sid"]: json.loads(r["context"]) for r in contexts} == {
            s.sid: s.context for s in execution.steps
        }
    finally:
        await consumer.close()


async def test_admin_endpoints_are_disabled_without_a_token(
    database_url: str,
    start_sink: Callable[..., Any],
) -> None:
    sink: Sink = await start_sink()
    for method, path in (("POST", "/backfill"), ("GET", "/backfill/1")):
        response = await sink.client.request(
            method, path, json={}, headers={"Authorization": "Bearer anything"}
        )
        assert response.status == 404
        body = await response.json()
        assert body["message"] == "admin endpoints are disabled: set SINK_ADMIN_TOKEN"


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/backfill", {}),
        ("/backfill", {"Authorization": "Bearer wrong-token"}),
        ("/backfill", {"Authorization": f"Basic {ADMIN}"}),
        (f"/backfill?token={ADMIN}", {}),
        (f"/backfill?access_token={ADMIN}", {"Authorization": f"Bearer {ADMIN}"}),
    ],
)
async def test_admin_endpoints_refuse_without_a_valid_bearer_token(
    database_url: str,
    start_sink: Callable[..., Any],
    studio_settings: dict[str, Any],
    path: str,
    headers: dict[str, str],
    conn: asyncpg.Connection[Any],
) -> None:
    sink: Sink = await start_sink(**studio_settings)
    body = {"execution_sids": ["FN" + "0" * 32]}
    response = await sink.client.post(path, json=body, headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert ADMIN not in await response.text()
    got = await sink.client.get(path.replace("/backfill", "/backfill/1"), headers=headers)
    assert got.status == 401
    assert await conn.fetchval("SELECT count(*) FROM studio.backfill_requests") == 0


async def test_http_request_202_then_progress_until_filled(
    database_url: str,
    start_sink: Callable[..., Any],
    fake: FakeStudio,
    studio_settings: dict[str, Any],
    conn: asyncpg.Connection[Any],
) -> None:
    sink: Sink = await start_sink(**studio_settings)
    executions = fake.populate(executions=4, steps=2)
    fake.expire_execution(executions[3].sid)
    auth = {"Authorization": f"Bearer {ADMIN}"}
    response = await sink.client.post(
        "/backfill",
        json={"flow_sid": executions[0].flow_sid, "since": "2019-05-10T00:00:00Z"},
        headers=auth,
    )
    assert response.status == 202, await response.text()
    accepted = await response.json()
    rid = accepted["request_id"]
    assert accepted["url"] == f"/backfill/{rid}" and "note" not in accepted

    deadline = time.monotonic() + WAIT
    while True:
        progress = await (await sink.client.get(f"/backfill/{rid}", headers=auth)).json()
        if progress["status"] == "finished" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert progress["status"] == "finished"
    assert (progress["items_total"], progress["items_done"], progress["items_failed"]) == (
        4,
        4,
        0,
    )  # the listing + 3 executions (the expired one is not listed)
    assert progress["kind"] == "flow" and progress["requested_by"] == "http"
    assert progress["finished_at"] is not None
    assert await without_context(conn) == 0
    assert await conn.fetchval("SELECT count(*) FROM studio.steps") == 6

    metrics = await (await sink.client.get("/metrics")).text()
    assert 'sink_backfill_items_total{outcome="done"} 4.0' in metrics
    assert 'sink_studio_api_calls_total{endpoint="step_context",status="200"} 6.0' in metrics
    assert "sink_backfill_queue_depth" in metrics

    missing = await sink.client.get("/backfill/999999", headers=auth)
    assert missing.status == 404


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"execution_sids": ["FN123"]}, "not an Execution SID"),
        ({"execution_sids": []}, "non-empty list"),
        ({"flow_sid": "FW" + "a" * 32}, "'since' is required"),
        ({"flow_sid": "FW" + "a" * 32, "since": "yesterday"}, "not ISO 8601"),
        ({"flow_sid": "FWnope", "since": "2026-01-01"}, "not a Flow SID"),
        ({"flow_sid": "FW" + "a" * 32, "since": "2030-01-01T00:00:00Z"}, "is empty"),
        ([], "JSON object"),
        (
            {"execution_sids": ["FN" + "0" * 32], "account_sid": "ACnope"},
            "'account_sid' is not an Account SID: an Account SID is AC followed by 32 hex digits",
        ),
        (
            {"flow_sid": "FW" + "a" * 32, "since": "2026-01-01", "account_sid": 12},
            "or leave 'account_sid' out",
        ),
    ],
)
async def test_http_request_validation(
    database_url: str,
    start_sink: Callable[..., Any],
    studio_settings: dict[str, Any],
    body: Any,
    message: str,
    conn: asyncpg.Connection[Any],
) -> None:
    sink: Sink = await start_sink(**studio_settings)
    response = await sink.client.post(
        "/backfill", json=body, headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert response.status == 400
    assert message in (await response.json())["message"]
    assert await conn.fetchval("SELECT count(*) FROM studio.backfill_requests") == 0


async def test_http_request_names_its_account(
    database_url: str,
    start_sink: Callable[..., Any],
    fake: FakeStudio,
    studio_settings: dict[str, Any],
    conn: asyncpg.Connection[Any],
) -> None:
    sink: Sink = await start_sink(**studio_settings)
    [execution] = fake.populate(executions=1, steps=2)
    auth = {"Authorization": f"Bearer {ADMIN}"}
    body = {"flow_sid": execution.flow_sid, "since": "2019-05-10", "account_sid": fake.account_sid}
    response = await sink.client.post("/backfill", json=body, headers=auth)
    assert response.status == 202, await response.text()
    accepted = await response.json()
    assert "note" not in accepted  # the API key set without an Account SID serves it
    rid = accepted["request_id"]
    stored = await conn.fetch(
        "SELECT account_sid FROM studio.backfill_requests WHERE request_id = $1"
        " UNION ALL SELECT account_sid FROM studio.backfill_items"
        " WHERE request_id = $1 AND kind = 'flow_range'",
        rid,
    )
    assert [r["account_sid"] for r in stored] == [fake.account_sid] * 2  # request, listing

    deadline = time.monotonic() + WAIT
    while True:
        progress = await (await sink.client.get(f"/backfill/{rid}", headers=auth)).json()
        if progress["status"] == "finished" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert progress["status"] == "finished", progress
    assert progress["account_sid"] == fake.account_sid
    assert (progress["items_done"], progress["items_waiting"]) == (2, 0), progress["failures"]
    assert "note" not in progress
    assert await without_context(conn) == 0


async def test_http_request_for_an_account_without_credentials_waits(
    database_url: str,
    start_sink: Callable[..., Any],
    studio_url: str,
    fake: FakeStudio,
    conn: asyncpg.Connection[Any],
) -> None:
    # no REST credentials at all: no API key, no account with a token
    sink: Sink = await start_sink(studio_base_url=studio_url, backfill_workers=2, admin_token=ADMIN)
    other = "AC" + "b" * 32
    auth = {"Authorization": f"Bearer {ADMIN}"}
    response = await sink.client.post(
        "/backfill",
        json={"execution_sids": ["FN" + "1" * 32, "FN" + "2" * 32], "account_sid": other},
        headers=auth,
    )
    assert response.status == 202, await response.text()
    accepted = await response.json()
    assert f"account {other} has no REST credentials" in accepted["note"]
    assert "SINK_ACCOUNTS_FILE" in accepted["note"]
    rid = accepted["request_id"]

    deadline = time.monotonic() + WAIT
    while True:
        progress = await (await sink.client.get(f"/backfill/{rid}", headers=auth)).json()
        if progress["status"] not in ("queued", "running") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert progress["status"] == "waiting_for_credentials", progress
    assert progress["account_sid"] == other
    assert (progress["items_total"], progress["items_waiting"], progress["items_failed"]) == (
        2,
        2,
        0,
    )
    assert progress["finished_at"] is None
    assert "2 items wait for their account's credentials" in progress["note"]
    assert [f["state"] for f in progress["failures"]] == ["waiting_for_credentials"] * 2
    assert all(
        f"account {other} has no REST credentials" in f["reason"] for f in progress["failures"]
    )
    assert fake.log == []  # nothing was called without credentials

    deadline = time.monotonic() + WAIT  # the gauge is refreshed every POLL_SECONDS
    while True:
        metrics = await (await sink.client.get("/metrics")).text()
        if "sink_backfill_items_waiting 2.0" in metrics or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert "sink_backfill_items_waiting 2.0" in metrics
    assert "sink_backfill_queue_depth 0.0" in metrics
    assert other not in metrics  # no SID label


async def test_auto_backfill_fills_each_ended_execution(
    database_url: str,
    start_sink: Callable[..., Any],
    fake: FakeStudio,
    studio_settings: dict[str, Any],
    conn: asyncpg.Connection[Any],
) -> None:
    sink: Sink = await start_sink(**studio_settings, auto_backfill=True)
    running, ended = fake.populate(executions=2, steps=2)
    assert (await sink.post(events_for(running, ended=False)))[0] == 200
    assert (await sink.post(events_for(ended)))[0] == 200
    filled = await eventually(
        conn,
        "SELECT (SELECT count(*) FROM studio.steps WHERE execution_sid = $1"
        " AND context IS NOT NULL) = 2 AND (SELECT context IS NOT NULL FROM studio.executions"
        " WHERE execution_sid = $1)",
        ended.sid,
    )
    assert filled
    rows = await conn.fetch("SELECT requested_by, items_total FROM studio.backfill_requests")
    assert [tuple(r) for r in rows] == [("auto", 1)]
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM studio.steps WHERE execution_sid = $1 AND context IS NOT NULL",
            running.sid,
        )
        == 0
    )
