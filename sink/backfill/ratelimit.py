"""A token bucket shared by every Studio API caller in the process, slowed after a 429."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class RateLimiter:
    """Token bucket shared by every caller in the process.

    ``rate_per_second`` tokens are added per second, up to ``burst``. After a 429,
    ``penalize(seconds)`` hands out no token for ``seconds``, empties the bucket and
    halves the rate (compounding, down to 1/16) until ``slowdown_seconds`` pass
    without another 429.
    """

    def __init__(
        self,
        rate_per_second: float,
        burst: int | None = None,
        *,
        slowdown_factor: float = 0.5,
        slowdown_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_second <= 0:
            raise ValueError(f"rate_per_second must be > 0, got {rate_per_second}")
        self._rate = rate_per_second
        self._burst = float(burst if burst is not None else max(1, round(rate_per_second)))
        if self._burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self._slowdown_factor = slowdown_factor
        self._slowdown_seconds = slowdown_seconds
        self._clock = clock
        self._tokens = 1.0  # start nearly empty: no double-rate spike in the first second
        self._last = clock()
        self._paused_until = 0.0
        self._factor = 1.0
        self._slow_until = 0.0
        self._lock = asyncio.Lock()

    @property
    def rate(self) -> float:
        """The rate in force now (lower than configured for a while after a 429)."""
        return self._current_rate(self._clock())

    def _current_rate(self, now: float) -> float:
        if self._factor < 1.0 and now >= self._slow_until:
            self._factor = 1.0
        return self._rate * self._factor

    def _refill(self, now: float) -> None:
        start = max(self._last, self._paused_until)
        if now > start:
            self._tokens = min(self._burst, self._tokens + (now - start) * self._current_rate(now))
        self._last = now

    async def acquire(self) -> None:
        """Wait for a token (FIFO among waiters)."""
        async with self._lock:
            while True:
                now = self._clock()
                self._refill(now)
                wait = self._paused_until - now
                if wait <= 0:
                    if self._tokens >= 1:
                        self._tokens -= 1
                        return
                    wait = (1 - self._tokens) / self._current_rate(now)
                await asyncio.sleep(wait)

    def penalize(self, seconds: float) -> None:
        """Record a 429: pause for ``seconds`` and slow down for a while."""
        now = self._clock()
        self._refill(now)
        self._tokens = 0.0
        self._paused_until = max(self._paused_until, now + max(0.0, seconds))
        self._factor = max(1 / 16, self._current_rate(now) / self._rate * self._slowdown_factor)
        self._slow_until = now + self._slowdown_seconds
