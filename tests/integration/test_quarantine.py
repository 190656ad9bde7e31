"""The quarantine over real HTTP: a misconfiguration (wrong token, wrong SINK_PUBLIC_URL, a
proxy not trusted) loses no event, forged deliveries never become events, and a flood of
them cannot grow the quarantine past its caps."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from yarl import URL

from sink import cli, jsontext
from sink.db.queries import query
from sink.maintenance import retention
from sink.maintenance.quarantine import KeptRequest, Refused
from tests.conftest import Sink
from tests.support.studio import execution_story, sid
from tests.support.twilio import TOKEN, signed_request
from tests.ui.conftest import ADMIN_TOKEN, login

NEW_TOKEN = "token-the-sink-does-not-know-yet-0123"
FORGER = "a-forger-guessing-at-tokens-4567"


async def quarantine_rows(conn: asyncpg.Connection[Any]) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM sink.quarantine ORDER BY quarantine_id")


async def counts(conn: asyncpg.Connection[Any]) -> dict[str, int]:
    return {
        name: await conn.fetchval(f"SELECT count(*) FROM studio.{name}")
        for name in ("events", "executions", "steps", "rejected_events", "quarantine")
    }


async def post_raw(sink: Sink, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    """POST exactly this URL's path and query with these headers (signed by the caller)."""
    response = await sink.client.post(
        URL(url, encoded=True).raw_path_qs, data=body, headers=headers
    )
    return response.status, await response.json(content_type=None)


@pytest.fixture
def run_cli(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., Any]:
    """``studio-sink ARGS`` in this process, with the given SINK_* settings: (exit, stdout)."""

    async def run(*args: str, **env: str) -> tuple[int, str]:
        monkeypatch.setenv("SINK_DATABASE_URL", database_url)
        monkeypatch.setenv("SINK_LOG_LEVEL", "warning")
        for name, value in env.items():
            monkeypatch.setenv(f"SINK_{name.upper()}", value)
        capsys.readouterr()
        code = await asyncio.to_thread(cli.main, list(args))
        return code, capsys.readouterr().out

    return run


async def test_unknown_token_is_quarantined_then_stored_by_a_retry_after_the_fix(
    sink: Sink, conn: asyncpg.Connection[Any], run_cli: Callable[..., Any]
) -> None:
    story = execution_story(2)
    status, answer = await sink.post(story, token=NEW_TOKEN)
    assert status == 401, answer
    assert answer["reason"] == "bad_signature" and answer["quarantined"] is True
    assert "studio-sink quarantine retry" in answer["message"]
    # forged: signed with a token nobody configures; tampered: body changed after signing
    assert (await sink.post(execution_story(1), token=FORGER))[0] == 401
    signed_body = jsontext.dumps(execution_story(1)).encode()
    url, headers = signed_request(sink.url(), signed_body, NEW_TOKEN)
    tampered = signed_body.replace(b"FLOW_END", b"FLOW_ENX")
    assert tampered != signed_body
    assert (await post_raw(sink, url, tampered, headers))[0] == 401
    assert await counts(conn) == {
        "events": 0,
        "executions": 0,
        "steps": 0,
        "rejected_events": 0,
        "quarantine": 3,
    }
    kept = (await quarantine_rows(conn))[0]
    assert bytes(kept["body"]) == jsontext.dumps(story).encode()
    assert kept["reason"] == "bad_signature" and kept["url_checked"] == kept_url(kept)
    names = sorted(name.lower() for name, _ in jsontext.loads(kept["headers"]))
    assert names == ["content-type", "x-twilio-signature"]  # only what a retry needs

    code, out = await run_cli("quarantine", "list", twilio_auth_token=TOKEN)
    assert code == 0
    assert "quarantine: 3 deliveries" in out and "bad_signature  3  " in out
    assert sink.url() in out  # the URL seen (and checked), query left out

    code, out = await run_cli("quarantine", "retry", twilio_auth_token=f"{TOKEN},{NEW_TOKEN}")
    assert code == 0, out
    assert "retried: 3" in out and "now valid: 1 (stored 4 events, 0 duplicates" in out
    assert "still failing: 2 (bad_signature: 1, body_hash_mismatch: 1)" in out
    assert await counts(conn) == {
        "events": 4,
        "executions": 1,
        "steps": 2,
        "rejected_events": 0,
        "quarantine": 2,
    }
    execution = await conn.fetchrow("SELECT status, ended_reason FROM studio.executions")
    assert dict(execution) == {"status": "ended", "ended_reason": "FLOW_END"}
    # a second retry finds only the forged ones, which never become events
    code, out = await run_cli("quarantine", "retry", twilio_auth_token=f"{TOKEN},{NEW_TOKEN}")
    assert "retried: 2" in out and "now valid: 0" in out
    assert (await counts(conn))["events"] == 4
    # and Twilio's own retry of a delivery already stored by the quarantine is a duplicate
    status, answer = await sink.post(story)
    assert (status, answer["duplicates"]) == (200, 4)


