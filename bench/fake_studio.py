"""The fake Studio v2 API (tests/fakes, in this repo) in its own process, for the backfill
bench: one flow of E executions with S steps each, ``latency`` seconds per call.

Its own process, so serving the fake does not eat into the CPU of the backfill under test
on the same event loop. On "stop" it answers with what it saw (calls, their times).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

API_KEY_SID = "SK" + "5" * 32
API_KEY_SECRET = "bench-api-key-secret"


@dataclass(frozen=True)
class FakeSpec:
    port: int
    executions: int
    steps: int
    latency: float


def _stats(fake: Any, warmup: float) -> dict[str, Any]:
    """Calls and their rate; the steady rate leaves out the first ``warmup`` seconds, when
    the client spends its token bucket's initial burst (one second's worth)."""
    times = sorted(r.started for r in fake.log)
    statuses: dict[str, int] = {}
    endpoints: dict[str, int] = {}
    for r in fake.log:
        statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
        endpoints[str(r.endpoint)] = endpoints.get(str(r.endpoint), 0) + 1
    out: dict[str, Any] = {"calls": len(times), "statuses": statuses, "endpoints": endpoints}
    if len(times) > 1:
        start = times[0] + warmup if times[-1] - times[0] > 2 * warmup else times[0]
        steady = [t for t in times if t >= start]
        span = times[-1] - start
        out["span_s"] = round(times[-1] - times[0], 3)
        out["steady_span_s"] = round(span, 3)
        out["steady_calls_per_s"] = round((len(steady) - 1) / span, 2) if span > 0 else 0.0
        out["max_calls_in_1s"] = fake.max_in_window(1.0)
        out["max_in_flight"] = fake.max_in_flight
        series = [0] * (int(times[-1] - times[0]) + 1)
        for t in times:
            series[int(t - times[0])] += 1
        out["calls_per_second_series"] = series
    return out


async def _serve(spec: FakeSpec, channel: Connection) -> None:
    from aiohttp import web

    from tests.fakes.studio_api import create_app
    from tests.fakes.studio_data import FakeStudio

    fake = FakeStudio(seed=7, username=API_KEY_SID, password=API_KEY_SECRET)
    flow = fake.add_flow()
    fake.populate(spec.executions, spec.steps, flow=flow)
    fake.latency = spec.latency
    runner = web.AppRunner(create_app(fake), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", spec.port, backlog=1024).start()
    channel.send({"flow_sid": flow.sid})
    await asyncio.to_thread(channel.recv)  # "stop"
    cpu = time.process_time()
    channel.send({**_stats(fake, warmup=2.0), "fake_cpu_s": round(cpu, 2)})
    await runner.cleanup()


def _child(spec: FakeSpec, channel: Connection) -> None:
    try:
        import uvloop

        uvloop.run(_serve(spec, channel))
    except ImportError:
        asyncio.run(_serve(spec, channel))


class FakeStudioProcess:
    def __init__(self, spec: FakeSpec) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_child, args=(spec, child), daemon=True)
        self.base_url = f"http://127.0.0.1:{spec.port}"

    async def start(self) -> str:
        """Starts the fake; returns the flow SID it serves."""
        self._proc.start()
        answer: dict[str, str] = await self._recv()
        return answer["flow_sid"]

    async def stop(self) -> dict[str, Any]:
        self._parent.send("stop")
        stats: dict[str, Any] = await self._recv()
        await asyncio.to_thread(self._proc.join, 10)
        return stats

    async def _recv(self) -> Any:
        while not self._parent.poll():
            if not self._proc.is_alive():
                raise RuntimeError(f"the fake Studio API exited with {self._proc.exitcode}")
            await asyncio.sleep(0.05)
        return self._parent.recv()

    def kill(self) -> None:
        if self._proc.is_alive():
            self._proc.kill()
