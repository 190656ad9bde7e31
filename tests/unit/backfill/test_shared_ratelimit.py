"""The shared rate limiter against an in-memory slot source: the SQL of
``sql/queries/ratelimit.sql`` as Python (the real one is tested in
tests/integration/test_backfill_defects.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from sink.backfill.ratelimit import (
    MIN_RATE_FACTOR,
    RateLimiter,
    RateLimitPaused,
    SharedRateLimiter,
    SlotLease,
)


class InMemorySlots:
    """One slot sequence for every limiter given it, as the ``sink.rate_limits`` row is."""

    def __init__(self) -> None:
        self.next_slot = 0.0
        self.paused_until = 0.0
        self.slowdown = 1.0
        self.slow_until = 0.0
        self.takes: list[int] = []  # the count each lease asked for
        self.gate: asyncio.Event | None = None  # set: leases wait for it (a slow round trip)

    async def take(self, count: int, rate: float, max_pause: float) -> SlotLease:
        self.takes.append(count)
        gate = self.gate
        await asyncio.sleep(0)  # a round trip: other callers come meanwhile
        if gate is not None:
            await gate.wait()
        now = time.monotonic()
        interval = 1 / (rate * (self.slowdown if self.slow_until > now else 1.0))
        paused = max(0.0, self.paused_until - now)
        if self.paused_until > now + max_pause:
            return SlotLease(0, 0.0, interval, paused)
        start = max(self.next_slot, self.paused_until, now)
        self.next_slot = start + count * interval
        return SlotLease(count, start - now, interval, paused)

    async def record_429(
        self, seconds: float, factor: float, min_factor: float, slowdown_seconds: float
    ) -> None:
        now = time.monotonic()
        self.paused_until = max(self.paused_until, now + seconds)
        current = self.slowdown if self.slow_until > now else 1.0
        self.slowdown = max(min_factor, current * factor)
        self.slow_until = now + slowdown_seconds


def limiters(count: int, rate: float, source: InMemorySlots) -> list[SharedRateLimiter]:
    return [SharedRateLimiter(rate, key="AC", source=source) for _ in range(count)]


async def call_times(limiter: SharedRateLimiter | RateLimiter, calls: int) -> list[float]:
    async def one() -> float:
        await limiter.acquire()
        return time.monotonic()

    return list(await asyncio.gather(*(one() for _ in range(calls))))


def early_calls(starts: list[float], asked: float, rate: float) -> list[int]:
    """The calls that started before the shared rate allows: the k-th (from 0) may start
    k / rate seconds after the first slot was asked for, not sooner."""
    return [k for k, t in enumerate(sorted(starts)) if t < asked + k / rate - 0.001]


async def test_limiters_sharing_a_source_keep_to_one_rate_together() -> None:
    rate, source = 200.0, InMemorySlots()
    asked = time.monotonic()
    groups = await asyncio.gather(*(call_times(lim, 30) for lim in limiters(3, rate, source)))
    starts = [t for group in groups for t in group]
    assert len(starts) == 90 and early_calls(starts, asked, rate) == []


async def test_three_process_buckets_would_not() -> None:
    """The check above can fail: three per-process buckets call three times as often."""
    rate = 200.0
    asked = time.monotonic()
    buckets = [RateLimiter(rate, burst=1) for _ in range(3)]
    groups = await asyncio.gather(*(call_times(bucket, 30) for bucket in buckets))
    assert early_calls([t for group in groups for t in group], asked, rate) != []


async def test_a_busy_process_leases_up_to_half_a_second_at_a_time() -> None:
    source = InMemorySlots()
    [limiter] = limiters(1, 40.0, source)  # half a second of 40/s: leases of 20 at most
    free = asyncio.Semaphore(8)  # eight callers, each calling again when its call is done

    async def call() -> None:
        async with free:
            await limiter.acquire()

    await asyncio.gather(*(call() for _ in range(60)))
    assert sum(source.takes) >= 60 and max(source.takes) == 20
    assert len(source.takes) <= 8  # a round trip per 7.5 calls or fewer (one per call before)


async def test_a_process_calling_now_and_then_reserves_little() -> None:
    source = InMemorySlots()
    [limiter] = limiters(1, 40.0, source)
    for _ in range(6):
        await limiter.acquire()
        await asyncio.sleep(0.1)  # four slots' time: what it leased ahead goes unused
    assert max(source.takes) <= 2 and sum(source.takes) <= 9


async def test_a_slot_nobody_took_in_time_is_dropped_not_used_late() -> None:
    source = InMemorySlots()
    [limiter] = limiters(1, 100.0, source)
    first_lease = source.gate = asyncio.Event()
    callers = [asyncio.create_task(limiter.acquire()) for _ in range(3)]
    await asyncio.sleep(0.01)  # the first caller's lease is under way; two callers wait
    second_lease = source.gate = asyncio.Event()
    first_lease.set()
    await asyncio.sleep(0.01)  # the second caller leases for both waiting callers
    callers[2].cancel()  # so one slot is left over
    second_lease.set()
    await asyncio.gather(*callers, return_exceptions=True)
    assert source.takes == [1, 2]
    await asyncio.sleep(0.05)  # five slots' time: the left-over slot is stale
    started = time.monotonic()
    await limiter.acquire()
    assert source.takes == [1, 2, 1]  # a fresh slot, not the stale one
    assert time.monotonic() - started < 0.05


async def test_a_429_pauses_and_slows_every_limiter_sharing_the_source() -> None:
    source = InMemorySlots()
    here, there = limiters(2, 100.0, source)
    await here.record_429(0.3)

    with pytest.raises(RateLimitPaused, match="429") as paused:
        await there.acquire(max_pause=0.1)  # no slot taken: the caller hands its item back
    assert 0.2 < paused.value.seconds <= 0.3
    assert source.next_slot == 0.0
    started = time.monotonic()
    await there.acquire()  # waits the pause out
    assert time.monotonic() - started >= 0.2
    assert there.rate == pytest.approx(50.0)
    for _ in range(6):
        await here.record_429(0.0)
    await there.acquire()
    assert there.rate == pytest.approx(100.0 * MIN_RATE_FACTOR)  # compounding, with a floor


async def test_the_process_bucket_hands_back_a_long_pause_too() -> None:
    bucket = RateLimiter(100.0)
    await bucket.record_429(60.0)
    with pytest.raises(RateLimitPaused) as paused:
        await asyncio.wait_for(bucket.acquire(max_pause=5.0), 1.0)
    assert 59.0 < paused.value.seconds <= 60.0


async def test_a_limiter_without_a_source_says_how_to_get_one() -> None:
    limiter = SharedRateLimiter(10.0, key="AC")
    with pytest.raises(RuntimeError, match="make_runner"):
        await limiter.acquire()