def kept_url(row: asyncpg.Record) -> str:
    return f"{row['scheme']}://{row['host']}{row['raw_path']}"


async def test_a_wrong_public_url_and_an_untrusted_proxy_are_recovered_by_a_retry(
    start_sink: Callable[..., Any], conn: asyncpg.Connection[Any], run_cli: Callable[..., Any]
) -> None:
    sink: Sink = await start_sink(public_url="https://old-name.example.com/events")
    # Twilio signs the URL configured there, https://sink.example.com/events; a proxy in
    # front forwards it, and the sink is not told to trust the proxy's headers
    story = execution_story(1)
    body = jsontext.dumps(story).encode()
    url, headers = signed_request("https://sink.example.com/events", body)
    proxy = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "sink.example.com"}
    forwarded = {**headers, **proxy, "X-Forwarded-For": "198.51.100.7", "User-Agent": "x"}
    assert (await post_raw(sink, url, body, forwarded))[0] == 401
    (kept,) = await quarantine_rows(conn)
    assert kept["url_checked"].startswith("https://old-name.example.com/events?bodySHA256=")
    names = sorted(name.lower() for name, _ in jsontext.loads(kept["headers"]))
    assert names == ["content-type", "x-forwarded-host", "x-forwarded-proto", "x-twilio-signature"]
    # still wrong: the public URL dropped, the proxy still not trusted
    code, out = await run_cli("quarantine", "retry", twilio_auth_token=TOKEN)
    assert "now valid: 0" in out and (await counts(conn))["events"] == 0
    code, out = await run_cli(
        "quarantine", "retry", twilio_auth_token=TOKEN, trust_forwarded="true"
    )
    assert code == 0 and "now valid: 1" in out
    assert await counts(conn) == {
        "events": 3,
        "executions": 1,
        "steps": 1,
        "rejected_events": 0,
        "quarantine": 0,
    }


async def test_a_binary_mode_delivery_keeps_its_ce_headers_for_the_retry(
    sink: Sink, conn: asyncpg.Connection[Any], run_cli: Callable[..., Any]
) -> None:
    event = execution_story(1)[1]
    attributes = {k: v for k, v in event.items() if k != "data"}
    ce = {
        f"ce-{name}": str(value) for name, value in attributes.items() if name != "datacontenttype"
    }
    body = jsontext.dumps(event["data"]).encode()
    status, _ = await sink.post(body, token=NEW_TOKEN, **ce)
    assert status == 401
    code, out = await run_cli("quarantine", "retry", twilio_auth_token=NEW_TOKEN)
    assert code == 0 and "now valid: 1 (stored 1 events" in out, out
    step = await conn.fetchrow("SELECT step_sid, name FROM studio.steps")
    assert step["step_sid"] == event["data"]["step_sid"]


async def test_a_flood_of_forged_deliveries_stays_within_the_cap_keeping_the_newest(
    start_sink: Callable[..., Any], conn: asyncpg.Connection[Any]
) -> None:
    cap = 40_000
    replicas: list[Sink] = [await start_sink(quarantine_max_bytes=cap) for _ in range(2)]
    # concurrent: two replicas, many requests of several sizes at once on each
    for _ in range(3):
        bodies = [jsontext.dumps(execution_story(n % 4)).encode() for n in range(40)]
        posts = (replicas[n % 2].post(b, token=FORGER) for n, b in enumerate(bodies))
        results = await asyncio.gather(*posts)
        assert {status for status, _ in results} == {401}
    await assert_within(conn, cap)
    # in order: the newest are the ones kept, the oldest were dropped
    sent = [f"forged-{n:03}-{sid('XX')}".encode() for n in range(150)]
    for n, body in enumerate(sent):
        assert (await replicas[n % 2].post(body, token=FORGER))[0] == 401
    rows = await quarantine_rows(conn)
    kept = [bytes(r["body"]) for r in rows]
    assert kept == sent[-len(kept) :] and len(kept) < len(sent)
    await assert_within(conn, cap)


