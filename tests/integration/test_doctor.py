"""``studio-sink doctor`` against a real database, fake Studio and Events APIs built from
Twilio's specs, and a running sink, with faults planted one at a time and together."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from pytest_aiohttp import AiohttpServer

from sink.commands import doctor
from sink.db.pool import Conn
from tests.conftest import Sink
from tests.fakes import events_api, studio_api
from tests.fakes.events_api import EventsAccount, FakeEvents
from tests.fakes.studio_data import FakeStudio
from tests.integration.test_connect import run_cli
from tests.support.studio import ACCOUNT, execution_story, sink_test_event
from tests.support.twilio import TOKEN

PUBLIC_URL = "https://sink.example.com/events"
TYPES = {
    "com.twilio.studio.flow.execution.started": 2,
    "com.twilio.studio.flow.execution.ended": 2,
    "com.twilio.studio.flow.step.ended": 1,
}
CHECK_NAMES = [
    "database",
    "accounts and tokens",
    "public URL",
    "REST credentials",
    "Event Streams",
    "last deliveries",
    "signature failures (last hour)",
    "synchronous replication",
]


@dataclass
class Twilio:
    """The fake Twilio APIs the doctor calls, set up as ``studio-sink connect`` leaves them."""

    studio: FakeStudio
    events: FakeEvents
    account: EventsAccount
    sink_sid: str
    subscription_sid: str
    env: dict[str, str]


@pytest.fixture
async def twilio(aiohttp_server: AiohttpServer) -> Twilio:
    studio = FakeStudio(username=ACCOUNT, password=TOKEN)
    events = FakeEvents()
    account = events.add_account(TOKEN, sid=ACCOUNT)
    sink_sid = events.add_sink(account, PUBLIC_URL)
    subscription_sid = events.add_subscription(account, sink_sid, TYPES)
    studio_server = await aiohttp_server(studio_api.create_app(studio))
    events_server = await aiohttp_server(events_api.create_app(events))
    env = {
        "TWILIO_ACCOUNT_SID": ACCOUNT,
        "STUDIO_BASE_URL": str(studio_server.make_url("")).rstrip("/"),
        "EVENTS_BASE_URL": str(events_server.make_url("")).rstrip("/"),
    }
    return Twilio(studio, events, account, sink_sid, subscription_sid, env)


@pytest.fixture
async def delivered(sink: Sink) -> Sink:
    """The sink has received a delivery and Twilio's test event from the account."""
    assert (await sink.post(execution_story(1)))[0] == 200
    assert (await sink.post([sink_test_event()]))[0] == 200
    return sink


