"""``studio-sink backfill --flows`` (and the queue kind 'flows' behind the UI's button):
every flow of the account, paged, with its latest revision and the revisions executions ran."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from sink import jsontext
from sink.backfill import client as studio_client
from tests.conftest import Sink
from tests.fakes.studio_data import FakeStudio
from tests.integration.test_backfill_cli import fake, run_cli, studio_env
from tests.support.flow_pages import small_ivr, walk
from tests.support.studio import recent, sid

__all__ = ["fake", "studio_env"]  # fixtures shared with test_backfill_cli


async def stored(conn: asyncpg.Connection[Any]) -> set[tuple[str, int]]:
    rows = await conn.fetch("SELECT flow_sid, revision FROM studio.flow_revisions")
    return {(r["flow_sid"], r["revision"]) for r in rows}


async def test_flows_lists_every_flow_paged_with_latest_and_ran_revisions(
    studio_env: None,
    fake: FakeStudio,
    sink: Sink,
    conn: asyncpg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(studio_client, "PAGE_SIZE", 2)  # five flows: three pages
    flows = [fake.add_flow(friendly_name=f"Flow {n}") for n in range(5)]
    busy = flows[0]
    for _ in range(3):
        fake.add_revision(busy, small_ivr())  # revisions 2, 3, 4
    # stored executions ran revision 2 of the busy flow (and 9, which Studio no longer has)
    for revision in (2, 9):
        status, _ = await sink.post(
            walk(busy.sid, [("incomingCall", "greet")], at=recent(), revision=revision)[1]
        )
        assert status < 300
    code = await run_cli("--flows")
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "1 items, 1 done, 0 gone (404: expired), 0 failed" in out
    assert await stored(conn) == {(f.sid, 1) for f in flows[1:]} | {(busy.sid, 4), (busy.sid, 2)}
    names = dict(await conn.fetch("SELECT flow_sid, friendly_name FROM studio.flows"))
    assert names == {f.sid: f"Flow {n}" for n, f in enumerate(flows)}
    definition = await conn.fetchval(
        "SELECT definition FROM studio.flow_revisions WHERE flow_sid = $1 AND revision = 2",
        busy.sid,
    )
    assert jsontext.loads(definition) == small_ivr()
    listings = [r for r in fake.log if r.endpoint == "flows"]
    assert len(listings) == 3 and all("PageSize=2" in r.query_string for r in listings)
    revision_calls = sorted(
        r.path.rsplit("/", 1)[1] for r in fake.log if r.endpoint == "flow_revision"
    )
    assert revision_calls == ["2", "9"]  # only what executions ran and was not stored
    row = await conn.fetchrow("SELECT kind, requested_by, status FROM studio.backfill_requests")
    assert tuple(row) == ("flows", "cli", "finished")


async def test_one_flow_from_the_queue_and_bad_sids(
    studio_env: None,
    fake: FakeStudio,
    conn: asyncpg.Connection[Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    wanted, other = fake.add_flow(friendly_name="Wanted"), fake.add_flow(friendly_name="Other")
    rid = await conn.fetchval("SELECT studio.request_flows_backfill($1)", wanted.sid)
    assert await run_cli("--request", str(rid)) == 0
    assert await stored(conn) == {(wanted.sid, 1)}
    assert [r.endpoint for r in fake.log] == ["flow"]  # no listing for one flow
    del other
    gone = sid("FW")
    rid = await conn.fetchval("SELECT studio.request_flows_backfill($1)", gone)
    assert await run_cli("--request", str(rid)) == 0  # a 404 is "gone", not a failure
    assert "1 items, 0 done, 1 gone" in capsys.readouterr().out
    with pytest.raises(asyncpg.InvalidParameterValueError, match="not a Flow SID"):
        await conn.fetchval("SELECT studio.request_flows_backfill('FWnope')")
    assert await run_cli("--flows", "FWnope") == 2
    assert "not a Flow SID: 'FWnope'" in capsys.readouterr().err
