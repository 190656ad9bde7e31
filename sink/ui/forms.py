"""The executions list's query string: filters and the page cursor, with errors to show."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sink.twilio import parse_timestamp
from sink.ui.queries import Cursor, ExecutionFilters


def _parse_time(text: str, errors: list[str], label: str) -> datetime | None:
    if not text:
        return None
    try:
        return parse_timestamp(text, assume_utc=True)
    except ValueError:
        errors.append(f"{label}: expected a date and time like 2026-11-20T14:00")
        return None


def parse_filters(query: Any, errors: list[str]) -> ExecutionFilters:
    def text(name: str) -> str | None:
        value = str(query.get(name, "")).strip()
        return value or None

    status = text("status")
    if status not in (None, "active", "ended"):
        errors.append("status: choose active or ended")
        status = None
    return ExecutionFilters(
        flow_sid=text("flow"),
        status=status,
        ended_reason=text("ended_reason"),
        contact=text("contact"),
        created_from=_parse_time(text("from") or "", errors, "from"),
        created_until=_parse_time(text("until") or "", errors, "until"),
    )


def parse_cursor(query: Any, errors: list[str]) -> Cursor | None:
    sid = str(query.get("after_sid", ""))
    if not sid:
        return None
    when = _parse_time(str(query.get("after_date", "")), errors, "page")
    return Cursor(date_created=when, execution_sid=sid)
