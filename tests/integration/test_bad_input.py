"""The core issue's bad-input table, through real HTTP into a real Postgres."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from sink import jsontext
from tests.conftest import Sink
from tests.support.studio import execution_story, sink_test_event
from tests.support.twilio import OTHER_TOKEN, TOKEN, signed_request

MAX_BODY = 4096


async def table_counts(conn: asyncpg.Connection[Any]) -> tuple[int, int]:
    events = await conn.fetchval("SELECT count(*) FROM studio.events")
    rejected = await conn.fetchval("SELECT count(*) FROM studio.rejected_events")
    return events, rejected


async def signature_failures(sink: Sink) -> dict[str, float]:
    response = await sink.client.get("/metrics")
    text = await response.text()
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "sink_signature_failures":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    found[sample.labels["reason"]] = sample.value
    return found


async def raw_post(sink: Sink, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    response = await sink.client.post(URL(url).raw_path_qs, data=body, headers=headers)
    return response.status, await response.json(content_type=None)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("missing_signature", "missing_signature"),
        ("wrong_token", "bad_signature"),
        ("garbage_signature", "bad_signature"),
        ("body_changed", "body_hash_mismatch"),
        ("no_body_hash", "missing_body_hash"),
    ],
)
async def test_bad_signatures_store_nothing_count_and_log_the_reason(
    sink: Sink,
    conn: asyncpg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
    case: str,
    reason: str,
) -> None:
    body = jsontext.dumps(execution_story(1)).encode()
    token = OTHER_TOKEN if case == "wrong_token" else TOKEN
    url, headers = signed_request(sink.url(), body, token)
    if case == "missing_signature":
        del headers["X-Twilio-Signature"]
    elif case == "garbage_signature":
        headers["X-Twilio-Signature"] = "bm90IGEgc2lnbmF0dXJl"
    elif case == "body_changed":
        changed = body.replace(b"incomingRequest", b"incomingReqXest")
        assert changed != body
        body = changed
    elif case == "no_body_hash":
        url, headers = sink.url(), {**headers}
        from tests.support.twilio import sign

        headers["X-Twilio-Signature"] = sign(url)
    before = await signature_failures(sink)
    with caplog.at_level(logging.INFO):
        status, answer = await raw_post(sink, url, body, headers)
    assert status == 401, answer
    assert answer["reason"] == reason
    assert await table_counts(conn) == (0, 0)
    after = await signature_failures(sink)
    assert after.get(reason, 0) == before.get(reason, 0) + 1
    refused = [r for r in caplog.records if r.name == "sink.web.receiver"]
    assert refused and getattr(refused[-1], "reason", None) == reason
    assert TOKEN not in caplog.text and OTHER_TOKEN not in caplog.text
    assert TOKEN not in json.dumps(answer)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"this is not json", "not_json"),
        (b"\xff\xfe\xfd", "not_json"),
        (b'{"hello": "world"}', "missing_attribute"),
        (b'"just a string"', "not_cloudevents"),
        (b"[1, 2, 3]", "not_an_object"),
    ],
)
async def test_unusable_bodies_are_400_and_kept(
    sink: Sink, conn: asyncpg.Connection[Any], body: bytes, reason: str
) -> None:
    status, answer = await sink.post(body)
    assert status == 400, answer
    assert answer["error"] == reason
    rows = await conn.fetch("SELECT reason, raw FROM studio.rejected_events")
    assert {r["reason"] for r in rows} == {reason}
    assert await conn.fetchval("SELECT count(*) FROM studio.events") == 0
    if reason in ("not_json", "not_cloudevents"):
        assert rows[0]["raw"] == body


async def test_some_invalid_elements_store_the_valid_ones(
    sink: Sink, conn: asyncpg.Connection[Any]
) -> None:
    story = execution_story(2)
    bad_id = {**story[1]}
    del bad_id["id"]
    bad_time = {**story[2], "time": "not a time", "id": "EZbadtime"}
    status, answer = await sink.post([story[0], bad_id, 42, bad_time, story[3]])
    assert status == 200, answer
    assert answer["stored"] == 2 and answer["rejected"] == 3
    rows = await conn.fetch("SELECT reason, event_id FROM studio.rejected_events ORDER BY 1")
    assert [(r["reason"], r["event_id"]) for r in rows] == [
        ("invalid_attribute", "EZbadtime"),
        ("missing_attribute", None),  # never an invented id
        ("not_an_object", None),
    ]
    assert await conn.fetchval("SELECT count(*) FROM studio.events") == 2


@pytest.mark.parametrize("attribute", ["id", "source", "type", "specversion"])
async def test_missing_required_attribute_is_rejected_with_that_reason(
    sink: Sink, conn: asyncpg.Connection[Any], attribute: str
) -> None:
    event = sink_test_event()
    del event[attribute]
    status, answer = await sink.post([event])
    assert status == 400, answer
    row = await conn.fetchrow("SELECT * FROM studio.rejected_events")
    assert row["reason"] == "missing_attribute"
    assert f"'{attribute}'" in row["detail"]
    assert row["event_id"] == event.get("id")
    assert await conn.fetchval("SELECT count(*) FROM studio.events") == 0


async def test_nul_and_hostile_text_land_intact_or_rejected_with_reason(
    sink: Sink, conn: asyncpg.Connection[Any]
) -> None:
    hostile = 'Robert\'); DROP TABLE sink.events;-- "quoted" \\ ; \u00e9\u4e2d\U0001f600 \u202e'
    event = {**sink_test_event(), "id": hostile, "source": hostile, "data": {"k": hostile}}
    nul = {**sink_test_event(), "id": "EZnul", "data": {"k": "a\u0000b"}}
    status, answer = await sink.post([event, nul])
    assert status == 200, answer
    row = await conn.fetchrow("SELECT * FROM studio.events")
    assert row["event_id"] == hostile and row["source"] == hostile
    assert json.loads(row["data"]) == {"k": hostile}
    rejected = await conn.fetchrow("SELECT * FROM studio.rejected_events")
    assert rejected["reason"] == "unstorable_value" and "NUL" in rejected["detail"]
    assert rejected["event_id"] == "EZnul"
    assert b"\\u0000" in rejected["raw"]


async def _read_status(reader: asyncio.StreamReader) -> int:
    line = await reader.readline()
    return int(line.split()[1])


@contextlib.asynccontextmanager
async def raw_connection(sink: Sink) -> AsyncIterator[tuple[asyncio.StreamReader, Any]]:
    server = sink.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_declared_oversize_body_is_413_before_it_arrives(
    start_sink: Callable[..., Any], conn: asyncpg.Connection[Any]
) -> None:
    sink: Sink = await start_sink(max_body_bytes=MAX_BODY)
    head = (
        "POST /events?bodySHA256=00 HTTP/1.1\r\nHost: sink\r\n"
        f"Content-Type: application/json\r\nContent-Length: {MAX_BODY * 100}\r\n\r\n"
    )
    async with raw_connection(sink) as (reader, writer):
        writer.write(head.encode() + b"[" + b" " * 100)  # the rest never comes
        await writer.drain()
        async with asyncio.timeout(5):
            assert await _read_status(reader) == 413
    assert await table_counts(conn) == (0, 0)


async def test_chunked_oversize_body_is_413_without_waiting_for_the_end(
    start_sink: Callable[..., Any], conn: asyncpg.Connection[Any]
) -> None:
    sink: Sink = await start_sink(max_body_bytes=MAX_BODY)
    head = (
        "POST /events?bodySHA256=00 HTTP/1.1\r\nHost: sink\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"400\r\n" + b" " * 1024 + b"\r\n"
    async with raw_connection(sink) as (reader, writer):
        writer.write(head.encode() + chunk * 8)  # 8 KiB, no terminating chunk
        await writer.drain()
        async with asyncio.timeout(5):
            assert await _read_status(reader) == 413
    assert await table_counts(conn) == (0, 0)


async def test_signed_oversize_body_is_413(
    start_sink: Callable[..., Any], conn: asyncpg.Connection[Any]
) -> None:
    sink: Sink = await start_sink(max_body_bytes=MAX_BODY)
    events = [sink_test_event() | {"id": f"EZ{n}"} for n in range(40)]
    status, answer = await sink.post(events)
    assert status == 413, answer
    assert "SINK_MAX_BODY_BYTES" in answer["message"]
    assert await table_counts(conn) == (0, 0)


class SwitchableProxy:
    """A TCP proxy in front of the test Postgres that can be switched off and on."""

    def __init__(self, database_url: str) -> None:
        parts = urlsplit(database_url)
        socket_dir = parse_qs(parts.query).get("host", [None])[0]
        self.unix_path: str | None = None
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 5432)
        if socket_dir:
            sockets = [p for p in Path(socket_dir).glob(".s.PGSQL.*") if p.suffix != ".lock"]
            self.unix_path = str(sockets[0])
        self.database = parts.path.lstrip("/")
        self.user = parts.username or "postgres"
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    async def on(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def off(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.unix_path:
                up_reader, up_writer = await asyncio.open_unix_connection(self.unix_path)
            else:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()


async def test_database_unreachable_is_503_then_the_same_delivery_succeeds(
    start_sink: Callable[..., Any], database_url: str, conn: asyncpg.Connection[Any]
) -> None:
    proxy = SwitchableProxy(database_url)
    await proxy.on()
    try:
        sink: Sink = await start_sink(database_url=proxy.url, db_connect_timeout=1.0)
        warm = execution_story(1)
        status, _ = await sink.post(warm)
        assert status == 200
        await proxy.off()
        story = execution_story(3)
        for _ in range(3):  # pooled connections die, new ones are refused: 503 each time
            async with asyncio.timeout(5):
                status, answer = await sink.post(story)
            assert status == 503, answer
        await proxy.on()
        for _ in range(10):  # a pooled connection that died idle may cost one more retry
            async with asyncio.timeout(5):
                status, answer = await sink.post(story)
            if status != 503:
                break
        assert status == 200, answer
        assert answer["stored"] == 5
    finally:
        await proxy.off()
    ids = {r["event_id"] for r in await conn.fetch("SELECT event_id FROM studio.events")}
    assert ids == {e["id"] for e in warm + story}
    assert (
        await conn.fetchval(
            "SELECT status FROM studio.executions WHERE execution_sid = $1",
            story[0]["data"]["execution_sid"],
        )
        == "ended"
    )
