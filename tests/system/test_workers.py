"""``studio-sink serve --workers 2``: the real command, two worker processes on one port.

Deliveries signed as Twilio signs them are all stored whichever worker takes them, both
workers serve, any worker's /metrics shows the sum of both, a SIGKILLed worker is
replaced, SIGTERM drains both with nothing lost, and workers that cannot start stop the
command instead of being restarted forever.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from sink import jsontext
from sink.db import embedded
from tests.support import pg
from tests.support.process import SinkProcess, free_port, sink_env
from tests.support.studio import execution_story
from tests.support.twilio import signed_request
from tests.system import Load, assert_nothing_lost, report

pytestmark = pytest.mark.slow  # real processes: outside the quick run

WORKERS = {"SINK_WORKERS": "2"}
STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")


def worker_pids(log: Path) -> dict[int, int]:
    """The pid now in each worker slot, from the supervisor's log lines."""
    pids: dict[int, int] = {}
    for index, pid in STARTED.findall(log.read_text()):
        pids[int(index)] = int(pid)
    return pids


def samples(text: str, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of ``name`` whose labels include ``labels``."""
    found = []
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if series.split("{")[0] != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', series))
        if all(have.get(k) == v for k, v in labels.items()):
            found.append((have, float(value)))
    return found


async def scrape(base_url: str) -> str:
    """/metrics on a new connection (SO_REUSEPORT hands it to either worker)."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(f"{base_url}/metrics") as response,
    ):
        assert response.status == 200
        return await response.text()