@pytest.fixture
def run_doctor(
    database_url: str,
    twilio: Twilio,
    delivered: Sink,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Callable[..., Any]:
    """``studio-sink doctor`` with these SINK_* settings (a clean setup unless told):
    (exit code, {check name: its line})."""

    async def run(**env: str | None) -> tuple[int, dict[str, str]]:
        settings: dict[str, str | None] = {
            "DATABASE_URL": database_url,
            "TWILIO_AUTH_TOKEN": TOKEN,
            "PUBLIC_URL": PUBLIC_URL,
            "LOG_LEVEL": "warning",
            "ACCOUNTS_FILE": None,
            **twilio.env,
        }
        code, out, _ = await run_cli(["doctor"], settings, env, monkeypatch, capsys)
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
    assert code == 0 and failed(lines) == [], lines
    assert secret not in lines["database"] and ":***@" in lines["database"]
    assert list(lines) == CHECK_NAMES
    assert f"{ACCOUNT}: auth token works" in lines["REST credentials"]
    assert "subscribed to the 3 Studio types" in lines["Event Streams"]
    assert "last delivery 20" in lines["last deliveries"] and "s ago)" in lines["last deliveries"]
    assert "last test event 20" in lines["last deliveries"]
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
    assert code == 1 and failed(lines) == ["public URL", "Event Streams"]
    assert expected in lines["public URL"] and "https://" in lines["public URL"]
    assert "not checked: needs an https SINK_PUBLIC_URL (check 3)" in lines["Event Streams"]


async def test_no_token_fails_unless_verification_is_off(
    run_doctor: Callable[..., Any],
) -> None:
    code, lines = await run_doctor(twilio_auth_token=None, twilio_account_sid=None)
    assert code == 1 and failed(lines)[0] == "accounts and tokens"
    assert "SINK_TWILIO_AUTH_TOKEN" in lines["accounts and tokens"]
    assert "SINK_TWILIO_ACCOUNT_SID" in lines["REST credentials"]  # no account, no REST calls
    code, lines = await run_doctor(twilio_auth_token=None, verify_signature="false")
    assert "SINK_VERIFY_SIGNATURE=false" in lines["accounts and tokens"]
    assert not lines["accounts and tokens"].startswith(doctor.FAILED)


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
    assert code == 1 and failed(lines) == ["database", "last deliveries"]
    assert "schema is behind (1 pending" in lines["database"] and last in lines["database"]
    assert "studio-sink migrate" in lines["database"]
    assert "needs the database with a current schema" in lines["last deliveries"]


async def test_an_unreachable_database_fails_without_showing_its_password(
    run_doctor: Callable[..., Any],
) -> None:
    url = "postgresql://sink:hunter2-secret@127.0.0.1:1/studio"
    code, lines = await run_doctor(database_url=url, db_connect_timeout="1")
    assert code == 1
    assert failed(lines) == [
        "database",
        "last deliveries",
        "signature failures (last hour)",
        "synchronous replication",  # each needs the database: none passes without it
    ]
    assert "cannot connect" in lines["database"] and "SINK_DATABASE_URL" in lines["database"]
    assert "hunter2" not in "".join(lines.values())


async def test_the_replication_check_reports_the_warning_it_is_given(
    database_url: str, make_settings: Callable[..., Any], twilio: Twilio, delivered: Sink
) -> None:
    async def asynchronous(conn: Conn) -> str | None:
        assert await conn.fetchval("SELECT 1") == 1  # it gets the doctor's connection
        return "the standby is asynchronous: set synchronous_mode"

    settings = make_settings(
        public_url=PUBLIC_URL, **{name.lower(): value for name, value in twilio.env.items()}
    )
    results = await doctor.run_checks(doctor.Doctor(settings, replication_warning=asynchronous))
    (replication,) = [r for r in results if r.name == "synchronous replication"]
    assert not replication.ok
    assert replication.line() == (
        "✘ synchronous replication: the standby is asynchronous: set synchronous_mode"
    )
    assert all(r.ok for r in results if r is not replication), results


# -- planted faults: each fails its own check, with its own fix --------------------------


@dataclass
class Planted:
    twilio: Twilio
    conn: asyncpg.Connection[Any]
    tmp_path: Path


def _bad_accounts_file(p: Planted) -> dict[str, str | None]:
    path = p.tmp_path / "accounts.toml"
    path.write_text(f'[accounts.{ACCOUNT}]\nlabel = "acme"\nauth_token = ["{TOKEN}"]\n')
    return {"accounts_file": str(path), "twilio_account_sid": None}


def _wrong_rest_credentials(p: Planted) -> dict[str, str | None]:
    path = p.tmp_path / "accounts.toml"
    path.write_text(f'[accounts.{ACCOUNT}]\nlabel = "acme"\nauth_tokens = ["not-the-token-7c1d"]\n')
    return {"accounts_file": str(path), "twilio_account_sid": None}


def _no_sink(p: Planted) -> dict[str, str | None]:
    p.twilio.account.sinks.clear()
    p.twilio.account.subscriptions.clear()
    return {}


def _sink_elsewhere(p: Planted) -> dict[str, str | None]:
    config = p.twilio.account.sinks[p.twilio.sink_sid]["sink_configuration"]
    config["destination"] = "https://old.example.com/events"
    return {}


def _sink_failed(p: Planted) -> dict[str, str | None]:
    p.twilio.account.sinks[p.twilio.sink_sid]["status"] = "failed"
    return {}


def _type_missing(p: Planted) -> dict[str, str | None]:
    del p.twilio.account.subscriptions[p.twilio.subscription_sid]["types"][
        "com.twilio.studio.flow.step.ended"
    ]
    return {}


async def _no_delivery(p: Planted) -> dict[str, str | None]:
    await p.conn.execute("DELETE FROM sink.events")
    return {}


FAULTS: dict[str, tuple[Callable[[Planted], Any], list[str], list[str]]] = {
    "bad accounts file": (
        _bad_accounts_file,
        ["accounts and tokens", "REST credentials", "Event Streams", "last deliveries"],
        ["accounts.toml:3:", "unknown key 'auth_token'", "the keys are label, auth_tokens"],
    ),
    "wrong REST credentials": (
        _wrong_rest_credentials,
        ["REST credentials", "Event Streams"],
        [
            f"acme ({ACCOUNT}): every credential refused (auth token)",
            f"auth_tokens of [accounts.{ACCOUNT}] in SINK_ACCOUNTS_FILE",
            "HTTP 401",
        ],
    ),
    "missing sink": (
        _no_sink,
        ["Event Streams"],
        [
            f"no Event Streams sink sends to {PUBLIC_URL}/{ACCOUNT} or {PUBLIC_URL}",
            f"run `studio-sink connect --url {PUBLIC_URL}`",
        ],
    ),
    "sink pointing elsewhere": (
        _sink_elsewhere,
        ["Event Streams"],
        [
            "its webhook sinks send to https://old.example.com/events instead",
            "set SINK_PUBLIC_URL to it",
            "studio-sink connect --url",
        ],
    ),
    "sink not active": (
        _sink_failed,
        ["Event Streams"],
        ["is failed, not active", "studio-sink connect", "delete the sink"],
    ),
    "missing subscription type": (
        _type_missing,
        ["Event Streams"],
        ["no subscription sends it com.twilio.studio.flow.step.ended", "studio-sink connect"],
    ),
    "no delivery": (
        _no_delivery,
        ["last deliveries"],
        ["no event in the last 30 days", f"studio-sink connect --url {PUBLIC_URL} --account"],
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_a_planted_fault_fails_its_check_with_the_fix(
    fault: str,
    run_doctor: Callable[..., Any],
    twilio: Twilio,
    conn: asyncpg.Connection[Any],
    tmp_path: Path,
) -> None:
    plant, failing, fixes = FAULTS[fault]
    env = plant(Planted(twilio, conn, tmp_path))
    if asyncio.iscoroutine(env):
        env = await env
    code, lines = await run_doctor(**env)
    assert code == 1 and failed(lines) == failing, lines
    line = lines[failing[0]]
    for fix in fixes:
        assert fix in line, line
    assert TOKEN not in "".join(lines.values())
    assert "not-the-token" not in "".join(lines.values())


async def test_five_faults_at_once_are_each_reported_with_their_fix(
    run_doctor: Callable[..., Any],
    twilio: Twilio,
    sink: Sink,
    conn: asyncpg.Connection[Any],
    tmp_path: Path,
) -> None:
    """Two accounts: acme's sink points elsewhere, globex's credentials are wrong and it
    never delivered; the schema is current but SINK_PUBLIC_URL is plain http on the
    first run, and deliveries signed with a wrong token were refused."""
    globex = "AC" + "f" * 32
    twilio.events.add_account("globex-token", sid=globex)
    _sink_elsewhere(Planted(twilio, conn, tmp_path))
    path = tmp_path / "accounts.toml"
    path.write_text(
        f'[accounts.{ACCOUNT}]\nlabel = "acme"\nauth_tokens = ["{TOKEN}"]\n\n'
        f'[accounts.{globex}]\nlabel = "globex"\nauth_tokens = ["wrong-globex-token"]\n'
    )
    await conn.execute(
        "INSERT INTO sink.accounts (account_sid, label, credentials_status,"
        " credentials_checked_at) VALUES ($1, 'globex', 'invalid', now())",
        globex,
    )
    assert (await sink.post(execution_story(1), token="wrong-token"))[0] == 401
    env = {"accounts_file": str(path), "twilio_account_sid": None}

    code, lines = await run_doctor(public_url="http://sink.example.com/events", **env)
    assert code == 1
    assert "is not an https URL" in lines["public URL"]

    code, lines = await run_doctor(**env)
    assert code == 1
    assert failed(lines) == [
        "REST credentials",
        "Event Streams",
        "last deliveries",
        "signature failures (last hour)",
    ]
    rest = lines["REST credentials"]
    assert f"globex ({globex}): every credential refused (auth token)" in rest
    assert "the backfill found every credential refused" in rest
    assert f"acme ({ACCOUNT}): auth token works" in rest
    streams = lines["Event Streams"]
    assert "its webhook sinks send to https://old.example.com/events instead" in streams
    assert f"run `studio-sink connect --url {PUBLIC_URL} --account {ACCOUNT}`" in streams
    assert f"globex ({globex}): not checked: its REST credentials do not work" in streams
    arrivals = lines["last deliveries"]
    assert f"globex ({globex}): no event in the last 30 days" in arrivals
    assert f"acme ({ACCOUNT}): last delivery" in arrivals
    assert "studio-sink quarantine retry" in lines["signature failures (last hour)"]
    assert "wrong-globex-token" not in "".join(lines.values())
