"""The flow pages over real HTTP and a real database: list, canvas, panel, escaping, controls."""

from __future__ import annotations

import html as htmllib
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from sink import jsontext
from tests.conftest import Sink
from tests.support.flow_pages import definition, small_ivr, state, store_flow, walk
from tests.support.studio import recent, sid
from tests.ui.conftest import csrf_of

SCRIPT = "<script>window.__xss=1</script>"
IMG = "<img src=x onerror=window.__xss=1>"
SALES = [("incomingCall", "greet"), ("audioComplete", "menu"), ("keypress", "route")]
SALES += [("match", "sales"), ("callCompleted", "Ended")]
HANG_UP_IN_MENU = [("incomingCall", "greet"), ("audioComplete", "menu"), ("hangup", "Ended")]


async def post_walks(sink: Sink, flow: str, paths: list[list[tuple[str, str]]], **kw: Any) -> None:
    events: list[dict[str, Any]] = []
    for n, path in enumerate(paths):
        events += walk(flow, path, at=recent() - timedelta(minutes=n), **kw)[1]
    status, body = await sink.post(events)
    assert status < 300, body


def widget_box(html: str, name: str) -> str:
    match = re.search(rf'<g class="widget[^"]*" data-widget="{re.escape(name)}".*?</g>', html, re.S)
    assert match, f"no widget box for {name!r}"
    return match.group(0)


def edge(html: str, source: str, target: str) -> str:
    for match in re.finditer(r'<g class="edge[^"]*">.*?</g>', html, re.S):
        if f"{source} → {target} (" in htmllib.unescape(match.group(0)):
            return match.group(0)
    raise AssertionError(f"no edge {source} → {target}")


async def test_flow_list_shows_names_counts_and_shares(
    ui: TestClient[Any, Any], ui_sink: Sink, conn: asyncpg.Connection[Any]
) -> None:
    named, anonymous = sid("FW"), sid("FW")
    await store_flow(conn, named, 3, small_ivr(), friendly_name=f"Support {SCRIPT}")
    await post_walks(ui_sink, named, [SALES, SALES, HANG_UP_IN_MENU])
    active = walk(named, SALES[:2], at=datetime.now(UTC) - timedelta(minutes=5), ended=False)
    assert (await ui_sink.post(active[1]))[0] < 300  # active, recent: not stuck
    old = walk(anonymous, SALES[:2], at=recent() - timedelta(days=2), ended=False)[1]
    assert (await ui_sink.post(old))[0] < 300
    html = await (await ui.get("/ui/flows")).text()
    rows = {
        m.group(1): m.group(0) for m in re.finditer(r"<tr>.*?(FW[0-9a-f]{32}).*?</tr>", html, re.S)
    }
    assert set(rows) == {named, anonymous}
    cells = re.findall(r'<td class="num">([^<]*)</td>', rows[named])
    assert cells == ["4", "4", "75 %", "0 %"]
    assert re.findall(r'<td class="num">([^<]*)</td>', rows[anonymous]) == [
        "0",
        "1",
        "0 %",
        "100 %",
    ]
    assert "Support &lt;script&gt;" in rows[named] and "<script>window" not in html
    assert f'title="{named}"' in rows[named]  # the SID is elided, in full in the tooltip
    assert 'class="flow-name"' not in rows[anonymous]  # no name until the flow is fetched


async def test_the_canvas_places_widgets_at_their_offsets_with_counts(
    ui: TestClient[Any, Any], ui_sink: Sink, conn: asyncpg.Connection[Any]
) -> None:
    flow = sid("FW")
    await store_flow(conn, flow, 3, small_ivr())
    await post_walks(ui_sink, flow, [SALES] * 3 + [HANG_UP_IN_MENU])
    response = await ui.get(f"/ui/flows/{flow}")
    assert response.status == 200
    html = await response.text()
    assert "laid out from the transitions" not in html
    menu, sales, support = (widget_box(html, n) for n in ("menu", "sales", "support"))
    # offsets shifted so the leftmost box (x=-300) sits at the padding (40)
    assert 'transform="translate(340.0,440.0)"' in menu
    assert 'transform="translate(40.0,840.0)"' in sales
    assert 'transform="translate(640.0,840.0)"' in support
    assert "gather-input-on-call" in menu and '<tspan class="entered">4</tspan>' in menu
    assert '<tspan class="drop">25 %</tspan>' in menu  # one of four hung up there
    assert (
        '<tspan class="entered">3</tspan>' in sales
        and '<tspan class="entered">0</tspan>' in support
    )
    taken, never = edge(html, "route", "sales"), edge(html, "route", "support")
    assert 'class="edge"' in taken and re.search(r"3 transitions, median \d\.\d s", taken)
    assert 'class="edge faint"' in never and "0 transitions" in never
    assert "match · 3" in taken
    loop = edge(html, "menu", "menu")  # a defined timeout loop, never taken
    assert "faint" in loop and "timeout" in loop
    widths = [float(w) for w in re.findall(r'stroke-width="([\d.]+)"', html)]
    assert min(widths) == 1.0 and max(widths) == 9.0


