"""An error that does not blame the data is answered 503 (Twilio retries), never filed as
refused: only SQLSTATE classes 22, 23 and 54 send a valid event to rejected_events."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from tests.conftest import Sink
from tests.support.studio import execution_story


async def raise_on_executions(conn: asyncpg.Connection[Any], sqlstate: str) -> None:
    await conn.execute(
        f"""
        CREATE FUNCTION sink.test_fail() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'planted failure' USING ERRCODE = '{sqlstate}'; END $$;
        CREATE TRIGGER test_fail BEFORE INSERT ON sink.executions
            FOR EACH ROW EXECUTE FUNCTION sink.test_fail();
        """
    )


@pytest.mark.parametrize("sqlstate", ["55P03", "26000", "42P05", "XX000"])
async def test_a_failure_that_does_not_blame_the_data_is_retried(
    sink: Sink, conn: asyncpg.Connection[Any], sqlstate: str
) -> None:
    await raise_on_executions(conn, sqlstate)
    story = execution_story(2)
    status, answer = await sink.post(story)
    assert status == 503, answer
    assert await conn.fetchval("SELECT count(*) FROM studio.rejected_events") == 0
    await conn.execute("DROP TRIGGER test_fail ON sink.executions")
    status, answer = await sink.post(story)  # Twilio's retry
    assert status == 200 and answer["stored"] == len(story)


async def test_a_failure_that_blames_the_data_keeps_the_event_as_refused(
    sink: Sink, conn: asyncpg.Connection[Any]
) -> None:
    await raise_on_executions(conn, "22P05")
    status, answer = await sink.post(execution_story(1))
    assert status == 200 and answer["rejected"] == 3
    reasons = await conn.fetch("SELECT reason, detail FROM studio.rejected_events")
    assert {r["reason"] for r in reasons} == {"database_refused"}
    assert all("[22P05]" in r["detail"] for r in reasons)
