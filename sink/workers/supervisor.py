"""The supervisor of ``serve --workers N``: N full sinks on one port (SO_REUSEPORT).

It starts the embedded Postgres once (when there is no SINK_DATABASE_URL), reserves the
port, gives the workers a fresh private directory for their metrics, and starts them.
Each worker is ``studio-sink serve`` as it runs on its own (its own pool, writers,
backfill service and maintenance task; those already share their work through Postgres,
as replicas do), bound with SO_REUSEPORT so the kernel spreads connections over them.
SIGTERM and SIGINT are forwarded to every worker, which drains as a lone sink does, and
SIGHUP too (the workers re-read the accounts file). A worker that dies is started again
after a backoff; one that keeps failing before it listens stops the whole command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Final

from prometheus_client.multiprocess import mark_process_dead

from sink.config import Settings
from sink.db.embedded import resolve_dsn
from sink.db.pool import redact_url
from sink.errors import ConfigError
from sink.workers import role
from sink.workers.ports import reserve_port

log = logging.getLogger(__name__)

START_ATTEMPTS: Final = 3  # a worker that exits this often in a row before it listens: give up
FIRST_BACKOFF: Final = 0.5  # seconds before a restart; doubled after each early one
MAX_BACKOFF: Final = 30.0
STABLE_AFTER: Final = 60.0  # a worker that ran this long restarts after FIRST_BACKOFF again
KILL_MARGIN: Final = 10.0  # beyond the drain (delay + grace), then SIGKILL


@dataclass
class _Slot:
    """One worker's place: the process in it now, and its history of restarts."""

    index: int
    proc: asyncio.subprocess.Process | None = None
    start_failures: int = 0
    backoff: float = FIRST_BACKOFF
    listening: bool = False


