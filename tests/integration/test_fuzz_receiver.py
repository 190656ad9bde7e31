"""A hypothesis corpus of bad and strange deliveries, signed, through real HTTP.

Nothing crashes: every answer is 200, 400 or 413 as the core issue's table says (never a
500), what is valid lands intact, and what Postgres cannot hold (NUL) lands in
studio.rejected_events with its reason. The number of cases tried is printed at the end.
The run is bounded: ``SINK_FUZZ_EXAMPLES`` scales the number of examples (default 1; the
quick run, ``-m "not slow"``, takes 0.25: tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from sink.app import create_app
from sink.config import Settings
from tests.support import pg
from tests.support.studio import execution_story
from tests.support.twilio import TOKEN, signed_request

T = TypeVar("T")
SCALE = float(os.environ.get("SINK_FUZZ_EXAMPLES", "1"))
MAX_BODY = 2 * 1024 * 1024
ATTRIBUTES = (
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "dataschema",
    "datacontenttype",
    "subject",
    "data",
)
_ids = itertools.count()


def fuzz_settings(examples: int) -> Any:
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
        database=None,
    )


@dataclass
class Harness:
    """The sink on a private event loop, so sync hypothesis tests can drive it."""

    loop: asyncio.AbstractEventLoop
    base_url: str
    session: aiohttp.ClientSession
    conn: asyncpg.Connection[Any]
    statuses: dict[int, int] = field(default_factory=dict)
    cases: int = 0

    def run(self, coro: Awaitable[T]) -> T:
        return self.loop.run_until_complete(coro)

    async def post(self, body: bytes, **headers: str) -> tuple[int, dict[str, Any]]:
        url, all_headers = signed_request(f"{self.base_url}/events", body, TOKEN, **headers)
        async with self.session.post(
            URL(url, encoded=True), data=io.BytesIO(body), headers=all_headers
        ) as response:
            text = await response.text()
        self.cases += 1
        self.statuses[response.status] = self.statuses.get(response.status, 0) + 1
        assert response.status in (200, 400, 413), (response.status, text[:500], body[:300])
        answer: dict[str, Any] = json.loads(text)
        return response.status, answer

    def deliver(self, body: bytes) -> tuple[int, dict[str, Any]]:
        return self.run(self.post(body))


@pytest.fixture(scope="module")
def harness(pg_server: str, pg_template: str, request: pytest.FixtureRequest) -> Iterator[Harness]:
    loop = asyncio.new_event_loop()
    name = loop.run_until_complete(pg.clone(pg_server, pg_template))
    url = pg.with_database(pg_server, name)
    app = create_app(
        Settings(
            database_url=url,
            twilio_auth_token=TOKEN,
            log_format="text",
            backfill_workers=0,
            max_body_bytes=MAX_BODY,
            batch_max_wait_ms=0,
            log_level="error",
        )
    )
    runner = web.AppRunner(app, access_log=None)

    async def start() -> Harness:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return Harness(
            loop, f"http://127.0.0.1:{port}", aiohttp.ClientSession(), await asyncpg.connect(url)
        )

    h = loop.run_until_complete(start())
    yield h

    async def stop() -> None:
        await runner.cleanup()
        await h.session.close()
        await h.conn.close()
        await pg.drop(pg_server, name)
        await asyncio.sleep(0.05)  # let closed connections' handlers finish

    loop.run_until_complete(stop())
    leftover = asyncio.all_tasks(loop)  # e.g. a handler lingering after the 413
    for task in leftover:
        task.cancel()
    if leftover:  # gather() of nothing needs a running loop, which there is not here
        loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
    loop.close()
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\nfuzz: {h.cases} cases tried; answers by status {sorted(h.statuses.items())}")


def event(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "specversion": "1.0",
        "id": f"EZfuzz{next(_ids)}",
        "source": "/fuzz",
        "type": "com.example.fuzz",
        "time": "2026-11-20T14:00:00Z",
        "data": {"k": "v"},
    }
    base.update(overrides)
    return base


storable_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
    max_size=20,
)
json_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | storable_text
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(storable_text, inner, max_size=4),
    max_leaves=12,
)


@fuzz_settings(400)
@given(st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_malformed_bodies(harness: Harness, body: bytes) -> None:
    harness.deliver(body)


@fuzz_settings(300)
@given(
    st.lists(st.builds(lambda: execution_story(1)), min_size=1, max_size=2),
    st.integers(min_value=1, max_value=400),
)
def test_truncated_valid_json(harness: Harness, stories: list[list[Any]], cut: int) -> None:
    body = json.dumps([e for s in stories for e in s]).encode()
    status, _ = harness.deliver(body[: max(0, len(body) - cut)])
    assert status == 400


@fuzz_settings(150)
@given(
    st.integers(min_value=1, max_value=1100),
    st.sampled_from(["[", '{"a":']),
    st.sampled_from(["0", '"x"', '"\\u0000"', "123456789012345678901234567890", "[]"]),
    st.booleans(),
)
def test_deep_nesting(harness: Harness, depth: int, opener: str, inner: str, in_data: bool) -> None:
    closer = "]" if opener == "[" else "}"
    nested = opener * depth + inner + closer * depth
    body = json.dumps([event(data=0)]).replace("0}]", nested + "}]") if in_data else nested
    harness.deliver(body.encode())


@fuzz_settings(60)
@given(
    st.sampled_from(["string", "bigint", "float", "key"]),
    st.integers(min_value=1, max_value=500_000),
)
def test_huge_strings_and_numbers(harness: Harness, kind: str, size: int) -> None:
    if kind == "string":
        value: Any = "x" * size
        body = json.dumps([event(data={"s": value}, subject=value[:1000])]).encode()
    elif kind == "key":
        body = json.dumps([event(data={"k" * size: 1})]).encode()
    else:
        digits = "9" * min(size, 5000)
        number = digits if kind == "bigint" else f"1.{digits}e{size % 700}"
        body = json.dumps([event(data=0)]).encode().replace(b"0}]", number.encode() + b"}]")
    status, answer = harness.deliver(body)
    assert status in (200, 400, 413)
    if status == 200:
        assert answer["stored"] + answer["rejected"] == 1


@fuzz_settings(300)
@given(st.sampled_from(ATTRIBUTES), json_value, st.booleans())
def test_wrong_types_for_every_attribute(
    harness: Harness, attribute: str, value: Any, also_valid: bool
) -> None:
    bad = event(**{attribute: value})
    batch = [bad, event()] if also_valid else [bad]
    status, answer = harness.deliver(json.dumps(batch).encode())
    if also_valid:
        assert status == 200 and answer["stored"] + answer["duplicates"] >= 1


@fuzz_settings(200)
@given(
    st.binary(min_size=1, max_size=4).filter(lambda b: not _is_utf8(b)),
    st.integers(min_value=0, max_value=1000),
)
def test_invalid_utf8(harness: Harness, garbage: bytes, where: int) -> None:
    body = json.dumps([event(data={"text": "before-after"})]).encode()
    position = body.index(b"before-") + len(b"before-")
    if where % 2:
        position = where % len(body)
    status, _ = harness.deliver(body[:position] + garbage + body[position:])
    assert status == 400


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@fuzz_settings(40)
@given(st.sampled_from([b"[]", b"[[]]", b"{}", b"[{}]", b"[null]", b"[[], {}]", b"  []  "]))
def test_empty_arrays_and_objects(harness: Harness, body: bytes) -> None:
    status, answer = harness.deliver(body)
    if body.strip() == b"[]":
        assert status == 200 and answer["stored"] == 0
    else:
        assert status == 400


@fuzz_settings(200)
@given(
    json_value | json_value.map(json.dumps),
    st.sampled_from([None, "application/json", "text/plain", "application/cloudevents+json"]),
)
def test_data_as_strings_and_objects(harness: Harness, data: Any, contenttype: str | None) -> None:
    extra = {"datacontenttype": contenttype} if contenttype else {}
    status, answer = harness.deliver(json.dumps([event(data=data, **extra)]).encode())
    assert status == 200 and answer["stored"] == 1


@fuzz_settings(200)
@given(st.text(max_size=30), st.text(max_size=30), st.sampled_from(["id", "source", "data", "key"]))
def test_nul_lands_in_rejected_with_its_reason(
    harness: Harness, before: str, after: str, where: str
) -> None:
    poisoned = f"{before}\x00{after}"
    event_id = f"EZnul{next(_ids)}"
    if where == "data":
        bad = event(id=event_id, data={"text": poisoned})
    elif where == "key":
        bad = event(id=event_id, data={poisoned: 1})
    elif where == "source":
        bad = event(id=event_id, source=poisoned)
    else:
        bad = event(id=event_id + poisoned)
    status, answer = harness.deliver(json.dumps([bad, event()]).encode())
    assert status == 200 and answer["rejected"] == 1 and answer["stored"] == 1
    row = harness.run(
        harness.conn.fetchrow(
            "SELECT reason, detail, event_id FROM studio.rejected_events WHERE request_id = $1",
            answer["request_id"],
        )
    )
    assert row is not None and row["reason"] == "unstorable_value" and "NUL" in row["detail"]
    assert row["event_id"] == (None if where == "id" else event_id)


hostile_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
    max_size=60,
) | st.sampled_from(
    [
        "'",
        '"',
        ";",
        "'; DROP TABLE sink.events; --",
        "\\",
        "$1",
        "%s",
        "\u202e",
        "\U0001f600",
        "\ufeff",
        "e\u0301",
    ]
)


@fuzz_settings(300)
@given(hostile_text, hostile_text, hostile_text)
def test_quotes_semicolons_and_unicode_land_intact(
    harness: Harness, id_text: str, source: str, value: str
) -> None:
    event_id = f"EZ{next(_ids)}{id_text}"
    sent = event(id=event_id, source=source or "/s", subject=value, data={value: [value]})
    status, answer = harness.deliver(json.dumps([sent]).encode())
    assert status == 200 and answer["stored"] == 1, answer
    row = harness.run(
        harness.conn.fetchrow(
            "SELECT subject, data FROM studio.events WHERE source = $1 AND event_id = $2",
            sent["source"],
            event_id,
        )
    )
    assert row is not None
    assert row["subject"] == value
    assert json.loads(row["data"]) == {value: [value]}


def test_an_array_of_10000_tiny_events(harness: Harness) -> None:
    tiny = [
        {"specversion": "1.0", "id": f"t{n}", "source": "/tiny", "type": "x"} for n in range(10_000)
    ]
    status, answer = harness.deliver(json.dumps(tiny, separators=(",", ":")).encode())
    assert status == 200 and answer["stored"] == 10_000
    count = harness.run(
        harness.conn.fetchval("SELECT count(*) FROM studio.events WHERE source = '/tiny'")
    )
    assert count == 10_000


def test_over_the_limit_is_413(harness: Harness) -> None:
    status, _ = harness.deliver(b"[" + b" " * MAX_BODY + b"]")
    assert status == 413
