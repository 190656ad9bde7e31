"""Studio CloudEvents shaped as Event Streams sends them."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.fakes.studio_data import Execution

STARTED = "com.twilio.studio.flow.execution.started"
ENDED = "com.twilio.studio.flow.execution.ended"
STEP = "com.twilio.studio.flow.step.ended"
TEST_EVENT = "com.twilio.eventstreams.test-event"

ACCOUNT = "AC" + "0a1b2c3d4e5f60718293a4b5c6d7e8f9"


def sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def execution_event(
    kind: str,
    execution_sid: str,
    flow_sid: str,
    *,
    at: datetime,
    created: datetime | None = None,
    revision: int = 3,
    contact: str = "+15017122661",
    ended_reason: str = "FLOW_END",
) -> dict[str, Any]:
    ended = kind == ENDED
    data: dict[str, Any] = {
        "execution_sid": execution_sid,
        "account_sid": ACCOUNT,
        "flow_sid": flow_sid,
        "contact_channel_address": contact,
        "status": "ended" if ended else "active",
        "started_by": "Trigger",
        "flow_revision": revision,
        "date_created": _iso(created or at),
        "date_updated": _iso(at),
    }
    if ended:
        data["ended_reason"] = ended_reason
    return {
        "specversion": "1.0",
        "type": kind,
        "source": f"/v2/Flows/{flow_sid}/Executions/{execution_sid}",
        "id": sid("EZ"),
        "dataschema": "https://events-schemas.twilio.com/Studio.FlowExecutionEvent/2",
        "datacontenttype": "application/json",
        "time": at.isoformat().replace("+00:00", "Z"),
        "data": data,
    }


def step_event(
    execution_sid: str,
    flow_sid: str,
    *,
    at: datetime,
    name: str,
    came_from: str,
    to: str = "Ended",
    parent_step_sid: str | None = None,
    step_sid: str | None = None,
) -> dict[str, Any]:
    """A step as Twilio sends it: ``name`` is the event that caused the transition
    (incomingCall, keypress, match, ...), ``came_from`` the widget left and ``to`` the widget
    entered (``Ended`` when the execution ends there)."""
    step_sid = step_sid or sid("FT")
    return {
        "specversion": "1.0",
        "type": STEP,
        "source": f"/v2/Flows/{flow_sid}/Executions/{execution_sid}/Steps/{step_sid}",
        "id": sid("EZ"),
        "dataschema": "https://events-schemas.twilio.com/Studio.FlowStepEvent/1",
        "datacontenttype": "application/json",
        "time": at.isoformat().replace("+00:00", "Z"),
        "data": {
            "account_sid": ACCOUNT,
            "flow_sid": flow_sid,
            "execution_sid": execution_sid,
            "step_sid": step_sid,
            "parent_step_sid": parent_step_sid,
            "name": name,
            "transitioned_from": came_from,
            "transitioned_to": to,
            "date_created": _iso(at),
        },
    }


def recent() -> datetime:
    """A whole minute about an hour before now: recent whatever day the suite runs on.

    Tests never date data by the calendar: a fixed date stops being "recent" as the
    calendar moves on, and a comparison with ``now()`` starts to fail. Tests that need an
    exact instant pass one explicitly.
    """
    return (datetime.now(UTC) - timedelta(hours=1)).replace(second=0, microsecond=0)


def execution_story(
    steps: int = 3, *, flow_sid: str | None = None, start: datetime | None = None
) -> list[dict[str, Any]]:
    """started, N steps, ended: the events of one execution, in order, starting at
    ``start`` (default: ``recent()``). In Twilio's shape: step n leaves the widget the step
    before entered (``Trigger`` first) and enters ``widget_<n>``; the last step enters
    ``Ended``. The first step's event is ``incomingRequest``, the others' ``next``."""
    flow = flow_sid or sid("FW")
    execution = sid("FN")
    t0 = start or recent()
    events = [execution_event(STARTED, execution, flow, at=t0)]
    previous = "Trigger"
    for n in range(steps):
        widget = "Ended" if n == steps - 1 else f"widget_{n}"
        event = "incomingRequest" if n == 0 else "next"
        at = t0 + timedelta(seconds=n + 1)
        events.append(step_event(execution, flow, at=at, name=event, came_from=previous, to=widget))
        previous = widget
    events.append(
        execution_event(ENDED, execution, flow, at=t0 + timedelta(seconds=steps + 2), created=t0)
    )
    return events


def sink_test_event() -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "type": TEST_EVENT,
        "source": "Sink",
        "id": ACCOUNT,
        "dataschema": "https://events-schemas.twilio.com/EventStreams.TestSink/1.json",
        "datacontenttype": "application/json",
        "time": "2026-11-20T14:00:00.000Z",
        "data": {"test_id": "6f1c2a7e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"},
    }


def fake_execution_events(
    e: Execution, *, steps: int | None = None, ended: bool = True, contact: str | None = None
) -> list[dict[str, Any]]:
    """The Event Streams events of an execution of the fake Studio API: started, its first
    ``steps`` steps (all by default), and ended unless ``ended`` is False."""
    started = {"contact": contact} if contact is not None else {}
    events = [execution_event(STARTED, e.sid, e.flow_sid, at=e.date_created, revision=1, **started)]
    for s in e.steps[:steps]:
        events.append(
            {
                "specversion": "1.0",
                "type": STEP,
                "source": f"/v2/Flows/{s.flow_sid}/Executions/{s.execution_sid}/Steps/{s.sid}",
                "id": sid("EZ"),
                "datacontenttype": "application/json",
                "time": s.date_created.isoformat(),
                "data": {
                    "account_sid": s.account_sid,
                    "flow_sid": s.flow_sid,
                    "execution_sid": s.execution_sid,
                    "step_sid": s.sid,
                    "parent_step_sid": None,
                    "name": s.name,
                    "transitioned_from": s.transitioned_from,
                    "transitioned_to": s.transitioned_to,
                    "date_created": s.date_created.isoformat(),
                },
            }
        )
    if ended:
        at = e.date_updated or e.date_created
        events.append(
            execution_event(ENDED, e.sid, e.flow_sid, at=at, created=e.date_created, revision=1)
        )
    return events
