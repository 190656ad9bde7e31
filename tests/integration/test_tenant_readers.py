"""Per-tenant readers: a role granted account A reads A's rows through the studio views, and
not one row of account B (row-level security under security_invoker views, migration 0014)."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from sink.cli import build_parser
from sink.config import Settings
from tests.conftest import Sink
from tests.support.studio import ACCOUNT, execution_story, sid, sink_test_event

_roles = itertools.count()
ACCOUNT_B = "AC" + "b" * 32


@dataclass(frozen=True)
class Tenant:
    account_sid: str
    flow_sid: str
    execution_sids: list[str]


def for_account(events: list[dict[str, Any]], account_sid: str) -> list[dict[str, Any]]:
    return [dict(e, data=dict(e["data"], account_sid=account_sid)) for e in events]


def sink_test_event_of(account_sid: str) -> dict[str, Any]:
    event = sink_test_event()
    return dict(event, id=sid("EV"), data=dict(event["data"], account_sid=account_sid))


async def deliver(sink: Sink, account_sid: str, executions: int) -> Tenant:
    """Executions of one flow of the account, and a sink test event, through the receiver."""
    flow = sid("FW")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    done = []
    for n in range(executions):
        story = for_account(
            execution_story(3, flow_sid=flow, start=start + timedelta(minutes=n)), account_sid
        )
        status, answer = await sink.post(story)
        assert status == 200 and answer.get("stored") == len(story), answer
        done.append(story[0]["data"]["execution_sid"])
    status, answer = await sink.post([sink_test_event_of(account_sid)])
    assert status == 200, answer
    return Tenant(account_sid, flow, done)


@pytest.fixture
async def tenants(sink: Sink, conn: asyncpg.Connection[Any]) -> tuple[Tenant, Tenant]:
    a = await deliver(sink, ACCOUNT, 2)
    b = await deliver(sink, ACCOUNT_B, 3)
    await conn.execute(
        "INSERT INTO sink.accounts (account_sid, label) VALUES ($1, 'tenant-a'), ($2, 'tenant-b')",
        a.account_sid,
        b.account_sid,
    )
    return a, b


@pytest.fixture
async def roles(conn: asyncpg.Connection[Any]) -> AsyncIterator[Callable[[str], str]]:
    """Unique role names for this test (roles belong to the whole server), dropped after."""
    made: list[str] = []

    def name(stem: str) -> str:
        made.append(f"{stem}_{os.getpid()}_{next(_roles)}")
        return made[-1]

    yield name
    for role in made:
        await conn.execute(f'DROP ROLE IF EXISTS "{role}"')


class As:
    """A connection of the test's superuser that runs each query under SET ROLE."""

    def __init__(self, conn: asyncpg.Connection[Any], role: str) -> None:
        self.conn, self.role = conn, role

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self.conn.transaction():
            await self.conn.execute(f'SET LOCAL ROLE "{self.role}"')
            return list(await self.conn.fetch(sql, *args))

    async def column(self, sql: str, *args: Any) -> list[Any]:
        return [row[0] for row in await self.fetch(sql, *args)]


async def studio_views(conn: asyncpg.Connection[Any]) -> list[str]:
    rows = await conn.fetch(
        "SELECT relname FROM pg_class WHERE relnamespace = 'studio'::regnamespace"
        " AND relkind = 'v' ORDER BY relname"
    )
    return [r["relname"] for r in rows]


def window() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - timedelta(days=1), now + timedelta(hours=1)


async def test_a_reader_sees_its_accounts_rows_and_none_of_another(
    conn: asyncpg.Connection[Any], tenants: tuple[Tenant, Tenant], roles: Callable[[str], str]
) -> None:
    a, b = tenants
    reader = roles("acme_reader")
    assert (
        await conn.fetchval("SELECT sink.grant_tenant_reader($1, $2)", reader, [a.account_sid])
        == "created"
    )
    view = As(conn, reader)

    assert sorted(await view.column("SELECT execution_sid FROM studio.executions")) == sorted(
        a.execution_sids
    )
    steps = await view.fetch("SELECT execution_sid, account_sid FROM studio.steps")
    assert len(steps) == 6 and {s["account_sid"] for s in steps} == {a.account_sid}
    assert await view.column("SELECT DISTINCT data ->> 'account_sid' FROM studio.events") == [
        a.account_sid
    ]
    assert await view.column("SELECT account_sid FROM studio.accounts") == [a.account_sid]

    since, until = window()
    edges = await view.fetch(
        "SELECT * FROM studio.transition_stats($1, $2, $3)", a.flow_sid, since, until
    )
    assert {(e["transitioned_from"], e["transitioned_to"], e["transitions"]) for e in edges} == {
        ("Trigger", "widget_0", 2),
        ("widget_0", "widget_1", 2),
        ("widget_1", "Ended", 2),
    }
    widgets = await view.fetch(
        "SELECT * FROM studio.widget_stats($1, $2, $3)", a.flow_sid, since, until
    )
    assert {w["widget"]: w["entered"] for w in widgets}["widget_0"] == 2
    funnel = await view.fetch(
        "SELECT * FROM studio.flow_funnel($1, ARRAY['Trigger', 'widget_0'], $2, $3)",
        a.flow_sid,
        since,
        until,
    )
    assert [f["executions"] for f in funnel] == [2, 2]
    assert await view.column("SELECT flow_sid FROM studio.flows_overview") == [a.flow_sid]
    assert await view.column("SELECT sum(executions)::int FROM studio.flow_outcomes") == [2]

    # account B's flow, asked for by name: nothing
    for function in ("transition_stats", "widget_stats", "subflow_stats"):
        assert (
            await view.fetch(
                f"SELECT * FROM studio.{function}($1, $2, $3)", b.flow_sid, since, until
            )
            == []
        )
    assert [
        f["executions"]
        for f in await view.fetch(
            "SELECT * FROM studio.flow_funnel($1, ARRAY['Trigger'], $2, $3)",
            b.flow_sid,
            since,
            until,
        )
    ] == [0]


