"""Many accounts, one sink: each account's deliveries are checked against its own tokens
(``POST /events/{AccountSid}``) or every account's (``POST /events``), events must belong
to the account that signed them, each Twilio test event is recorded, and a reload of the
accounts file takes effect without a restart."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from sink import cli
from sink.web.keys import ACCOUNTS
from tests.conftest import Sink
from tests.integration.test_metrics import sample
from tests.support.studio import execution_story, sink_test_event

A = "AC" + "a1" * 16
B = "AC" + "b2" * 16
C = "AC" + "c3" * 16
TOKEN_A = "acme-auth-token-0123456789abcdef"
TOKEN_B = "beta-auth-token-0123456789abcdef"
TOKEN_B_NEXT = "beta-next-token-fedcba9876543210"
TOKEN_C = "gamma-auth-token-0123456789abcdef"
TEST_EVENT = "com.twilio.eventstreams.test-event"


def table(sid: str, label: str, *tokens: str) -> str:
    listed = ", ".join(f'"{t}"' for t in tokens)
    return f'[accounts.{sid}]\nlabel = "{label}"\nauth_tokens = [{listed}]\n'


def write_accounts(path: Path, *tables: str) -> Path:
    path.write_text("\n".join(tables))
    return path


def story_of(account: str, steps: int = 2) -> list[dict[str, Any]]:
    """One execution's events, as the account ``account`` sends them."""
    events = execution_story(steps)
    for event in events:
        event["data"]["account_sid"] = account
    return events


def twilio_test_event(account: str, test_id: str) -> dict[str, Any]:
    """Twilio's test event: ``id`` is the Account SID for every test; ``test_id`` is new."""
    return {**sink_test_event(), "id": account, "data": {"test_id": test_id}}


TABLES = (table(A, "acme-prod", TOKEN_A), table(B, "beta", TOKEN_B, TOKEN_B_NEXT))


@pytest.fixture
def accounts_file(tmp_path: Path) -> Path:
    return write_accounts(tmp_path / "accounts.toml", *TABLES)


@pytest.fixture
def run_cli(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., Any]:
    """``studio-sink ARGS`` in this process with SINK_ACCOUNTS_FILE=path: (exit, stdout)."""

    async def run(*args: str, accounts_file: Path) -> tuple[int, str]:
        monkeypatch.setenv("SINK_DATABASE_URL", database_url)
        monkeypatch.setenv("SINK_LOG_LEVEL", "warning")
        monkeypatch.setenv("SINK_ACCOUNTS_FILE", str(accounts_file))
        capsys.readouterr()
        code = await asyncio.to_thread(cli.main, list(args))
        return code, capsys.readouterr().out

    return run


@pytest.fixture
async def multi(start_sink: Callable[..., Any], accounts_file: Path) -> Sink:
    """A sink serving accounts A and B from the accounts file, and no other token."""
    started: Sink = await start_sink(accounts_file=str(accounts_file), twilio_auth_token="")
    return started


async def executions_by_account(conn: asyncpg.Connection[Any]) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT account_sid, count(*) AS n FROM studio.executions GROUP BY 1 ORDER BY 1"
    )
    return {row["account_sid"]: row["n"] for row in rows}


async def test_two_accounts_deliver_through_both_url_forms(
    multi: Sink, conn: asyncpg.Connection[Any]
) -> None:
    for account, token, path in (
        (A, TOKEN_A, f"/events/{A}"),
        (B, TOKEN_B_NEXT, f"/events/{B}"),  # either token of a rotation
        (A, TOKEN_A, "/events"),
        (B, TOKEN_B, "/events"),
    ):
        status, answer = await multi.post(story_of(account), token=token, path=path)
        assert (status, answer["stored"]) == (200, 4), (path, answer)
    assert await executions_by_account(conn) == {A: 2, B: 2}

    text = await (await multi.client.get("/metrics")).text()
    for label in ("acme-prod", "beta"):
        assert sample(text, "sink_deliveries_total", status="200", account=label) == 2
        stored = sample(
            text,
            "sink_events_total",
            type="com.twilio.studio.flow.step.ended",
            outcome="stored",
            account=label,
        )
        assert stored == 4
    for secret in (TOKEN_A, TOKEN_B, TOKEN_B_NEXT, A, B):
        assert secret not in text  # labels, never SIDs or tokens


