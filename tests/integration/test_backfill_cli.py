"""``studio-sink backfill`` end to end: settings from the environment, a progress bar."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from pytest_aiohttp import AiohttpServer

from sink import cli
from tests.conftest import Sink
from tests.fakes.studio_api import create_app
from tests.fakes.studio_data import FakeStudio
from tests.integration.test_backfill import API_KEY, SECRET, events_for


@pytest.fixture
def fake() -> FakeStudio:
    return FakeStudio(username=API_KEY, password=SECRET)


@pytest.fixture
async def studio_env(
    fake: FakeStudio,
    aiohttp_server: AiohttpServer,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = await aiohttp_server(create_app(fake))
    for name, value in {
        "SINK_DATABASE_URL": database_url,
        "SINK_STUDIO_BASE_URL": str(server.make_url("")).rstrip("/"),
        "SINK_TWILIO_API_KEY_SID": API_KEY,
        "SINK_TWILIO_API_KEY_SECRET": SECRET,
        "SINK_BACKFILL_RATE_LIMIT": "500",
        "SINK_BACKFILL_WORKERS": "3",
        "SINK_LOG_LEVEL": "warning",
    }.items():
        monkeypatch.setenv(name, value)


async def run_cli(*args: str) -> int:
    return await asyncio.to_thread(cli.main, ["backfill", *args])


async def test_flow_backfill_with_progress_bar(
    studio_env: None,
    fake: FakeStudio,
    conn: asyncpg.Connection[Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    executions = fake.populate(executions=12, steps=2)
    code = await run_cli(
        "--flow",
        executions[0].flow_sid,
        "--since",
        "2019-05-10T20:51:29Z",
        "--until",
        "2019-05-10T20:51:39Z",
    )
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "backfill #1" in err and "11/11" in err and "item/s" in err  # bar: done, rate
    assert "11 items, 11 done, 0 gone (404: expired), 0 failed" in out
    assert await conn.fetchval("SELECT count(*) FROM studio.executions") == 10
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM studio.steps WHERE context_fetched_at IS NOT NULL"
        )
        == 20
    )
    row = await conn.fetchrow("SELECT kind, requested_by, status FROM studio.backfill_requests")
    assert tuple(row) == ("flow", "cli", "finished")


async def test_missing_reports_gone_and_failures(
    database_url: str,
    sink: Sink,
    studio_env: None,
    fake: FakeStudio,
    conn: asyncpg.Connection[Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    executions = fake.populate(executions=3, steps=2)
    for e in executions:
        assert (await sink.post(events_for(e)))[0] == 200
    fake.expire_execution(executions[0].sid)
    assert await run_cli("--missing", "--quiet") == 0
    out, err = capsys.readouterr()
    assert "3 items, 2 done, 1 gone (404: expired), 0 failed" in out
    assert f"gone {executions[0].sid}" in out and err == ""
    assert await run_cli("--missing", "--quiet") == 0  # nothing left; gone is not retried
    assert "0 items" in capsys.readouterr().out

    fake.credentials = (API_KEY, "rotated")  # Twilio no longer takes the configured secret
    rid = await conn.fetchval("SELECT studio.request_backfill($1)", executions[1].sid)
    assert await run_cli("--request", str(rid), "--quiet") == 1
    out, _ = capsys.readouterr()
    assert "0 failed, 1 waiting for credentials" in out and f"--request {rid}" in out
    assert f"waiting_for_credentials {executions[1].sid}: " in out
    assert "refused the credentials" in out and SECRET not in out
    fake.credentials = (API_KEY, SECRET)  # fixed: the waiting item proceeds
    assert await run_cli("--request", str(rid), "--quiet") == 0
    assert "1 items, 1 done, 0 gone (404: expired), 0 failed\n" in capsys.readouterr().out


async def test_bad_arguments_and_missing_credentials(
    studio_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert await run_cli("--execution", "FN123") == 2
    assert "not an Execution SID" in capsys.readouterr().err
    assert await run_cli("--flow", "FW" + "0" * 32) == 2
    assert "--flow needs --since" in capsys.readouterr().err
    monkeypatch.delenv("SINK_TWILIO_API_KEY_SID")
    assert await run_cli("--missing") == 2
    assert "SINK_TWILIO_API_KEY_SID" in capsys.readouterr().err
