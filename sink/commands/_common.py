"""What the CLI's commands share: the database connection and argument types."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

import asyncpg

from sink.config import Settings
from sink.db import migrate
from sink.db.embedded import resolve_dsn
from sink.db.pool import connect
from sink.db.route import Route, route_for
from sink.twilio import parse_timestamp


async def open_route(settings: Settings) -> Route:
    """How to reach the sink's database (SINK_DATABASE_URL or the embedded one)."""
    return await route_for(settings, await resolve_dsn(settings))


async def open_database(settings: Settings, route: Route | None = None) -> asyncpg.Connection[Any]:
    """A connection to the sink's database whose schema is current."""
    route = route or await open_route(settings)
    conn = await connect(
        route.dsn, host_timeout=settings.db_connect_timeout, **route.connect_options()
    )
    try:
        await migrate.check_current(conn)
    except BaseException:
        await conn.close()
        raise
    return conn


def iso_datetime(text: str) -> datetime:
    """An ISO 8601 date or date-time; without an offset it is taken as UTC."""
    try:
        return parse_timestamp(text, assume_utc=True)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 date or date-time (e.g. 2026-11-20 or"
            " 2026-11-20T14:00:00Z)"
        ) from None
