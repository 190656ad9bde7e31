"""The backfill runner's loops against an in-memory queue and a scripted item runner."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import asyncpg
import pytest

from sink.backfill import queue as q
from sink.backfill.accounts import AccountUnknown, WaitForCredentials
from sink.backfill.client import (
    StudioApiError,
    StudioClient,
    StudioCredentials,
    StudioCredentialsError,
    StudioGone,
    StudioUnavailable,
)
from sink.backfill.item import ItemWorker, UnknownFlow
from sink.backfill.runner import Runner, make_runner
from sink.metrics import Metrics
from tests.support.backfill_queue import InMemoryQueue

RETRY_BASE = 0.01  # backoff before attempt n+1: RETRY_BASE * 2**(n-1) * uniform(0.5, 1)
LEASE = 1.0
DONE_WITHIN = 1.0  # a loop that has not returned by then never will

EXECUTIONS = [f"FN{n:032x}" for n in range(1, 6)]


class ScriptedItems:
    """Does items as scripted: each run of an item takes the next outcome of its script (an
    exception to raise, or None: success); past the script's end every run succeeds. The
    n-th run first waits ``holds[n]`` seconds (if there is one), then for ``gate`` if set."""

    def __init__(self, scripts: dict[int, list[BaseException | None]] | None = None) -> None:
        self.scripts = scripts or {}
        self.runs: list[tuple[int, int]] = []  # (item_id, attempts) of each run
        self.started = asyncio.Event()
        self.gate: asyncio.Event | None = None
        self.holds: list[float] = []

    async def run(self, item: q.Item) -> None:
        self.runs.append((item.item_id, item.attempts))
        self.started.set()
        if len(self.holds) >= len(self.runs):
            await asyncio.sleep(self.holds[len(self.runs) - 1])
        if self.gate is not None:
            await self.gate.wait()
        script = self.scripts.get(item.item_id, [])
        outcome = script.pop(0) if script else None
        if outcome is not None:
            raise outcome


def runner(
    queue: InMemoryQueue,
    items: ScriptedItems,
    *,
    max_attempts: int = 3,
    lease: float = LEASE,
    metrics: Metrics | None = None,
) -> Runner:
    return Runner(
        queue,
        items,
        max_attempts=max_attempts,
        metrics=metrics,
        lease=lease,
        retry_base=RETRY_BASE,
    )


async def foreground(r: Runner, request_id: int, workers: int = 1) -> None:
    await asyncio.wait_for(
        asyncio.gather(*(r.work(request_id) for _ in range(workers))), DONE_WITHIN
    )


def finished(metrics: Metrics, outcome: str) -> float | None:
    return metrics.registry.get_sample_value("sink_backfill_items_total", {"outcome": outcome})


def unavailable() -> StudioUnavailable:
    return StudioUnavailable("Studio API execution still failing (test)", status=503)


# -- outcomes ---------------------------------------------------------------------------


async def test_an_item_that_succeeds_is_done() -> None:
    queue, items, metrics = InMemoryQueue(), ScriptedItems(), Metrics()
    rid = queue.request()
    item = queue.add(rid, EXECUTIONS[0])

    await foreground(runner(queue, items, metrics=metrics), rid)

    row = queue.items[item]
    assert (row.state, row.reason, row.attempts, row.locked_by) == ("done", None, 1, None)
    assert items.runs == [(item, 1)]
    assert finished(metrics, "done") == 1
    summary = await queue.progress(rid)
    assert summary is not None
    assert (summary.status, summary.items_done, summary.items_total) == ("finished", 1, 1)


async def test_a_gone_item_is_gone_and_not_retried() -> None:
    gone = StudioGone("Studio execution FN...: HTTP 404 (test)", status=404)
    queue, items = InMemoryQueue(), ScriptedItems({1: [gone]})
    rid = queue.request()
    queue.add(rid, EXECUTIONS[0])

    await foreground(runner(queue, items), rid)

    assert (queue.items[1].state, queue.items[1].reason) == ("gone", str(gone))
    assert items.runs == [(1, 1)]
    assert queue.entries("retry") == []


async def test_unavailable_is_retried_with_backoff_until_it_succeeds() -> None:
    queue, items = InMemoryQueue(), ScriptedItems({1: [unavailable(), unavailable()]})
    rid = queue.request()
    queue.add(rid, EXECUTIONS[0])

    await foreground(runner(queue, items, max_attempts=5), rid)

    assert queue.items[1].state == "done"
    assert queue.items[1].attempts == 3
    assert items.runs == [(1, 1), (1, 2), (1, 3)]
    claims, retries = queue.entries("claim"), queue.entries("retry")
    assert len(claims) == 3 and len(retries) == 2
    for n, (retried, next_claim) in enumerate(zip(retries, claims[1:], strict=True), start=1):
        _, _, delay, refund, reason, at = retried
        ceiling = RETRY_BASE * 2 ** (n - 1)
        assert ceiling / 2 <= delay <= ceiling  # exponential, with jitter
        assert refund is False
        assert reason == str(unavailable())
        assert next_claim[3] >= at + delay  # not claimed again before not_before


async def test_unavailable_until_max_attempts_fails_the_item() -> None:
    metrics = Metrics()
    queue, items = InMemoryQueue(), ScriptedItems({1: [unavailable() for _ in range(10)]})
    rid = queue.request()
    queue.add(rid, EXECUTIONS[0])

    await foreground(runner(queue, items, max_attempts=3, metrics=metrics), rid)

    row = queue.items[1]
    assert row.state == "failed"
    assert row.reason == f"{unavailable()} (gave up after 3 attempts)"
    assert items.runs == [(1, 1), (1, 2), (1, 3)]
    assert len(queue.entries("retry")) == 2
    assert finished(metrics, "failed") == 1


async def test_an_item_on_its_last_attempt_still_runs() -> None:
    queue, items = InMemoryQueue(), ScriptedItems()
    rid = queue.request()
    queue.add(rid, EXECUTIONS[0], attempts=2)

    await foreground(runner(queue, items, max_attempts=3), rid)

    assert items.runs == [(1, 3)]
    assert queue.items[1].state == "done"


@pytest.mark.parametrize(
    "error",
    [
        StudioApiError("Studio API rejected execution: HTTP 400 (test)", status=400),
        UnknownFlow("execution FN... is not stored (test)"),
    ],
    ids=["api-error", "unknown-flow"],
)
async def test_a_non_retryable_error_fails_the_item_at_once(error: Exception) -> None:
    queue, items = InMemoryQueue(), ScriptedItems({1: [error]})
    rid = queue.request()
    queue.add(rid, EXECUTIONS[0])

    await foreground(runner(queue, items, max_attempts=5), rid)

    assert (queue.items[1].state, queue.items[1].reason) == ("failed", str(error))
    assert items.runs == [(1, 1)]
    assert queue.entries("retry") == []


async def test_refused_credentials_park_the_item_without_failing_it_or_its_request() -> None:
    account = "AC" + "1" * 32
    refused = WaitForCredentials(account, "Twilio refused every REST credential (test)")
    bare = StudioCredentialsError("Studio API refused the credentials (test)", status=401)
    queue, items, metrics = InMemoryQueue(), ScriptedItems({1: [refused], 2: [bare]}), Metrics()
    rid = queue.request()
    for sid in EXECUTIONS[:3]:
        queue.add(rid, sid)

    await foreground(runner(queue, items, metrics=metrics), rid)

    assert sorted(items.runs) == [(1, 1), (2, 1), (3, 1)]  # each item on its own
    rows = queue.items
    assert (rows[1].state, rows[1].account_sid, rows[1].reason) == (
        "waiting_for_credentials",
        account,
        str(refused),
    )
    assert (rows[2].state, rows[2].reason) == ("waiting_for_credentials", str(bare))
    assert rows[1].attempts == rows[2].attempts == 0  # waiting counts no attempt
    assert rows[3].state == "done"
    assert queue.requests[rid].error is None and finished(metrics, "failed") is None
    summary = await queue.progress(rid, failures=5)
    assert summary is not None
    assert (summary.status, summary.items_waiting, summary.items_done) == (
        "waiting_for_credentials",
        2,
        1,
    )
    assert [state for _, state, _ in summary.failures] == ["waiting_for_credentials"] * 2


async def test_an_unknown_account_fails_the_item_naming_the_fix() -> None:
    unknown = AccountUnknown("2 accounts are configured ... --account AC...")
    queue, items = InMemoryQueue(), ScriptedItems({1: [unknown]})
    rid = queue.request()
    queue.add(rid, EXECUTIONS[0])

    await foreground(runner(queue, items), rid)

    assert (queue.items[1].state, queue.items[1].reason) == ("failed", str(unknown))
    assert queue.entries("retry") == []


async def test_an_item_whose_worker_died_too_often_is_failed_without_running() -> None:
    queue, items = InMemoryQueue(), ScriptedItems()
    rid = queue.request()
    # running, its lease expired: its worker died; this claim is its 4th attempt
    queue.add(rid, EXECUTIONS[0], state="running", attempts=3, locked_by="dead worker")

    await foreground(runner(queue, items, max_attempts=3), rid)

    row = queue.items[1]
    assert (row.state, row.reason) == ("failed", "its worker stopped 3 times while running it")
    assert items.runs == []


async def test_an_unexpected_error_is_retried() -> None:
    queue, items = InMemoryQueue(), ScriptedItems({1: [RuntimeError("boom")]})
    rid = queue.request()
    queue.add(rid, EXECUTIONS[0])

    await foreground(runner(queue, items), rid)

    assert [e[4] for e in queue.entries("retry")] == ["unexpected error: RuntimeError('boom')"]
    assert items.runs == [(1, 1), (1, 2)]
    assert queue.items[1].state == "done"


async def test_database_errors_in_an_item_retry_unless_postgres_refused() -> None:
    refused = asyncpg.exceptions.CheckViolationError("new row violates check (test)")
    queue = InMemoryQueue()
    items = ScriptedItems({1: [ConnectionResetError("reset (test)")], 2: [refused]})
    rid = queue.request()
    queue.add(rid, EXECUTIONS[0])
    queue.add(rid, EXECUTIONS[1])

    await foreground(runner(queue, items), rid)

    assert [e[1] for e in queue.entries("retry")] == [1]
    assert queue.items[1].state == "done"
    assert (queue.items[2].state, queue.items[2].reason) == (
        "failed",
        f"Postgres refused: {refused}",
    )


# -- order, leases, stopping --------------------------------------------------------------


async def test_items_are_claimed_by_not_before_then_item_id() -> None:
    queue, items = InMemoryQueue(), ScriptedItems()
    rid = queue.request()
    queue.add(rid, EXECUTIONS[0])
    queue.add(rid, EXECUTIONS[1], delay=-0.02)
    queue.add(rid, EXECUTIONS[2], delay=-0.02)
    queue.add(rid, EXECUTIONS[3], delay=0.03)  # not due yet: waited for

    await foreground(runner(queue, items), rid)

    assert [item_id for item_id, _ in items.runs] == [2, 3, 1, 4]


async def test_foreground_returns_when_its_request_has_no_open_item() -> None:
    queue, items = InMemoryQueue(), ScriptedItems()
    other, rid = queue.request(), queue.request()
    elsewhere = queue.add(other, EXECUTIONS[0])  # due first, but not this request's
    mine = [queue.add(rid, sid) for sid in EXECUTIONS[1:3]]

    await foreground(runner(queue, items), rid, workers=2)

    assert sorted(item_id for item_id, _ in items.runs) == mine
    assert [queue.items[i].state for i in mine] == ["done", "done"]
    assert (queue.items[elsewhere].state, queue.items[elsewhere].attempts) == ("queued", 0)
    empty = queue.request()
    await foreground(runner(queue, items), empty)  # nothing at all: returns at once


async def test_foreground_waits_for_an_item_another_worker_holds() -> None:
    queue, items = InMemoryQueue(), ScriptedItems()
    rid = queue.request()
    queue.add(rid, EXECUTIONS[0], state="running", attempts=1, locked_by="other", delay=0.05)
    leased_until = queue.items[1].not_before

    await foreground(runner(queue, items), rid)

    assert items.runs == [(1, 2)]  # taken over once the other worker's lease ran out
    assert queue.entries("claim")[0][3] >= leased_until
    assert queue.items[1].state == "done"


async def test_the_heartbeat_keeps_a_long_item_from_other_workers() -> None:
    queue, items = InMemoryQueue(), ScriptedItems()
    items.holds = [0.2]  # longer than the lease: only renewals keep it
    rid = queue.request()
    queue.add(rid, EXECUTIONS[0])
    r = runner(queue, items, lease=0.09)
    heartbeat = asyncio.create_task(r.heartbeat())
    try:
        await foreground(r, rid, workers=2)
    finally:
        heartbeat.cancel()
        with pytest.raises(asyncio.CancelledError):
            await heartbeat

    assert items.runs == [(1, 1)]
    assert len(queue.entries("extend", 1)) >= 2
    assert queue.items[1].state == "done"


async def test_an_expired_lease_lets_another_worker_take_the_item() -> None:
    """Without the heartbeat: the second worker takes the item, and the first worker's
    outcome is not recorded (it no longer holds the item)."""
    queue, items, metrics = InMemoryQueue(), ScriptedItems(), Metrics()
    items.holds = [0.1]  # the first run outlives its lease; the second does not
    rid = queue.request()
    queue.add(rid, EXECUTIONS[0])

    await foreground(runner(queue, items, lease=0.03, metrics=metrics), rid, workers=2)

    assert items.runs == [(1, 1), (1, 2)]
    assert queue.entries("finish") == [("finish", 1, "done", None)]
    assert finished(metrics, "done") == 1


async def test_stop_ends_the_loops_after_the_current_item() -> None:
    queue, items = InMemoryQueue(), ScriptedItems()
    items.gate = asyncio.Event()
    rid = queue.request()
    queue.add(rid, EXECUTIONS[0])
    queue.add(rid, EXECUTIONS[1])
    r = runner(queue, items)
    loop = asyncio.create_task(r.work())  # serving mode: it never returns by itself
    await asyncio.wait_for(items.started.wait(), DONE_WITHIN)

    r.stop()
    items.gate.set()
    await asyncio.wait_for(loop, DONE_WITHIN)

    assert items.runs == [(1, 1)]
    assert queue.items[1].state == "done"  # the current item was finished
    assert (queue.items[2].state, queue.items[2].attempts) == ("queued", 0)


async def test_stop_wakes_an_idle_loop() -> None:
    queue, items = InMemoryQueue(), ScriptedItems()
    r = runner(queue, items)
    loop = asyncio.create_task(r.work())
    await asyncio.sleep(0.02)
    assert not loop.done()  # an empty queue: serving mode waits for work

    r.stop()
    await asyncio.wait_for(loop, 0.5)  # well before the next poll


async def test_a_cancelled_item_goes_back_without_counting_the_attempt() -> None:
    queue, items = InMemoryQueue(), ScriptedItems()
    items.gate = asyncio.Event()  # never set: the item runs until cancelled
    rid = queue.request()
    queue.add(rid, EXECUTIONS[0])
    loop = asyncio.create_task(runner(queue, items).work(rid))
    await asyncio.wait_for(items.started.wait(), DONE_WITHIN)

    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loop

    row = queue.items[1]
    assert (row.state, row.attempts, row.reason, row.locked_by) == (
        "queued",
        0,
        "worker stopped",
        None,
    )
    assert [e[2:4] for e in queue.entries("retry")] == [(0, True)]


# -- the real runner's wiring ---------------------------------------------------------------


def test_make_runner_wakes_the_loops_when_an_item_queues_more() -> None:
    pool = cast(Any, object())  # not used until work()
    client = StudioClient("http://127.0.0.1:9", StudioCredentials("AC" + "0" * 32, "unused"))
    r = make_runner(pool, client, max_attempts=3)
    worker = r._items
    assert isinstance(worker, ItemWorker)
    assert isinstance(r._queue, q.PostgresQueue)
    assert not r.wake.is_set()

    assert worker._on_queued is not None
    worker._on_queued()  # what a flow's listing calls after queueing its executions

    assert r.wake.is_set()
