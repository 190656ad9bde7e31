"""The execution browser, served by the sink's own app under ``/ui``.

``setup_ui(app)`` adds its routes. Without SINK_ADMIN_TOKEN the UI is off: every ``/ui``
path answers 404 with a message saying how to turn it on. Every ``/ui`` response carries a
strict Content-Security-Policy (no inline script or style, nothing from other origins).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import aiohttp_jinja2
import jinja2
from aiohttp import web

from sink.ui.filters import FILTERS
from sink.ui.views import add_routes
from sink.web.auth import UiAuth
from sink.web.keys import SETTINGS, UI_AUTH

STATIC_DIR: Final = Path(__file__).parent / "static"
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
DISABLED_MESSAGE: Final = (
    "The execution browser is disabled. Set SINK_ADMIN_TOKEN to a long random secret and"
    " restart the sink to enable it at /ui (you log in with that token)."
)


def is_ui_path(path: str) -> bool:
    return path == "/ui" or path.startswith("/ui/")


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if not is_ui_path(request.path):
        return
    response.headers.update(SECURITY_HEADERS)
    if not request.path.startswith("/ui/static/"):
        response.headers["Cache-Control"] = "no-store"


async def _disabled(request: web.Request) -> web.Response:
    return web.Response(status=404, text=DISABLED_MESSAGE)


def setup_ui(app: web.Application) -> None:
    """Mount the UI under /ui (or the 404 that explains how to enable it)."""
    app.on_response_prepare.append(_security_headers)
    token = app[SETTINGS].admin_token
    if token is None:
        app.router.add_route("*", "/ui", _disabled)
        app.router.add_route("*", "/ui/{tail:.*}", _disabled)
        return
    app[UI_AUTH] = UiAuth(token.get_secret_value())
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("sink.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        default_helpers=False,
        filters=FILTERS,
    )
    app.router.add_static("/ui/static/", STATIC_DIR, name="ui_static", append_version=True)
    add_routes(app.router)
