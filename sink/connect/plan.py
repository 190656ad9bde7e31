"""What an account needs so that Event Streams delivers Studio events to this sink. Pure.

From what the Events API says (the account's sinks, the subscriptions of the sink that
sends to the destination, each Studio type's current schema version) the plan lists
the changes: create the webhook sink, create the subscription, add a missing type, or
move a type to its current schema version. An existing sink with the same destination
and other settings is a conflict: reported, never changed, and nothing else is done.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from sink.twilio import EXECUTION_ENDED, EXECUTION_STARTED, STEP_ENDED

STUDIO_EVENT_TYPES = (EXECUTION_STARTED, EXECUTION_ENDED, STEP_ENDED)
ACTIVE = "active"


def account_url(url: str, account_sid: str) -> str:
    """The ``/events/{AccountSid}`` form of the URL: the account's own path."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{account_sid}"))


def webhook_configuration(destination: str) -> dict[str, Any]:
    """The ``SinkConfiguration`` of the sink studio-sink wants."""
    return {"destination": destination, "method": "POST", "batch_events": True}


@dataclass(frozen=True, slots=True)
class SinkState:
    sid: str
    description: str
    sink_type: str
    status: str
    configuration: dict[str, Any] = field(default_factory=dict)

    @property
    def destination(self) -> str | None:
        value = self.configuration.get("destination")
        return value if isinstance(value, str) else None

    def differences(self) -> list[str]:
        """How this sink's settings differ from the wanted ones (same destination)."""
        found = []
        if self.sink_type != "webhook":
            found.append(f"SinkType {self.sink_type}")
        method = self.configuration.get("method")
        if not isinstance(method, str) or method.upper() != "POST":
            found.append(f"method {method}")
        batch = self.configuration.get("batch_events")
        if batch not in (True, "true", "True"):
            found.append(f"batch_events {batch}")
        return found


@dataclass(frozen=True, slots=True)
class SubscriptionState:
    sid: str
    description: str
    types: dict[str, int] = field(default_factory=dict)  # type: schema version


@dataclass(frozen=True, slots=True)
class Change:
    action: Literal["create_sink", "create_subscription", "add_type", "update_type"]
    subscription_sid: str | None = None
    event_type: str | None = None
    version: int | None = None
    versions: tuple[tuple[str, int], ...] = ()
    old_version: int | None = None

    def kinds(self) -> str:
        return ", ".join(f"{name} v{version}" for name, version in self.versions)

    def describe(self) -> str:
        if self.action == "create_sink":
            return "create a webhook sink to this URL (method POST, batch_events true)"
        if self.action == "create_subscription":
            return f"subscribe the sink to {self.kinds()}"
        if self.action == "add_type":
            return f"add {self.event_type} v{self.version} to subscription {self.subscription_sid}"
        return (
            f"move {self.event_type} from schema v{self.old_version} to v{self.version} in"
            f" subscription {self.subscription_sid}"
        )


@dataclass(frozen=True, slots=True)
class Plan:
    destination: str
    sink: SinkState | None
    conflicts: tuple[SinkState, ...]
    changes: tuple[Change, ...]
    elsewhere: tuple[str, ...] = ()  # destinations of the account's other webhook sinks

    @property
    def sink_changes(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.action == "create_sink")

    @property
    def subscription_changes(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.action != "create_sink")

    def conflict_message(self) -> str:
        parts = [
            f"sink {s.sid} ({s.description or 'no description'}) already sends to this URL"
            f" with {', '.join(s.differences())}"
            for s in self.conflicts
        ]
        sids = " ".join(s.sid for s in self.conflicts)
        return (
            "; ".join(parts) + ". studio-sink connect never changes it: delete it"
            f" (twilio api:events:v1:sinks:remove --sid {sids}) or point it elsewhere, then"
            " run connect again"
        )


def matching_sink(
    sinks: Sequence[SinkState], destination: str
) -> tuple[SinkState | None, tuple[SinkState, ...]]:
    """The sink to use for ``destination`` (the first with the wanted settings), and the
    ones with that destination and other settings."""
    same = [s for s in sinks if s.destination == destination]
    good = [s for s in same if not s.differences()]
    return (good[0] if good else None), tuple(s for s in same if s.differences())


def plan_subscription(
    subscriptions: Sequence[SubscriptionState], versions: dict[str, int]
) -> list[Change]:
    """The changes that make the sink's subscriptions cover every Studio type at its
    current schema version."""
    covered: dict[str, tuple[str, int]] = {}
    for subscription in subscriptions:
        for name, version in subscription.types.items():
            if name in versions and covered.get(name, ("", -1))[1] < version:
                covered[name] = (subscription.sid, version)
    missing = [(name, versions[name]) for name in STUDIO_EVENT_TYPES if name not in covered]
    changes = []
    if missing and not subscriptions:
        return [Change("create_subscription", versions=tuple(missing))]
    target = subscriptions[0].sid if subscriptions else None
    for name, version in missing:
        changes.append(
            Change("add_type", subscription_sid=target, event_type=name, version=version)
        )
    for name in STUDIO_EVENT_TYPES:
        if name in covered and covered[name][1] < versions[name]:
            sid, old = covered[name]
            changes.append(
                Change(
                    "update_type",
                    subscription_sid=sid,
                    event_type=name,
                    version=versions[name],
                    old_version=old,
                )
            )
    return changes


def make_plan(
    destination: str,
    sinks: Sequence[SinkState],
    subscriptions: Sequence[SubscriptionState],
    versions: dict[str, int],
) -> Plan:
    """``subscriptions``: those of the matching sink (none when there is no such sink)."""
    sink, conflicts = matching_sink(sinks, destination)
    elsewhere = tuple(
        sorted({s.destination for s in sinks if s.destination and s.destination != destination})
    )
    if conflicts:
        return Plan(destination, sink, conflicts, (), elsewhere)
    changes: list[Change] = [] if sink is not None else [Change("create_sink")]
    changes += plan_subscription(subscriptions if sink is not None else [], versions)
    return Plan(destination, sink, (), tuple(changes), elsewhere)
