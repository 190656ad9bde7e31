"""Twilio's formats: SIDs, the event types the sink knows, ISO 8601 timestamps, and the
readers of optional fields shared by events and REST resources. Pure: no I/O.

These are the only copies of these rules in the Python code (the database checks SIDs
given to its SQL functions with its own copy, ``sink.is_sid``, tested to agree).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any, Final

SID_KINDS: Final = {"AC": "Account", "FW": "Flow", "FN": "Execution", "FT": "Step"}
_SID: Final = {prefix: re.compile(rf"{prefix}[0-9a-fA-F]{{32}}") for prefix in SID_KINDS}

EXECUTION_STARTED: Final = "com.twilio.studio.flow.execution.started"
EXECUTION_ENDED: Final = "com.twilio.studio.flow.execution.ended"
STEP_ENDED: Final = "com.twilio.studio.flow.step.ended"
STUDIO_TYPES: Final = frozenset((EXECUTION_STARTED, EXECUTION_ENDED, STEP_ENDED))
TEST_EVENT_TYPE: Final = "com.twilio.eventstreams.test-event"


def is_sid(value: Any, prefix: str) -> bool:
    """Whether ``value`` is a SID of that kind: the prefix and 32 hex digits."""
    return isinstance(value, str) and _SID[prefix].fullmatch(value) is not None


def sid_rule(prefix: str) -> str:
    """How a SID of that kind looks, for error messages."""
    return f"an {SID_KINDS[prefix]} SID is {prefix} followed by 32 hex digits"


def parse_timestamp(text: str, *, assume_utc: bool) -> datetime:
    """An ISO 8601 date or date-time. Without an offset it is UTC when ``assume_utc``
    (people typing a time), else refused (Twilio always sends one). Raises ValueError."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is not None:
        return value
    if assume_utc:
        return value.replace(tzinfo=UTC)
    raise ValueError("timestamp has no UTC offset")


def optional_time(data: dict[str, Any], name: str) -> datetime | None:
    """An RFC 3339 timestamp field with an offset, or None."""
    value = data.get(name)
    if not isinstance(value, str):
        return None
    try:
        return parse_timestamp(value, assume_utc=False)
    except ValueError:
        return None


def is_integer(value: Any) -> bool:
    """Whether a JSON value is a whole number for Twilio's integer fields: a JSON integer
    (not a boolean), or a string of ASCII digits (``"7"``; ``"²"`` and ``"-7"`` are not)."""
    if isinstance(value, str):
        text = value.strip()
        return text.isascii() and text.isdigit()
    return isinstance(value, int) and not isinstance(value, bool)


def optional_int(data: dict[str, Any], name: str) -> int | None:
    """An integer field that fits Postgres ``integer`` (digits in a string too), or None.

    Lenient: anything else is None. Events are stricter (``sink.ingest.studio_facts``).
    """
    value = data.get(name)
    if not is_integer(value):
        return None
    if isinstance(value, str):
        digits = value.strip().lstrip("0") or "0"
        # int() of a long digit string is slow (and refused over 4300 digits): it cannot fit
        value = int(digits) if len(digits) < 11 else None
    if isinstance(value, int) and -(2**31) <= value < 2**31:
        return value
    return None


def optional_text(data: dict[str, Any], name: str) -> str | None:
    """A text field: a non-empty string, or a finite number written as text; else None."""
    value = data.get(name)
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(value)
    return None
