"""Review defects of issue 13 (the ingest side), each through real HTTP into a real Postgres.

4. A Host header that does not parse as host[:port] is a 401 with reason ``bad_host``,
   never a 500 with a traceback.
5. A Studio integer field of the wrong kind (``"flow_revision": "²"``) rejects that element
   alone, with a reason naming the field; the rest of the batch is stored.
6. One element with a lone UTF-16 surrogate escape rejects that element alone; the valid
   elements of the batch are stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from sink import jsontext
from tests.conftest import Sink
from tests.support.studio import execution_story
from tests.support.twilio import signed_request

# --- 4. a Host header that is not host[:port] ------------------------------------------


async def signature_failures(sink: Sink) -> dict[str, float]:
    response = await sink.client.get("/metrics")
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(await response.text()):
        if family.name == "sink_signature_failures":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    found[sample.labels["reason"]] = sample.value
    return found


@pytest.mark.parametrize("host", ["a:b", "[x", "a:99999", "[::1", "sink:-1", "a:1:2"])
async def test_unparsable_host_is_401_bad_host_without_a_traceback(
    start_sink: Callable[..., Any],
    conn: asyncpg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
    host: str,
) -> None:
    sink: Sink = await start_sink()  # no SINK_PUBLIC_URL: the URL is rebuilt from Host
    caplog.set_level(logging.INFO)
    status, answer = await sink.post(execution_story(1), Host=host)
    assert status == 401, answer
    assert answer["reason"] == "bad_host"
    assert "SINK_PUBLIC_URL" in answer["message"]
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert (await signature_failures(sink)).get("bad_host") == 1
    assert await conn.fetchval("SELECT count(*) FROM studio.events") == 0


async def test_unparsable_forwarded_host_is_401_bad_host(start_sink: Callable[..., Any]) -> None:
    sink: Sink = await start_sink(trust_forwarded=True)
    status, answer = await sink.post(execution_story(1), **{"X-Forwarded-Host": "[x"})
    assert (status, answer.get("reason")) == (401, "bad_host"), answer


async def test_non_utf8_host_bytes_are_401_bad_host(
    start_sink: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp hands a non-UTF-8 Host byte on as a lone surrogate; the URL cannot be signed."""
    sink: Sink = await start_sink()
    server = sink.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(
        b"POST /events?bodySHA256=00 HTTP/1.1\r\nHost: sink\xff\r\n"
        b"X-Twilio-Signature: c2lnbmF0dXJl\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\nConnection: close\r\n\r\n[]"
    )
    await writer.drain()
    async with asyncio.timeout(5):
        answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert b'"bad_host"' in answer
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


async def test_bad_host_is_moot_with_public_url(start_sink: Callable[..., Any]) -> None:
    """With SINK_PUBLIC_URL set, the Host header plays no part: the delivery is stored."""
    public = "https://hooks.example.com/events"
    sink: Sink = await start_sink(public_url=public)
    body = jsontext.dumps(execution_story(1)).encode()
    url, headers = signed_request(public, body)
    response = await sink.client.post(
        URL(url).raw_path_qs, data=body, headers={**headers, "Host": "a:99999"}
    )
    assert response.status == 200, await response.text()


# --- 5. a Studio integer field of the wrong kind ----------------------------------------


def with_revision(events: list[dict[str, Any]], value: Any) -> list[dict[str, Any]]:
    """The events, the execution.started one (the first) with flow_revision = value."""
    started = {**events[0], "data": {**events[0]["data"], "flow_revision": value}}
    return [started, *events[1:]]


async def test_flow_revision_of_the_wrong_kind_rejects_only_that_event(
    sink: Sink, conn: asyncpg.Connection[Any]
) -> None:
    events = with_revision(execution_story(2), "²")
    status, answer = await sink.post(events)
    assert status == 200, answer
    assert (answer["stored"], answer["rejected"]) == (len(events) - 1, 1)
    row = await conn.fetchrow("SELECT reason, detail, event_id FROM studio.rejected_events")
    assert row["reason"] == "invalid_studio_data"
    assert "'flow_revision' is not an integer: '²'" in row["detail"]
    assert row["event_id"] == events[0]["id"]
    execution = await conn.fetchrow("SELECT status, flow_revision FROM studio.executions")
    assert (execution["status"], execution["flow_revision"]) == ("ended", 3)


