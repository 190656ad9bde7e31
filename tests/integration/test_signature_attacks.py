"""Signature attacks over real HTTP: nothing unsigned gets in, whatever is changed.

Each test counts the attacks it tried and asserts that none was accepted; the totals are
printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import hashlib
import hmac
import string
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import pytest
from yarl import URL

from sink import jsontext
from sink.ingest import signature
from tests.conftest import Sink
from tests.support.studio import execution_story
from tests.support.twilio import OTHER_TOKEN, TOKEN, sign, signed_request

NEW_TOKEN = "new-auth-token-after-rotation-0000"
SAFE = string.ascii_letters + string.digits


def substitutes(char: str, alphabet: str = SAFE) -> list[str]:
    """Two different characters to put in place of ``char`` (URL- and header-safe)."""
    options = [c for c in (char.swapcase(), "A", "z", "0") if c != char and c in alphabet]
    return list(dict.fromkeys(options))[:2]


def body_mutations(body: bytes) -> Iterator[bytes]:
    """Every single-byte change: each position, two other byte values."""
    for i, byte in enumerate(body):
        for other in {byte ^ 0x01, byte ^ 0x20}:
            yield body[:i] + bytes([other]) + body[i + 1 :]


def text_mutations(text: str, start: int = 0) -> Iterator[str]:
    for i in range(start, len(text)):
        for other in substitutes(text[i]):
            yield text[:i] + other + text[i + 1 :]


class Attacker:
    def __init__(self, sink: Sink, conn: asyncpg.Connection[Any]) -> None:
        self.sink = sink
        self.conn = conn
        self.tried = 0
        self.accepted: list[tuple[int, str]] = []

    async def send(self, url: str, body: bytes, headers: dict[str, str], what: str) -> int:
        self.tried += 1
        response = await self.sink.client.post(
            URL(url, encoded=True).raw_path_qs, data=body, headers=headers
        )
        await response.read()
        if response.status not in (401, 404):
            self.accepted.append((response.status, what))
        return response.status

    async def assert_nothing_got_in(self, label: str) -> None:
        stored = await self.conn.fetchval("SELECT count(*) FROM studio.events")
        rejected = await self.conn.fetchval("SELECT count(*) FROM studio.rejected_events")
        print(f"\n{label}: attacks tried {self.tried}, accepted {len(self.accepted)}")
        assert self.accepted == []
        assert (stored, rejected) == (0, 0)


@pytest.fixture
def body() -> bytes:
    return jsontext.dumps(execution_story(1)[:2]).encode()


async def test_every_single_byte_change_of_the_body(
    sink: Sink, conn: asyncpg.Connection[Any], body: bytes
) -> None:
    attacker = Attacker(sink, conn)
    url, headers = signed_request(sink.url(), body)
    for mutated in body_mutations(body):
        assert await attacker.send(url, mutated, headers, "body") == 401
    await attacker.assert_nothing_got_in("body byte changes")
    assert attacker.tried == 2 * len(body)


async def test_every_single_byte_change_of_the_url_received(
    sink: Sink, conn: asyncpg.Connection[Any], body: bytes
) -> None:
    attacker = Attacker(sink, conn)
    url, headers = signed_request(sink.url(), body)
    path_qs = URL(url).raw_path_qs
    origin = url[: len(url) - len(path_qs)]
    for mutated in text_mutations(path_qs, start=1):
        status = await attacker.send(origin + mutated, body, headers, mutated)
        # a changed path no longer reaches the receiver (404); a changed query is refused
        if mutated.startswith("/events?"):
            assert status == 401, mutated
    await attacker.assert_nothing_got_in("URL byte changes")


async def test_a_signature_over_any_other_url_is_refused(
    sink: Sink, conn: asyncpg.Connection[Any], body: bytes
) -> None:
    """Twilio signed a URL differing in one byte (scheme, host, port, path or query)."""
    attacker = Attacker(sink, conn)
    url, headers = signed_request(sink.url(), body)
    for mutated in text_mutations(url):
        forged = {**headers, "X-Twilio-Signature": sign(mutated)}
        assert await attacker.send(url, body, forged, mutated) == 401, mutated
    await attacker.assert_nothing_got_in("signatures over other URLs")


async def test_every_single_byte_change_of_the_signature_header(
    sink: Sink, conn: asyncpg.Connection[Any], body: bytes
) -> None:
    attacker = Attacker(sink, conn)
    url, headers = signed_request(sink.url(), body)
    good = headers["X-Twilio-Signature"]
    alphabet = string.ascii_letters + string.digits + "+/="
    for i, char in enumerate(good):
        for other in [*substitutes(char, alphabet), "+", "/"]:
            if other == char:
                continue
            forged = {**headers, "X-Twilio-Signature": good[:i] + other + good[i + 1 :]}
            assert await attacker.send(url, body, forged, f"sig[{i}]") == 401
    for forged_sig in (good[:-1], good + "A", good.lower(), "", " ", good[::-1]):
        forged = {**headers, "X-Twilio-Signature": forged_sig}
        assert await attacker.send(url, body, forged, "sig") == 401
    await attacker.assert_nothing_got_in("signature header changes")


async def test_replays_rotations_and_hash_tricks(
    start_sink: Callable[..., Any], conn: asyncpg.Connection[Any], body: bytes
) -> None:
    sink: Sink = await start_sink(twilio_auth_token=f"{NEW_TOKEN},{TOKEN}")
    attacker = Attacker(sink, conn)
    url, headers = signed_request(sink.url(), body)
    base = sink.url()
    digest = hashlib.sha256(body).hexdigest()
    other_body = jsontext.dumps(execution_story(1)[:2]).encode()

    # a valid signature replayed with a different body
    assert await attacker.send(url, other_body, headers, "replay") == 401
    # signed with a token that was rotated out
    old_url, old_headers = signed_request(base, body, OTHER_TOKEN)
    assert await attacker.send(old_url, body, old_headers, "rotated-out") == 401
    # no signature header at all, or the settings header naming an unknown algorithm
    missing = {k: v for k, v in headers.items() if k != "X-Twilio-Signature"}
    assert await attacker.send(url, body, missing, "missing") == 401
    md5 = {**headers, "X-Twilio-Webhooks-Signature-Settings": "key=K,algorithm=HMAC_MD5"}
    assert await attacker.send(url, body, md5, "unknown algorithm") == 401
    # a SharedKey-scheme header with an Auth Token signature: no shared key configured
    sha256 = {**headers, "X-Twilio-Webhooks-Signature-Settings": "algorithm=HMAC_SHA256"}
    sha256["X-Twilio-Signature"] = sign(url, TOKEN, "HMAC_SHA256")
    assert await attacker.send(url, body, sha256, "sha256 with auth token") == 401
    # bodySHA256 in another case (so the body is not checked), signed with a stolen hash
    for name in ("bodysha256", "BODYSHA256", "bodySha256", "body_SHA256", "bodySHA256 "):
        tricked = f"{base}?{name}={digest}".replace(" ", "%20")
        forged = {**headers, "X-Twilio-Signature": sign(tricked, OTHER_TOKEN)}
        assert await attacker.send(tricked, other_body, forged, name) == 401
    # bodySHA256 twice: one matching the body, one the signed URL carried
    twice = f"{url}&bodySHA256={hashlib.sha256(other_body).hexdigest()}"
    assert await attacker.send(twice, other_body, headers, "twice") == 401
    twice_signed = {**headers, "X-Twilio-Signature": sign(twice)}
    assert await attacker.send(twice, other_body, twice_signed, "twice signed") == 401
    await attacker.assert_nothing_got_in("replays, rotations, hash tricks")

    # and the genuine deliveries, signed with either configured token, get in
    for token in (TOKEN, NEW_TOKEN):
        status, _ = await sink.post(execution_story(1), token=token)
        assert status == 200


async def test_signature_comparison_is_timing_safe(
    sink: Sink, body: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(signature.hmac, "compare_digest", counting)
    url, headers = signed_request(sink.url(), body)
    forged = {**headers, "X-Twilio-Signature": sign(url, OTHER_TOKEN)}
    response = await sink.client.post(URL(url).raw_path_qs, data=body, headers=forged)
    assert response.status == 401
    # the body hash, and the signature for each URL variant (as received, default port)
    signatures = [pair for pair in calls if forged["X-Twilio-Signature"].encode() in pair]
    assert len(signatures) == 2
    assert any(hashlib.sha256(body).hexdigest().encode() in pair for pair in calls)
    calls.clear()
    response = await sink.client.post(URL(url).raw_path_qs, data=body, headers=headers)
    assert response.status == 200
    assert len(calls) == 3  # no short cut on the first match either


# --- the other credentials: the admin token, and the SQL read-only role ----------------

ADMIN_TOKEN = "admin-token-0123456789abcdef-long-enough"
BACKFILL_BODY = {"execution_sids": ["FN" + "0" * 32]}


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/backfill", {}),
        ("/backfill", {"Authorization": "Bearer wrong-token"}),
        ("/backfill", {"Authorization": f"Bearer {ADMIN_TOKEN}x"}),
        ("/backfill", {"Authorization": f"Basic {ADMIN_TOKEN}"}),
        ("/backfill", {"Authorization": ADMIN_TOKEN}),
        ("/backfill", {"Authorization": "Bearer "}),
        (f"/backfill?token={ADMIN_TOKEN}", {}),
        (f"/backfill?access_token={ADMIN_TOKEN}", {"Authorization": f"Bearer {ADMIN_TOKEN}"}),
    ],
)
async def test_admin_endpoints_refuse_without_the_token(
    start_sink: Callable[..., Any],
    conn: asyncpg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
    path: str,
    headers: dict[str, str],
) -> None:
    sink: Sink = await start_sink(admin_token=ADMIN_TOKEN)
    response = await sink.client.post(path, json=BACKFILL_BODY, headers=headers)
    assert response.status == 401, await response.text()
    assert "Bearer" in response.headers["WWW-Authenticate"]
    query = path.partition("?")[2]
    response = await sink.client.get(f"/backfill/1?{query}", headers=headers)
    assert response.status == 401
    assert await conn.fetchval("SELECT count(*) FROM sink.backfill_requests") == 0
    assert ADMIN_TOKEN not in caplog.text


async def test_admin_endpoints_are_off_without_a_configured_token(
    sink: Sink, conn: asyncpg.Connection[Any]
) -> None:
    response = await sink.client.post(
        "/backfill", json=BACKFILL_BODY, headers={"Authorization": "Bearer anything"}
    )
    assert response.status == 404
    assert "SINK_ADMIN_TOKEN" in (await response.json())["message"]
    assert await conn.fetchval("SELECT count(*) FROM sink.backfill_requests") == 0


async def test_admin_token_is_accepted_in_the_header(
    start_sink: Callable[..., Any], conn: asyncpg.Connection[Any]
) -> None:
    sink: Sink = await start_sink(admin_token=ADMIN_TOKEN)
    response = await sink.client.post(
        "/backfill", json=BACKFILL_BODY, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert response.status == 202, await response.text()
    assert await conn.fetchval("SELECT count(*) FROM sink.backfill_requests") == 1


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO sink.events (source, event_id, type, specversion) VALUES ('s','i','t','1.0')",
        "DELETE FROM studio.events",
        "UPDATE studio.executions SET status = 'ended'",
        "INSERT INTO studio.rejected_events (reason, detail, raw) VALUES ('r', 'd', 'x')",
        "SELECT body FROM sink.quarantine",  # the views read sink tables, not this one
        "SELECT sink.ingest_nothing()",
        "TRUNCATE sink.events",
        "CREATE TABLE studio.mine (x int)",
    ],
)
async def test_the_sql_read_only_role_cannot_write(
    conn: asyncpg.Connection[Any], statement: str
) -> None:
    if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = 'studio_reader'"):
        pytest.fail("the migrations did not create the studio_reader role")
    await conn.execute("SET ROLE studio_reader")
    try:
        assert await conn.fetchval("SELECT count(*) FROM studio.events") == 0  # it can read
        with pytest.raises(
            (
                asyncpg.InsufficientPrivilegeError,
                asyncpg.UndefinedFunctionError,
                asyncpg.ObjectNotInPrerequisiteStateError,
                asyncpg.FeatureNotSupportedError,
            )
        ):
            await conn.execute(statement)
    finally:
        await conn.execute("RESET ROLE")
    assert await conn.fetchval("SELECT count(*) FROM sink.events") == 0
