"""Backfill per Twilio account, and token rotation, against a fake Studio API that serves each
account's resources to that account's credentials only.

The sink runs as ``serve`` runs it (the app, its backfill workers, its accounts holder),
over real HTTP and a real Postgres; requests come from SQL (``studio.request_backfill``) as a
consumer queues them, and the accounts file is rewritten and reloaded as an operator does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pytest_aiohttp import AiohttpServer

from sink import cli
from sink.backfill import queue as q
from sink.backfill.client import StudioClient, StudioCredentials, StudioCredentialsError
from sink.web.keys import ACCOUNTS
from tests.conftest import Sink
from tests.fakes.studio_api import create_app
from tests.fakes.studio_data import EPOCH, Execution, FakeStudio, RequestRecord
from tests.integration.test_backfill_service import eventually
from tests.support.studio import fake_execution_events

pytestmark = pytest.mark.through_pgbouncer


ACME = "AC" + "a" * 32
BETA = "AC" + "b" * 32
ACME_KEY, ACME_SECRET, ACME_TOKEN = "SK" + "a" * 32, "acme-key-secret", "acme-auth-token"
BETA_TOKEN, BETA_NEXT = "beta-auth-token", "beta-next-token"


@pytest.fixture
def fake() -> FakeStudio:
    fake = FakeStudio(account_sid=ACME, username=ACME_KEY, password=ACME_SECRET)
    fake.accept(ACME, (ACME_KEY, ACME_SECRET), (ACME, ACME_TOKEN))
    fake.add_account(BETA, (BETA, BETA_TOKEN))
    return fake


@pytest.fixture
async def studio_url(fake: FakeStudio, aiohttp_server: AiohttpServer) -> str:
    server = await aiohttp_server(create_app(fake))
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
def accounts_file(tmp_path: Path) -> Path:
    return tmp_path / "accounts.toml"


def write_accounts(path: Path, *tables: str) -> None:
    path.write_text("\n".join(tables), "utf-8")


def acme(**extra: str) -> str:
    lines = [
        f"[accounts.{ACME}]",
        'label = "acme-prod"',
        f'auth_tokens = ["{ACME_TOKEN}"]',
        f'api_key_sid = "{ACME_KEY}"',
        f'api_key_secret = "{ACME_SECRET}"',
        *(f"{key} = {value}" for key, value in extra.items()),
    ]
    return "\n".join(lines) + "\n"


def beta(*tokens: str) -> str:
    listed = ", ".join(f'"{token}"' for token in tokens)
    return f'[accounts.{BETA}]\nlabel = "beta-staging"\nauth_tokens = [{listed}]\n'


def events_of(e: Execution) -> list[dict[str, Any]]:
    """The execution's events as its own account sends them (signed with its token)."""
    events = fake_execution_events(e)
    for event in events:
        event["data"]["account_sid"] = e.account_sid
    return events


async def deliver(sink: Sink, token: str, *executions: Execution) -> None:
    for e in executions:
        status, answer = await sink.post(events_of(e), token=token)
        assert status == 200, answer


async def finished(conn: asyncpg.Connection[Any], rid: int) -> asyncpg.Record:
    assert await eventually(
        conn, "SELECT status = 'finished' FROM studio.backfill_requests WHERE request_id = $1", rid
    ), await conn.fetchrow("SELECT * FROM studio.backfill_requests WHERE request_id = $1", rid)
    row = await conn.fetchrow("SELECT * FROM studio.backfill_requests WHERE request_id = $1", rid)
    assert row is not None
    return row


async def request(conn: asyncpg.Connection[Any], *executions: Execution) -> list[int]:
    return [await conn.fetchval("SELECT studio.request_backfill($1)", e.sid) for e in executions]


