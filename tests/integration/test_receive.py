"""Receiving deliveries over real HTTP into a real Postgres."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cloudevents.core.bindings.http import to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from tests.conftest import Sink
from tests.support.studio import STEP, execution_story, sid, sink_test_event

pytestmark = pytest.mark.through_pgbouncer


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "event-streams-delivery.json"


async def counts(conn: asyncpg.Connection[Any]) -> dict[str, int]:
    return {
        table: await conn.fetchval(f"SELECT count(*) FROM studio.{table}")
        for table in ("events", "executions", "steps", "rejected_events")
    }


async def test_example_delivery_lands_in_typed_tables(
    sink: Sink, conn: asyncpg.Connection[Any]
) -> None:
    body = EXAMPLE.read_bytes()
    status, answer = await sink.post(body)
    assert status == 200, answer
    assert answer["stored"] == 4
    execution = await conn.fetchrow("SELECT * FROM studio.executions")
    assert execution["execution_sid"] == "FN4c1f2a3b4c5d6e7f8091a2b3c4d5e6f7"
    assert execution["status"] == "ended"
    assert execution["ended_reason"] == "FLOW_END"
    assert execution["flow_revision"] == 7
    assert execution["started_by"] == "Trigger"
    assert execution["contact_channel_address"] == "+15017122661"
    assert execution["context"] is None
    step = await conn.fetchrow("SELECT * FROM studio.steps")
    assert step["name"] == "send_greeting"
    assert step["transitioned_from"] == "Trigger"
    assert step["execution_sid"] == execution["execution_sid"]
    test = await conn.fetchrow(
        "SELECT * FROM studio.events WHERE type = 'com.twilio.eventstreams.test-event'"
    )
    # Twilio's test event: its id is the Account SID for every test, so it is stored under
    # <id>/<test_id>, and its data gains that account (it came with test_id alone)
    test_id = "6f1c2a7e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"
    account = "AC0a1b2c3d4e5f60718293a4b5c6d7e8f9"
    assert json.loads(test["data"]) == {"test_id": test_id, "account_sid": account}
    assert test["event_id"] == f"{account}/{test_id}"
    assert test["source"] == "Sink"


async def test_duplicates_add_no_rows(sink: Sink, conn: asyncpg.Connection[Any]) -> None:
    events = execution_story(4)
    for _ in range(3):
        status, _answer = await sink.post(events)
        assert status == 200
    assert await counts(conn) == {"events": 6, "executions": 1, "steps": 4, "rejected_events": 0}
    dupes = await conn.fetchval("SELECT sum(duplicates) FROM studio.events")
    assert dupes == 12
    status, answer = await sink.post(events + events[:2])
    assert answer["stored"] == 0 and answer["duplicates"] == 8


async def test_any_order_gives_the_same_rows(sink: Sink, conn: asyncpg.Connection[Any]) -> None:
    events = execution_story(3, start=datetime(2026, 11, 20, 14, 0, tzinfo=UTC))
    shuffled = events[::-1]
    for event in shuffled:  # ended first, steps before started
        status, _ = await sink.post([event])
        assert status == 200
    row = await conn.fetchrow("SELECT * FROM studio.executions")
    assert row["status"] == "ended"
    assert row["ended_reason"] == "FLOW_END"
    assert row["flow_revision"] == 3
    assert row["date_created"].isoformat() == "2026-11-20T14:00:00+00:00"
    assert await conn.fetchval("SELECT count(*) FROM studio.steps") == 3


async def test_step_for_unknown_execution_creates_it(
    sink: Sink, conn: asyncpg.Connection[Any]
) -> None:
    step = [e for e in execution_story(1) if e["type"] == STEP]
    status, _ = await sink.post(step)
    assert status == 200
    row = await conn.fetchrow("SELECT * FROM studio.executions")
    assert row["execution_sid"] == step[0]["data"]["execution_sid"]
    assert row["flow_sid"] == step[0]["data"]["flow_sid"]
    assert row["account_sid"] == step[0]["data"]["account_sid"]
    assert row["status"] == "active"


async def test_other_products_events_are_kept_but_not_typed(
    sink: Sink, conn: asyncpg.Connection[Any]
) -> None:
    other = {
        "specversion": "1.0",
        "type": "com.twilio.messaging.message.delivered",
        "source": "/2010-04-01/Accounts/AC1/Messages/SM1",
        "id": sid("EZ"),
        "time": "2026-11-20T14:00:00Z",
        "data": {"messageSid": "SM1"},
    }
    status, answer = await sink.post([other, sink_test_event()])
    assert status == 200 and answer["stored"] == 2
    assert await counts(conn) == {"events": 2, "executions": 0, "steps": 0, "rejected_events": 0}


async def test_data_as_json_string_is_decoded(sink: Sink, conn: asyncpg.Connection[Any]) -> None:
    events = execution_story(1)
    for event in events:
        event["data"] = json.dumps(event["data"])
    status, answer = await sink.post(events)
    assert status == 200 and answer["stored"] == 3
    assert await conn.fetchval("SELECT status FROM studio.executions") == "ended"
    data = await conn.fetchval("SELECT data FROM studio.events WHERE type = $1", STEP)
    assert isinstance(json.loads(data), dict)


async def test_single_structured_event(sink: Sink, conn: asyncpg.Connection[Any]) -> None:
    event = execution_story(1)[0]
    sdk_event = CloudEvent(
        attributes={
            "type": event["type"],
            "source": event["source"],
            "id": event["id"],
            "specversion": "1.0",
            "datacontenttype": "application/json",
        },
        data=event["data"],
    )
    message = to_structured(sdk_event, JSONFormat())
    status, answer = await sink.post(message.body, **message.headers)
    assert status == 200, answer
    assert await conn.fetchval("SELECT event_id FROM studio.events") == event["id"]


async def test_binary_mode(sink: Sink, conn: asyncpg.Connection[Any]) -> None:
    event = execution_story(1)[1]
    sdk_event = CloudEvent(
        attributes={
            "type": event["type"],
            "source": event["source"],
            "id": event["id"],
            "specversion": "1.0",
            "datacontenttype": "application/json",
            "time": datetime(2026, 11, 20, 14, 0, 1, tzinfo=UTC),
        },
        data=event["data"],
    )
    message = to_binary(sdk_event, JSONFormat())
    status, answer = await sink.post(message.body, **message.headers)
    assert status == 200, answer
    row = await conn.fetchrow("SELECT * FROM studio.steps")
    assert row["step_sid"] == event["data"]["step_sid"]


async def test_shuffled_concurrent_deliveries(sink: Sink, conn: asyncpg.Connection[Any]) -> None:
    import asyncio

    stories = [execution_story(5) for _ in range(20)]
    events = [e for story in stories for e in story] * 3
    random.Random(7).shuffle(events)
    batches = [events[i : i + 25] for i in range(0, len(events), 25)]
    results = await asyncio.gather(*(sink.post(batch) for batch in batches))
    assert all(status == 200 for status, _ in results)
    assert sum(a["stored"] for _, a in results) == 20 * 7
    assert await counts(conn) == {
        "events": 140,
        "executions": 20,
        "steps": 100,
        "rejected_events": 0,
    }
    assert (
        await conn.fetchval("SELECT count(*) FROM studio.executions WHERE status = 'ended'") == 20
    )
