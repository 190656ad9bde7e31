"""At-least-once and unordered, across connections and sink processes: one row each."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from yarl import URL

from sink import jsontext
from tests.conftest import Sink
from tests.support.process import SinkProcess
from tests.support.studio import execution_story
from tests.support.twilio import signed_request

pytestmark = pytest.mark.slow  # real processes: outside the quick run


STORIES, STEPS, COPIES, BATCH = 30, 4, 3, 7


async def deliver(session: aiohttp.ClientSession, base_url: str, events: list[Any]) -> Any:
    body = jsontext.dumps(events).encode()
    url, headers = signed_request(f"{base_url}/events", body)
    async with session.post(URL(url, encoded=True), data=body, headers=headers) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def assert_one_row_each(conn: asyncpg.Connection[Any], stories: list[Any]) -> None:
    ids = sorted(e["id"] for story in stories for e in story)
    rows = await conn.fetch("SELECT event_id FROM studio.events ORDER BY 1")
    assert [r["event_id"] for r in rows] == ids
    assert await conn.fetchval("SELECT count(*) FROM studio.steps") == len(stories) * STEPS
    statuses = await conn.fetch("SELECT status, ended_reason FROM studio.executions")
    assert len(statuses) == len(stories)
    assert {(r["status"], r["ended_reason"]) for r in statuses} == {("ended", "FLOW_END")}
    duplicates = await conn.fetchval("SELECT sum(duplicates) FROM studio.events")
    assert duplicates == len(ids) * (COPIES - 1)


@pytest.mark.timeout(120)
async def test_three_copies_shuffled_over_two_sink_processes(
    database_url: str, conn: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    sinks = [SinkProcess(database_url, tmp_path / f"sink-{n}.log") for n in range(2)]
    for sink in sinks:
        sink.start()
    try:
        await asyncio.gather(*(sink.wait_ready() for sink in sinks))
        stories = [execution_story(STEPS) for _ in range(STORIES)]
        events = [e for story in stories for e in story] * COPIES
        random.Random(11).shuffle(events)
        batches = [events[i : i + BATCH] for i in range(0, len(events), BATCH)]
        sessions = [aiohttp.ClientSession() for _ in range(4)]  # several connections each
        try:
            answers = await asyncio.gather(
                *(
                    deliver(sessions[n % 4], sinks[n % 2].base_url, batch)
                    for n, batch in enumerate(batches)
                )
            )
        finally:
            for session in sessions:
                await session.close()
    finally:
        for sink in sinks:
            sink.stop()
    unique = STORIES * (STEPS + 2)
    assert sum(a["stored"] for a in answers) == unique
    assert sum(a["duplicates"] for a in answers) == unique * (COPIES - 1)
    await assert_one_row_each(conn, stories)
    print(
        f"\nreplicas: {len(batches)} deliveries ({COPIES} copies of {unique} events, shuffled)"
        f" over 2 processes: {unique} stored once each, 0 lost"
    )


async def test_repeats_inside_one_delivery_are_counted(
    sink: Sink, conn: asyncpg.Connection[Any]
) -> None:
    story = execution_story(1)
    status, answer = await sink.post(story * COPIES)
    assert status == 200 and answer["stored"] == len(story)
    assert answer["duplicates"] == len(story) * (COPIES - 1)
    counted = await conn.fetch("SELECT duplicates FROM studio.events")
    assert [r["duplicates"] for r in counted] == [COPIES - 1] * len(story)