async def filled(conn: asyncpg.Connection[Any], executions: list[Execution]) -> bool:
    """Every context of the executions and their steps stored, as the fake has them."""
    sids = [e.sid for e in executions] + [s.sid for e in executions for s in e.steps]
    rows = await conn.fetch(
        "SELECT execution_sid AS sid, context FROM studio.executions WHERE execution_sid = ANY($1)"
        " UNION ALL SELECT step_sid, context FROM studio.steps WHERE step_sid = ANY($1)",
        sids,
    )
    found = {r["sid"]: None if r["context"] is None else json.loads(r["context"]) for r in rows}
    wanted = {e.sid: e.context for e in executions}
    wanted.update({s.sid: s.context for e in executions for s in e.steps})
    return found == wanted


async def status_of(conn: asyncpg.Connection[Any], account: str) -> str:
    status: str = await conn.fetchval(
        "SELECT credentials_status FROM studio.accounts WHERE account_sid = $1", account
    )
    return status


def busiest_second(fake: FakeStudio, username: str) -> int:
    """Most calls made with that username that arrived within any one second."""
    times = sorted(r.started for r in fake.log if r.username == username)
    return max(
        (sum(1 for u in times if t <= u < t + 1.0) for t in times),
        default=0,
    )


@pytest.fixture
def start(
    start_sink: Callable[..., Any], studio_url: str, accounts_file: Path
) -> Callable[..., Any]:
    async def starter(**overrides: Any) -> Sink:
        values: dict[str, Any] = {
            "studio_base_url": studio_url,
            "accounts_file": accounts_file,
            "backfill_workers": 2,
            "backfill_rate_limit": 500.0,
        }
        sink: Sink = await start_sink(**(values | overrides))
        return sink

    return starter


@pytest.fixture
def no_wrong_account(fake: FakeStudio) -> Iterator[None]:
    """After the test: the fake never saw one account's credentials asked for another
    account's resource (it would have answered 401)."""
    yield
    assert fake.wrong_account_calls() == 0


# -- the fake enforces accounts -------------------------------------------------------------


async def test_the_fake_refuses_another_accounts_credentials(
    fake: FakeStudio, studio_url: str
) -> None:
    [theirs] = fake.populate(1, 1, flow=fake.add_flow(account_sid=BETA))

    def client(user: str, password: str) -> StudioClient:
        return StudioClient(studio_url, StudioCredentials(user, password), backoff_base=0.001)

    for user, password in [(ACME_KEY, ACME_SECRET), (BETA, "wrong")]:  # ACME's valid key
        async with client(user, password) as wrong:
            with pytest.raises(StudioCredentialsError, match="HTTP 401"):
                await wrong.fetch_execution(theirs.flow_sid, theirs.sid)
    async with client(ACME_KEY, ACME_SECRET) as other:
        assert [f async for f in other.iter_flows()] == []  # its own flows only: none
    async with client(BETA, BETA_TOKEN) as right:
        assert (await right.fetch_execution(theirs.flow_sid, theirs.sid))["sid"] == theirs.sid
        assert [f["sid"] async for f in right.iter_flows()] == [theirs.flow_sid]
    assert fake.wrong_account_calls() == 1  # ACME's key asked for BETA's execution
    assert fake.count(status=401) == 2  # that, and the wrong token


# -- each item with its account's credentials --------------------------------------------------


async def test_two_accounts_each_backfilled_with_its_own_credentials_and_rate_limit(
    fake: FakeStudio,
    start: Callable[..., Any],
    accounts_file: Path,
    conn: asyncpg.Connection[Any],
    no_wrong_account: None,
) -> None:
    ours = fake.populate(2, 2)
    theirs = fake.populate(4, 2, flow=fake.add_flow(account_sid=BETA))
    write_accounts(accounts_file, acme(backfill_rate_limit="5"), beta(BETA_TOKEN))
    sink = await start()
    await deliver(sink, ACME_TOKEN, *ours)
    await deliver(sink, BETA_TOKEN, *theirs)

    rids = await request(conn, *ours, *theirs)
    for rid in rids:
        assert (await finished(conn, rid))["items_done"] == 1

    assert await filled(conn, ours + theirs)
    assert fake.count(status=401) == 0
    calls = len(fake.log)
    # ACME through its API key (preferred), BETA with its SID and token: nothing else
    assert (
        fake.count(username=ACME_KEY, account_sid=ACME)
        + fake.count(username=BETA, account_sid=BETA)
        == calls
    )
    assert fake.count(username=BETA) == 4 * (2 + 1 + 2) + 2  # + its flow and revision
    # each account under its own limit: ACME's 5 calls/s, BETA's 500 (the default here)
    assert busiest_second(fake, ACME_KEY) <= 5 + 1 < busiest_second(fake, BETA)
    limits = await conn.fetch("SELECT key FROM sink.rate_limits ORDER BY key")
    assert [r["key"] for r in limits] == [ACME, BETA]  # one shared limit per account
    assert await status_of(conn, ACME) == await status_of(conn, BETA) == "ok"