async def test_no_studio_view_shows_a_row_of_another_account(
    sink: Sink,
    conn: asyncpg.Connection[Any],
    tenants: tuple[Tenant, Tenant],
    roles: Callable[[str], str],
) -> None:
    """Every view, whether or not it has an account column: not one of B's SIDs shows."""
    a, b = tenants
    b_sids = [b.account_sid, b.flow_sid, *b.execution_sids]
    # rows of no account: a rejected element, a delivery refused for its signature
    status, _ = await sink.post([dict(sink_test_event_of(b.account_sid), id=None)])
    assert status == 400
    status, _ = await sink.post([sink_test_event_of(b.account_sid)], token="not-the-token")
    assert status == 401
    erased = sid("FN")  # an erasure of one of B's executions (its audit row and tombstone)
    await conn.execute(
        "WITH e AS (INSERT INTO sink.erasures (requested_by, subject, execution_sid)"
        " VALUES ('cli', 'execution', $1) RETURNING erasure_id)"
        " INSERT INTO sink.erased_executions SELECT $1, now(), erasure_id FROM e",
        erased,
    )
    b_sids.append(erased)
    await conn.execute("SELECT studio.request_backfill($1::text)", b.execution_sids[0])
    await conn.execute("SELECT studio.request_backfill($1::text)", a.execution_sids[0])
    reader = roles("acme_reader")
    await conn.execute("SELECT sink.grant_tenant_reader($1, $2)", reader, [a.account_sid])
    view = As(conn, reader)
    seen_a = set()
    for name in await studio_views(conn):
        for row in await view.column(f"SELECT v::text FROM studio.{name} AS v"):
            assert not any(s in row for s in b_sids), f"studio.{name} shows account B: {row}"
            if any(s in row for s in (a.account_sid, a.flow_sid, *a.execution_sids)):
                seen_a.add(name)
    # and the reader still sees its own rows where they are
    assert {
        "executions",
        "steps",
        "events",
        "execution_summary",
        "execution_timeline",
        "flows_overview",
        "backfill_items",
        "accounts",
    } <= seen_a
    for name in ("deliveries", "rejected_events", "quarantine", "erasures", "erased_executions"):
        assert await conn.fetchval(f"SELECT count(*) FROM studio.{name}") > 0, name
        assert await view.fetch(f"SELECT * FROM studio.{name}") == [], name
    requests = await view.fetch("SELECT items_total FROM studio.backfill_requests")
    assert [r["items_total"] for r in requests] == [1]


async def test_a_role_without_grants_sees_nothing(
    conn: asyncpg.Connection[Any], tenants: tuple[Tenant, Tenant], roles: Callable[[str], str]
) -> None:
    a, _ = tenants
    reader = roles("revoked_reader")
    await conn.execute("SELECT sink.grant_tenant_reader($1, $2)", reader, [a.account_sid])
    assert await conn.fetchval("SELECT sink.revoke_tenant_reader($1)", reader) == 0
    view = As(conn, reader)
    since, until = window()
    for sql in (
        "SELECT * FROM studio.executions",
        "SELECT * FROM studio.steps",
        "SELECT * FROM studio.events",
        "SELECT * FROM studio.flows_overview",
        "SELECT * FROM studio.accounts",
    ):
        assert await view.fetch(sql) == [], sql
    assert (
        await view.fetch(
            "SELECT * FROM studio.transition_stats($1, $2, $3)", a.flow_sid, since, until
        )
        == []
    )
    # a role never granted anything cannot even read the views
    stranger = roles("stranger")
    await conn.execute(f'CREATE ROLE "{stranger}" NOLOGIN')
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await As(conn, stranger).fetch("SELECT * FROM studio.executions")