async def test_the_path_form_accepts_only_that_accounts_tokens(
    multi: Sink, conn: asyncpg.Connection[Any], run_cli: Callable[..., Any], accounts_file: Path
) -> None:
    # B's token is configured, but not A's: refused on A's URL, though /events takes it
    status, answer = await multi.post(story_of(A), token=TOKEN_B, path=f"/events/{A}")
    assert status == 401, answer
    assert answer["reason"] == "bad_signature" and answer["quarantined"] is True
    assert f"auth token of account {A}" in answer["message"]
    assert f"[accounts.{A}]" in answer["message"]
    assert await conn.fetchval("SELECT count(*) FROM studio.events") == 0
    # a retry checks it again with the tokens of the account its URL names: still refused
    code, out = await run_cli("quarantine", "retry", accounts_file=accounts_file)
    assert code == 0, out
    assert "retried: 1" in out and "still failing: 1 (bad_signature: 1)" in out
    assert await conn.fetchval("SELECT count(*) FROM studio.events") == 0


async def test_an_unknown_account_gets_401_is_quarantined_and_stored_once_added(
    multi: Sink,
    conn: asyncpg.Connection[Any],
    run_cli: Callable[..., Any],
    accounts_file: Path,
) -> None:
    status, answer = await multi.post(story_of(C), token=TOKEN_C, path=f"/events/{C}")
    assert status == 401, answer
    assert answer["reason"] == "unknown_account" and answer["quarantined"] is True
    assert C in answer["message"] and "SINK_ACCOUNTS_FILE" in answer["message"]
    assert "studio-sink quarantine retry" in answer["message"]
    status, answer = await multi.post(story_of(C), token=TOKEN_C, path="/events/not-a-sid")
    assert (status, answer["reason"]) == (401, "unknown_account")
    assert "'not-a-sid', which is not an Account SID" in answer["message"]
    reasons = await conn.fetch("SELECT reason, raw_path FROM sink.quarantine ORDER BY 1, 2")
    assert [r["reason"] for r in reasons] == ["unknown_account", "unknown_account"]
    text = await (await multi.client.get("/metrics")).text()
    assert sample(text, "sink_deliveries_total", status="401", account="other") == 2
    assert sample(text, "sink_signature_failures_total", reason="unknown_account") == 2

    code, out = await run_cli("quarantine", "list", accounts_file=accounts_file)
    assert code == 0 and "SINK_ACCOUNTS_FILE" in out
    # the account is added (with a token C's delivery was not signed with, and the right one)
    write_accounts(accounts_file, *TABLES, table(C, "gamma", "not-cs-token-0123456789", TOKEN_C))
    code, out = await run_cli("quarantine", "retry", accounts_file=accounts_file)
    assert code == 0, out
    assert "retried: 2" in out and "now valid: 1 (stored 4 events" in out
    assert "still failing: 1 (unknown_account: 1)" in out  # the URL with no SID in it
    assert await executions_by_account(conn) == {C: 1}


async def test_an_event_of_another_account_is_rejected_and_the_rest_stored(
    multi: Sink, conn: asyncpg.Connection[Any]
) -> None:
    # path form: the URL's account signed; plain form: the account whose token matched
    for token, path in ((TOKEN_A, f"/events/{A}"), (TOKEN_A, "/events")):
        mixed = story_of(A, steps=1) + story_of(B, steps=1)[1:2]  # one step of B's
        status, answer = await multi.post(mixed, token=token, path=path)
        assert status == 200, answer
        assert (answer["stored"], answer["rejected"]) == (3, 1)
    rows = await conn.fetch("SELECT * FROM studio.rejected_events")
    assert len(rows) == 2
    for row in rows:
        assert row["reason"] == "account_mismatch"
        assert B in row["detail"] and A in row["detail"]
        assert row["event_type"] == "com.twilio.studio.flow.step.ended"
        assert json.loads(row["raw_text"])["data"]["account_sid"] == B
    assert await executions_by_account(conn) == {A: 2}
    assert await conn.fetchval("SELECT count(*) FROM studio.steps") == 2
    text = await (await multi.client.get("/metrics")).text()
    rejected = sample(
        text,
        "sink_events_total",
        type="com.twilio.studio.flow.step.ended",
        outcome="rejected",
        account="acme-prod",
    )
    assert rejected == 2