async def test_an_account_without_credentials_waits_and_proceeds_once_it_has_them(
    fake: FakeStudio,
    start: Callable[..., Any],
    accounts_file: Path,
    conn: asyncpg.Connection[Any],
    no_wrong_account: None,
) -> None:
    theirs = fake.populate(3, 1, flow=fake.add_flow(account_sid=BETA))
    write_accounts(accounts_file, acme())  # BETA is not configured yet
    sink = await start()
    since, until = EPOCH, EPOCH.replace(year=EPOCH.year + 1)
    rid = await q.enqueue(
        conn, "flow", "sql", flow_sid=theirs[0].flow_sid, since=since, until=until, account_sid=BETA
    )

    assert await eventually(
        conn,
        "SELECT items_waiting = 1 AND status = 'waiting_for_credentials'"
        " FROM studio.backfill_requests WHERE request_id = $1",
        rid,
    )
    item = await conn.fetchrow(
        "SELECT state, attempts, account_sid, reason FROM studio.backfill_items"
    )
    assert (item["state"], item["attempts"], item["account_sid"]) == (
        "waiting_for_credentials",
        0,
        BETA,
    )
    assert f"account {BETA} has no REST credentials" in item["reason"]
    assert "SINK_ACCOUNTS_FILE" in item["reason"]
    assert fake.log == []  # nothing was called without credentials

    write_accounts(accounts_file, acme(), beta(BETA_TOKEN))
    assert sink.client.app[ACCOUNTS].reload()  # SIGHUP (or the watch) does this
    row = await finished(conn, rid)
    assert (row["items_done"], row["items_failed"], row["items_waiting"]) == (4, 0, 0)
    assert await filled(conn, theirs)
    assert fake.count(status=401) == 0 and fake.count(username=ACME_KEY) == 0


async def test_refused_credentials_mark_the_account_invalid_and_its_items_wait(
    fake: FakeStudio,
    start: Callable[..., Any],
    accounts_file: Path,
    conn: asyncpg.Connection[Any],
    no_wrong_account: None,
) -> None:
    ours = fake.populate(2, 1)
    theirs = fake.populate(3, 1, flow=fake.add_flow(account_sid=BETA))
    write_accounts(accounts_file, acme(), beta(BETA_TOKEN))
    sink = await start()
    await deliver(sink, ACME_TOKEN, *ours)
    await deliver(sink, BETA_TOKEN, *theirs)
    fake.accept(BETA, (BETA, BETA_NEXT))  # the token was changed in Twilio only

    beta_rid = await conn.fetchval(
        "SELECT sink.enqueue_executions('sql', $1)", [e.sid for e in theirs]
    )
    acme_rid = await conn.fetchval(
        "SELECT sink.enqueue_executions('sql', $1)", [e.sid for e in ours]
    )
    assert (await finished(conn, acme_rid))["items_done"] == 2  # the other account goes on
    assert await eventually(
        conn,
        "SELECT items_waiting = 3 FROM studio.backfill_requests WHERE request_id = $1",
        beta_rid,
    )
    assert await status_of(conn, BETA) == "invalid" and await status_of(conn, ACME) == "ok"
    request = await conn.fetchrow(
        "SELECT status, items_failed, error FROM studio.backfill_requests WHERE request_id = $1",
        beta_rid,
    )
    assert tuple(request) == ("waiting_for_credentials", 0, None)  # no longer failed
    refused = fake.count(status=401)
    assert 1 <= refused <= 2 * 2  # the first item(s) found out; the others were parked
    reasons = await conn.fetch(
        "SELECT reason FROM studio.backfill_items WHERE request_id = $1", beta_rid
    )
    assert all("credentials_status 'invalid'" in r["reason"] for r in reasons)
    assert all(BETA_TOKEN not in r["reason"] for r in reasons)

    await asyncio.sleep(0.5)  # waiting items are not tried again meanwhile
    assert fake.count(status=401) == refused

    write_accounts(accounts_file, acme(), beta(BETA_NEXT))
    assert sink.client.app[ACCOUNTS].reload()
    row = await finished(conn, beta_rid)
    assert (row["items_done"], row["items_waiting"]) == (3, 0)
    assert await filled(conn, ours + theirs)
    assert await eventually(
        conn, "SELECT credentials_status = 'ok' FROM studio.accounts WHERE account_sid = $1", BETA
    )
    assert fake.count(status=401) == refused