@pytest.mark.parametrize(
    ("value", "stored"), [("7", 7), (" 12 ", 12), (5, 5), (None, None), ("absent", None)]
)
async def test_flow_revision_digits_null_or_absent_are_accepted(
    sink: Sink, conn: asyncpg.Connection[Any], value: Any, stored: int | None
) -> None:
    [started] = with_revision(execution_story(0)[:1], value)
    if value == "absent":
        del started["data"]["flow_revision"]
    status, answer = await sink.post([started])
    assert status == 200 and answer["stored"] == 1, answer
    assert await conn.fetchval("SELECT flow_revision FROM studio.executions") == stored


# --- 6. a lone UTF-16 surrogate in one element ------------------------------------------


def surrogate_element(event_id: str = "EZsurrogate") -> bytes:
    """A CloudEvent whose data holds the escape \\ud800 (no low surrogate follows)."""
    return (
        b'{"specversion":"1.0","id":"%s","source":"/test","type":"com.example.note",'
        b'"data":{"note":"half an emoji: \\ud800"}}' % event_id.encode()
    )


def batch_with(element: bytes, events: list[dict[str, Any]]) -> bytes:
    valid = [jsontext.dumps(event).encode() for event in events]
    return b"[\n  " + b",\n  ".join([valid[0], element, *valid[1:]]) + b"\n]"


async def test_lone_surrogate_rejects_only_that_element(
    sink: Sink, conn: asyncpg.Connection[Any]
) -> None:
    events = execution_story(1)
    element = surrogate_element()
    status, answer = await sink.post(batch_with(element, events))
    assert status == 200, answer
    assert (answer["stored"], answer["rejected"]) == (len(events), 1)
    stored = await conn.fetchval("SELECT count(*) FROM studio.events")
    assert stored == len(events)
    row = await conn.fetchrow("SELECT * FROM studio.rejected_events")
    assert row["reason"] == "unstorable_value"
    assert "lone UTF-16 surrogate" in row["detail"]
    assert (row["event_id"], row["source"]) == ("EZsurrogate", "/test")
    assert bytes(row["raw"]) == element  # the element's own bytes, as they came
    assert row["raw_text"] == element.decode()
    assert await conn.fetchval("SELECT count(*) FROM studio.steps") == 1


async def test_lone_surrogate_in_the_id_is_kept_without_it(
    sink: Sink, conn: asyncpg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The rejected row cannot name an id Postgres cannot hold: event_id is left empty,
    and the batch commits at once (not refused by Postgres, then retried piece by piece)."""
    events = execution_story(0)
    status, answer = await sink.post(batch_with(surrogate_element("EZ\\udc00"), events))
    assert status == 200, answer
    assert (answer["stored"], answer["rejected"]) == (len(events), 1)
    row = await conn.fetchrow("SELECT reason, event_id, raw_text FROM studio.rejected_events")
    assert (row["reason"], row["event_id"]) == ("unstorable_value", None)
    assert "EZ\\udc00" in row["raw_text"]
    assert not [r for r in caplog.records if "refused a batch" in r.getMessage()]


async def test_lone_surrogate_in_a_single_event_batch_is_400_with_its_reason(
    sink: Sink, conn: asyncpg.Connection[Any]
) -> None:
    status, answer = await sink.post(b"[" + surrogate_element() + b"]")
    assert status == 400, answer
    assert answer["error"] == "unstorable_value"
    assert "lone UTF-16 surrogate" in answer["message"]
    assert await conn.fetchval("SELECT count(*) FROM studio.rejected_events") == 1


async def test_body_that_is_not_json_is_still_one_400(
    sink: Sink, conn: asyncpg.Connection[Any]
) -> None:
    valid = jsontext.dumps(execution_story(0)[0]).encode()
    body = b"[" + valid + b"," + surrogate_element() + b", {"  # broken at the end
    status, answer = await sink.post(body)
    assert status == 400 and answer["error"] == "not_json", answer
    assert await conn.fetchval("SELECT count(*) FROM studio.events") == 0
    assert bytes(await conn.fetchval("SELECT raw FROM studio.rejected_events")) == body