async def test_without_a_definition_the_graph_is_layered_and_fetch_is_offered(
    ui: TestClient[Any, Any], ui_sink: Sink, conn: asyncpg.Connection[Any]
) -> None:
    flow = sid("FW")
    await post_walks(ui_sink, flow, [SALES, HANG_UP_IN_MENU], revision=7)
    html = await (await ui.get(f"/ui/flows/{flow}")).text()
    assert "laid out from the transitions" in html and "Fetch the definition" in html
    ys = {
        n: float(re.search(r"translate\([\d.]+,([\d.]+)\)", widget_box(html, n)).group(1))  # type: ignore[union-attr]
        for n in ("Trigger", "greet", "menu", "route", "sales")
    }
    assert ys["Trigger"] < ys["greet"] < ys["menu"] < ys["route"] < ys["sales"]
    response = await ui.post(
        f"/ui/flows/{flow}/fetch", data={"csrf_token": csrf_of(html)}, allow_redirects=False
    )
    assert response.status == 303
    location = response.headers["Location"]
    request_id = int(location.rsplit("backfill=", 1)[1])
    row = await conn.fetchrow(
        "SELECT kind, flow_sid, requested_by FROM sink.backfill_requests WHERE request_id = $1",
        request_id,
    )
    assert row is not None and tuple(row) == ("flows", flow, "ui")
    assert f"Backfill #{request_id} queued" in await (await ui.get(location)).text()


async def test_hostile_widget_and_event_names_are_escaped(
    ui: TestClient[Any, Any], ui_sink: Sink, conn: asyncpg.Connection[Any]
) -> None:
    flow = sid("FW")
    hostile = definition(
        [
            state("Trigger", "trigger", 0, 0, (IMG, SCRIPT)),
            state(SCRIPT, f"say-play{IMG}", 0, 200, ('"/><script>x</script>', None)),
        ]
    )
    await store_flow(conn, flow, 3, hostile, friendly_name=IMG)
    await post_walks(ui_sink, flow, [[(IMG, SCRIPT), ('"onmouseover="x', "Ended")]])
    html = await (await ui.get(f"/ui/flows/{flow}")).text()
    assert "<script>" not in html.replace('<script src="/ui/static/app.js', "")
    assert "<img src=x" not in html and '"/><script>' not in html
    assert f'data-widget="{htmllib.escape(SCRIPT)}"' in html
    assert "&lt;img src=x onerror=window.__xss=1&gt;" in html
    response = await ui.get(f"/ui/flows/{flow}/widget.json", params={"name": SCRIPT, "range": "7d"})
    body = await response.json()
    assert body["widget"] == SCRIPT and body["entered"] == 1 and body["ended_here"] == 1
    assert response.headers["Content-Type"].startswith("application/json")


async def test_widget_panel_data_lists_the_latest_executions_that_ended_there(
    ui: TestClient[Any, Any], ui_sink: Sink, conn: asyncpg.Connection[Any]
) -> None:
    flow = sid("FW")
    await store_flow(conn, flow, 3, small_ivr())
    events: list[dict[str, Any]] = []
    hung_up = []
    for n in range(25):
        execution, more = walk(flow, HANG_UP_IN_MENU, at=recent() - timedelta(minutes=n))
        events += more
        hung_up.append(execution)
    events += walk(flow, SALES, at=recent())[1]
    assert (await ui_sink.post(events))[0] < 300
    response = await ui.get(f"/ui/flows/{flow}/widget.json", params={"name": "menu"})
    body = await response.json()
    assert body["entered"] == 26 and body["ended_here"] == 25
    assert body["drop_off_share"] == pytest.approx(25 / 26)
    assert [e["execution_sid"] for e in body["executions"]] == hung_up[:20]  # newest first
    sales = await (await ui.get(f"/ui/flows/{flow}/widget.json", params={"name": "sales"})).json()
    assert len(sales["executions"]) == 1 and sales["entered"] == 1