# -- token rotation -----------------------------------------------------------------------


def promote_after(fake: FakeStudio, account: str, calls: int, new: tuple[str, str]) -> None:
    """Twilio promotes the new token (the old one stops working) at the ``calls``-th request
    from now: while a backfill is in flight."""
    seen = [0]

    def hook(record: RequestRecord) -> None:
        seen[0] += 1
        if seen[0] == calls:
            fake.accept(account, new)
            fake.on_request = None

    fake.on_request = hook


async def rotation_phase(conn: asyncpg.Connection[Any], executions: list[Execution]) -> None:
    for rid in await request(conn, *executions):
        row = await finished(conn, rid)
        assert (row["items_done"], row["items_failed"], row["items_waiting"]) == (1, 0, 0)


async def test_the_documented_rotation_in_the_accounts_file_loses_no_backfill(
    fake: FakeStudio,
    start: Callable[..., Any],
    accounts_file: Path,
    conn: asyncpg.Connection[Any],
    no_wrong_account: None,
) -> None:
    phases = [fake.populate(3, 3, flow=fake.add_flow(account_sid=BETA)) for _ in range(4)]
    write_accounts(accounts_file, acme(), beta(BETA_TOKEN))
    sink = await start()
    holder = sink.client.app[ACCOUNTS]
    for executions in phases:
        await deliver(sink, BETA_TOKEN, *executions)

    await rotation_phase(conn, phases[0])  # 1. the current token

    # 2. a secondary token is created in Twilio (both work), then added to the file
    fake.accept(BETA, (BETA, BETA_TOKEN), (BETA, BETA_NEXT))
    write_accounts(accounts_file, acme(), beta(BETA_TOKEN, BETA_NEXT))
    assert holder.reload()
    await rotation_phase(conn, phases[1])
    assert fake.count(status=401) == 0

    # 3. Twilio promotes it while a backfill runs: the current token is refused from then on
    promote_after(fake, BETA, 5, (BETA, BETA_NEXT))
    await rotation_phase(conn, phases[2])
    refused = fake.count(status=401)
    assert 1 <= refused <= 8  # calls in flight at that moment (SINK_BACKFILL_CONCURRENCY)
    assert all(r.username == BETA for r in fake.log if r.status == 401)
    assert await status_of(conn, BETA) == "ok"

    # 4. the file is brought up to date: the new token alone
    write_accounts(accounts_file, acme(), beta(BETA_NEXT))
    assert holder.reload()
    await rotation_phase(conn, phases[3])
    assert fake.count(status=401) == refused  # the remembered token was used first
    assert await filled(conn, [e for executions in phases for e in executions])
    assert (
        await conn.fetchval("SELECT count(*) FROM studio.backfill_items WHERE state <> 'done'") == 0
    )