async def until(condition: Any, what: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"not within {limit} s: {what}"
        await asyncio.sleep(0.1)


@pytest.mark.timeout(240)
async def test_two_workers_store_everything_and_add_up_their_metrics(
    database_url: str, conn: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    log = tmp_path / "sink.log"
    sink = SinkProcess(database_url, log, WORKERS)
    sink.start()
    try:
        await sink.wait_ready(timeout=60)
        await until(lambda: len(worker_pids(log)) == 2, "two workers started")
        first = worker_pids(log)
        load = Load(lambda: sink.base_url, workers=8)  # a new connection per delivery
        async with load.running():
            await load.until_acked(120)
        answered = sum(load.ledger.statuses.get(s, 0) for s in ("200", "429", "503"))

        # both served, and every worker's /metrics adds up both (10 scrapes, each on a new
        # connection: with two listening sockets, they reach both workers)
        for _ in range(10):
            text = await scrape(sink.base_url)
            per_worker = {
                int(labels["pid"]): value
                for labels, value in samples(text, "sink_worker_deliveries")
            }
            assert per_worker.keys() == set(first.values()), text
            assert all(n > 0 for n in per_worker.values()), per_worker
            assert sum(per_worker.values()) == answered
            ok = sum(v for _, v in samples(text, "sink_deliveries_total", status="200"))
            assert ok == load.ledger.acked_deliveries()
            assert sum(v for _, v in samples(text, "sink_batch_size_count")) > 0

        # SIGHUP reaches every worker: each re-reads the accounts file
        sink.send(signal.SIGHUP)
        await until(lambda: log.read_text().count("accounts reloaded") == 2, "two reloads")

        # a worker that dies is replaced; the load goes on meanwhile
        killed = first[1]
        more = Load(lambda: sink.base_url, workers=8)
        more.ledger = load.ledger  # one ledger: everything sent, in both phases
        async with more.running():
            await more.until_acked(20)
            os.kill(killed, signal.SIGKILL)
            await until(lambda: worker_pids(log)[1] != killed, "worker 1 started again")
            replacement = worker_pids(log)[1]
            await until(
                lambda: f"worker 1 (pid {replacement}) listening" in log.read_text(),
                "the new worker 1 listening",
            )
            await more.until_acked(120)
        assert sink.proc is not None and sink.proc.poll() is None, "the supervisor stayed"
        text = await scrape(sink.base_url)
        pids = {int(labels["pid"]) for labels, _ in samples(text, "sink_worker_deliveries")}
        assert killed not in pids  # its live gauge left with it (mark_process_dead)
        assert replacement in pids and first[2] in pids
        assert "worker 1 was killed by SIGKILL" in log.read_text()
    finally:
        sink.terminate()
    stored = await assert_nothing_lost(conn, load.ledger)
    report("2 workers (one SIGKILLed)", load.ledger, stored)


@pytest.mark.timeout(180)
async def test_sigterm_drains_every_worker_and_loses_nothing(
    database_url: str, conn: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    log = tmp_path / "sink.log"
    env = {**WORKERS, "SINK_SHUTDOWN_DELAY": "1", "SINK_SHUTDOWN_GRACE": "10"}
    sink = SinkProcess(database_url, log, env)
    sink.start()
    acked: list[str] = []
    unanswered: list[str] = []
    stop_sending = asyncio.Event()

    async def sender(session: aiohttp.ClientSession) -> None:
        while not stop_sending.is_set():
            events = [e for _ in range(5) for e in execution_story(3)]
            body = jsontext.dumps(events).encode()
            url, headers = signed_request(f"{sink.base_url}/events", body)
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    if response.status == 200:
                        acked.extend(e["id"] for e in events)
                    elif response.status == 503:
                        stop_sending.set()  # draining: Twilio would retry later
                    else:
                        unanswered.append(f"status {response.status}")
            except aiohttp.ClientConnectorError:
                stop_sending.set()  # the listeners are closed
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                unanswered.append(repr(exc))  # cut off: the drain must never do this

    try:
        await sink.wait_ready(timeout=60)
        await until(lambda: len(worker_pids(log)) == 2, "two workers started")
        connector = aiohttp.TCPConnector(force_close=True, limit=16)
        async with aiohttp.ClientSession(connector=connector) as session:
            senders = [asyncio.create_task(sender(session)) for _ in range(12)]
            while len(acked) < 3000:
                assert not unanswered, unanswered[:3]
                await asyncio.sleep(0.05)
            sink.send(signal.SIGTERM)
            await asyncio.wait_for(asyncio.gather(*senders), 20)
        assert await asyncio.to_thread(sink.wait, 30) == 0
    finally:
        sink.stop()
    text = log.read_text()
    assert unanswered == [], text[-3000:]
    stored = {r["event_id"] for r in await conn.fetch("SELECT event_id FROM studio.events")}
    missing = set(acked) - stored
    assert not missing, f"{len(missing)} acknowledged events lost"
    assert text.count("INFO    sink: stopped") == 2  # each worker drained
    assert "sink.workers.supervisor: stopped" in text
    print(f"\nSIGTERM, 2 workers: acknowledged {len(acked)} events, lost 0")


@pytest.mark.timeout(120)
async def test_workers_that_cannot_start_stop_the_command(pg_server: str, tmp_path: Path) -> None:
    """A database without the sink's schema: every worker refuses to start (schema
    behind), so the command gives up with that error rather than restarting them."""
    name = f"sink_empty_{uuid.uuid4().hex[:8]}"
    server: asyncpg.Connection[Any] = await asyncpg.connect(pg_server)
    try:
        await server.execute(f'CREATE DATABASE "{name}"')
    finally:
        await server.close()
    log = tmp_path / "sink.log"
    try:
        env = sink_env(free_port(), pg.with_database(pg_server, name), WORKERS)
        with log.open("wb") as out:
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "sink", "serve"],
                env=env,
                stdout=out,
                stderr=out,
                timeout=90,
            )
    finally:
        await pg.drop(pg_server, name)
    text = log.read_text()
    assert done.returncode == 2, text[-3000:]
    assert "studio-sink migrate" in text  # the workers' own error, with its fix
    assert "before it listened, 3 times in a row: stopping" in text
    assert len(STARTED.findall(text)) <= 6  # two slots, three attempts each at most


@pytest.mark.timeout(240)
async def test_the_embedded_postgres_is_the_supervisors_and_outlives_its_workers(
    tmp_path: Path,
) -> None:
    """Without SINK_DATABASE_URL: started and migrated once, by the supervisor, before any
    worker; a worker that exits (here: SIGTERMed on its own, so it drains) neither stops it
    nor takes the command down, and it stops with the supervisor."""
    log = tmp_path / "sink.log"
    data_dir = tmp_path / "data"
    sink = SinkProcess(None, log, {**WORKERS, "SINK_DATA_DIR": str(data_dir)})
    sink.start()
    load = Load(lambda: sink.base_url, workers=4)
    try:
        await sink.wait_ready(timeout=120)
        await until(lambda: len(worker_pids(log)) == 2, "two workers started")
        async with load.running():
            await load.until_acked(20)
            stopped = worker_pids(log)[2]
            os.kill(stopped, signal.SIGTERM)
            await until(lambda: worker_pids(log)[2] != stopped, "worker 2 started again")
            await load.until_acked(40)  # the database is still up
        text = log.read_text()
        assert text.count("using the embedded Postgres") == 1
        assert text.count("applying migration 0001_init.sql") == 1
        assert "worker 2 exited with code 0" in text
        dsn = (await asyncio.to_thread(_db_url, data_dir)).strip()
        conn: asyncpg.Connection[Any] = await asyncpg.connect(dsn)
        try:
            stored = await assert_nothing_lost(conn, load.ledger)
        finally:
            await conn.close()
        assert len(stored) == len(load.ledger.acked)
        sink.send(signal.SIGTERM)
        assert await asyncio.to_thread(sink.wait, 40) == 0
        assert not (data_dir / "pgdata" / "postmaster.pid").exists()  # stopped with it
    finally:
        sink.stop()
        await asyncio.to_thread(embedded.stop, data_dir)


def _db_url(data_dir: Path) -> str:
    """The embedded database's URL, from ``studio-sink db-url`` (it attaches to the running
    server and leaves it running)."""
    env = sink_env(free_port(), None, {"SINK_DATA_DIR": str(data_dir)})
    done = subprocess.run(
        [sys.executable, "-m", "sink", "db-url"], env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()
