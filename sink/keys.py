"""Typed application keys shared by the app's modules."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from sink.config import Settings
from sink.health import Health
from sink.metrics import Metrics
from sink.writer import GroupCommitWriter

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
POOL: web.AppKey[asyncpg.Pool[Any]] = web.AppKey("pool")
WRITER = web.AppKey("writer", GroupCommitWriter)
HEALTH = web.AppKey("health", Health)
DSN = web.AppKey("dsn", str)
REQUEST_ID = web.RequestKey("request_id", str)