async def assert_within(conn: asyncpg.Connection[Any], cap: int) -> None:
    held = await conn.fetchval("SELECT coalesce(sum(bytes), 0) FROM sink.quarantine")
    largest = await conn.fetchval("SELECT max(bytes) FROM sink.quarantine")
    assert cap - largest < held <= cap  # full, and not one byte over
    usage = await conn.fetchrow("SELECT bytes, deliveries FROM sink.quarantine_usage")
    rows = await conn.fetchval("SELECT count(*) FROM sink.quarantine")
    assert (usage["bytes"], usage["deliveries"]) == (held, rows)  # the counters stay right


async def test_two_keeps_at_once_take_turns_so_the_cap_holds_exactly(
    conn: asyncpg.Connection[Any], direct_database_url: str
) -> None:
    """Two replicas keep a delivery at the same moment, with room left for one: the second
    waits for the first and makes room, rather than both inserting."""
    keep = query("quarantine_keep")

    def args(n: int, cap: int) -> list[Any]:
        request = KeptRequest.of("http", "h", "/events", [])
        return [*Refused("bad_signature", request, "u", b"x" * 1000, f"r{n}").args(), cap, 10**9]

    first = await conn.fetchrow(keep, *args(0, 10**9))
    size = await conn.fetchval("SELECT bytes FROM sink.quarantine")
    cap = 2 * size  # room for exactly one more
    other = await asyncpg.connect(direct_database_url)
    try:
        async with conn.transaction():
            assert dict(await conn.fetchrow(keep, *args(1, cap))) == {
                "outcome": "kept",
                "evicted": 0,
            }
            second = asyncio.create_task(other.fetchrow(keep, *args(2, cap)))
            await asyncio.sleep(0.3)
            assert not second.done()  # it waits for the first to commit
        assert dict(await second) == {"outcome": "kept", "evicted": 1}
    finally:
        await other.close()
    assert first["outcome"] == "kept"
    assert await conn.fetchval("SELECT sum(bytes) FROM sink.quarantine") == cap
    assert await conn.fetchval("SELECT request_id FROM sink.quarantine ORDER BY 1 LIMIT 1") == "r1"


async def test_the_hourly_cap_answers_503_so_twilio_keeps_the_delivery(
    start_sink: Callable[..., Any], conn: asyncpg.Connection[Any]
) -> None:
    sink: Sink = await start_sink(quarantine_max_bytes_per_hour=3000)
    statuses = [(await sink.post(b"x" * 400, token=NEW_TOKEN))[0] for _ in range(12)]
    kept = await conn.fetchval("SELECT count(*) FROM sink.quarantine")
    assert statuses == [401] * kept + [503] * (12 - kept) and 0 < kept < 12
    assert await conn.fetchval("SELECT hour_bytes FROM sink.quarantine_usage") <= 3000
    response = await sink.client.post("/events", data=b"x")  # unsigned, over the cap
    assert response.status == 503 and response.headers["Retry-After"] == "60"
    assert (await response.json())["error"] == "quarantine_unavailable"
    # deliveries with a valid signature are not affected
    assert (await sink.post(execution_story(1)))[0] == 200


async def test_while_the_database_is_unavailable_a_refused_delivery_gets_503(
    sink: Sink, conn: asyncpg.Connection[Any], pg_server: str
) -> None:
    story = execution_story(1)
    assert (await sink.post(execution_story(1)))[0] == 200  # the sink is up and ready
    name, mine = await conn.fetchrow("SELECT current_database(), pg_backend_pid()")
    admin = await asyncpg.connect(pg_server)
    try:
        # the sink's connections are cut, and new ones refused
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> $2",
            name,
            mine,
        )
        status, answer = await sink.post(story, token=NEW_TOKEN)
        assert status == 503, answer
        assert answer["error"] == "quarantine_unavailable"
        assert "Twilio sends it again" in answer["message"]
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
    # Twilio's retry, once the database is back: refused, and kept this time
    status, answer = await sink.post(story, token=NEW_TOKEN)
    assert (status, answer["quarantined"]) == (401, True)
    assert (await counts(conn))["quarantine"] == 1


