"""SINK_CONTACT_MODE through real HTTP: what reaches the typed rows, the raw events and the
rejected raw bytes, in each mode (docs/privacy.md)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from sink.ingest.redact import contact_key, text_forms
from tests.conftest import Sink
from tests.support.studio import ENDED, STARTED, execution_event, recent, sid

PHONE = "+15551230123"
WHATSAPP = "whatsapp:+15557770456"
KEY = "privacy-test-key-0123456789abcdef"


def _story(contact: str) -> tuple[str, list[dict[str, Any]]]:
    flow, execution = sid("FW"), sid("FN")
    t = recent()
    started = execution_event(STARTED, execution, flow, at=t, contact=contact)
    ended = execution_event(ENDED, execution, flow, at=t, contact=contact)
    return execution, [started, ended]


async def _stored(
    conn: asyncpg.Connection[Any], execution: str
) -> tuple[Any, list[Any], list[Any]]:
    contact = await conn.fetchval(
        "SELECT contact_channel_address FROM studio.executions WHERE execution_sid = $1",
        execution,
    )
    events = await conn.fetch(
        "SELECT data->>'contact_channel_address' AS c FROM sink.events"
        " WHERE data->>'execution_sid' = $1",
        execution,
    )
    rejected = await conn.fetch("SELECT raw, raw_text FROM sink.rejected_events")
    return contact, [r["c"] for r in events], list(rejected)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("keep", {PHONE: PHONE, WHATSAPP: WHATSAPP}),
        (
            "hash",
            {
                PHONE: contact_key(PHONE, KEY.encode()),
                WHATSAPP: contact_key(WHATSAPP, KEY.encode()),
            },
        ),
        ("mask", {PHONE: "+*******0123", WHATSAPP: "whatsapp:+*******0456"}),
    ],
)
async def test_each_contact_mode_applies_to_typed_rows_raw_events_and_rejected_bytes(
    start_sink: Callable[..., Any],
    conn: asyncpg.Connection[Any],
    mode: str,
    expected: dict[str, str],
) -> None:
    sink: Sink = await start_sink(contact_mode=mode, pii_key=KEY)
    for address, stored in expected.items():
        execution, events = _story(address)
        broken = dict(events[0], id=None)  # rejected, kept with its raw bytes
        status, answer = await sink.post([*events, broken])
        assert status == 200 and answer["stored"] == 2 and answer["rejected"] == 1
        contact, raw_contacts, _ = await _stored(conn, execution)
        assert contact == stored
        assert raw_contacts == [stored, stored]
    rejected = await conn.fetch("SELECT raw, raw_text FROM sink.rejected_events")
    assert len(rejected) == 2
    for row in rejected:
        element = json.loads(row["raw_text"])
        assert element["data"]["contact_channel_address"] in expected.values()
        leaked = [f for a in expected for f in text_forms(a) if f.encode() in bytes(row["raw"])]
        assert (leaked == []) == (mode != "keep")


async def test_hash_mode_keeps_all_executions_of_a_caller_together(
    start_sink: Callable[..., Any], conn: asyncpg.Connection[Any]
) -> None:
    sink: Sink = await start_sink(contact_mode="hash", pii_key=KEY)
    for _ in range(3):
        _, events = _story(PHONE)
        assert (await sink.post(events))[0] == 200
    _, events = _story("+15550000001")
    assert (await sink.post(events))[0] == 200
    count = await conn.fetchval(
        "SELECT count(*) FROM studio.executions WHERE contact_channel_address = $1",
        contact_key(PHONE, KEY.encode()),
    )
    assert count == 3


async def test_contact_key_over_http_matches_the_stored_form(
    start_sink: Callable[..., Any], conn: asyncpg.Connection[Any]
) -> None:
    sink: Sink = await start_sink(contact_mode="hash", pii_key=KEY, admin_token="admin-secret")
    execution, events = _story(PHONE)
    assert (await sink.post(events))[0] == 200
    response = await sink.client.post(
        "/privacy/contact-key",
        json={"contact": PHONE},
        headers={"Authorization": "Bearer admin-secret"},
    )
    assert response.status == 200
    key = (await response.json())["contact_key"]
    stored = await conn.fetchval(
        "SELECT contact_channel_address FROM studio.executions WHERE execution_sid = $1",
        execution,
    )
    assert key == stored
    refused = await sink.client.post("/privacy/contact-key", json={"contact": PHONE})
    assert refused.status == 401
