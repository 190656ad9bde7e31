"""Jinja filters of the UI's templates (pure: text in, text out; the templates escape it)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from yarl import URL

ACCOUNT_PARAM: Final = "account"


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


def with_account(url: str, account_sid: str | None) -> str:
    """``url`` with ``?account=`` set, the account the pages show (left out for every account)."""
    if not account_sid:
        return url
    return str(URL(url).update_query({ACCOUNT_PARAM: account_sid}))


FILTERS: Final[dict[str, Callable[..., str]]] = {
    "with_account": with_account,
    "ts": _ts,
    "pretty_json": _pretty_json,
    "duration": _duration,
}
