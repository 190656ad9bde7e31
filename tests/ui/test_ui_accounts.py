"""The UI by account: the selector on every page, kept across navigation, applied to each
page's queries; the latest test event per account; accounts whose credentials Twilio refused."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import Sink
from tests.support.studio import ACCOUNT, execution_story, sid, sink_test_event

ACCOUNT_B = "AC" + "b" * 32


@dataclass(frozen=True)
class Seen:
    flow_sid: str
    execution_sids: list[str]


def for_account(events: list[dict[str, Any]], account_sid: str) -> list[dict[str, Any]]:
    return [dict(e, data=dict(e["data"], account_sid=account_sid)) for e in events]


def executions_in(html: str) -> set[str]:
    return set(re.findall(r'href="/ui/executions/(FN[0-9a-f]{32})[?"]', html))


async def deliver(sink: Sink, account_sid: str, executions: int) -> Seen:
    flow = sid("FW")
    done = []
    for _ in range(executions):
        story = for_account(execution_story(2, flow_sid=flow), account_sid)
        status, answer = await sink.post(story)
        assert status == 200 and answer["stored"] == len(story), answer
        done.append(story[0]["data"]["execution_sid"])
    test = sink_test_event()
    status, _ = await sink.post(
        [dict(test, id=sid("EV"), data=dict(test["data"], account_sid=account_sid))]
    )
    assert status == 200
    return Seen(flow, done)


@pytest.fixture
async def two(ui_sink: Sink, conn: asyncpg.Connection[Any]) -> tuple[Seen, Seen]:
    a = await deliver(ui_sink, ACCOUNT, 2)
    b = await deliver(ui_sink, ACCOUNT_B, 3)
    await conn.execute(
        "INSERT INTO sink.accounts (account_sid, label, credentials_status, credentials_checked_at)"
        " VALUES ($1, 'acme-prod', 'ok', now()), ($2, 'beta-prod', 'invalid', now())",
        ACCOUNT,
        ACCOUNT_B,
    )
    return a, b


async def page(ui: TestClient[Any, Any], path: str) -> str:
    response = await ui.get(path)
    assert response.status == 200, (path, await response.text())
    return await response.text()


async def test_filtering_by_account_hides_the_other_accounts_executions(
    ui: TestClient[Any, Any], two: tuple[Seen, Seen]
) -> None:
    a, b = two
    assert executions_in(await page(ui, "/ui/executions")) == {*a.execution_sids, *b.execution_sids}
    html = await page(ui, f"/ui/executions?account={ACCOUNT}")
    assert executions_in(html) == set(a.execution_sids)
    assert not any(s in html for s in b.execution_sids)
    html = await page(ui, f"/ui/executions?account={ACCOUNT_B}&status=ended")
    assert executions_in(html) == set(b.execution_sids)
    # with the other filters: account A's flow is not account B's
    html = await page(ui, f"/ui/executions?account={ACCOUNT_B}&flow={a.flow_sid}")
    assert executions_in(html) == set()
    # not an Account SID: every account
    assert len(executions_in(await page(ui, "/ui/executions?account=nope"))) == 5


async def test_the_selector_is_on_every_page_and_kept_across_navigation(
    ui: TestClient[Any, Any], two: tuple[Seen, Seen]
) -> None:
    a, _ = two
    kept = f"account={ACCOUNT}"
    for path in (
        "/ui/",
        "/ui/executions",
        f"/ui/executions/{a.execution_sids[0]}",
        "/ui/flows",
        f"/ui/flows/{a.flow_sid}",
        "/ui/rejected",
    ):
        html = await page(ui, f"{path}?{kept}" if "?" not in path else f"{path}&{kept}")
        assert '<select name="account" id="account">' in html, path
        assert f'<option value="{ACCOUNT}" selected>acme-prod</option>' in html, path
        assert '<option value="AC' + "b" * 32 + '" >beta-prod</option>' in html, path
        nav = re.search(r"<nav>(.*?)</nav>", html, re.S)
        assert nav, path
        for link in re.findall(r'href="([^"]+)"', nav.group(1)):
            assert kept in link, (path, link)
    html = await page(ui, f"/ui/executions?{kept}")
    for execution_sid in a.execution_sids:
        assert f'href="/ui/executions/{execution_sid}?{kept}"' in html
    assert f'href="/ui/flows/{a.flow_sid}?{kept}"' in html
    assert f'<input type="hidden" name="account" value="{ACCOUNT}">' in html  # the filter form
    # the selector keeps the page's other filters
    html = await page(ui, f"/ui/executions?status=ended&{kept}")
    assert '<input type="hidden" name="status" value="ended">' in html
    html = await page(ui, f"/ui/executions/{a.execution_sids[0]}?{kept}")
    assert f'action="/ui/executions/{a.execution_sids[0]}/backfill?{kept}"' in html


async def test_flows_of_the_account_only(ui: TestClient[Any, Any], two: tuple[Seen, Seen]) -> None:
    a, b = two
    html = await page(ui, "/ui/flows")
    assert a.flow_sid in html and b.flow_sid in html
    html = await page(ui, f"/ui/flows?account={ACCOUNT_B}")
    assert b.flow_sid in html and a.flow_sid not in html


async def test_latest_test_event_per_account_and_backfill_of_the_account(
    ui: TestClient[Any, Any], two: tuple[Seen, Seen], conn: asyncpg.Connection[Any]
) -> None:
    _, b = two
    html = await page(ui, "/ui/")
    tests = re.findall(r'<tr class="test-event"><td>(.*?)</td><td class="nowrap">(.*?)</td>', html)
    assert [label.split(" ")[0] for label, _ in tests] == ["acme-prod", "beta-prod"]
    assert all(re.match(r"\d{4}-\d\d-\d\d ", when) for _, when in tests)
    # an account configured but never tested says so
    await conn.execute(
        "INSERT INTO sink.accounts (account_sid, label) VALUES ($1, 'gamma')", "AC" + "c" * 32
    )
    html = await page(ui, "/ui/")
    tests = re.findall(r'<tr class="test-event"><td>(.*?)</td><td class="nowrap">(.*?)</td>', html)
    assert [(label.split(" ")[0], when) for label, when in tests][-1] == ("gamma", "never")
    html = await page(ui, f"/ui/?account={ACCOUNT}")
    tests = re.findall(r'<tr class="test-event"><td>(.*?)</td>', html)
    assert [label.split(" ")[0] for label in tests] == ["acme-prod"]
    assert 'id="all-accounts-note"' in html
    # the backfill queue of the account
    await conn.execute("SELECT studio.request_backfill($1::text)", b.execution_sids[0])
    assert "No backfill requested yet." in await page(ui, f"/ui/?account={ACCOUNT}")
    assert "No backfill requested yet." not in await page(ui, f"/ui/?account={ACCOUNT_B}")


async def test_invalid_credentials_are_shown_with_the_fix(
    ui: TestClient[Any, Any], two: tuple[Seen, Seen]
) -> None:
    a, _ = two
    for path in ("/ui/", "/ui/executions", f"/ui/flows/{a.flow_sid}"):
        html = await page(ui, path)
        warning = re.search(rf'id="credentials-invalid-{ACCOUNT_B}">(.*?)</p>', html, re.S)
        assert warning, path
        assert "beta-prod" in warning.group(1) and "SINK_ACCOUNTS_FILE" in warning.group(1)
        assert "reload" in warning.group(1)
        assert f"credentials-invalid-{ACCOUNT}" not in html