async def test_revision_and_time_range_controls(
    ui: TestClient[Any, Any], ui_sink: Sink, conn: asyncpg.Connection[Any]
) -> None:
    flow = sid("FW")
    await store_flow(conn, flow, 3, small_ivr())
    await post_walks(ui_sink, flow, [SALES] * 2, revision=3)
    await post_walks(ui_sink, flow, [HANG_UP_IN_MENU], revision=2)
    old = walk(flow, SALES, at=recent() - timedelta(days=3), revision=3)[1]
    assert (await ui_sink.post(old))[0] < 300

    async def entered(query: str, widget: str) -> str:
        html = await (await ui.get(f"/ui/flows/{flow}?{query}")).text()
        found = re.search(r'<tspan class="entered">(\d+)</tspan>', widget_box(html, widget))
        assert found
        return found.group(1)

    assert await entered("", "menu") == "3"  # newest revision, 7 days
    assert await entered("revision=3&range=24h", "menu") == "2"
    assert await entered("revision=2&range=24h", "menu") == "1"
    assert await entered("revision=all&range=30d", "menu") == "4"
    html = await (await ui.get(f"/ui/flows/{flow}?revision=2")).text()
    assert '<option value="2" selected>' in html and '<option value="3" >' in html
    assert "Fetch the definition" in html  # revision 2 is not stored
    for bad in ("range=1y", "revision=x", "revision=99999999999"):
        response = await ui.get(f"/ui/flows/{flow}?{bad}")
        assert response.status == 400 and "must be" in await response.text()


async def test_unknown_flows_are_404s_that_say_why(ui: TestClient[Any, Any]) -> None:
    response = await ui.get("/ui/flows/FW" + "0" * 32)
    assert response.status == 404 and "not in this sink's database" in await response.text()
    response = await ui.get("/ui/flows/not-a-flow")
    assert response.status == 404 and "is not a Flow SID" in await response.text()
    response = await ui.get(f"/ui/flows/{sid('FW')}/widget.json")
    assert response.status == 400 and "?name=" in (await response.json())["message"]


async def test_execution_timeline_titles_steps_by_widget_and_links_to_it(
    ui: TestClient[Any, Any], ui_sink: Sink, conn: asyncpg.Connection[Any]
) -> None:
    flow = sid("FW")
    await store_flow(conn, flow, 3, small_ivr(), friendly_name="Support line")
    execution, events = walk(flow, SALES, at=recent())
    assert (await ui_sink.post(events))[0] < 300
    html = await (await ui.get(f"/ui/executions/{execution}")).text()
    titles = re.findall(r'<span class="widget-title">(.*?)</span>', html)
    assert [re.sub(r"<[^>]+>", "", t) for t in titles] == [
        "greet",
        "menu",
        "route",
        "sales",
        "Ended",
    ]
    assert f'href="/ui/flows/{flow}?revision=3&amp;range=30d&amp;widget=route"' in html
    assert '<span class="name">keypress</span>' in html
    listing = await (await ui.get("/ui/executions")).text()
    assert "Support line" in listing and f'title="{flow}"' in listing


async def test_a_definition_of_1000_states_renders_in_bounded_time_and_size(
    ui: TestClient[Any, Any], ui_sink: Sink, conn: asyncpg.Connection[Any]
) -> None:
    flow = sid("FW")
    states = [state("Trigger", "trigger", 0, 0, ("incomingCall", "w0"))]
    for n in range(1000):
        nxt = [("next", f"w{n + 1}"), ("failed", f"w{(n * 7) % 1000}")] if n < 999 else []
        states.append(state(f"w{n}", "set-variables", (n % 20) * 260, (n // 20) * 150, *nxt))
    for s in states:  # what makes real definitions big: the widgets' properties
        s["properties"]["say"] = "Thank you for calling. " * 35
    body = definition(states)
    assert 900_000 < len(jsontext.dumps(body).encode()) < 1_000_000  # Twilio's limit: 1 MB
    await store_flow(conn, flow, 3, body)
    await post_walks(ui_sink, flow, [[("incomingCall", "w0"), ("next", "w1")]])
    started = time.perf_counter()
    response = await ui.get(f"/ui/flows/{flow}")
    elapsed = time.perf_counter() - started
    html = await response.text()
    assert response.status == 200 and html.count('<g class="widget') == 1001
    assert len(html) < 1_500_000, f"{len(html)} bytes"  # about 1 kB a widget
    assert elapsed < 10, f"{elapsed:.1f} s"  # a loose bound: the page must not hang
