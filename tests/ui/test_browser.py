"""The UI in headless Chromium (Debian's package, driven by Playwright; no browser download).

The sink runs in-process on a real port, fed through its HTTP receiver; "Backfill now" runs
against the fake Studio API. Event content carries script payloads: nothing may execute.
Screenshots land in test-output/screenshots/.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.conftest import Sink
from tests.fakes.studio_api import create_app as create_studio_app
from tests.fakes.studio_data import Execution, FakeStudio
from tests.support.studio import (
    STARTED,
    execution_event,
    fake_execution_events,
    sid,
    sink_test_event,
    step_event,
)
from tests.support.twilio import TOKEN
from tests.ui.conftest import ADMIN_TOKEN

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCRIPT = "<script>window.__xss=1</script>"
IMG = "<img src=x onerror=window.__xss=1>"
START = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)

pytestmark = [
    pytest.mark.slow,  # a real browser: outside the quick run
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="headless browser tests need Debian's chromium at /usr/bin/chromium"
        " (apt-get install -y chromium; .ci/run installs it)",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None,
        reason="browser tests need the playwright package (pip install playwright)",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("sink.backfill") is None,
        reason="'Backfill now' needs the backfill workers (sink.backfill)",
    ),
]


def of_account(events: list[dict[str, Any]], account_sid: str) -> list[dict[str, Any]]:
    """The events as the account that signs them sends them (the sink refuses an event of
    another account than the signer's)."""
    return [dict(e, data=dict(e["data"], account_sid=account_sid)) for e in events]


def events_for(e: Execution) -> list[dict[str, Any]]:
    """Event Streams events for a fake execution: started, then its steps (no context)."""
    events = fake_execution_events(e, ended=False, contact=e.contact_channel_address or "")
    return of_account(events, e.account_sid)


@pytest.fixture
def fake() -> FakeStudio:
    """One execution as Studio keeps it; a texter's message carries script payloads."""
    studio = FakeStudio(seed=9, password=TOKEN)
    flow = studio.add_flow(friendly_name="Support line")
    execution = studio.add_execution(
        flow,
        date_created=START,
        context={
            "flow": {"flow_sid": flow.sid, "data": {}, "channel": {"address": "+14155550100"}},
            "trigger": {"message": {"Body": "Hi, where is my order?", "From": "+14155550123"}},
        },
        contact_channel_address="+14155550123",
    )
    widgets = [
        ("greeting", "send-message", {"status": "sent", "message_sid": "SM" + "1" * 32}),
        (
            "ask_order_number",
            "send-and-wait-for-reply",
            {"inbound": {"Body": f"A123 {SCRIPT} {IMG}", "From": "+14155550123"}},
        ),
        (
            "check_order",
            "make-http-request",
            {"status_code": 200, "parsed": {"order": "A123", "eta_days": 2, "late": False}},
        ),
        ("reply_eta", "send-message", {"status": "sent", "body": "Arriving in 2 days"}),
    ]
    previous = "Trigger"
    for n, (name, widget, context) in enumerate(widgets):
        studio.add_step(
            execution,
            name=name,
            transitioned_from=previous,
            transitioned_to=name,
            widget_type=widget,
            context={"widgets": {name: context}},
            date_created=START + timedelta(seconds=[1, 2, 31, 32][n]),
        )
        previous = name
    return studio


async def seed_traffic(conn: asyncpg.Connection[Any]) -> None:
    """Deliveries spread over the last hours, so the overview's chart has something to show."""
    await conn.execute(
        """
        INSERT INTO sink.deliveries (received_at, events, stored, duplicates, rejected)
        SELECT now() - m * interval '1 minute', 1 + (m * 7) % 9, 1 + (m * 7) % 9, 0, 0
        FROM generate_series(1, 175) AS m, generate_series(1, 1 + m % 3) AS k
        WHERE m % 11 <> 0
        """
    )


@pytest.fixture
async def browser_sink(
    fake: FakeStudio, aiohttp_server: Callable[..., Any], start_sink: Callable[..., Any]
) -> Sink:
    studio = await aiohttp_server(create_studio_app(fake))
    sink: Sink = await start_sink(
        admin_token=ADMIN_TOKEN,
        backfill_workers=2,
        studio_base_url=str(studio.make_url("")).rstrip("/"),
        twilio_account_sid=fake.credentials[0],
    )
    return sink


@pytest.fixture
async def page(output_dir: Path) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        tab = await context.new_page()
        tab.dialogs = []
        tab.console_errors = []
        tab.on("dialog", lambda d: (tab.dialogs.append(d.message), d.dismiss()))
        tab.on(
            "console",
            lambda m: (
                tab.console_errors.append(m.text)
                if m.type == "error" and not m.text.startswith("Failed to load resource")
                else None
            ),
        )
        tab.on("pageerror", lambda e: tab.console_errors.append(str(e)))
        tab.set_default_timeout(20_000)
        yield tab
        await browser.close()


async def assert_nothing_ran(page: Any) -> None:
    assert await page.evaluate("typeof window.__xss") == "undefined"
    assert page.dialogs == []
    assert page.console_errors == []  # script errors, and CSP violations by our own pages


async def shot(page: Any, output_dir: Path, name: str) -> None:
    folder = output_dir / "screenshots"
    folder.mkdir(exist_ok=True)
    await page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


async def test_browse_filter_backfill_and_nothing_executes(
    browser_sink: Sink,
    fake: FakeStudio,
    page: Any,
    output_dir: Path,
    conn: asyncpg.Connection[Any],
) -> None:
    [execution] = fake.executions.values()
    status, _ = await browser_sink.post(events_for(execution))
    assert status < 300
    # an execution whose event fields carry the payloads (a contact address, a widget name)
    hostile_flow, hostile = sid("FW"), sid("FN")
    account = fake.credentials[0]
    await browser_sink.post(
        of_account(
            [
                execution_event(STARTED, hostile, hostile_flow, at=START, contact=SCRIPT),
                step_event(hostile, hostile_flow, at=START, name=SCRIPT, came_from=IMG),
            ],
            account,
        )
    )
    await seed_traffic(conn)
    await browser_sink.post([{"specversion": "1.0", "type": SCRIPT, "source": IMG}])
    await browser_sink.post(of_account([sink_test_event()], account))
    base = browser_sink.url("").rstrip("/")

    # log in (the overview sends us to the form and back)
    await page.goto(f"{base}/ui/")
    assert "/ui/login" in page.url
    await shot(page, output_dir, "login")
    await page.fill("#token", "wrong")
    await page.click("button[type=submit]")
    assert await page.text_content("#login-error")
    await page.fill("#token", ADMIN_TOKEN)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/ui/")
    assert "Overview" in await page.title()
    await assert_nothing_ran(page)
    await shot(page, output_dir, "overview")

    # filter executions by flow
    await page.click("nav >> text=Executions")
    await page.wait_for_url("**/ui/executions")
    assert await page.locator("#executions tbody tr").count() == 2
    await shot(page, output_dir, "executions")
    await page.fill("input[name=flow]", execution.flow_sid)
    await page.click("form.filters button[type=submit]")
    await page.wait_for_url("**flow=*")
    rows = page.locator("#executions tbody tr")
    assert await rows.count() == 1
    await assert_nothing_ran(page)

    # open it: a timeline of four steps, no context yet
    await page.click(f"a[href='/ui/executions/{execution.sid}']")
    await page.wait_for_url(f"**/ui/executions/{execution.sid}")
    assert await page.locator("#timeline li.step").count() == 4
    assert await page.locator("details.step-context").count() == 0
    assert "+29.0 s" in await page.locator("#timeline").inner_text()
    await assert_nothing_ran(page)

    # backfill now: the page follows progress and shows the contexts when done
    await page.click("#backfill-now")
    await page.wait_for_selector("details.step-context", state="attached")
    assert await page.locator("details.step-context").count() == 4
    assert "finished" in await page.locator("#backfill-progress").inner_text()
    step = page.locator("details.step-context").nth(1)
    await step.locator("summary").click()
    pre = step.locator("pre.json")
    await pre.locator("span.j-key").first.wait_for()
    assert IMG in await pre.inner_text() and SCRIPT in await pre.inner_text()
    await page.locator("details.step-context").nth(2).locator("summary").click()
    await page.locator("#execution-context summary").click()
    await page.locator("#execution-context span.j-str").first.wait_for()
    await assert_nothing_ran(page)
    await shot(page, output_dir, "execution")

    # the flow revision's definition, backfilled with the execution
    await page.click("text=definition")
    await page.wait_for_url("**/revisions/1")
    await assert_nothing_ran(page)
    await shot(page, output_dir, "revision")

    await page.goto(f"{base}/ui/rejected")
    await page.locator(".rejected summary").first.click()
    assert SCRIPT in await page.locator(".rejected").first.inner_text()
    await assert_nothing_ran(page)
    await shot(page, output_dir, "rejected")

    await page.goto(f"{base}/ui/executions?contact={SCRIPT}")
    assert await page.locator("#executions tbody tr").count() == 1
    assert SCRIPT in await page.locator("#executions").inner_text()
    await assert_nothing_ran(page)
    await page.click(f"a[href='/ui/executions/{hostile}']")
    assert SCRIPT in await page.locator("#timeline").inner_text()
    assert IMG in await page.locator("#timeline").inner_text()
    await assert_nothing_ran(page)
    await shot(page, output_dir, "execution-hostile")
    await page.goto(f"{base}/ui/")
    await assert_nothing_ran(page)
    await shot(page, output_dir, "overview")


async def test_the_account_chosen_is_kept_across_pages(
    browser_sink: Sink, fake: FakeStudio, page: Any, conn: asyncpg.Connection[Any]
) -> None:
    """Choose an account in the selector: every page then shows that account only, until
    another is chosen (the choice travels in the links as ?account=)."""
    [execution] = fake.executions.values()
    status, _ = await browser_sink.post(events_for(execution))
    assert status < 300
    other_account, other_flow, other = sid("AC"), sid("FW"), sid("FN")
    await conn.execute(
        "INSERT INTO sink.executions (execution_sid, flow_sid, account_sid, status, date_created)"
        " VALUES ($1, $2, $3, 'ended', now())",
        other,
        other_flow,
        other_account,
    )
    await conn.execute(
        "INSERT INTO sink.accounts (account_sid, label) VALUES ($1, 'beta-prod')", other_account
    )
    base = browser_sink.url("").rstrip("/")
    await page.goto(f"{base}/ui/executions")
    await page.fill("#token", ADMIN_TOKEN)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/ui/executions")
    assert await page.locator("#executions tbody tr").count() == 2

    await page.select_option("#account", other_account)  # app.js submits on change
    await page.wait_for_url(f"**account={other_account}")
    assert await page.locator("#executions tbody tr").count() == 1
    assert other in await page.locator("#executions").inner_text()
    await page.click("nav >> text=Flows")
    await page.wait_for_url(f"**/ui/flows?account={other_account}")
    assert other_flow in await page.locator("#flows").inner_text()
    assert execution.flow_sid not in await page.locator("#flows").inner_text()
    await page.click("nav >> text=Executions")
    await page.wait_for_url(f"**/ui/executions?account={other_account}")
    assert await page.locator("#executions tbody tr").count() == 1
    await page.click(f"#executions a.sid >> text={other}")
    await page.wait_for_url(f"**/ui/executions/{other}?account={other_account}")
    assert await page.locator("#account").input_value() == other_account

    await page.select_option("#account", "")  # every account again
    await page.wait_for_url(f"**/ui/executions/{other}?account=")
    await page.click("nav >> text=Executions")
    assert await page.locator("#executions tbody tr").count() == 2
    await assert_nothing_ran(page)
