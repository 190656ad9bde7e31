"""Studio API rate limits: a token bucket for one process, and one limit shared by every
replica of the sink through a ``SlotSource`` (Postgres: ``sink.backfill.queue.PostgresSlots``).

Pure: no I/O here; the shared limiter asks the slot source it is given. Both limiters slow
down after a 429 the same way: the rate halves (compounding, down to ``MIN_RATE_FACTOR``)
until ``SLOWDOWN_SECONDS`` pass without another 429.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

SLOWDOWN_FACTOR: Final = 0.5  # the rate after a 429, times the rate before it
SLOWDOWN_SECONDS: Final = 60.0  # until this long passes without another 429
MIN_RATE_FACTOR: Final = 1 / 16  # the slowest a run of 429s makes the rate
BATCH_SECONDS: Final = 0.5  # a process leases at most this much of the shared rate at once
MAX_BATCH: Final = 50


def _positive(rate_per_second: float) -> float:
    if rate_per_second <= 0:
        raise ValueError(f"rate_per_second must be > 0, got {rate_per_second}")
    return rate_per_second


class RateLimitPaused(Exception):
    """Calls are paused after a 429 for longer than the caller would wait."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"Studio API calls are paused for {seconds:.1f} s more: Twilio answered 429"
            " (Too Many Requests) with that Retry-After"
        )
        self.seconds = seconds


class Limiter(Protocol):
    """What the Studio client needs of a rate limit."""

    @property
    def rate(self) -> float:
        """Calls per second in force now (lower than configured for a while after a 429)."""
        ...

    async def acquire(self, max_pause: float = math.inf) -> None:
        """Wait for the right to start one call; RateLimitPaused rather than wait out a
        pause longer than ``max_pause`` seconds."""
        ...

    async def record_429(self, seconds: float) -> None:
        """Twilio answered 429: no call for ``seconds``, and a lower rate for a while."""
        ...


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
        slowdown_factor: float = SLOWDOWN_FACTOR,
        slowdown_seconds: float = SLOWDOWN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = _positive(rate_per_second)
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

    async def acquire(self, max_pause: float = math.inf) -> None:
        """Wait for a token (FIFO among waiters); RateLimitPaused instead of waiting out a
        pause longer than ``max_pause``."""
        async with self._lock:
            while True:
                now = self._clock()
                self._refill(now)
                wait = self._paused_until - now
                if wait > max_pause:
                    raise RateLimitPaused(wait)
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
        slower = self._current_rate(now) / self._rate * self._slowdown_factor
        self._factor = max(MIN_RATE_FACTOR, slower)
        self._slow_until = now + self._slowdown_seconds

    async def record_429(self, seconds: float) -> None:
        self.penalize(seconds)


@dataclass(frozen=True, slots=True)
class SlotLease:
    """Consecutive call slots a slot source granted; times in seconds from its answer."""

    granted: int  # 0 when paused for longer than the caller would wait
    first: float  # from the answer to the first slot
    interval: float  # between two slots: 1 / the rate in force
    paused: float  # how much longer the pause after a 429 lasts (0: none)


class SlotSource(Protocol):
    """Where a ``SharedRateLimiter`` leases its slots: one sequence for all processes."""

    async def take(self, count: int, rate: float, max_pause: float) -> SlotLease:
        """The next ``count`` slots of the shared sequence at ``rate`` per second (slower
        after a 429), or none while a pause lasts more than ``max_pause`` seconds."""
        ...

    async def record_429(
        self, seconds: float, factor: float, min_factor: float, slowdown_seconds: float
    ) -> None:
        """No slot for ``seconds``; the rate times ``factor`` (compounding, not below
        ``min_factor``) for ``slowdown_seconds``."""
        ...


class SharedRateLimiter:
    """One rate limit for every process that shares its slot source (the sink's replicas
    sharing a database), so Twilio sees the configured rate, not N times it.

    A call starts at a *slot*. The source hands slots out in one sequence for everyone,
    ``1 / rate`` seconds apart, so any second holds at most ``rate`` calls (+1 at its edge),
    whoever makes them. A process leases consecutive slots in one round trip: one for each
    caller waiting, or more while it is busy (twice the last lease once that is used up, up
    to ``BATCH_SECONDS`` of the rate, so a busy process needs about two round trips a second;
    half as many once a slot went unused). Each caller sleeps until its own slot. A slot no
    caller took in time is dropped, never used late: late, it would bunch with other
    processes' calls. A 429's pause and slowdown are recorded in the source, so every
    process honours them; slots already leased elsewhere (under ``BATCH_SECONDS`` worth)
    are still used.

    ``key`` names the limit in the source (the Twilio account: its limits are per account).
    The source is given at construction or later with ``bind`` (``make_runner`` binds the
    runner's pool); acquiring before that is a programming error.
    """

    def __init__(
        self, rate_per_second: float, *, key: str, source: SlotSource | None = None
    ) -> None:
        self._rate = _positive(rate_per_second)
        self.key = key
        self._source = source
        self._max_batch = max(1, min(MAX_BATCH, math.ceil(rate_per_second * BATCH_SECONDS)))
        self._clock = time.monotonic
        self._interval = 1 / rate_per_second
        self._slots: deque[float] = deque()
        self._batch = 1  # slots the next lease takes at least
        self._wasted = False  # a slot of the last lease went unused
        self._waiting = 0
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    def bind(self, source: SlotSource) -> None:
        self._source = source

    @property
    def rate(self) -> float:
        """The rate of the last lease (lower than configured for a while after a 429)."""
        return 1 / self._interval

    async def acquire(self, max_pause: float = math.inf) -> None:
        self._waiting += 1
        try:
            async with self._lock:  # slots go to callers in the order they came
                slot = await self._next_slot(max_pause)
        finally:
            self._waiting -= 1
        wait = slot - self._clock()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _next_slot(self, max_pause: float) -> float:
        while True:
            now = self._clock()
            paused = self._paused_until - now
            if paused > max_pause:
                raise RateLimitPaused(paused)
            if self._slots and self._slots[0] < now - self._interval / 2:
                while self._slots and self._slots[0] < now - self._interval / 2:
                    self._slots.popleft()  # nobody took it in time
                self._wasted, self._batch = True, max(1, self._batch // 2)
            if self._slots:
                slot = self._slots.popleft()
                if not self._slots and not self._wasted:  # all used: lease more next time
                    self._batch = min(self._max_batch, self._batch * 2)
                return slot
            await self._lease(max_pause)

    async def _lease(self, max_pause: float) -> None:
        if self._source is None:
            raise RuntimeError(
                "the shared rate limiter has no slot source: bind() one (make_runner binds"
                " the runner's pool) before making Studio API calls"
            )
        count = min(self._max_batch, max(self._batch, self._waiting))
        lease = await self._source.take(count, self._rate, max_pause)
        self._wasted = False
        now = self._clock()
        self._interval = lease.interval
        self._paused_until = max(self._paused_until, now + lease.paused)
        if lease.granted == 0:
            raise RateLimitPaused(lease.paused)
        self._slots.extend(now + lease.first + n * lease.interval for n in range(lease.granted))

    async def record_429(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self._clock() + max(0.0, seconds))
        self._slots.clear()  # leased before the 429: not used
        if self._source is not None:
            await self._source.record_429(
                max(0.0, seconds), SLOWDOWN_FACTOR, MIN_RATE_FACTOR, SLOWDOWN_SECONDS
            )