async def test_studio_reader_still_sees_every_account(
    conn: asyncpg.Connection[Any], tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    view = As(conn, "studio_reader")
    accounts = await view.column("SELECT DISTINCT account_sid FROM studio.executions ORDER BY 1")
    assert accounts == sorted([a.account_sid, b.account_sid])
    assert len(await view.fetch("SELECT * FROM studio.steps")) == 15
    assert len(await view.fetch("SELECT * FROM studio.events WHERE type LIKE '%test-event'")) == 2
    since, until = window()
    for tenant, n in ((a, 2), (b, 3)):
        edges = await view.fetch(
            "SELECT * FROM studio.transition_stats($1, $2, $3)", tenant.flow_sid, since, until
        )
        assert {e["transitions"] for e in edges} == {n}
    assert len(await view.fetch("SELECT * FROM studio.deliveries")) == 7


async def test_the_sink_pays_nothing_for_the_policies(conn: asyncpg.Connection[Any]) -> None:
    """The owner bypasses row-level security unless FORCE is set: it never is; and every
    studio view but the quarantine reads with its caller's rights."""
    forced = await conn.fetch(
        "SELECT relname FROM pg_class"
        " WHERE relnamespace = 'sink'::regnamespace AND relforcerowsecurity"
    )
    assert forced == []
    secured = await conn.fetch(
        "SELECT relname, coalesce(reloptions, '{}') AS options FROM pg_class"
        " WHERE relnamespace = 'studio'::regnamespace AND relkind = 'v'"
    )
    assert {r["relname"] for r in secured if "security_invoker=true" not in r["options"]} == {
        "quarantine"
    }
    # every sink table a tenant reader may read has its policy
    unguarded = await conn.fetch(
        "SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'sink'::regnamespace"
        " AND c.relkind IN ('r', 'p') AND NOT c.relrowsecurity"
        " AND has_table_privilege('studio_tenant_reader', c.oid, 'SELECT')"
    )
    assert unguarded == []


async def test_grants_refuse_what_would_leak(
    conn: asyncpg.Connection[Any], roles: Callable[[str], str]
) -> None:
    with pytest.raises(
        asyncpg.InvalidParameterValueError, match="not an Account SID: 'AC123'"
    ) as bad:
        await conn.execute("SELECT sink.grant_tenant_reader('x', ARRAY['AC123'])")
    assert "AC followed by 32 hex digits" in (bad.value.hint or "")
    with pytest.raises(asyncpg.InvalidParameterValueError, match="no Account SID given"):
        await conn.execute("SELECT sink.grant_tenant_reader('x', '{}')")
    analyst = roles("analyst")
    await conn.execute(f'CREATE ROLE "{analyst}" NOLOGIN IN ROLE studio_reader')
    with pytest.raises(asyncpg.InvalidParameterValueError, match="member of studio_reader"):
        await conn.execute("SELECT sink.grant_tenant_reader($1, $2)", analyst, [ACCOUNT])
    with pytest.raises(asyncpg.UndefinedObjectError, match="no role named"):
        await conn.execute("SELECT sink.revoke_tenant_reader($1)", roles("missing"))


async def test_grant_reader_command(
    conn: asyncpg.Connection[Any],
    make_settings: Callable[..., Settings],
    tenants: tuple[Tenant, Tenant],
    roles: Callable[[str], str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    a, b = tenants
    settings = make_settings()
    reader = roles("cli_reader")

    async def run(*argv: str) -> tuple[int, str]:
        args = build_parser().parse_args(["grant-reader", *argv])
        code: int = await args.handler(args, settings)
        return code, capsys.readouterr().out

    code, out = await run(reader, "--account", a.account_sid)
    assert code == 0 and "created (NOLOGIN)" in out, out
    assert not await conn.fetchval("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1", reader)
    code, out = await run(reader, "--account", b.account_sid)
    assert code == 0 and "existing role used" in out, out
    code, out = await run("--list")
    assert (
        f"{reader}\t{a.account_sid} (tenant-a)" in out
        and f"{reader}\t{b.account_sid} (tenant-b)" in out
    )
    assert len(await As(conn, reader).fetch("SELECT * FROM studio.executions")) == 5
    code, out = await run(reader, "--revoke", "--account", b.account_sid)
    assert code == 0 and "reads 1 account(s)" in out, out
    assert sorted(
        await As(conn, reader).column("SELECT execution_sid FROM studio.executions")
    ) == sorted(a.execution_sids)
    code, out = await run(reader, "--revoke")
    assert code == 0 and "now sees no rows" in out, out
    login = roles("login_reader")
    code, out = await run(login, "--account", a.account_sid, "--login")
    assert code == 0 and "created (LOGIN)" in out, out
    assert await conn.fetchval("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1", login)
    code, out = await run(login, "--account", "AC" + "0" * 32)
    assert "is not among the sink's accounts" in out, out
    code, out = await run("studio_reader", "--account", a.account_sid)
    assert code == 2 and "one of the sink's own roles" in out, out
    with pytest.raises(SystemExit):
        build_parser().parse_args(["grant-reader", reader, "--account", "AC-not-a-sid"])
