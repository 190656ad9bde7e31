"""Typed keys of the UI's app and request state."""

from __future__ import annotations

from aiohttp import web

from sink.ui.auth import Session, UiAuth

UI_AUTH = web.AppKey("ui_auth", UiAuth)
SESSION = web.RequestKey("ui_session", Session)
