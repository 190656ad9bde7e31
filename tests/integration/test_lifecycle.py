"""The data's life cycle: partitions and retention (with dedup kept), replay, export."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from sink.cli import build_parser
from sink.config import Settings
from sink.maintenance import replay, retention
from tests.conftest import Sink
from tests.support.studio import STEP, execution_story, sink_test_event

BOOKKEEPING = ("first_seen_at", "updated_at")
PARTITION_OF = "SELECT tableoid::regclass::text FROM sink.events WHERE event_id = $1"


def partition_name(days_ago: int) -> str:
    day = datetime.now(UTC).date() - timedelta(days=days_ago)
    return f"events_{day:%Y%m%d}"


async def age(conn: asyncpg.Connection[Any], event_ids: list[str], days: int) -> None:
    """Make events (and their keys) look received `days` days earlier."""
    shift = timedelta(days=days)
    await conn.execute(
        "UPDATE sink.events SET received_at = received_at - $2::interval WHERE event_id = ANY($1)",
        event_ids,
        shift,
    )
    await conn.execute(
        "UPDATE sink.event_keys SET received_at = received_at - $2::interval"
        " WHERE event_id = ANY($1)",
        event_ids,
        shift,
    )


async def run_command(argv: list[str], settings: Settings) -> int:
    args = build_parser().parse_args(argv)
    code: int = await args.handler(args, settings)
    return code


async def test_maintain_drops_expired_data_and_dedup_still_holds(
    start_sink: Callable[..., Any], conn: asyncpg.Connection[Any]
) -> None:
    sink: Sink = await start_sink(maintain_interval=0)
    recent, crossing, old, older = (execution_story(2) for _ in range(4))
    for story in (recent, crossing, old, older):
        status, answer = await sink.post(story)
        assert status == 200 and answer["stored"] == 4
    # a duplicate that will cross a partition boundary: its first copy is yesterday's
    await age(conn, [crossing[0]["id"]], 1)
    assert await conn.fetchval(PARTITION_OF, crossing[0]["id"]) == f"sink.{partition_name(1)}"
    # 10 days ago, in that day's partition; 20 days ago, caught by the default partition
    await conn.execute("SELECT sink.create_event_partition(current_date - 10)")
    await age(conn, [e["id"] for e in old], 10)
    await age(conn, [e["id"] for e in older], 20)
    assert await conn.fetchval(PARTITION_OF, old[0]["id"]) == f"sink.{partition_name(10)}"
    assert await conn.fetchval(PARTITION_OF, older[0]["id"]) == "sink.events_default"
    await conn.execute(
        "UPDATE sink.deliveries SET received_at = received_at - interval '10 days'"
        " WHERE delivery_id = (SELECT min(delivery_id) FROM sink.deliveries)"
    )
    status, _ = await sink.post([sink_test_event(), {"specversion": "1.0"}])
    assert status == 200
    await conn.execute("UPDATE sink.rejected_events SET received_at = now() - interval '9 days'")
    executions_before = await conn.fetchval("SELECT count(*) FROM studio.executions")

    report = await retention.maintain(conn, retention_days=2)

    assert report.partitions_dropped == [partition_name(10)]
    assert await conn.fetchval("SELECT to_regclass($1)", f"sink.{partition_name(10)}") is None
    assert await conn.fetchval("SELECT to_regclass($1)", f"sink.{partition_name(1)}")
    assert report.deleted == {
        "default_partition_events": 4,
        "event_keys": 8,
        "rejected_events": 1,
        "deliveries": 1,
    }
    cutoff = report.event_cutoff
    assert cutoff is not None and cutoff.time().isoformat() == "00:00:00"
    for table in ("sink.events", "sink.event_keys"):
        oldest = await conn.fetchval(f"SELECT min(received_at) FROM {table}")
        assert oldest >= cutoff
    assert await conn.fetchval("SELECT count(*) FROM sink.events") == 9  # 2 stories, 1 test
    # typed tables keep their history
    assert await conn.fetchval("SELECT count(*) FROM studio.executions") == executions_before

    # duplicates are still recognised: a recent one, and one whose first copy is yesterday's
    for duplicate in (recent[1], crossing[0]):
        status, answer = await sink.post([duplicate])
        assert (status, answer["stored"], answer["duplicates"]) == (200, 0, 1)
    assert await conn.fetchval(PARTITION_OF, crossing[0]["id"]) == f"sink.{partition_name(1)}"
    # past its retention an event is forgotten: delivered again, it is new
    status, answer = await sink.post([old[0]])
    assert (status, answer["stored"]) == (200, 1)


async def test_dry_run_changes_nothing(conn: asyncpg.Connection[Any]) -> None:
    await conn.execute("SELECT sink.create_event_partition(current_date - 30)")
    report = await retention.maintain(conn, retention_days=3, dry_run=True, days_ahead=8)
    assert report.partitions_dropped == [partition_name(30)]
    assert report.partitions_created == 1  # the migration created days -1 .. +7
    assert await conn.fetchval("SELECT to_regclass($1)", f"sink.{partition_name(30)}")
    assert await conn.fetchval("SELECT to_regclass($1)", f"sink.{partition_name(-8)}") is None
    real = await retention.maintain(conn, retention_days=3, days_ahead=8)
    assert real.partitions_dropped == [partition_name(30)]
    assert await conn.fetchval("SELECT to_regclass($1)", f"sink.{partition_name(-8)}")


async def test_typed_retention_deletes_old_executions_with_their_steps(
    start_sink: Callable[..., Any], conn: asyncpg.Connection[Any]
) -> None:
    sink: Sink = await start_sink(maintain_interval=0)
    now = datetime.now(UTC)
    old, recent = execution_story(2, start=now - timedelta(days=10)), execution_story(3)
    for story in (old, recent):
        assert (await sink.post(story))[0] == 200
    report = await retention.maintain(conn, retention_days=None, typed_retention_days=5)
    assert report.deleted == {"executions": 1, "steps": 2}
    assert await conn.fetchval("SELECT count(*) FROM studio.steps") == 3
    assert (
        await conn.fetchval("SELECT execution_sid FROM studio.executions")
        == (recent[0]["data"]["execution_sid"])
    )
    assert await conn.fetchval("SELECT count(*) FROM studio.events") == 9  # raw events kept


async def test_maintain_command_and_the_running_sink(
    start_sink: Callable[..., Any],
    conn: asyncpg.Connection[Any],
    make_settings: Callable[..., Settings],
    capsys: pytest.CaptureFixture[str],
) -> None:
    await conn.execute("SELECT sink.create_event_partition(current_date - 40)")
    await conn.execute("SELECT sink.create_event_partition(current_date - 50)")
    settings = make_settings(retention_days=5)
    assert await run_command(["maintain", "--dry-run"], settings) == 0
    out = capsys.readouterr().out
    assert "dry run" in out and partition_name(40) in out and partition_name(50) in out
    assert await run_command(["maintain", "--retention-days", "45"], settings) == 0
    assert f"did drop {partition_name(50)}" in capsys.readouterr().out
    assert await conn.fetchval("SELECT to_regclass($1)", f"sink.{partition_name(50)}") is None
    # the sink itself applies SINK_RETENTION_DAYS in its maintenance loop
    await start_sink(retention_days=5)
    for _ in range(1000):
        if await conn.fetchval("SELECT to_regclass($1)", f"sink.{partition_name(40)}") is None:
            break
        await asyncio.sleep(0.01)
    assert await conn.fetchval("SELECT to_regclass($1)", f"sink.{partition_name(40)}") is None


# --- replay ----------------------------------------------------------------------------


async def typed_snapshot(conn: asyncpg.Connection[Any]) -> dict[str, list[dict[str, Any]]]:
    snapshot = {}
    for table, key in (("executions", "execution_sid"), ("steps", "step_sid")):
        rows = await conn.fetch(f"SELECT * FROM sink.{table} ORDER BY {key}")
        snapshot[table] = [{k: v for k, v in row.items() if k not in BOOKKEEPING} for row in rows]
    return snapshot


async def load_varied(sink: Sink) -> int:
    """Studio events in every shape ingestion meets; returns how many were stored."""
    stories = [execution_story(n) for n in (1, 3, 5)]
    step_only = [e for e in execution_story(2) if e["type"] == STEP]  # never started
    stored = 0
    for delivery in (stories[0], stories[1][::-1], stories[2][:3], stories[2][2:], step_only):
        status, answer = await sink.post(delivery)
        assert status == 200
        stored += answer["stored"]
    status, answer = await sink.post([sink_test_event()])  # not a Studio event
    return stored


async def test_replay_restores_the_typed_tables_exactly(
    start_sink: Callable[..., Any], conn: asyncpg.Connection[Any]
) -> None:
    sink: Sink = await start_sink(maintain_interval=0)
    stored = await load_varied(sink)
    before = await typed_snapshot(conn)
    assert len(before["executions"]) == 4 and len(before["steps"]) == 11
    await conn.execute("TRUNCATE sink.executions, sink.steps")
    batches: list[int] = []
    report = await replay.replay(conn, batch_size=4, on_batch=batches.append)
    assert await typed_snapshot(conn) == before
    assert (report.events, report.invalid, sum(batches)) == (stored, 0, stored)
    assert report.batches == len(batches) == -(-stored // 4)
    again = await replay.replay(conn, batch_size=1000)  # idempotent
    assert again.batches == 1 and await typed_snapshot(conn) == before


async def test_replay_keeps_contexts_and_filters(
    start_sink: Callable[..., Any],
    conn: asyncpg.Connection[Any],
    make_settings: Callable[..., Settings],
    capsys: pytest.CaptureFixture[str],
) -> None:
    sink: Sink = await start_sink(maintain_interval=0)
    stored = await load_varied(sink)
    await conn.execute(
        "UPDATE sink.executions SET context = '{\"flow\": {}}', context_fetched_at = now()"
    )
    await conn.execute("UPDATE sink.steps SET context = '{\"w\": 1}', context_fetched_at = now()")
    replayed = await replay.replay(conn)
    assert replayed.events == stored
    assert await conn.fetchval("SELECT count(*) FROM sink.executions WHERE context IS NULL") == 0
    assert await conn.fetchval("SELECT count(*) FROM sink.steps WHERE context IS NULL") == 0

    await conn.execute("TRUNCATE sink.executions, sink.steps")
    settings = make_settings()
    argv = ["replay", "--type", STEP, "--batch-size", "2", "--quiet"]
    assert await run_command(argv, settings) == 0
    assert "replayed 11 events in 6 batches" in capsys.readouterr().out
    assert await conn.fetchval("SELECT count(*) FROM sink.steps") == 11
    # a step names its execution: the rows exist, without what only execution events tell
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM sink.executions WHERE contact_channel_address IS NULL"
        )
        == 4
    )
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert await run_command(["replay", "--since", future, "--quiet"], settings) == 0
    assert "replayed 0 events in 0 batches" in capsys.readouterr().out


# --- export ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
async def test_export_streams_a_time_range(
    fmt: str,
    start_sink: Callable[..., Any],
    conn: asyncpg.Connection[Any],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sink: Sink = await start_sink(maintain_interval=0)
    t0 = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)
    stories = [execution_story(2, start=t0 + timedelta(hours=h)) for h in (0, 1, 2)]
    for story in stories:
        assert (await sink.post(story))[0] == 200
    await conn.execute(
        'UPDATE sink.executions SET context = \'{"a": [1, "x"]}\', context_fetched_at = now()'
    )
    output = tmp_path / f"executions.{fmt}"
    argv = ["export", "--what", "executions", "--format", fmt, "--output", str(output)]
    argv += ["--since", "2026-11-20T15:00:00Z", "--until", "2026-11-20T16:00:00"]
    assert await run_command(argv, make_settings()) == 0
    assert f"exported 1 executions to {output}" in capsys.readouterr().err
    expected = await conn.fetchrow(
        "SELECT * FROM studio.executions WHERE execution_sid = $1",
        stories[1][0]["data"]["execution_sid"],
    )
    assert expected is not None
    text = output.read_text("utf-8")
    if fmt == "csv":
        (row,) = list(csv.DictReader(io.StringIO(text)))
        assert list(row) == list(expected.keys())
        assert row["date_created"] == "2026-11-20T15:00:00+00:00"
        assert row["ended_reason"] == "FLOW_END" and row["gone_at"] == ""
        assert json.loads(row["context"]) == {"a": [1, "x"]}
    else:
        (line,) = text.splitlines()
        row = json.loads(line)
        assert list(row) == list(expected.keys())
        assert row["date_created"] == "2026-11-20T15:00:00Z"
        assert row["flow_revision"] == 3 and row["gone_at"] is None
        assert row["context"] == {"a": [1, "x"]}

    # every step, to stdout
    argv = ["export", "--what", "steps", "--format", fmt, "--output", "-"]
    assert await run_command(argv, make_settings()) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == (7 if fmt == "csv" else 6)
    if fmt == "jsonl":
        steps = [json.loads(line) for line in lines]
        assert [s["name"] for s in steps] == ["incomingRequest", "next"] * 3  # oldest first
        assert [s["transitioned_to"] for s in steps] == ["widget_0", "Ended"] * 3
