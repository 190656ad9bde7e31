"""A worker's side of ``serve --workers N``: what the supervisor passed it in its
environment (its number, the pipe on which it reports that it listens, the URL of the
embedded Postgres the supervisor started), and what it does besides serving: it stops
when the supervisor is gone, and keeps its share of the aggregated gauges current."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web
from prometheus_client import Gauge

from sink.web import probes

log = logging.getLogger(__name__)

ENV_INDEX: Final = "STUDIO_SINK_WORKER"
ENV_STATUS_FD: Final = "STUDIO_SINK_WORKER_STATUS_FD"
ENV_SUPERVISOR: Final = "STUDIO_SINK_SUPERVISOR_PID"
ENV_DSN: Final = "STUDIO_SINK_WORKER_DSN"
LISTENING: Final = b"listening\n"
DUTY_INTERVAL: Final = 1.0  # seconds between two looks at the supervisor and the gauges


@dataclass(frozen=True)
class WorkerRole:
    index: int
    status_fd: int
    supervisor_pid: int
    dsn: str | None = field(default=None, repr=False)  # may hold a password

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> WorkerRole | None:
        """The role the supervisor gave this process; None when it runs on its own."""
        if ENV_INDEX not in environ:
            return None
        return cls(
            index=int(environ[ENV_INDEX]),
            status_fd=int(environ[ENV_STATUS_FD]),
            supervisor_pid=int(environ[ENV_SUPERVISOR]),
            dsn=environ.get(ENV_DSN) or None,
        )

    def setup(self, app: web.Application) -> None:
        """Before the app starts: log lines carry the worker's number (``worker`` in JSON
        logs), and each answered delivery counts in ``sink_worker_deliveries{pid}``."""
        index = self.index

        def tag(record: logging.LogRecord) -> bool:
            record.__dict__["worker"] = index
            return True

        for handler in logging.getLogger().handlers:
            handler.addFilter(tag)
        answered = Gauge(
            "sink_worker_deliveries",
            "Deliveries answered by each process of serve --workers N, by pid",
            registry=None,  # multiprocess mode: every worker's /metrics lists every pid's
            multiprocess_mode="liveall",
        )

        async def count(request: web.Request, response: web.StreamResponse) -> None:
            if request.method == "POST" and request.path.startswith("/events"):
                answered.inc()

        app.on_response_prepare.append(count)

    def report_listening(self) -> None:
        """Tell the supervisor that this worker accepts connections."""
        try:
            os.write(self.status_fd, LISTENING)
        except OSError:  # the supervisor is gone: duties() notices and stops this worker
            pass
        finally:
            os.close(self.status_fd)

    async def duties(self, app: web.Application, stop: asyncio.Event) -> None:
        """Until ``stop``: refresh this worker's gauges (the others read them through the
        shared metrics directory), and stop the worker when its supervisor has died."""
        while not stop.is_set():
            if os.getppid() != self.supervisor_pid:
                log.warning(
                    "the supervisor (pid %d) is gone: worker %d drains and stops",
                    self.supervisor_pid,
                    self.index,
                )
                stop.set()
                return
            probes.update_gauges(app)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), DUTY_INTERVAL)