async def test_maintenance_purges_what_is_older_than_the_retention(
    sink: Sink, conn: asyncpg.Connection[Any]
) -> None:
    for _ in range(3):
        assert (await sink.post(b"[]", token=FORGER))[0] == 401
    await conn.execute(
        "UPDATE sink.quarantine SET received_at = now() - interval '8 days'"
        " WHERE quarantine_id < (SELECT max(quarantine_id) FROM sink.quarantine)"
    )
    dry = await retention.maintain(conn, retention_days=None, dry_run=True)
    assert dry.deleted == {"quarantine": 2} and (await counts(conn))["quarantine"] == 3
    report = await retention.maintain(conn, retention_days=None, batch_rows=1)
    assert report.deleted == {"quarantine": 2}
    assert await conn.fetchval("SELECT deliveries FROM sink.quarantine_usage") == 1
    assert (await retention.maintain(conn, retention_days=30)).deleted.get("quarantine") is None


async def test_retry_refuses_to_run_without_signature_verification(
    sink: Sink, conn: asyncpg.Connection[Any], run_cli: Callable[..., Any]
) -> None:
    assert (await sink.post(execution_story(1), token=FORGER))[0] == 401
    code, _ = await run_cli("quarantine", "retry", verify_signature="false")
    assert code == 2
    assert (await counts(conn))["events"] == 0


async def test_the_ui_overview_warns_while_the_quarantine_fills(
    start_sink: Callable[..., Any], conn: asyncpg.Connection[Any]
) -> None:
    sink: Sink = await start_sink(admin_token=ADMIN_TOKEN)
    assert (await login(sink.client)).status == 303
    assert (await sink.post(execution_story(1)))[0] == 200
    html = await (await sink.client.get("/ui/")).text()
    assert 'id="quarantine-warning"' not in html
    for token in (NEW_TOKEN, NEW_TOKEN, FORGER):
        assert (await sink.post(execution_story(1), token=token))[0] == 401
    assert (await sink.client.post("/events", data=b"[]")).status == 401  # no signature
    html = await (await sink.client.get("/ui/")).text()
    assert 'id="quarantine-warning"' in html
    assert "4 deliveries refused for their signature in the last hour" in html
    assert "bad_signature: 3, missing_signature: 1" in html
    assert "SINK_PUBLIC_URL" in html and "studio-sink quarantine retry" in html
    # an hour later, the warning is gone (the deliveries stay until retried or purged)
    await conn.execute("UPDATE sink.quarantine SET received_at = now() - interval '61 minutes'")
    html = await (await sink.client.get("/ui/")).text()
    assert 'id="quarantine-warning"' not in html


async def test_odd_hosts_and_a_password_in_the_public_url_are_kept_safely(
    start_sink: Callable[..., Any], conn: asyncpg.Connection[Any]
) -> None:
    plain: Sink = await start_sink()
    for host in ("[x", "a:b", "a:99999"):
        status, answer = await plain.post(execution_story(1), Host=host)
        assert (status, answer["quarantined"]) == (401, True), answer
    hosts = [r["host"] for r in await quarantine_rows(conn)]
    assert hosts == ["[x", "a:b", "a:99999"]
    # Twilio allows basic auth in the sink's URL: its password is never kept
    secret = "basic-auth-secret-42"
    with_auth: Sink = await start_sink(
        public_url=f"https://twilio:{secret}@sink.example.com/events"
    )
    assert (await with_auth.post(execution_story(1), token=FORGER))[0] == 401
    checked = (await quarantine_rows(conn))[-1]["url_checked"]
    assert checked.startswith("https://twilio:***@sink.example.com/events?bodySHA256=")
    assert secret not in str(await conn.fetch("SELECT * FROM sink.quarantine"))
