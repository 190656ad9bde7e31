"""Fault tests with real processes: a load generator that keeps a ledger of acknowledged ids.

``SINK_SOAK_SECONDS`` (default 0) adds that many seconds of load to each fault test's
phases, for long soak runs outside CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from yarl import URL

from sink import jsontext
from tests.support.process import SinkProcess
from tests.support.studio import execution_story
from tests.support.twilio import signed_request

SOAK_SECONDS = float(os.environ.get("SINK_SOAK_SECONDS", "0"))
TWILIO_TIMEOUT = 5.0  # Twilio gives up on a delivery after 5 s


@dataclass
class Delivery:
    events: list[dict[str, Any]]

    @property
    def ids(self) -> list[str]:
        return [e["id"] for e in self.events]


@dataclass
class Ledger:
    """What was sent, what got a 2xx, and every answer seen."""

    acked: set[str] = field(default_factory=set)
    sent: set[str] = field(default_factory=set)
    statuses: dict[str, int] = field(default_factory=dict)
    retry: list[Delivery] = field(default_factory=list)
    slowest: float = 0.0
    acks: list[tuple[float, float]] = field(default_factory=list)  # (sent, answered), monotonic

    def count(self, status: str) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def acked_deliveries(self) -> int:
        return self.statuses.get("200", 0)

    def first_ack_sent_after(self, moment: float) -> float | None:
        """When the first 2xx came for a delivery sent after ``moment`` (time.monotonic)."""
        return min((answered for sent, answered in self.acks if sent > moment), default=None)


class Load:
    """Concurrent signed deliveries to a moving target; failed ones are retried later.

    Answers must be 2xx, 429 or 503 (or a refused connection while the sink is down):
    any other 4xx, a 500, or an answer slower than Twilio's 5 s timeout fails the test.
    """

    def __init__(self, target: Callable[[], str], *, workers: int = 6, steps: int = 2) -> None:
        self.target = target
        self.workers = workers
        self.steps = steps
        self.ledger = Ledger()
        self.problems: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    def _next(self) -> Delivery:
        if self.ledger.retry:
            return self.ledger.retry.pop(0)
        delivery = Delivery(execution_story(self.steps))
        self.ledger.sent.update(delivery.ids)
        return delivery

    async def post(self, delivery: Delivery) -> str:
        assert self._session is not None
        body = jsontext.dumps(delivery.events).encode()
        url, headers = signed_request(f"{self.target()}/events", body)
        started = time.monotonic()
        answered = started
        try:
            async with asyncio.timeout(TWILIO_TIMEOUT):
                async with self._session.post(
                    URL(url, encoded=True), data=body, headers=headers
                ) as response:
                    await response.read()
                    status = str(response.status)
                    answered = time.monotonic()
        except TimeoutError:
            status = "timeout"
        except aiohttp.ClientError:
            status = "connection_error"
        self.ledger.slowest = max(self.ledger.slowest, time.monotonic() - started)
        self.ledger.count(status)
        if status == "200":
            self.ledger.acked.update(delivery.ids)
            self.ledger.acks.append((started, answered))
        else:
            self.ledger.retry.append(delivery)
            if status not in ("429", "503", "connection_error"):
                self.problems.append(status)
        return status

    async def _worker(self) -> None:
        while not self._stop.is_set():
            status = await self.post(self._next())
            if status != "200":
                await asyncio.sleep(0.05)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Load]:
        connector = aiohttp.TCPConnector(limit=self.workers * 2, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            self._session = session
            self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.workers)]
            try:
                yield self
            finally:
                self._stop.set()
                await asyncio.gather(*self._tasks)
                await self.drain_retries()
                self._session = None

    async def drain_retries(self, rounds: int = 200) -> None:
        """Redeliver what was not acknowledged (as Twilio would) until all is in."""
        for _ in range(rounds):
            if not self.ledger.retry:
                return
            await self.post(self.ledger.retry.pop(0))
            if self.ledger.retry:
                await asyncio.sleep(0.02)
        raise AssertionError(f"{len(self.ledger.retry)} deliveries never acknowledged")

    async def until_first_ack_sent_after(self, moment: float, limit: float = 60.0) -> float:
        """Wait (up to ``limit`` s) for a 2xx to a delivery sent after ``moment``
        (time.monotonic); returns when it came."""
        deadline = time.monotonic() + limit
        while (answered := self.ledger.first_ack_sent_after(moment)) is None:
            assert time.monotonic() < deadline, f"no 2xx in {limit} s: {self.ledger.statuses}"
            assert not self.problems, f"unexpected answers: {self.problems[:5]}"
            await asyncio.sleep(0.05)
        return answered

    async def until_acked(self, deliveries: int, limit: float = 60.0) -> None:
        """Wait (up to ``limit`` s, a hang guard) until this many more deliveries got a 2xx."""
        goal = self.ledger.acked_deliveries() + deliveries
        deadline = time.monotonic() + limit + SOAK_SECONDS
        soak_until = time.monotonic() + SOAK_SECONDS
        while self.ledger.acked_deliveries() < goal or time.monotonic() < soak_until:
            assert time.monotonic() < deadline, f"load stalled: {self.ledger.statuses}"
            assert not self.problems, f"unexpected answers: {self.problems[:5]}"
            await asyncio.sleep(0.05)


async def assert_nothing_lost(conn: asyncpg.Connection[Any], ledger: Ledger) -> set[str]:
    """Every acknowledged id is stored, once; returns the stored ids."""
    rows = await conn.fetch("SELECT event_id, count(*) AS n FROM studio.events GROUP BY 1")
    stored = {r["event_id"]: r["n"] for r in rows}
    lost = ledger.acked - stored.keys()
    assert not lost, f"{len(lost)} acknowledged events are missing"
    doubled = [k for k, n in stored.items() if n > 1]
    assert not doubled, f"{len(doubled)} events stored more than once"
    assert stored.keys() == ledger.sent  # every delivery was retried until acknowledged
    return set(stored)


async def start_sinks(database_url: str, workdir: Path, count: int) -> list[SinkProcess]:
    """``count`` sinks on one database (replicas behind one Service), once all are ready."""
    sinks = [SinkProcess(database_url, workdir / f"sink{n}.log") for n in range(count)]
    for sink in sinks:
        sink.start()
    await asyncio.gather(*(sink.wait_ready(timeout=30) for sink in sinks))
    return sinks


def round_robin(sinks: list[SinkProcess]) -> Callable[[], str]:
    """A Load target that takes the sinks in turn, as a load balancer would."""
    turns = itertools.cycle(sinks)
    return lambda: next(turns).base_url


def report(label: str, ledger: Ledger, stored: set[str]) -> None:
    print(
        f"\n{label}: events acknowledged {len(ledger.acked)}, stored {len(stored)},"
        f" lost {len(ledger.acked - stored)}; answers {sorted(ledger.statuses.items())};"
        f" slowest answer {ledger.slowest:.2f} s"
    )


class FreezingRelay:
    """A TCP relay in front of a real server that can freeze like a paused host: its
    connections stay open and new ones are accepted, but nothing is forwarded either way
    until it thaws (what a SIGSTOPped Postgres, or a paused VM, looks like to a client)."""

    def __init__(self, target: tuple[str, int] | str) -> None:
        self.target = target  # (host, port), or a Unix socket's path
        self._thawed = asyncio.Event()
        self._thawed.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port = 0

    async def start(self) -> FreezingRelay:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def freeze(self) -> None:
        self._thawed.clear()

    def thaw(self) -> None:
        self._thawed.set()

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Frozen inside the block, thawed after it (even when it fails: the sink under
        test must be able to close its connections at the end of the test)."""
        self.freeze()
        try:
            yield
        finally:
            self.thaw()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()
        if me is not None:  # closed with the relay, as the pumps are
            self._tasks.add(me)
            me.add_done_callback(self._tasks.discard)
        try:
            await self._thawed.wait()
            if isinstance(self.target, str):
                up_reader, up_writer = await asyncio.open_unix_connection(self.target)
            else:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
        except BaseException:
            writer.close()
            raise
        pumps = [self._pump(reader, up_writer), self._pump(up_reader, writer)]
        for pump in pumps:
            task = asyncio.create_task(pump)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                await self._thawed.wait()
                writer.write(chunk)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