async def test_the_documented_rotation_of_sink_twilio_auth_token_loses_no_backfill(
    fake: FakeStudio,
    start: Callable[..., Any],
    conn: asyncpg.Connection[Any],
    no_wrong_account: None,
) -> None:
    phases = [fake.populate(3, 3, flow=fake.add_flow(account_sid=BETA)) for _ in range(4)]
    one_account = {"accounts_file": None, "twilio_account_sid": BETA}

    async def restart(previous: Sink | None, tokens: str) -> Sink:
        """A rollout with the new setting: SINK_TWILIO_AUTH_TOKEN=<tokens>."""
        if previous is not None:
            await previous.client.close()
        sink: Sink = await start(**one_account, twilio_auth_token=tokens)
        return sink

    sink = await restart(None, BETA_TOKEN)
    for executions in phases:
        await deliver(sink, BETA_TOKEN, *executions)
    await rotation_phase(conn, phases[0])

    fake.accept(BETA, (BETA, BETA_TOKEN), (BETA, BETA_NEXT))
    sink = await restart(sink, f"{BETA_TOKEN},{BETA_NEXT}")
    await rotation_phase(conn, phases[1])
    assert fake.count(status=401) == 0

    promote_after(fake, BETA, 5, (BETA, BETA_NEXT))
    await rotation_phase(conn, phases[2])
    refused = fake.count(status=401)
    assert 1 <= refused <= 8

    sink = await restart(sink, BETA_NEXT)
    await rotation_phase(conn, phases[3])
    assert fake.count(status=401) == refused
    assert await filled(conn, [e for executions in phases for e in executions])
    assert (
        await conn.fetchval("SELECT count(*) FROM studio.backfill_items WHERE state <> 'done'") == 0
    )


# -- studio-sink backfill with the accounts file ---------------------------------------------


async def run_cli(*args: str) -> int:
    return await asyncio.to_thread(cli.main, ["backfill", *args])


async def test_the_cli_backfills_each_account_and_asks_which_when_it_cannot_tell(
    fake: FakeStudio,
    studio_url: str,
    accounts_file: Path,
    database_url: str,
    conn: asyncpg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_wrong_account: None,
) -> None:
    for name in ("SINK_TWILIO_AUTH_TOKEN", "SINK_TWILIO_ACCOUNT_SID", "SINK_TWILIO_API_KEY_SID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {
        "SINK_DATABASE_URL": database_url,
        "SINK_STUDIO_BASE_URL": studio_url,
        "SINK_ACCOUNTS_FILE": str(accounts_file),
        "SINK_BACKFILL_RATE_LIMIT": "500",
        "SINK_BACKFILL_WORKERS": "3",
        "SINK_LOG_LEVEL": "error",
    }.items():
        monkeypatch.setenv(name, value)
    write_accounts(accounts_file, acme(), beta(BETA_TOKEN))
    fake.add_flow(friendly_name="acme one")
    fake.add_flow(friendly_name="acme two")
    theirs = fake.populate(5, 1, flow=fake.add_flow(account_sid=BETA, friendly_name="beta"))
    flow = theirs[0].flow_sid
    window = ["--flow", flow, "--since", "2019-05-10T00:00:00Z", "--quiet"]

    assert await run_cli(*window) == 1  # two accounts, and nothing stored names the flow's
    out = capsys.readouterr().out
    assert "1 failed" in out and "--account AC" in out and fake.log == []

    assert await run_cli(*window, "--account", BETA) == 0
    assert "6 items, 6 done, 0 gone (404: expired), 0 failed\n" in capsys.readouterr().out
    assert await filled(conn, theirs)

    assert await run_cli("--flows", "--quiet") == 0  # every flow of each account
    assert "3 items, 3 done" in capsys.readouterr().out
    flows = await conn.fetch("SELECT friendly_name, account_sid FROM studio.flows ORDER BY 1")
    assert [tuple(r) for r in flows] == [
        ("acme one", ACME),
        ("acme two", ACME),
        ("beta", BETA),
    ]
    assert fake.count(status=401) == 0
    assert fake.count("flows", username=ACME_KEY) == fake.count("flows", username=BETA) == 1

    assert await run_cli("--missing", "--account", "AC" + "c" * 32) == 2
    assert f"account AC{'c' * 32} has no REST credentials" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # argparse's own exit
        await run_cli("--missing", "--account", "AC123")
    assert refused.value.code == 2
    assert "an Account SID is AC followed by 32 hex digits" in capsys.readouterr().err
