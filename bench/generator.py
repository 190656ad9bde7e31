"""The load generator: a separate process, so it does not share the sink's event loop.

The parent sends a ``Phase``; the child builds and signs its deliveries (before the
clock), answers ``"ready"``, waits for ``"go"``, sends for ``duration`` seconds, and
answers with a ``PhaseResult``, including its own CPU time over the window so a reader
can tell whether the generator was the bottleneck.

Open loop (``rate`` set): deliveries are due at fixed intervals and latency counts from
the moment each was due, so a slow sink cannot hide its queueing (no coordinated
omission). Closed loop (``rate`` None): ``concurrency`` senders, each sending the next
delivery as soon as its previous one is answered, measure the maximum throughput.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
import time
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
from yarl import URL

from bench import load


@dataclass(frozen=True)
class Phase:
    name: str
    base_url: str
    seed: int
    duration: float
    rate: float | None = None  # deliveries per second; None: closed loop
    concurrency: int = 64  # closed-loop senders; connection limit in both modes
    prepare: int = 1000  # deliveries to build before the clock
    timeout: float = 10.0


@dataclass
class PhaseResult:
    name: str
    duration: float
    offered_events_per_s: float | None
    sent: int = 0
    reused: int = 0  # deliveries sent a second time because the prepared ones ran out
    acked_events: int = 0
    events_per_s: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)  # of answered deliveries
    ok_latency_ms: dict[str, float] = field(default_factory=dict)  # of 2xx ones
    max_latency_ms: float = 0.0
    generator_cpu_share: float = 0.0  # generator CPU seconds / wall seconds

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": at(1.0)}


class _Run:
    def __init__(self, phase: Phase, deliveries: list[load.Delivery]) -> None:
        self.phase = phase
        self.deliveries = deliveries
        self.next = 0
        self.latencies: list[float] = []
        self.ok_latencies: list[float] = []
        self.statuses: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.acked_in_window = 0
        self.sent = 0
        self.reused = 0
        self.deadline = 0.0

    def take(self) -> load.Delivery:
        if self.next >= len(self.deliveries):
            self.reused += 1
        delivery = self.deliveries[self.next % len(self.deliveries)]
        self.next += 1
        return delivery

    async def send(
        self, session: aiohttp.ClientSession, delivery: load.Delivery, due: float
    ) -> None:
        self.sent += 1
        url = URL(self.phase.base_url + delivery.path_qs, encoded=True)
        headers = {"X-Twilio-Signature": delivery.signature, "Content-Type": "application/json"}
        try:
            async with session.post(url, data=delivery.body, headers=headers) as response:
                await response.read()
                status = response.status
        except TimeoutError:
            self.errors["timeout"] = self.errors.get("timeout", 0) + 1
            return
        except (aiohttp.ClientError, OSError) as exc:
            kind = type(exc).__name__
            self.errors[kind] = self.errors.get(kind, 0) + 1
            return
        done = time.perf_counter()
        elapsed = done - due
        self.latencies.append(elapsed)
        key = str(status)
        self.statuses[key] = self.statuses.get(key, 0) + 1
        if 200 <= status < 300:
            self.ok_latencies.append(elapsed)
            if done <= self.deadline:
                self.acked_in_window += delivery.events

    async def closed_loop(self, session: aiohttp.ClientSession) -> None:
        async def sender() -> None:
            while time.perf_counter() < self.deadline:
                await self.send(session, self.take(), time.perf_counter())

        await asyncio.gather(*(sender() for _ in range(self.phase.concurrency)))

    async def open_loop(self, session: aiohttp.ClientSession, rate: float) -> None:
        tasks: set[asyncio.Task[None]] = set()
        start = time.perf_counter()
        n = 0
        while True:
            due = start + n / rate
            if due >= self.deadline:
                break
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self.send(session, self.take(), due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        if tasks:
            await asyncio.gather(*tasks)


async def _drive(phase: Phase, deliveries: list[load.Delivery], channel: Connection) -> PhaseResult:
    connector = aiohttp.TCPConnector(limit=phase.concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=phase.timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        run = _Run(phase, deliveries)
        channel.send("ready")
        channel.recv()  # "go"
        cpu0 = _cpu()
        started = time.perf_counter()
        run.deadline = started + phase.duration
        if phase.rate is None:
            await run.closed_loop(session)
        else:
            await run.open_loop(session, phase.rate)
        wall = time.perf_counter() - started
        cpu = _cpu() - cpu0
    offered = None if phase.rate is None else phase.rate * load.EVENTS_PER_DELIVERY
    return PhaseResult(
        name=phase.name,
        duration=phase.duration,
        offered_events_per_s=offered,
        sent=run.sent,
        reused=run.reused,
        acked_events=run.acked_in_window,
        events_per_s=round(run.acked_in_window / phase.duration, 1),
        statuses=run.statuses,
        errors=run.errors,
        latency_ms=percentiles(run.latencies),
        ok_latency_ms=percentiles(run.ok_latencies),
        max_latency_ms=round(max(run.latencies, default=0.0) * 1000, 2),
        generator_cpu_share=round(cpu / wall, 3),
    )


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _child(phase: Phase, channel: Connection) -> None:
    factory = load.EventFactory(phase.seed)
    deliveries = load.deliveries(factory, phase.prepare, phase.base_url)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(_drive(phase, deliveries, channel))
    else:
        result = uvloop.run(_drive(phase, deliveries, channel))
    channel.send(result)


class Generator:
    """One phase of load from a fresh child process."""

    def __init__(self, phase: Phase) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_child, args=(phase, child), daemon=True)

    async def prepare(self) -> None:
        self._proc.start()
        await self._recv()  # "ready": deliveries built and signed

    async def run(self) -> PhaseResult:
        self._parent.send("go")
        result: PhaseResult = await self._recv()
        await asyncio.to_thread(self._proc.join, 10)
        return result

    async def _recv(self) -> Any:
        while not self._parent.poll():
            if not self._proc.is_alive():
                raise RuntimeError(f"the load generator exited with {self._proc.exitcode}")
            await asyncio.sleep(0.02)
        return self._parent.recv()

    def kill(self) -> None:
        if self._proc.is_alive():
            self._proc.kill()
