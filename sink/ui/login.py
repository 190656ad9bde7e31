"""The login form, logging out, and the guard every other UI page goes through."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from yarl import URL

from sink.ui import accounts
from sink.web import auth
from sink.web.keys import SESSION, SETTINGS, UI_AUTH

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LOGIN_NONCE_SECONDS = 3600


def redirect(location: str) -> web.Response:
    """303 See Other (after a POST the browser GETs the target)."""
    return web.Response(status=303, headers={"Location": location})


def page_context(request: web.Request, **values: Any) -> dict[str, Any]:
    """What every page's template gets: the static URLs, the CSRF token when logged in."""
    static = request.app.router["ui_static"]
    session = request.get(SESSION)
    csrf = request.app[UI_AUTH].csrf_token(session) if session is not None else ""
    return {
        "css_url": str(static.url_for(filename="app.css")),
        "js_url": str(static.url_for(filename="app.js")),
        "logged_in": session is not None,
        "csrf_token": csrf,
        "csrf_field": auth.CSRF_FIELD,
        "path": request.path,
        **accounts.template_values(request),
        **values,
    }


def requires_login(handler: Handler) -> Handler:
    """Pages need a session (else: to the login form); POSTs also need the CSRF token."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        ui_auth = request.app[UI_AUTH]
        session = ui_auth.read_session(request.cookies.get(auth.SESSION_COOKIE))
        wants_json = request.path.endswith(".json")
        if session is None:
            if wants_json or request.method not in ("GET", "HEAD"):
                return web.json_response(
                    {"error": "login_required", "message": "log in at /ui/login first"},
                    status=401,
                )
            return redirect(str(URL("/ui/login").with_query(next=request.path_qs)))
        request[SESSION] = session
        if request.method == "POST":
            form = await request.post()
            candidate = request.headers.get(auth.CSRF_HEADER) or form.get(auth.CSRF_FIELD)
            if not ui_auth.csrf_ok(session, candidate if isinstance(candidate, str) else None):
                return web.Response(
                    status=403,
                    text="The form's CSRF token is missing or stale: reload the page and try"
                    " again.",
                )
        return await handler(request)

    return guarded


async def login_form(request: web.Request) -> web.StreamResponse:
    return _render_login(request, error=None)


def _render_login(request: web.Request, *, error: str | None, status: int = 200) -> web.Response:
    settings = request.app[SETTINGS]
    nonce = secrets.token_urlsafe(24)
    allowed = auth.login_allowed(request, settings)
    response = aiohttp_jinja2.render_template(
        "login.html",
        request,
        page_context(
            request,
            title="Log in",
            error=error,
            allowed=allowed,
            login_nonce=nonce,
            next=auth.safe_next(request.query.get("next")),
        ),
        status=status,
    )
    auth.set_cookie(response, request, settings, auth.LOGIN_COOKIE, nonce, LOGIN_NONCE_SECONDS)
    return response


async def login_submit(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    ui_auth = request.app[UI_AUTH]
    form = await request.post()
    if not auth.login_allowed(request, settings):
        return _render_login(request, error="insecure", status=403)
    nonce = form.get("login_nonce")
    cookie_nonce = request.cookies.get(auth.LOGIN_COOKIE, "")
    if not (
        isinstance(nonce, str)
        and cookie_nonce
        and secrets.compare_digest(nonce.encode(), cookie_nonce.encode())
    ):
        return _render_login(request, error="stale", status=403)
    token = form.get("token")
    if not isinstance(token, str) or not ui_auth.token_ok(token):
        log.warning("UI login refused: wrong admin token", extra={"remote": request.remote})
        return _render_login(request, error="wrong", status=401)
    _, value = ui_auth.new_session()
    target = form.get("next")
    response = redirect(auth.safe_next(target if isinstance(target, str) else None))
    auth.set_cookie(response, request, settings, auth.SESSION_COOKIE, value, auth.SESSION_SECONDS)
    auth.clear_cookie(response, auth.LOGIN_COOKIE)
    return response


@requires_login
async def logout(request: web.Request) -> web.StreamResponse:
    response = redirect("/ui/login")
    auth.clear_cookie(response, auth.SESSION_COOKIE)
    return response
