"""The flow pages in headless Chromium: the canvas with counts, the widget panel, no XSS.

Screenshots land in test-output/screenshots/ (flow.png is the README's: a realistic IVR).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.conftest import Sink
from tests.support.flow_pages import (
    definition,
    ivr_paths,
    realistic_ivr,
    small_ivr,
    state,
    store_flow,
    walk,
)
from tests.support.studio import recent, sid
from tests.ui.conftest import ADMIN_TOKEN
from tests.ui.test_browser import assert_nothing_ran, page, shot
from tests.ui.test_browser import pytestmark as browser_marks

SCRIPT = "<script>window.__xss=1</script>"
IMG = "<img src=x onerror=window.__xss=1>"
HANG_UP = [("incomingCall", "greet"), ("audioComplete", "menu"), ("hangup", "Ended")]
SALES = [("incomingCall", "greet"), ("audioComplete", "menu"), ("keypress", "route")]
SALES += [("match", "sales"), ("callCompleted", "Ended")]

pytestmark = browser_marks[:3]  # slow, needs chromium and playwright (not backfill)
__all__ = ["page"]  # the browser fixture, shared with test_browser


async def post_all(sink: Sink, events: list[dict[str, Any]], batch: int = 400) -> None:
    for start in range(0, len(events), batch):
        status, body = await sink.post(events[start : start + batch])
        assert status < 300, body


async def log_in(page: Any, base: str) -> None:
    await page.goto(f"{base}/ui/flows")
    await page.fill("#token", ADMIN_TOKEN)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/ui/flows")


@pytest.fixture
async def flow_sink(start_sink: Callable[..., Any]) -> Sink:
    sink: Sink = await start_sink(admin_token=ADMIN_TOKEN)
    return sink


async def test_canvas_counts_widget_panel_and_links(
    flow_sink: Sink, page: Any, output_dir: Path, conn: asyncpg.Connection[Any]
) -> None:
    flow = sid("FW")
    await store_flow(conn, flow, 3, small_ivr(), friendly_name="Support line")
    events: list[dict[str, Any]] = []
    hung_up = []
    for n in range(24):
        execution, more = walk(flow, HANG_UP, at=recent() - timedelta(minutes=n))
        hung_up.append(execution)
        events += more
    for n in range(6):
        events += walk(flow, SALES, at=recent() - timedelta(minutes=n, seconds=30))[1]
    await post_all(flow_sink, events)
    base = flow_sink.url("").rstrip("/")
    await log_in(page, base)
    assert "Support line" in await page.locator("#flows").inner_text()
    await page.click("#flows >> text=Support line")
    await page.wait_for_url(f"**/ui/flows/{flow}")

    menu = page.locator('g.widget[data-widget="menu"]')
    assert await page.locator("g.widget").count() == 6
    assert await menu.locator("tspan.entered").text_content() == "30"
    assert await menu.locator("tspan.drop").text_content() == "80 %"
    assert await page.locator("g.edge.faint").count() >= 2  # support, the timeout loop
    await assert_nothing_ran(page)
    assert await page.locator("#widget-panel").is_hidden()
    await menu.click()
    panel = page.locator("#widget-panel")
    await panel.locator(".panel-executions li").first.wait_for()
    assert await panel.is_visible()
    assert await panel.locator(".panel-name").text_content() == "menu"
    assert await panel.locator(".panel-ended").text_content() == "24"
    links = panel.locator(".panel-executions a")
    assert await links.count() == 20
    assert [await links.nth(i).text_content() for i in range(3)] == hung_up[:3]
    await shot(page, output_dir, "flow-small")

    # the execution page links each step to its widget; the link opens that widget's panel
    await links.first.click()
    await page.wait_for_url(f"**/ui/executions/{hung_up[0]}")
    titles = page.locator("#timeline .widget-title")
    assert [await titles.nth(i).inner_text() for i in range(3)] == ["greet", "menu", "Ended"]
    await titles.nth(1).locator("a").click()
    await page.wait_for_url("**widget=menu")
    await panel.locator(".panel-executions li").first.wait_for()
    assert await panel.locator(".panel-name").text_content() == "menu"
    await assert_nothing_ran(page)


async def test_hostile_widget_and_event_names_never_execute(
    flow_sink: Sink, page: Any, output_dir: Path, conn: asyncpg.Connection[Any]
) -> None:
    flow, undefined = sid("FW"), sid("FW")
    hostile = definition(
        [
            state("Trigger", "trigger", 0, 0, (IMG, SCRIPT)),
            state(SCRIPT, IMG, 0, 200, ('"/><script>window.__xss=1</script>', IMG)),
            state(IMG, "say-play", 0, 400),
        ]
    )
    await store_flow(conn, flow, 3, hostile, friendly_name=IMG)
    path = [(IMG, SCRIPT), ('"/><script>window.__xss=1</script>', IMG), (SCRIPT, "Ended")]
    events = walk(flow, path, at=recent())[1] + walk(undefined, path, at=recent())[1]
    await post_all(flow_sink, events)
    base = flow_sink.url("").rstrip("/")
    await log_in(page, base)
    assert IMG in await page.locator("#flows").inner_text()
    await assert_nothing_ran(page)
    from playwright.async_api import expect

    for target in (flow, undefined):  # drawn from the definition, then from the transitions
        await page.goto(f"{base}/ui/flows/{target}")
        assert await page.locator("g.widget").count() == 3
        assert SCRIPT in await page.locator("#canvas").text_content()
        boxes = page.locator("g.widget")
        names = [await boxes.nth(i).get_attribute("data-widget") for i in range(3)]
        for name in (SCRIPT, IMG):
            await boxes.nth(names.index(name)).click()
            panel = page.locator("#widget-panel")
            await expect(panel.locator(".panel-name")).to_have_text(name)
            ended = 1 if name == IMG else 0  # the walk ends in the IMG widget
            await expect(panel.locator(".panel-executions li")).to_have_count(ended)
        await assert_nothing_ran(page)
    await page.goto(f"{base}/ui/flows/{flow}?widget={IMG}")
    await page.locator("#widget-panel .panel-executions li").first.wait_for()
    await assert_nothing_ran(page)
    await shot(page, output_dir, "flow-hostile")


async def test_screenshot_of_a_realistic_ivr(
    flow_sink: Sink, page: Any, output_dir: Path, conn: asyncpg.Connection[Any]
) -> None:
    """The README's picture: 15 widgets, 3,000 executions over the last day."""
    flow = sid("FW")
    await store_flow(conn, flow, 12, realistic_ivr(), friendly_name="Acme support line")
    events: list[dict[str, Any]] = []
    for n, path in enumerate(ivr_paths(3000)):
        at = recent() - timedelta(seconds=n * 25)
        events += walk(flow, path, at=at, revision=12, seconds=3 + n % 17)[1]
    await post_all(flow_sink, events)
    base = flow_sink.url("").rstrip("/")
    await page.set_viewport_size({"width": 1920, "height": 2000})
    await log_in(page, base)
    await page.goto(f"{base}/ui/flows/{flow}?range=24h")
    assert await page.locator("g.widget").count() == 15
    trigger = page.locator('g.widget[data-widget="Trigger"] tspan.entered')
    assert await trigger.text_content() == "3000"
    await page.locator('g.widget[data-widget="main_menu"]').click()
    await page.locator("#widget-panel .panel-executions li").first.wait_for()
    await assert_nothing_ran(page)
    await shot(page, output_dir, "flow")
