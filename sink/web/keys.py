"""Every typed key of the app's and the requests' state, in one place."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from sink.accounts.watch import AccountsHolder
from sink.backfill.service import BackfillService
from sink.config import Settings
from sink.db.route import Route
from sink.ingest.writer import GroupCommitWriter
from sink.maintenance.quarantine import Keeper
from sink.metrics import Metrics
from sink.web.auth import Session, UiAuth
from sink.web.health import Health

SETTINGS = web.AppKey("settings", Settings)
ACCOUNTS = web.AppKey("accounts", AccountsHolder)
METRICS = web.AppKey("metrics", Metrics)
POOL: web.AppKey[asyncpg.Pool[Any]] = web.AppKey("pool")
DSN = web.AppKey("dsn", str)
ROUTE = web.AppKey("route", Route)
WRITER = web.AppKey("writer", GroupCommitWriter)
HEALTH = web.AppKey("health", Health)
QUARANTINE = web.AppKey("quarantine", Keeper)
BACKFILL = web.AppKey("backfill", BackfillService)
UI_AUTH = web.AppKey("ui_auth", UiAuth)

REQUEST_ID = web.RequestKey("request_id", str)
SESSION = web.RequestKey("ui_session", Session)
