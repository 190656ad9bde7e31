"""SIGKILL the sink under sustained load, restart it: nothing acknowledged is lost."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.support.process import SinkProcess
from tests.system import Load, assert_nothing_lost, report

pytestmark = pytest.mark.slow  # real processes: outside the quick run


@pytest.mark.timeout(180)
async def test_sigkill_under_load_loses_nothing_acknowledged(
    database_url: str, conn: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    log = tmp_path / "sink.log"
    processes = [SinkProcess(database_url, log)]
    processes[0].start()
    try:
        await processes[0].wait_ready()
        load = Load(lambda: processes[-1].base_url)
        async with load.running():
            for _ in range(2):  # two crashes, each in the middle of the load
                await load.until_acked(40)
                processes[-1].send(signal.SIGKILL)
                assert processes[-1].wait(10) == -signal.SIGKILL
                restarted = SinkProcess(database_url, log)
                processes.append(restarted)  # the load now targets it (refused until up)
                restarted.start()
                await restarted.wait_ready()
            await load.until_acked(40)
    finally:
        for process in processes:
            process.stop()
    stored = await assert_nothing_lost(conn, load.ledger)
    report("crash (2 x SIGKILL)", load.ledger, stored)
    assert load.ledger.statuses.get("connection_error", 0) > 0  # the kills were felt
