"""SIGTERM under load: every delivery that got a 2xx is stored; none is cut off unanswered."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from sink import jsontext
from tests.support.process import SinkProcess
from tests.support.studio import execution_story
from tests.support.twilio import signed_request

pytestmark = pytest.mark.slow  # real processes: outside the quick run


async def test_sigterm_under_load_loses_nothing(database_url: str, tmp_path: Path) -> None:
    sink = SinkProcess(
        database_url,
        tmp_path / "sink.log",
        env={"SINK_SHUTDOWN_DELAY": "1", "SINK_SHUTDOWN_GRACE": "10"},
    )
    sink.start()
    acked: list[str] = []
    refused = 0
    unanswered: list[str] = []
    stop_sending = asyncio.Event()
    try:
        await sink.wait_ready()

        async def loader(session: aiohttp.ClientSession) -> None:
            nonlocal refused
            while not stop_sending.is_set():
                events = [e for _ in range(5) for e in execution_story(3)]
                body = jsontext.dumps(events).encode()
                url, headers = signed_request(f"{sink.base_url}/events", body)
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        if response.status == 200:
                            acked.extend(e["id"] for e in events)
                        elif response.status == 503:
                            stop_sending.set()  # the sink is draining: Twilio would retry
                        else:
                            unanswered.append(f"status {response.status}")
                except aiohttp.ClientConnectorError:
                    refused += 1
                    stop_sending.set()
                except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                    unanswered.append(repr(exc))

        connector = aiohttp.TCPConnector(force_close=True, limit=16)
        async with aiohttp.ClientSession(connector=connector) as session:
            tasks = [asyncio.create_task(loader(session)) for _ in range(8)]
            while len(acked) < 3000:
                await asyncio.sleep(0.05)
            sink.send(signal.SIGTERM)
            await asyncio.wait_for(asyncio.gather(*tasks), 15)
        assert await asyncio.to_thread(sink.wait, 20) == 0
    finally:
        sink.stop()
    log = (tmp_path / "sink.log").read_text()
    assert unanswered == [], log[-2000:]
    conn: asyncpg.Connection[Any] = await asyncpg.connect(database_url)
    try:
        stored = {r["event_id"] for r in await conn.fetch("SELECT event_id FROM studio.events")}
    finally:
        await conn.close()
    missing = set(acked) - stored
    assert not missing, f"{len(missing)} acknowledged events lost"
    assert "stopped" in log
