"""The UI's pages over real HTTP and a real database: content, escaping, filters, paging."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import Sink
from tests.support.studio import (
    ENDED,
    STARTED,
    execution_event,
    execution_story,
    sid,
    sink_test_event,
    step_event,
)
from tests.ui.conftest import ADMIN_TOKEN, csrf_of, login

SCRIPT = "<script>window.__xss=1</script>"
IMG = "<img src=x onerror=window.__xss=1>"
T0 = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)


def rows_of(html: str) -> list[str]:
    return re.findall(r'href="/ui/executions/(FN[0-9a-f]{32})"', html)


async def test_overview_shows_deliveries_test_event_and_signature_failures(
    ui: TestClient[Any, Any], ui_sink: Sink
) -> None:
    html = await (await ui.get("/ui/")).text()
    assert "Last sink test event" in html and "never" in html
    assert (await ui_sink.post([sink_test_event()]))[0] < 300
    await ui_sink.post(execution_story(3))
    status, _ = await ui_sink.post(execution_story(1), token="wrong-token")
    assert status == 401
    html = await (await ui.get("/ui/")).text()
    stat = re.search(r"Signature failures.*?<span class=\"value\">(\d+)</span>", html, re.S)
    assert stat and stat.group(1) == "1"
    assert "never" not in html.split("Last sink test event")[1][:200]
    assert re.search(r'id="last-delivery">\d{4}-\d\d-\d\d ', html)
    assert '<rect class="bar"' in html  # the events of this minute
    assert "2 deliveries, 6 events" in html


async def test_execution_page_is_a_timeline_with_escaped_contexts(
    ui: TestClient[Any, Any], ui_sink: Sink, conn: asyncpg.Connection[Any]
) -> None:
    flow, execution = sid("FW"), sid("FN")
    events = [
        execution_event(STARTED, execution, flow, at=T0, contact=IMG),
        step_event(execution, flow, at=T0 + timedelta(seconds=2), name=SCRIPT, came_from="Trigger"),
        step_event(execution, flow, at=T0 + timedelta(seconds=5), name="send", came_from=SCRIPT),
    ]
    await ui_sink.post(events)
    step_sid = events[1]["data"]["step_sid"]
    await conn.execute(
        "UPDATE sink.steps SET context = $2::jsonb, context_fetched_at = now() WHERE step_sid = $1",
        step_sid,
        '{"widgets": {"reply": {"inbound": {"Body": "</pre><script>window.__xss=1</script>"}}}}',
    )
    html = await (await ui.get(f"/ui/executions/{execution}")).text()
    assert "<script>window" not in html and "<img src=x" not in html
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=window.__xss=1&gt;" in html
    assert "&lt;/pre&gt;&lt;script&gt;" in html
    assert html.index("&lt;script&gt;window") < html.index(">send<")  # in time order
    assert "+2.0 s" in html and "+3.0 s" in html
    assert 'class="step-context"' in html
    assert "no context yet" in html  # the second step
    assert "Backfill now" in html


async def test_list_and_rejected_pages_escape_attacker_content(
    ui: TestClient[Any, Any], ui_sink: Sink
) -> None:
    flow, execution = sid("FW"), sid("FN")
    await ui_sink.post(
        [execution_event(ENDED, execution, flow, at=T0, contact=SCRIPT, ended_reason=IMG)]
    )
    bad = {"specversion": "1.0", "type": SCRIPT, "source": IMG, "data": {}}
    await ui_sink.post([bad])
    await ui_sink.post(b"\xff\xfe" + SCRIPT.encode())
    for path in ("/ui/executions", "/ui/rejected", f"/ui/executions?contact={SCRIPT}"):
        html = await (await ui.get(path)).text()
        assert "<script>window" not in html and "<img src=x" not in html, path
    html = await (await ui.get("/ui/rejected")).text()
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in html
    assert (b"\xff\xfe" + SCRIPT.encode()).hex() in html  # not UTF-8: shown as hex
    html = await (await ui.get(f"/ui/executions?contact={SCRIPT}")).text()
    assert rows_of(html) == [execution]


async def test_filters(ui: TestClient[Any, Any], ui_sink: Sink) -> None:
    flow_a, flow_b = sid("FW"), sid("FW")
    a1 = execution_story(1, flow_sid=flow_a, start=T0)
    a2 = execution_story(1, flow_sid=flow_a, start=T0 + timedelta(hours=2))
    b1 = [
        execution_event(
            STARTED, sid("FN"), flow_b, at=T0 + timedelta(hours=1), contact="+15550001111"
        )
    ]
    b2 = [
        execution_event(
            ENDED, sid("FN"), flow_b, at=T0 + timedelta(hours=3), ended_reason="TIMEOUT"
        )
    ]
    for events in (a1, a2, b1, b2):
        await ui_sink.post(events)
    x = {
        name: ev[0]["data"]["execution_sid"]
        for name, ev in (("a1", a1), ("a2", a2), ("b1", b1), ("b2", b2))
    }

    async def listed(query: str) -> list[str]:
        response = await ui.get(f"/ui/executions?{query}")
        assert response.status == 200
        return rows_of(await response.text())

    assert await listed("") == [x["b2"], x["a2"], x["b1"], x["a1"]]
    assert await listed(f"flow={flow_a}") == [x["a2"], x["a1"]]
    assert await listed("status=active") == [x["b1"]]
    assert await listed("ended_reason=TIMEOUT") == [x["b2"]]
    assert await listed("contact=%2B15550001111") == [x["b1"]]
    assert await listed("from=2026-11-20T15:00&until=2026-11-20T17:00") == [x["a2"], x["b1"]]
    assert await listed(f"flow={flow_b}&from=2026-11-20T16:00:00") == [x["b2"]]
    html = await (await ui.get("/ui/executions?status=bogus&from=yesterday")).text()
    assert "status: choose active or ended" in html and "from: expected a date" in html


async def test_keyset_pages_cover_every_row_once(
    ui: TestClient[Any, Any], conn: asyncpg.Connection[Any]
) -> None:
    # 120 executions, several sharing a date_created, and 7 known only from their steps
    await conn.execute(
        """
        INSERT INTO sink.executions (execution_sid, flow_sid, status, date_created)
        SELECT 'FN' || lpad(to_hex(n), 32, '0'), 'FW' || repeat('a', 32), 'ended',
               CASE WHEN n <= 7 THEN NULL
                    ELSE timestamptz '2026-11-20 14:00Z' + (n / 3) * interval '1 minute' END
        FROM generate_series(1, 120) AS n
        """
    )
    seen: list[str] = []
    url: str | None = "/ui/executions"
    pages = 0
    while url:
        html = await (await ui.get(url)).text()
        seen += rows_of(html)
        pages += 1
        match = re.search(r'href="([^"]+)" id="next-page"', html)
        url = match.group(1).replace("&amp;", "&") if match else None
    assert pages == 3
    assert len(seen) == 120 and len(set(seen)) == 120
    expected = await conn.fetch(
        "SELECT execution_sid FROM sink.executions"
        " ORDER BY date_created DESC NULLS FIRST, execution_sid DESC"
    )
    assert seen == [r["execution_sid"] for r in expected]


async def test_backfill_without_backfill_support_says_so(
    ui: TestClient[Any, Any], ui_sink: Sink, conn: asyncpg.Connection[Any]
) -> None:
    story = execution_story(1)
    await ui_sink.post(story)
    execution = story[0]["data"]["execution_sid"]
    await conn.execute("DROP FUNCTION IF EXISTS studio.request_backfill(text) CASCADE")
    page = await (await ui.get(f"/ui/executions/{execution}")).text()
    response = await ui.post(
        f"/ui/executions/{execution}/backfill", data={"csrf_token": csrf_of(page)}
    )
    assert response.status == 200
    assert "Backfill is not available in this database yet" in await response.text()


async def test_backfill_button_queues_a_request_and_reports_progress(
    ui: TestClient[Any, Any], ui_sink: Sink, conn: asyncpg.Connection[Any]
) -> None:
    if not await conn.fetchval("SELECT to_regprocedure('studio.request_backfill(text)')"):
        pytest.skip(
            "studio.request_backfill is not in this schema yet (sql/migrations/0002_backfill.sql)"
        )
    story = execution_story(1)
    await ui_sink.post(story)
    execution = story[0]["data"]["execution_sid"]
    page = await (await ui.get(f"/ui/executions/{execution}")).text()
    response = await ui.post(
        f"/ui/executions/{execution}/backfill",
        data={"csrf_token": csrf_of(page)},
        allow_redirects=False,
    )
    assert response.status == 303
    location = response.headers["Location"]
    request_id = int(location.rsplit("backfill=", 1)[1])
    html = await (await ui.get(location)).text()
    assert f"Backfill #{request_id}" in html
    assert 'id="no-workers"' in html  # no Studio credentials in this sink's settings
    assert f'data-poll-url="/ui/backfill/{request_id}.json"' in html
    status = await ui.get(f"/ui/backfill/{request_id}.json")
    assert status.status == 200
    body = await status.json()
    assert body["request_id"] == request_id and "final" in body
    assert (await ui.get("/ui/backfill/999999.json")).status == 404


async def test_unknown_things_are_404s_that_say_why(ui: TestClient[Any, Any]) -> None:
    response = await ui.get("/ui/executions/FN" + "0" * 32)
    assert response.status == 404
    assert "not in this sink's database" in await response.text()
    response = await ui.get("/ui/executions/nope")
    assert response.status == 404
    response = await ui.get(f"/ui/flows/{sid('FW')}/revisions/3")
    assert response.status == 404
    assert "not been backfilled" in await response.text()


@pytest.mark.parametrize("mode", ["hash", "mask"])
async def test_a_contact_is_found_by_its_number_whatever_the_contact_mode(
    start_sink: Callable[..., Any], mode: str
) -> None:
    sink: Sink = await start_sink(
        admin_token=ADMIN_TOKEN, contact_mode=mode, pii_key="a-key-kept-out-of-the-db"
    )
    assert (await login(sink.client)).status == 303
    theirs = [execution_event(STARTED, sid("FN"), sid("FW"), at=T0, contact="+15550009999")]
    mine = execution_story(1, start=T0)  # contact +15017122661
    assert (await sink.post(mine + theirs))[0] == 200
    html = await (await sink.client.get("/ui/executions?contact=%2B15017122661")).text()
    assert rows_of(html) == [mine[0]["data"]["execution_sid"]]
    assert html.count("15017122661") == 1  # only in the search box it was typed into