def _ended(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


class Supervisor:
    def __init__(self, settings: Settings, count: int) -> None:
        self._settings = settings
        self._slots = [_Slot(index) for index in range(1, count + 1)]
        self._stopping = asyncio.Event()
        self._up = asyncio.Event()
        self._failure: int | None = None  # the exit code once workers keep failing at start
        self._unclean = False  # a worker's drain failed
        self._port = settings.port
        self._metrics_dir = ""
        self._dsn: str | None = None

    async def run(self) -> int:
        """Start the workers, keep them running until SIGTERM/SIGINT, then drain them all.
        0 when every worker drained; non-zero when one kept failing or its drain did."""
        held = reserve_port(self._settings.host, self._settings.port)
        self._port = held.port
        self._metrics_dir = _fresh_metrics_dir()
        try:
            self._install_signals()  # a stop during the database's start is a stop too
            if self._settings.embedded:  # started once, here, not by each worker
                self._dsn = await resolve_dsn(self._settings)
            keepers = [asyncio.create_task(self._keep(slot)) for slot in self._slots]
            announce = asyncio.create_task(self._announce())
            await self._stopping.wait()
            announce.cancel()
            drained = await self._drain(keepers)
        finally:
            held.close()
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
        if self._failure is not None:
            return self._failure
        log.info("stopped")
        return 0 if drained else 1

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop, sig)
        loop.add_signal_handler(signal.SIGHUP, self._forward, signal.SIGHUP)

    def _stop(self, sig: signal.Signals) -> None:
        if not self._stopping.is_set():
            log.info(
                "%s: stopping %d workers (each drains its deliveries)", sig.name, len(self._slots)
            )
        self._stopping.set()
        self._forward(sig)

    def _forward(self, sig: signal.Signals) -> None:
        for slot in self._slots:
            if slot.proc is not None and slot.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.send_signal(sig)

    async def _announce(self) -> None:
        await self._up.wait()
        pids = ", ".join(str(s.proc.pid) for s in self._slots if s.proc is not None)
        url = self._settings.database_url
        database = redact_url(self._dsn or (url.get_secret_value() if url else ""))
        log.info(
            "studio-sink listening on http://%s:%d/events with %d workers (pids %s; database %s)",
            self._settings.host,
            self._port,
            len(self._slots),
            pids,
            database,
        )

    async def _keep(self, slot: _Slot) -> None:
        """Run the slot's worker, and start it again whenever it dies, until stopping."""
        while not self._stopping.is_set():
            started = time.monotonic()
            code, listened = await self._run_once(slot)
            ran = time.monotonic() - started
            if self._stopping.is_set():
                if listened and code != 0:
                    log.error("worker %d %s while draining", slot.index, _ended(code))
                    self._unclean = True
                return
            delay = self._next_delay(slot, listened, ran, code)
            if delay is None:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    def _next_delay(self, slot: _Slot, listened: bool, ran: float, code: int) -> float | None:
        """The backoff before the next start, logging why; None: give up (the command
        stops with the worker's exit code)."""
        if listened:
            slot.start_failures = 0
            slot.backoff = FIRST_BACKOFF if ran >= STABLE_AFTER else slot.backoff
            log.warning(
                "worker %d %s after %.1f s; starting a new one in %.1f s",
                slot.index,
                _ended(code),
                ran,
                slot.backoff,
            )
        else:
            slot.start_failures += 1
            if slot.start_failures >= START_ATTEMPTS:
                log.error(
                    "worker %d %s before it listened, %d times in a row: stopping. Its error"
                    " is logged above; fix it (a setting, the database, the port) and start"
                    " again",
                    slot.index,
                    _ended(code),
                    slot.start_failures,
                )
                self._failure = code if code > 0 else 1
                self._stopping.set()
                self._forward(signal.SIGTERM)
                return None
            log.warning(
                "worker %d %s before it listened (attempt %d of %d); trying again in %.1f s",
                slot.index,
                _ended(code),
                slot.start_failures,
                START_ATTEMPTS,
                slot.backoff,
            )
        delay = slot.backoff
        slot.backoff = min(slot.backoff * 2, MAX_BACKOFF)
        return delay

    async def _run_once(self, slot: _Slot) -> tuple[int, bool]:
        """One worker, from its start to its exit: (exit code, whether it listened)."""
        status_read, status_write = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "sink",
                "serve",
                env=self._environment(slot, status_write),
                pass_fds=(status_write,),
                stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            os.close(status_write)
        slot.proc = proc
        log.info("worker %d started (pid %d)", slot.index, proc.pid)
        if self._stopping.is_set():  # a stop came while it was being started
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        listened = await _wait_listening(status_read)
        if listened:
            slot.listening = True
            if all(s.listening for s in self._slots):
                self._up.set()
        code = await proc.wait()
        slot.listening = False
        # its live gauges leave the sums; its counters stay in them (they never go back)
        mark_process_dead(proc.pid, self._metrics_dir)  # type: ignore[no-untyped-call]
        return code, listened

    def _environment(self, slot: _Slot, status_fd: int) -> dict[str, str]:
        """The worker's environment: this one's, with the settings given as flags, the
        port the supervisor holds, and the worker's role."""
        s = self._settings
        env = {
            **os.environ,
            "SINK_HOST": s.host,
            "SINK_PORT": str(self._port),
            "SINK_DATA_DIR": str(s.data_dir),
            "SINK_LOG_FORMAT": s.log_format,
            "SINK_LOG_LEVEL": s.log_level,
            "SINK_WORKERS": "1",
            "PROMETHEUS_MULTIPROC_DIR": self._metrics_dir,
            role.ENV_INDEX: str(slot.index),
            role.ENV_STATUS_FD: str(status_fd),
            role.ENV_SUPERVISOR: str(os.getpid()),
        }
        if self._dsn is not None:
            env[role.ENV_DSN] = self._dsn
        return env

    async def _drain(self, keepers: list[asyncio.Task[None]]) -> bool:
        """Wait for every worker's drain; SIGKILL those still running after it. True when
        each one that was listening exited cleanly."""
        limit = self._settings.shutdown_delay + self._settings.shutdown_grace + KILL_MARGIN
        _, late = await asyncio.wait(keepers, timeout=limit)
        if late:
            log.error(
                "%d workers still running %.0f s after SIGTERM: killing them", len(late), limit
            )
            self._forward(signal.SIGKILL)
            await asyncio.wait(late)
        return not late and not self._unclean


async def _wait_listening(fd: int) -> bool:
    """Whether the worker reports that it listens before it exits (end of the pipe)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    try:
        return await reader.readline() == role.LISTENING
    finally:
        transport.close()


def _fresh_metrics_dir() -> str:
    """A new private directory (0700) for the workers' metric files, so nothing stale is
    added in: prometheus-client's PROMETHEUS_MULTIPROC_DIR."""
    try:
        return tempfile.mkdtemp(prefix="studio-sink-metrics-")
    except OSError as exc:
        raise ConfigError(
            f"cannot create the workers' metrics directory in {tempfile.gettempdir()}"
            f" ({exc.strerror}); set TMPDIR to a writable directory (a tmpfs is best)"
        ) from exc
