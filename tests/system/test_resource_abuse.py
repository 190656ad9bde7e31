"""Resource abuse: slow clients, idle connections, floods. The sink answers and stays small."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil
import pytest
from yarl import URL

from sink import jsontext
from tests.conftest import Sink
from tests.support.process import SinkProcess
from tests.support.studio import execution_story
from tests.support.twilio import signed_request
from tests.system import TWILIO_TIMEOUT

pytestmark = pytest.mark.slow  # real processes: outside the quick run


FLOOD = 2000
MAX_PENDING = 20
RSS_GROWTH_LIMIT = 150 * 1024 * 1024


async def read_status(reader: asyncio.StreamReader) -> int:
    line = await reader.readline()
    return int(line.split()[1])


async def test_slow_client_is_timed_out_while_others_are_served(
    start_sink: Callable[..., Any], conn: asyncpg.Connection[Any]
) -> None:
    sink: Sink = await start_sink(client_timeout=1.0)
    story = execution_story(1)
    body = jsontext.dumps(story).encode()
    url, headers = signed_request(sink.url(), body)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (
        f"POST {URL(url).raw_path_qs} HTTP/1.1\r\nHost: {URL(url).raw_authority}\r\n{head}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    server = sink.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)

    async def trickle() -> None:
        writer.write(request.encode())
        with contextlib.suppress(ConnectionError):
            for byte in body:  # a byte at a time: the whole body would take a minute
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.05)

    trickling = asyncio.create_task(trickle())
    try:
        for _ in range(10):
            status, answer = await sink.post(execution_story(1))
            assert status == 200, answer
        async with asyncio.timeout(TWILIO_TIMEOUT):
            assert await read_status(reader) == 503  # body_timeout: Twilio retries
    finally:
        trickling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await trickling
        writer.close()
    stored = await conn.fetchval(
        "SELECT count(*) FROM studio.events WHERE event_id = ANY($1)", [e["id"] for e in story]
    )
    assert stored == 0
    assert await conn.fetchval("SELECT count(*) FROM studio.events") == 30


async def test_many_idle_connections_do_not_block_deliveries(sink: Sink) -> None:
    server = sink.client.server
    idle: list[asyncio.StreamWriter] = []
    try:
        for n in range(400):
            _, writer = await asyncio.open_connection(server.host, server.port)
            if n % 2:
                writer.write(b"POST /events HTTP/1.1\r\nHost: sin")  # headers never finish
            idle.append(writer)
        for _ in range(5):
            status, answer = await sink.post(execution_story(1))
            assert status == 200, answer
    finally:
        for writer in idle:
            writer.close()


@pytest.mark.timeout(120)
async def test_a_flood_is_answered_429_503_fast_with_memory_bounded(
    database_url: str, conn: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    process = SinkProcess(
        database_url,
        tmp_path / "sink.log",
        env={"SINK_MAX_PENDING_EVENTS": str(MAX_PENDING), "SINK_LOG_LEVEL": "error"},
    )
    process.start()
    statuses: dict[str, int] = {}
    acked: set[str] = set()
    try:
        await process.wait_ready()
        assert process.proc is not None
        rss = psutil.Process(process.proc.pid)
        baseline = peak = rss.memory_info().rss
        sampling = True

        async def sample() -> None:
            nonlocal peak
            while sampling:
                peak = max(peak, rss.memory_info().rss)
                await asyncio.sleep(0.02)

        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def deliver() -> None:
                story = execution_story(1)
                body = jsontext.dumps(story).encode()
                url, headers = signed_request(f"{process.base_url}/events", body)
                try:
                    async with asyncio.timeout(TWILIO_TIMEOUT):
                        async with session.post(
                            URL(url, encoded=True), data=body, headers=headers
                        ) as response:
                            await response.read()
                            status = str(response.status)
                except TimeoutError:
                    status = "timeout"
                statuses[status] = statuses.get(status, 0) + 1
                if status == "200":
                    acked.update(e["id"] for e in story)

            sampler = asyncio.create_task(sample())
            await asyncio.gather(*(deliver() for _ in range(FLOOD)))
            sampling = False
            await sampler
    finally:
        process.stop()
    print(
        f"\nflood: {FLOOD} concurrent deliveries, answers {sorted(statuses.items())};"
        f" RSS {baseline / 2**20:.0f} MiB before, peak {peak / 2**20:.0f} MiB"
    )
    assert set(statuses) <= {"200", "429", "503"}, statuses
    assert statuses.get("429", 0) > 0  # the bounded queue pushed back
    assert peak - baseline < RSS_GROWTH_LIMIT
    rows = await conn.fetch("SELECT event_id FROM studio.events")
    assert acked <= {r["event_id"] for r in rows}
