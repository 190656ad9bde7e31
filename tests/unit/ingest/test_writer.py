"""The group-commit writer against an in-memory store: batching, splitting, draining."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sink.errors import BatchRefused, DatabaseUnavailable, Overloaded, ShuttingDown
from sink.ingest.arrays import BatchItem
from sink.ingest.cloudevents import Event, Rejection
from sink.ingest.store import ItemOutcome
from sink.ingest.writer import GroupCommitWriter

POISON = "poison"  # an event whose data the in-memory "database" refuses


def event(n: int, data: str = "{}") -> Event:
    return Event(
        event_id=f"EZ{n}",
        source="/test",
        type="com.twilio.studio.flow.step.ended",
        specversion="1.0",
        time=None,
        dataschema=None,
        datacontenttype=None,
        subject=None,
        data_json=data,
        extensions_json=None,
    )


class InMemoryStore:
    """Stores batches as Postgres would, in memory: a key is stored once; a batch holding a
    poisoned event, or a rejection with a poisoned detail, is refused whole; while ``down``
    every batch fails as a lost connection does."""

    def __init__(self) -> None:
        self.keys: set[tuple[str, str]] = set()
        self.rejected: list[Rejection] = []
        self.calls: list[list[BatchItem]] = []
        self.down = False
        self.gate: asyncio.Event | None = None  # when set: each store waits for it

    async def store(self, items: list[BatchItem]) -> list[ItemOutcome]:
        self.calls.append(items)
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise DatabaseUnavailable("Postgres is unavailable (test)")
        for item in items:
            if any(e.data_json == POISON for e in item.events) or any(
                r.detail == POISON for r in item.rejected
            ):
                raise BatchRefused("Postgres refused this event: [22P05] test", sqlstate="22P05")
        outcomes = []
        for item in items:
            new = []
            for e in item.events:
                if (e.source, e.event_id) not in self.keys:
                    self.keys.add((e.source, e.event_id))
                    new.append(e)
            self.rejected += item.rejected
            outcomes.append(
                ItemOutcome(len(new), len(item.events) - len(new), len(item.rejected), new)
            )
        return outcomes


@pytest.fixture
def store() -> InMemoryStore:
    return InMemoryStore()


@pytest.fixture
async def writer(store: InMemoryStore) -> AsyncIterator[GroupCommitWriter]:
    w = GroupCommitWriter(max_events=10, max_wait=0.02, writers=1, max_pending=25)
    w.bind(store)
    w.start()
    yield w
    await w.close()


async def test_concurrent_deliveries_share_one_batch(
    writer: GroupCommitWriter, store: InMemoryStore
) -> None:
    futures = [writer.submit(f"r{n}", [event(n)], []) for n in range(3)]
    outcomes = await asyncio.gather(*futures)
    assert [o.stored for o in outcomes] == [1, 1, 1]
    assert len(store.calls) == 1 and [i.request_id for i in store.calls[0]] == ["r0", "r1", "r2"]


async def test_a_batch_stops_at_max_events(writer: GroupCommitWriter, store: InMemoryStore) -> None:
    futures = [writer.submit(f"r{n}", [event(n * 10 + k) for k in range(4)], []) for n in range(5)]
    await asyncio.gather(*futures)
    # 4 events a delivery, at most 10 a batch: a batch closes once it reaches the limit
    assert [sum(len(i.events) for i in call) for call in store.calls] == [12, 8]


async def test_duplicates_are_counted_not_stored_twice(writer: GroupCommitWriter) -> None:
    first = await writer.submit("a", [event(1), event(2)], [])
    again = await writer.submit("b", [event(2), event(3)], [])
    assert (first.stored, first.duplicates) == (2, 0)
    assert (again.stored, again.duplicates) == (1, 1)


async def test_a_refused_event_is_isolated_and_the_rest_stored(
    writer: GroupCommitWriter, store: InMemoryStore
) -> None:
    good = writer.submit("good", [event(1)], [])
    mixed = writer.submit("mixed", [event(2), event(3, POISON), event(4)], [])
    outcomes = await asyncio.gather(good, mixed)
    assert outcomes[0].stored == 1
    assert (outcomes[1].stored, outcomes[1].rejected) == (2, 1)
    assert store.keys == {("/test", f"EZ{n}") for n in (1, 2, 4)}
    [kept] = store.rejected
    assert kept.reason == "database_refused" and kept.event_id == "EZ3"
    assert "[22P05]" in kept.detail


async def test_a_refused_rejection_is_kept_without_its_text(
    writer: GroupCommitWriter, store: InMemoryStore
) -> None:
    bad = Rejection(reason="not_json", detail=POISON, raw=b"\xff")
    outcome = await writer.submit("r", [event(1)], [bad])
    assert (outcome.stored, outcome.rejected) == (1, 1)
    [kept] = store.rejected
    assert kept.reason == "not_json" and "stored without its text: [22P05]" in kept.detail


async def test_an_unavailable_database_fails_every_delivery_of_the_batch(
    writer: GroupCommitWriter, store: InMemoryStore
) -> None:
    store.down = True
    futures = [writer.submit(f"r{n}", [event(n)], []) for n in range(3)]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, DatabaseUnavailable) for r in results)
    assert writer.pending_events == 0
    store.down = False
    assert (await writer.submit("again", [event(0)], [])).stored == 1


async def test_a_full_queue_refuses_at_once(
    writer: GroupCommitWriter, store: InMemoryStore
) -> None:
    store.gate = asyncio.Event()
    held = [writer.submit(f"r{n}", [event(n * 10 + k) for k in range(10)], []) for n in range(2)]
    with pytest.raises(Overloaded, match="SINK_MAX_PENDING_EVENTS"):
        writer.submit("one too many", [event(k + 100) for k in range(10)], [])
    store.gate.set()
    assert [o.stored for o in await asyncio.gather(*held)] == [10, 10]


async def test_drain_writes_what_is_queued_then_refuses_new_deliveries(
    writer: GroupCommitWriter, store: InMemoryStore
) -> None:
    store.gate = asyncio.Event()
    queued = [writer.submit(f"r{n}", [event(n)], []) for n in range(3)]
    drain = asyncio.create_task(writer.drain(grace=5))
    await asyncio.sleep(0.05)
    assert not drain.done()
    with pytest.raises(ShuttingDown):
        writer.submit("late", [event(9)], [])
    store.gate.set()
    assert await drain is True
    assert [o.stored for o in await asyncio.gather(*queued)] == [1, 1, 1]
