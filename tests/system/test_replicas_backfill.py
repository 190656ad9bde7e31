"""Two sink processes on one database share backfill work and overlapping deliveries.

No duplicate rows, no lost items, and no item processed twice: each execution's context
is fetched from the (fake) Studio API exactly once, though both processes run workers.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pytest_aiohttp import AiohttpServer
from yarl import URL

from sink import jsontext
from tests.fakes.studio_api import create_app
from tests.fakes.studio_data import FakeStudio
from tests.support.process import SinkProcess
from tests.support.studio import ENDED, STARTED, execution_event
from tests.support.twilio import signed_request

pytestmark = pytest.mark.slow  # real processes: outside the quick run


EXECUTIONS, STEPS = 40, 2


async def backfilled_by(session: aiohttp.ClientSession, sink: SinkProcess) -> float:
    async with session.get(f"{sink.base_url}/metrics") as response:
        text = await response.text()
    for family in text_string_to_metric_families(text):
        if family.name == "sink_backfill_items":
            return sum(
                s.value
                for s in family.samples
                if s.labels.get("outcome") == "done" and s.name.endswith("_total")
            )
    return 0.0


@pytest.mark.timeout(120)
async def test_two_replicas_share_backfill_work_and_deliveries(
    database_url: str,
    conn: asyncpg.Connection[Any],
    tmp_path: Path,
    aiohttp_server: AiohttpServer,
) -> None:
    fake = FakeStudio(seed=8)
    fake.latency = 0.005
    executions = fake.populate(executions=EXECUTIONS, steps=STEPS)
    studio = await aiohttp_server(create_app(fake))
    user, password = fake.credentials
    env = {
        "SINK_BACKFILL_WORKERS": "4",
        "SINK_STUDIO_BASE_URL": str(studio.make_url("")).rstrip("/"),
        "SINK_TWILIO_API_KEY_SID": user,
        "SINK_TWILIO_API_KEY_SECRET": password,
        "SINK_BACKFILL_RATE_LIMIT": "1000",
    }
    sinks = [SinkProcess(database_url, tmp_path / f"sink-{n}.log", env=env) for n in range(2)]
    for sink in sinks:
        sink.start()
    try:
        await asyncio.gather(*(sink.wait_ready() for sink in sinks))
        async with aiohttp.ClientSession() as session:

            async def deliver(sink: SinkProcess, events: list[Any]) -> None:
                body = jsontext.dumps(events).encode()
                url, headers = signed_request(f"{sink.base_url}/events", body)
                async with session.post(
                    URL(url, encoded=True), data=body, headers=headers
                ) as response:
                    assert response.status == 200, await response.text()

            # the same executions' events, to both replicas, while they backfill
            deliveries = []
            for e in executions:
                events = [
                    execution_event(STARTED, e.sid, e.flow_sid, at=e.date_created, revision=1),
                    execution_event(ENDED, e.sid, e.flow_sid, at=e.date_created, revision=1),
                ]
                deliveries.append((events, events[::-1]))
            # first round: the executions become known (a backfill needs their flow)
            await asyncio.gather(*(deliver(sinks[n % 2], d[0]) for n, d in enumerate(deliveries)))
            await conn.execute(
                "SELECT sink.enqueue_executions('sql', $1::text[])",
                [e.sid for e in executions],
            )
            # second round, while both replicas backfill: the same events, the other way
            await asyncio.gather(
                *(deliver(sinks[(n + 1) % 2], d[1]) for n, d in enumerate(deliveries))
            )

            deadline = time.monotonic() + 60  # a hang guard, not a speed requirement
            while await conn.fetchval(
                "SELECT count(*) FROM sink.backfill_items WHERE state IN ('queued', 'running')"
            ):
                assert time.monotonic() < deadline, "backfill did not finish"
                await asyncio.sleep(0.1)
            shares = [await backfilled_by(session, sink) for sink in sinks]
    finally:
        for sink in sinks:
            sink.stop()

    items = await conn.fetch("SELECT execution_sid, state, attempts FROM sink.backfill_items")
    assert sorted(i["execution_sid"] for i in items) == sorted(e.sid for e in executions)
    assert {(i["state"], i["attempts"]) for i in items} == {("done", 1)}
    contexts = Counter(r.path for r in fake.log if r.endpoint == "execution_context")
    assert len(contexts) == EXECUTIONS and set(contexts.values()) == {1}
    assert all(share > 0 for share in shares), shares  # both replicas took items
    rows = await conn.fetch("SELECT execution_sid, status, context FROM studio.executions")
    assert len(rows) == EXECUTIONS
    assert {r["status"] for r in rows} == {"ended"}
    assert all(r["context"] is not None for r in rows)
    assert await conn.fetchval("SELECT count(*) FROM studio.steps") == EXECUTIONS * STEPS
    assert await conn.fetchval("SELECT count(*) FROM studio.events") == EXECUTIONS * 2
    print(
        f"\nreplicas + backfill: {EXECUTIONS} items, done once each, shared {shares};"
        f" {EXECUTIONS * 2} deliveries of {EXECUTIONS * 2} events, no duplicate rows"
    )