async def test_a_token_two_accounts_share_names_neither(
    start_sink: Callable[..., Any], conn: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    """On /events a token held by two accounts cannot tell which one signed, so no event
    is refused for its account there; each account's own URL still can."""
    path = write_accounts(
        tmp_path / "accounts.toml", table(A, "acme", TOKEN_A), table(B, "beta", TOKEN_A)
    )
    sink: Sink = await start_sink(accounts_file=str(path), twilio_auth_token="")
    status, answer = await sink.post(story_of(B), token=TOKEN_A)
    assert (status, answer["stored"], answer["rejected"]) == (200, 4, 0)
    status, answer = await sink.post(story_of(B), token=TOKEN_A, path=f"/events/{A}")
    assert status == 400 and answer["error"] == "account_mismatch", answer


@pytest.mark.parametrize("path", ["/events/{account}", "/events"])
async def test_each_test_event_is_recorded_with_its_account(
    multi: Sink, conn: asyncpg.Connection[Any], path: str
) -> None:
    ids = ["7b0c-first", "7b0c-second", "7b0c-third"]
    for account, token in ((A, TOKEN_A), (B, TOKEN_B)):
        url = path.format(account=account)
        for test_id in ids:
            status, answer = await multi.post(
                twilio_test_event(account, test_id), token=token, path=url
            )
            assert (status, answer["stored"]) == (200, 1), answer
        # Twilio's retry of a test already delivered: the same test_id is a duplicate
        status, answer = await multi.post(twilio_test_event(account, ids[0]), token=token, path=url)
        assert (status, answer["stored"], answer["duplicates"]) == (200, 0, 1)
    rows = await conn.fetch(
        "SELECT event_id, data->>'account_sid' AS account, data->>'test_id' AS test_id,"
        " duplicates FROM studio.events WHERE type = $1 ORDER BY received_at",
        TEST_EVENT,
    )
    assert [(r["account"], r["test_id"]) for r in rows] == [
        (account, test_id) for account in (A, B) for test_id in ids
    ]
    assert [r["event_id"] for r in rows[:3]] == [f"{A}/{test_id}" for test_id in ids]
    assert [r["duplicates"] for r in rows] == [1, 0, 0, 1, 0, 0]
    latest = await conn.fetch(
        "SELECT DISTINCT ON (data->>'account_sid') data->>'account_sid' AS account,"
        " data->>'test_id' AS test_id FROM studio.events WHERE type = $1"
        " ORDER BY data->>'account_sid', received_at DESC",
        TEST_EVENT,
    )
    assert [(r["account"], r["test_id"]) for r in latest] == [(A, ids[-1]), (B, ids[-1])]


async def test_a_test_event_takes_the_account_that_signed_it(
    multi: Sink, conn: asyncpg.Connection[Any]
) -> None:
    """Its id says which account it is; when the signer is known, the signer wins."""
    status, answer = await multi.post(
        {**twilio_test_event(A, "t-1"), "id": "not-an-account"}, token=TOKEN_B, path=f"/events/{B}"
    )
    assert status == 200, answer
    data = await conn.fetchval("SELECT data FROM studio.events WHERE type = $1", TEST_EVENT)
    assert json.loads(data) == {"test_id": "t-1", "account_sid": B}


async def test_a_reload_lets_a_new_account_in_and_a_broken_file_changes_nothing(
    multi: Sink, conn: asyncpg.Connection[Any], accounts_file: Path
) -> None:
    status, answer = await multi.post(story_of(C), token=TOKEN_C, path=f"/events/{C}")
    assert (status, answer["reason"]) == (401, "unknown_account")
    holder = multi.client.app[ACCOUNTS]
    write_accounts(accounts_file, *TABLES, table(C, "gamma", TOKEN_C))
    assert holder.reload() is True
    status, answer = await multi.post(story_of(C), token=TOKEN_C, path=f"/events/{C}")
    assert (status, answer["stored"]) == (200, 4), answer

    write_accounts(accounts_file, *TABLES, table(C, "gamma", TOKEN_C), "[accounts.ACbroken\n")
    assert holder.reload() is False
    assert holder.last_error is not None and str(accounts_file) in holder.last_error
    for account, token in ((A, TOKEN_A), (C, TOKEN_C)):
        status, answer = await multi.post(story_of(account), token=token, path=f"/events/{account}")
        assert (status, answer["stored"]) == (200, 4), answer
    assert await executions_by_account(conn) == {A: 1, C: 2}
