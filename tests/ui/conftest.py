"""UI fixtures: a sink with the UI on, a logged-in client, helpers to read its pages."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import Sink

ADMIN_TOKEN = "ui-admin-token-0123456789abcdef-xyz"
_CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')
_NONCE = re.compile(r'name="login_nonce" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "the page has no CSRF token"
    return match.group(1)


async def login(client: TestClient[Any, Any], token: str = ADMIN_TOKEN, next_: str = "/ui/") -> Any:
    page = await client.get("/ui/login")
    nonce = _NONCE.search(await page.text())
    assert nonce, "the login form has no nonce"
    return await client.post(
        "/ui/login",
        data={"token": token, "login_nonce": nonce.group(1), "next": next_},
        allow_redirects=False,
    )


@pytest.fixture
async def ui_sink(start_sink: Callable[..., Any]) -> Sink:
    sink: Sink = await start_sink(admin_token=ADMIN_TOKEN)
    return sink


@pytest.fixture
async def ui(ui_sink: Sink) -> TestClient[Any, Any]:
    """A client logged in to the UI."""
    response = await login(ui_sink.client)
    assert response.status == 303
    return ui_sink.client
