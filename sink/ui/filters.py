"""Jinja filters of the UI's templates (pure: text in, text out; the templates escape it)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final


def _ts(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _pretty_json(value: Any) -> str:
    """jsonb arrives as text: indent it for reading (the template escapes it)."""
    if value is None:
        return ""
    data = json.loads(value) if isinstance(value, str) else value
    return json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False)


def _duration(delta: timedelta | None) -> str:
    if delta is None:
        return ""
    seconds = delta.total_seconds()
    if seconds < 1:
        return f"+{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"+{seconds:.1f} s"
    return f"+{seconds / 60:.1f} min"


FILTERS: Final[dict[str, Callable[..., str]]] = {
    "ts": _ts,
    "pretty_json": _pretty_json,
    "duration": _duration,
}
