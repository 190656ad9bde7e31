"""The sink's own maintenance task ends when the sink stops, even mid-query."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sink.config import Settings
from sink.maintenance import schedule


class HangingPool:
    """A pool whose connection hangs, and whose release answers a cancel with a timeout,
    as asyncpg's does when the server is frozen."""

    @contextlib.asynccontextmanager
    async def acquire(self, timeout: float | None = None) -> AsyncIterator[object]:
        try:
            yield object()
        except asyncio.CancelledError:
            raise TimeoutError("release timed out") from None


async def test_stopping_ends_the_task_instead_of_sleeping_an_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def hang(*args: Any, **kwargs: Any) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(schedule.retention, "maintain", hang)
    settings = Settings(maintain_interval=3600, twilio_auth_token="t")
    task = asyncio.create_task(schedule.run_periodically(HangingPool(), settings))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2)
    assert done, "the maintenance task kept running after it was cancelled"
    assert task.cancelled() or isinstance(task.exception(), TimeoutError)
