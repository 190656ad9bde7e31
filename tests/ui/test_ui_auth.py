"""Access to the UI: disabled without a token, login, session cookie, CSRF, headers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from sink.ui import CSP
from sink.web.auth import LOGIN_COOKIE, SESSION_COOKIE, UiAuth, safe_next
from tests.conftest import Sink
from tests.support.studio import execution_story
from tests.ui.conftest import ADMIN_TOKEN, csrf_of, login


async def test_ui_is_disabled_without_admin_token(start_sink: Callable[..., Any]) -> None:
    sink: Sink = await start_sink(admin_token=None)
    for path in ("/ui", "/ui/", "/ui/executions", "/ui/login", "/ui/static/app.css"):
        response = await sink.client.get(path, allow_redirects=False)
        assert response.status == 404, path
        assert "SINK_ADMIN_TOKEN" in await response.text()
        assert response.headers["Content-Security-Policy"] == CSP


async def test_pages_redirect_to_login_and_json_answers_401(ui_sink: Sink) -> None:
    client = ui_sink.client
    response = await client.get("/ui/executions?status=ended", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/ui/login?next=/ui/executions?status%3Dended"
    response = await client.head("/ui/", allow_redirects=False)
    assert response.status == 303
    response = await client.get("/ui/backfill/1.json")
    assert response.status == 401
    response = await client.post("/ui/executions/FN" + "0" * 32 + "/backfill")
    assert response.status == 401


async def test_wrong_token_is_refused(ui_sink: Sink) -> None:
    response = await login(ui_sink.client, token="not-the-token")
    assert response.status == 401
    assert "not the admin token" in await response.text()
    assert SESSION_COOKIE not in response.cookies
    page = await ui_sink.client.get("/ui/", allow_redirects=False)
    assert page.status == 303


async def test_login_sets_a_strict_httponly_cookie(ui_sink: Sink) -> None:
    response = await login(ui_sink.client, next_="/ui/rejected")
    assert response.status == 303
    assert response.headers["Location"] == "/ui/rejected"
    morsel = response.cookies[SESSION_COOKIE]
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Strict"
    assert morsel["path"] == "/ui"
    assert not morsel["secure"]  # plain http on localhost (the README's flow)
    assert ADMIN_TOKEN not in morsel.value
    page = await ui_sink.client.get("/ui/", allow_redirects=False)
    assert page.status == 200


async def test_cookie_is_secure_when_public_url_is_https(start_sink: Callable[..., Any]) -> None:
    sink: Sink = await start_sink(
        admin_token=ADMIN_TOKEN, public_url="https://sink.example.com/events"
    )
    page = await sink.client.get("/ui/login")
    nonce = page.cookies[LOGIN_COOKIE]
    assert nonce["secure"] is True
    # the client keeps secure cookies from http, as a browser would: send it by hand
    response = await sink.client.post(
        "/ui/login",
        data={"token": ADMIN_TOKEN, "login_nonce": nonce.value},
        headers={"Cookie": f"{LOGIN_COOKIE}={nonce.value}"},
        allow_redirects=False,
    )
    assert response.status == 303
    assert response.cookies[SESSION_COOKIE]["secure"] is True


async def test_login_over_plain_http_is_refused_off_localhost(ui_sink: Sink) -> None:
    client = ui_sink.client
    page = await client.get("/ui/login", headers={"Host": "sink.example.com"})
    assert "over https" in await page.text()
    assert 'name="token"' not in await page.text()
    response = await client.post(
        "/ui/login", data={"token": ADMIN_TOKEN}, headers={"Host": "sink.example.com"}
    )
    assert response.status == 403


async def test_login_needs_the_forms_nonce(ui_sink: Sink) -> None:
    await ui_sink.client.get("/ui/login")  # sets the nonce cookie
    response = await ui_sink.client.post(
        "/ui/login", data={"token": ADMIN_TOKEN, "login_nonce": "forged"}, allow_redirects=False
    )
    assert response.status == 403
    assert SESSION_COOKIE not in response.cookies


async def test_open_redirects_are_refused(ui_sink: Sink) -> None:
    response = await login(ui_sink.client, next_="//evil.example.com/ui")
    assert response.headers["Location"] == "/ui/"
    for target in ("https://evil.example.com", "/events", "/ui\\@evil", None, "/ui/\nx"):
        assert safe_next(target) == "/ui/"
    assert safe_next("/ui/executions?flow=FW1") == "/ui/executions?flow=FW1"


async def test_tampered_or_expired_sessions_are_refused() -> None:
    auth = UiAuth(ADMIN_TOKEN)
    session, value = auth.new_session(now=1000.0)
    assert auth.read_session(value, now=1001.0) == session
    expires, nonce, mac = value.split(".")
    assert auth.read_session(f"{int(expires) + 9999}.{nonce}.{mac}", now=1001.0) is None
    assert auth.read_session(value, now=float(expires) + 1) is None
    assert auth.read_session(value, now=1001.0) is not None
    assert UiAuth("another-token").read_session(value, now=1001.0) is None
    assert auth.read_session("garbage", now=1001.0) is None
    assert ADMIN_TOKEN not in repr(auth)
    assert auth.token_ok(ADMIN_TOKEN) and not auth.token_ok(ADMIN_TOKEN + "x")


async def test_tampered_cookie_sends_back_to_login(ui: TestClient[Any, Any]) -> None:
    ui.session.cookie_jar.clear()
    ui.session.cookie_jar.update_cookies({SESSION_COOKIE: "1.2.3"})
    response = await ui.get("/ui/", allow_redirects=False)
    assert response.status == 303


async def test_posts_need_the_csrf_token(ui: TestClient[Any, Any], ui_sink: Sink) -> None:
    story = execution_story(2)
    await ui_sink.post(story)
    sid = story[0]["data"]["execution_sid"]
    url = f"/ui/executions/{sid}/backfill"
    page = await (await ui.get(f"/ui/executions/{sid}")).text()
    token = csrf_of(page)
    for data, headers in (({}, {}), ({"csrf_token": "0" * 64}, {}), ({}, {"X-CSRF-Token": "x"})):
        response = await ui.post(url, data=data, headers=headers, allow_redirects=False)
        assert response.status == 403
        assert "CSRF" in await response.text()
    response = await ui.post(url, data={"csrf_token": token}, allow_redirects=False)
    assert response.status == 303
    response = await ui.post("/ui/logout", data={"csrf_token": "nope"}, allow_redirects=False)
    assert response.status == 403
    response = await ui.post("/ui/logout", data={"csrf_token": token}, allow_redirects=False)
    assert response.status == 303
    assert response.cookies[SESSION_COOKIE].value == ""


async def test_every_ui_response_has_security_headers(ui: TestClient[Any, Any]) -> None:
    for path in (
        "/ui/login",
        "/ui/",
        "/ui/executions",
        "/ui/rejected",
        "/ui/static/app.js",
        "/ui/static/app.css",
        "/ui/executions/FN" + "0" * 32,
    ):
        response = await ui.get(path)
        assert response.headers["Content-Security-Policy"] == CSP, path
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
    response = await ui.get("/healthz")
    assert "Content-Security-Policy" not in response.headers
