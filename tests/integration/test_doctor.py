"""``studio-sink doctor`` against a real database, with faults planted one at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from sink import cli
from sink.commands import doctor
from sink.db.pool import Conn
from tests.conftest import Sink
from tests.support.studio import execution_story
from tests.support.twilio import TOKEN

PUBLIC_URL = "https://sink.example.com/events"


@pytest.fixture
def run_doctor(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., Any]:
    """``studio-sink doctor`` with these SINK_* settings (a clean setup unless told):
    (exit code, {check name: its line})."""

    async def run(**env: str | None) -> tuple[int, dict[str, str]]:
        settings = {
            "DATABASE_URL": database_url,
            "TWILIO_AUTH_TOKEN": TOKEN,
            "PUBLIC_URL": PUBLIC_URL,
            "LOG_LEVEL": "warning",
        }
        settings.update({name.upper(): value for name, value in env.items()})
        for name, value in settings.items():
            if value is None:
                monkeypatch.delenv(f"SINK_{name}", raising=False)
            else:
                monkeypatch.setenv(f"SINK_{name}", value)
        capsys.readouterr()
        code = await asyncio.to_thread(cli.main, ["doctor"])
        out = capsys.readouterr().out
        lines = [line for line in out.splitlines() if line[:1] in (doctor.OK, doctor.FAILED)]
        assert len(lines) == len(doctor.CHECKS), out
        return code, {line[2:].split(":", 1)[0]: line for line in lines}

    return run


def failed(lines: dict[str, str]) -> list[str]:
    return [name for name, line in lines.items() if line.startswith(doctor.FAILED)]


def with_password(url: str) -> tuple[str, str]:
    """The URL with a password (the test server trusts its socket, so any will do)."""
    parts = urlsplit(url)
    if parts.password:
        return url, parts.password
    user, _, where = parts.netloc.rpartition("@")
    secret = "hunter2-db-secret"
    netloc = f"{user.partition(':')[0] or 'postgres'}:{secret}@{where}"
    return urlunsplit(parts._replace(netloc=netloc)), secret


async def test_a_clean_setup_passes_every_check(
    run_doctor: Callable[..., Any], database_url: str
) -> None:
    url, secret = with_password(database_url)
    code, lines = await run_doctor(database_url=url)
    assert code == 0 and failed(lines) == []
    assert secret not in lines["database"] and ":***@" in lines["database"]
    assert list(lines) == [
        "database",
        "auth tokens",
        "public URL",
        "signature failures (last hour)",
        "synchronous replication",
    ]
    assert TOKEN not in "".join(lines.values())


@pytest.mark.parametrize(
    ("public_url", "expected"),
    [
        (None, "SINK_PUBLIC_URL is not set"),
        ("http://sink.example.com/events", "is not an https URL"),
    ],
)
async def test_a_missing_or_plain_http_public_url_fails(
    run_doctor: Callable[..., Any], public_url: str | None, expected: str
) -> None:
    code, lines = await run_doctor(public_url=public_url)
    assert code == 1 and failed(lines) == ["public URL"]
    assert expected in lines["public URL"] and "https://" in lines["public URL"]


async def test_no_token_fails_unless_verification_is_off(
    run_doctor: Callable[..., Any],
) -> None:
    code, lines = await run_doctor(twilio_auth_token=None)
    assert code == 1 and failed(lines) == ["auth tokens"]
    assert "SINK_TWILIO_AUTH_TOKEN" in lines["auth tokens"]
    code, lines = await run_doctor(twilio_auth_token=None, verify_signature="false")
    assert code == 0 and "SINK_VERIFY_SIGNATURE=false" in lines["auth tokens"]


async def test_a_quarantined_delivery_fails_the_check_with_its_reason(
    sink: Sink, run_doctor: Callable[..., Any]
) -> None:
    assert (await sink.post(execution_story(1), token="wrong-token"))[0] == 401
    assert (await sink.post(execution_story(1), token="wrong-token"))[0] == 401
    code, lines = await run_doctor()
    assert code == 1 and failed(lines) == ["signature failures (last hour)"]
    line = lines["signature failures (last hour)"]
    assert "2 deliveries refused and quarantined (bad_signature: 2)" in line
    assert "studio-sink quarantine retry" in line


async def test_a_schema_behind_fails_with_the_migration_to_run(
    conn: asyncpg.Connection[Any], run_doctor: Callable[..., Any]
) -> None:
    last = await conn.fetchval(
        "DELETE FROM sink.schema_migrations WHERE version = (SELECT max(version)"
        " FROM sink.schema_migrations) RETURNING name"
    )
    code, lines = await run_doctor()
    assert code == 1 and failed(lines) == ["database"]
    assert "schema is behind (1 pending" in lines["database"] and last in lines["database"]
    assert "studio-sink migrate" in lines["database"]


async def test_an_unreachable_database_fails_without_showing_its_password(
    run_doctor: Callable[..., Any],
) -> None:
    url = "postgresql://sink:hunter2-secret@127.0.0.1:1/studio"
    code, lines = await run_doctor(database_url=url, db_connect_timeout="1")
    assert code == 1
    assert failed(lines) == [
        "database",
        "signature failures (last hour)",
        "synchronous replication",  # each needs the database: none passes without it
    ]
    assert "cannot connect" in lines["database"] and "SINK_DATABASE_URL" in lines["database"]
    assert "hunter2" not in "".join(lines.values())


async def test_the_replication_check_reports_the_warning_it_is_given(
    database_url: str, make_settings: Callable[..., Any]
) -> None:
    async def asynchronous(conn: Conn) -> str | None:
        assert await conn.fetchval("SELECT 1") == 1  # it gets the doctor's connection
        return "the standby is asynchronous: set synchronous_mode"

    settings = make_settings(public_url=PUBLIC_URL)
    results = await doctor.run_checks(doctor.Doctor(settings, replication_warning=asynchronous))
    (replication,) = [r for r in results if r.name == "synchronous replication"]
    assert not replication.ok
    assert replication.line() == (
        "✘ synchronous replication: the standby is asynchronous: set synchronous_mode"
    )
    assert all(r.ok for r in results if r is not replication)
