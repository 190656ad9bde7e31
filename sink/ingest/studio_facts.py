"""The Studio facts carried by Studio events, for the typed tables. Pure: no I/O.

A Studio event must name its SIDs (the typed rows are keyed by them). An integer field
(``flow_revision``) may be absent or null, but when present it must be an integer (a
string of ASCII digits counts): a value of another kind (``"²"``, ``3.5``, ``true``) rejects
the event, naming the field. Text and time fields are taken when they have the expected
type and left empty otherwise. The raw event is kept in full either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sink.errors import shown
from sink.twilio import (
    EXECUTION_ENDED,
    STEP_ENDED,
    STUDIO_TYPES,
    is_integer,
    is_sid,
    optional_int,
    optional_text,
    optional_time,
    sid_rule,
)


class StudioDataError(ValueError):
    """A Studio event whose data lacks (or garbles) the SIDs it must carry."""


@dataclass(frozen=True, slots=True)
class ExecutionFacts:
    execution_sid: str
    flow_sid: str
    account_sid: str | None
    status: str  # 'active' | 'ended'
    contact_channel_address: str | None
    started_by: str | None
    flow_revision: int | None
    ended_reason: str | None
    date_created: datetime | None
    date_updated: datetime | None


@dataclass(frozen=True, slots=True)
class StepFacts:
    step_sid: str
    execution_sid: str
    flow_sid: str
    account_sid: str | None
    name: str | None
    transitioned_from: str | None
    transitioned_to: str | None
    parent_step_sid: str | None
    date_created: datetime | None


StudioFacts = ExecutionFacts | StepFacts


def _sid(data: dict[str, Any], name: str, prefix: str) -> str:
    value = data.get(name)
    if value is None:
        raise StudioDataError(f"Studio event data lacks '{name}'")
    if not is_sid(value, prefix):
        raise StudioDataError(f"Studio event data '{name}' is not a SID: {sid_rule(prefix)}")
    return str(value)


def _optional_sid(data: dict[str, Any], name: str, prefix: str) -> str | None:
    value = data.get(name)
    return value if is_sid(value, prefix) else None


def _integer(data: dict[str, Any], name: str) -> int | None:
    """An integer field: None when absent or null (or beyond Postgres ``integer``);
    raises StudioDataError when it holds something other than an integer."""
    value = data.get(name)
    if value is not None and not is_integer(value):
        raise StudioDataError(
            f"Studio event data '{name}' is not an integer: {shown(repr(value))} (Twilio sends"
            " a whole number here, or null)"
        )
    return optional_int(data, name)


def execution_facts(event_type: str, data: dict[str, Any]) -> ExecutionFacts:
    status_text = optional_text(data, "status")
    ended = event_type == EXECUTION_ENDED or (status_text or "").lower() == "ended"
    return ExecutionFacts(
        execution_sid=_sid(data, "execution_sid", "FN"),
        flow_sid=_sid(data, "flow_sid", "FW"),
        account_sid=_optional_sid(data, "account_sid", "AC"),
        status="ended" if ended else "active",
        contact_channel_address=optional_text(data, "contact_channel_address"),
        started_by=optional_text(data, "started_by"),
        flow_revision=_integer(data, "flow_revision"),
        ended_reason=optional_text(data, "ended_reason"),
        date_created=optional_time(data, "date_created"),
        date_updated=optional_time(data, "date_updated"),
    )


def step_facts(data: dict[str, Any]) -> StepFacts:
    return StepFacts(
        step_sid=_sid(data, "step_sid", "FT"),
        execution_sid=_sid(data, "execution_sid", "FN"),
        flow_sid=_sid(data, "flow_sid", "FW"),
        account_sid=_optional_sid(data, "account_sid", "AC"),
        name=optional_text(data, "name"),
        transitioned_from=optional_text(data, "transitioned_from"),
        transitioned_to=optional_text(data, "transitioned_to"),
        parent_step_sid=_optional_sid(data, "parent_step_sid", "FT"),
        date_created=optional_time(data, "date_created"),
    )


def studio_facts(event_type: str, data: Any) -> StudioFacts | None:
    """Typed facts for a Studio event, None for other types; raises StudioDataError."""
    if event_type not in STUDIO_TYPES:
        return None
    if not isinstance(data, dict):
        raise StudioDataError("Studio event data must be a JSON object with the event's SIDs")
    if event_type == STEP_ENDED:
        return step_facts(data)
    return execution_facts(event_type, data)
