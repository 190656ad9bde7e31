"""A generated IVR ("Support line") with known answers, for the flow analytics.

``build_ivr(...)`` returns a flow with two revisions (Studio v2 definitions with a canvas
offset for every state) and executions walked through them: a split with several ``match``
transitions (``check_vip``, ``route``), gathers (``menu``: keypress/speech/timeout), an HTTP
request (``lookup``: success/failed), a subflow (``support_sub``: its steps carry
``parent_step_sid``), callers who hang up in ``menu``, and executions left active.

Post ``ivr.events()`` to the sink, or load thousands of executions at once with
``await load_ivr(conn, ivr)`` (COPY into the sink's tables, then
``sink.rebuild_flow_rollup``). ``ivr.executions`` is the ground truth the known-answers
test computes its expectations from.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from sink import jsontext
from sink.analytics.rollup import rebuild_flow_rollup
from sink.db.queries import query
from tests.support.studio import ACCOUNT, ENDED, STARTED, execution_event, sid, step_event

# state name -> (type, [(event, next or None, condition label or None, weight)], (x, y))
Transition = tuple[str, str | None, str | None, int]
STATES: dict[str, tuple[str, list[Transition], tuple[int, int]]] = {
    "Trigger": (
        "trigger",
        [
            ("incomingMessage", None, None, 0),
            ("incomingCall", "greeting", None, 1),
            ("incomingRequest", None, None, 0),
        ],
        (0, 0),
    ),
    "greeting": ("say-play", [("audioComplete", "lookup", None, 1)], (0, 200)),
    "lookup": (
        "make-http-request",
        [("success", "check_vip", None, 9), ("failed", "sorry", None, 1)],
        (0, 400),
    ),
    "check_vip": (
        "split-based-on",
        [
            ("noMatch", "menu", None, 6),
            ("match", "vip_transfer", "tier == vip", 2),
            ("match", "blocked_msg", "tier == blocked", 1),
        ],
        (0, 600),
    ),
    "menu": (
        "gather-input-on-call",
        [
            ("keypress", "route", None, 5),
            ("speech", "route", None, 2),
            ("timeout", "menu_retry", None, 2),
        ],
        (0, 800),
    ),
    "menu_retry": (
        "gather-input-on-call",
        [
            ("keypress", "route", None, 2),
            ("speech", None, None, 0),
            ("timeout", "goodbye", None, 1),
        ],
        (400, 800),
    ),
    "route": (
        "split-based-on",
        [
            ("noMatch", "goodbye", None, 1),
            ("match", "sales", "digits == 1", 3),
            ("match", "support_sub", "digits == 2", 3),
            ("match", "billing", "digits == 3", 2),
        ],
        (0, 1000),
    ),
    "sales": (
        "connect-call-to",
        [("callCompleted", None, None, 1), ("hangup", None, None, 0)],
        (-400, 1200),
    ),
    "support_sub": (
        "run-subflow",
        [("completed", "survey", None, 4), ("failed", "sorry", None, 1)],
        (0, 1200),
    ),
    "billing": ("say-play", [("audioComplete", "survey", None, 1)], (400, 1200)),
    "survey": (
        "gather-input-on-call",
        [("keypress", "thanks", None, 3), ("speech", None, None, 0), ("timeout", None, None, 1)],
        (0, 1400),
    ),
    "thanks": ("say-play", [("audioComplete", None, None, 1)], (0, 1600)),
    "sorry": ("say-play", [("audioComplete", None, None, 1)], (400, 1600)),
    "goodbye": ("say-play", [("audioComplete", None, None, 1)], (800, 1600)),
    "vip_transfer": ("connect-call-to", [("callCompleted", None, None, 1)], (-400, 800)),
    "blocked_msg": ("say-play", [("audioComplete", None, None, 1)], (-800, 800)),
}
# revision 2 drops the VIP check (lookup's success goes straight to the menu), and a second
# timeout in the menu goes back to it: a loop, so an edge can repeat within an execution
REVISION_2_CHANGES: dict[str, list[Transition]] = {
    "lookup": [("success", "menu", None, 9), ("failed", "sorry", None, 1)],
    "menu_retry": [
        ("keypress", "route", None, 2),
        ("speech", None, None, 0),
        ("timeout", "menu", None, 1),
    ],
}
DROPPED_IN_2 = {"check_vip", "vip_transfer", "blocked_msg"}
# typical seconds spent in each widget before leaving it
DWELL: dict[str, float] = {
    "greeting": 4.0,
    "lookup": 0.35,
    "check_vip": 0.02,
    "menu": 6.0,
    "menu_retry": 5.0,
    "route": 0.015,
    "sales": 90.0,
    "support_sub": 40.0,
    "billing": 12.0,
    "survey": 8.0,
    "thanks": 2.5,
    "sorry": 3.0,
    "goodbye": 2.0,
    "vip_transfer": 120.0,
    "blocked_msg": 3.5,
}
SUBFLOW = "support_sub"
# the subflow's own steps: (event, from, to, seconds in from)
SUBFLOW_PATHS = [
    [
        ("incomingParent", "Trigger", "ask_issue", None),
        ("keypress", "ask_issue", "create_ticket", 7.0),
        ("success", "create_ticket", "Ended", 0.6),
    ],
    [("incomingParent", "Trigger", "ask_issue", None), ("timeout", "ask_issue", "Ended", 10.0)],
]


@dataclass
class IvrStep:
    sid: str
    name: str
    transitioned_from: str
    transitioned_to: str
    at: datetime
    parent_step_sid: str | None = None


@dataclass
class IvrExecution:
    sid: str
    revision: int
    started: datetime
    steps: list[IvrStep] = field(default_factory=list)
    status: str = "ended"  # "active": never ended (stuck once an hour has passed)
    ended_reason: str | None = "FLOW_END"
    ended_at: datetime | None = None


@dataclass
class Ivr:
    flow_sid: str
    definitions: dict[int, dict[str, Any]]
    executions: list[IvrExecution]
    friendly_name: str = "Support line"

    def events(self) -> list[dict[str, Any]]:
        """Every execution's events in order: started, its steps, ended (unless active)."""
        out: list[dict[str, Any]] = []
        for e in self.executions:
            out.append(
                execution_event(STARTED, e.sid, self.flow_sid, at=e.started, revision=e.revision)
            )
            out.extend(step_as_event(self.flow_sid, e.sid, s) for s in e.steps)
            if e.status == "ended":
                assert e.ended_at is not None and e.ended_reason is not None
                out.append(
                    execution_event(
                        ENDED,
                        e.sid,
                        self.flow_sid,
                        at=e.ended_at,
                        created=e.started,
                        revision=e.revision,
                        ended_reason=e.ended_reason,
                    )
                )
        return out


def iso_ms(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def step_as_event(flow_sid: str, execution_sid: str, s: IvrStep) -> dict[str, Any]:
    event = step_event(
        execution_sid,
        flow_sid,
        at=s.at,
        name=s.name,
        came_from=s.transitioned_from,
        to=s.transitioned_to,
        parent_step_sid=s.parent_step_sid,
        step_sid=s.sid,
    )
    event["data"]["date_created"] = iso_ms(s.at)
    return event


def definition(revision: int) -> dict[str, Any]:
    """The Studio v2 definition of one revision: states with transitions and canvas offsets."""
    states = []
    for name, (kind, transitions, (x, y)) in STATES.items():
        if revision >= 2 and name in DROPPED_IN_2:
            continue
        if revision >= 2:
            transitions = REVISION_2_CHANGES.get(name, transitions)
        out = []
        for event, nxt, condition, _ in transitions:
            t: dict[str, Any] = {"event": event}
            if nxt is not None:
                t["next"] = nxt
            if condition is not None:
                t["conditions"] = [
                    {
                        "friendly_name": condition,
                        "type": "equal_to",
                        "arguments": ["{{flow.data}}"],
                        "value": condition,
                    }
                ]
            out.append(t)
        states.append(
            {
                "name": name,
                "type": kind,
                "transitions": out,
                "properties": {"offset": {"x": x, "y": y}},
            }
        )
    return {
        "description": f"Support line, revision {revision}",
        "initial_state": "Trigger",
        "flags": {"allow_concurrent_calls": True},
        "states": states,
    }


def _millis(rng: random.Random, seconds: float) -> timedelta:
    """A dwell near ``seconds``, in whole milliseconds, never a power of two (a bucket edge)."""
    while True:
        ms = max(2, round(rng.uniform(0.5, 1.5) * seconds * 1000))
        if ms & (ms - 1):
            return timedelta(milliseconds=ms)


def _transitions(revision: int, state: str) -> list[Transition]:
    if revision >= 2 and state in REVISION_2_CHANGES:
        return REVISION_2_CHANGES[state]
    return STATES[state][1]


def _walk(rng: random.Random, e: IvrExecution, fate: str) -> None:
    """Steps from the trigger until Ended, a hang-up in ``menu``, or (active) a stop."""
    state, at = "Trigger", e.started + timedelta(milliseconds=rng.randint(5, 900))
    first = True
    while True:
        options = [t for t in _transitions(e.revision, state) if t[3] > 0]
        event, nxt, _, _ = rng.choices(options, weights=[t[3] for t in options])[0]
        if not first:
            at += _millis(rng, DWELL[state])
        first = False
        step = IvrStep(sid("FT"), event, state, nxt or "Ended", at)
        e.steps.append(step)
        if nxt == SUBFLOW:
            at = _subflow(rng, e, step)
        if nxt is None:
            break
        state = nxt
        if state == "menu" and fate in ("hangup", "active"):
            break
    if fate == "active":
        e.status, e.ended_reason, e.ended_at = "active", None, None
    else:
        e.ended_reason = "HANGUP" if fate == "hangup" else "FLOW_END"
        e.ended_at = at + timedelta(seconds=1)


def _subflow(rng: random.Random, e: IvrExecution, parent: IvrStep) -> datetime:
    at = parent.at
    for event, t_from, t_to, seconds in rng.choice(SUBFLOW_PATHS):
        at += _millis(rng, seconds) if seconds else timedelta(milliseconds=rng.randint(3, 60))
        e.steps.append(IvrStep(sid("FT"), event, t_from, t_to, at, parent.sid))
    return at


def build_ivr(
    executions: int = 60,
    *,
    start: datetime | None = None,
    span: timedelta = timedelta(hours=40),
    seed: int = 7,
    flow_sid: str | None = None,
) -> Ivr:
    """``executions`` executions started over ``span`` from ``start`` (default: 3 days ago,
    on the hour); the first half run revision 1, the rest revision 2. One in 8 hangs up in
    the menu; one in 15 stays active there."""
    rng = random.Random(seed)
    t0 = start or (datetime.now(UTC) - timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    made = []
    for i in range(executions):
        started = t0 + span * i / max(1, executions)
        started = started.replace(microsecond=0)
        e = IvrExecution(sid("FN"), 1 if i < executions / 2 else 2, started)
        fate = "active" if i % 15 == 7 else "hangup" if i % 8 == 3 else "normal"
        _walk(rng, e, fate)
        made.append(e)
    return Ivr(flow_sid or sid("FW"), {1: definition(1), 2: definition(2)}, made)


async def store_definitions(conn: asyncpg.Connection[Any], ivr: Ivr) -> None:
    """The flow and both revisions, as the backfill stores them."""
    for revision, body in ivr.definitions.items():
        await conn.execute(
            "INSERT INTO sink.flow_revisions (flow_sid, revision, account_sid, friendly_name,"
            " status, definition, valid) VALUES ($1, $2, $3, $4, 'published', $5::jsonb, true)",
            ivr.flow_sid,
            revision,
            ACCOUNT,
            ivr.friendly_name,
            jsontext.dumps(body),
        )
    latest = max(ivr.definitions)
    await conn.execute(
        "INSERT INTO sink.flows (flow_sid, account_sid, friendly_name, status, revision,"
        " definition, valid) VALUES ($1, $2, $3, 'published', $4, $5::jsonb, true)",
        ivr.flow_sid,
        ACCOUNT,
        ivr.friendly_name,
        latest,
        jsontext.dumps(ivr.definitions[latest]),
    )


async def load_ivr(conn: asyncpg.Connection[Any], ivr: Ivr, *, definitions: bool = True) -> int:
    """Everything at once, bypassing the sink (fast: thousands of executions a second):
    COPY into sink.executions and sink.steps, then the flow's rollup rebuilt. Returns the
    rollup rows written."""
    if definitions:
        await store_definitions(conn, ivr)
    await conn.copy_records_to_table(
        "executions",
        schema_name="sink",
        columns=[
            "execution_sid",
            "flow_sid",
            "account_sid",
            "status",
            "started_by",
            "flow_revision",
            "ended_reason",
            "date_created",
            "date_updated",
        ],
        records=[
            (
                e.sid,
                ivr.flow_sid,
                ACCOUNT,
                e.status,
                "Trigger",
                e.revision,
                e.ended_reason,
                e.started,
                e.ended_at or (e.steps[-1].at if e.steps else e.started),
            )
            for e in ivr.executions
        ],
    )
    await conn.copy_records_to_table(
        "steps",
        schema_name="sink",
        columns=[
            "step_sid",
            "execution_sid",
            "flow_sid",
            "account_sid",
            "name",
            "transitioned_from",
            "transitioned_to",
            "parent_step_sid",
            "date_created",
        ],
        records=[
            (
                s.sid,
                e.sid,
                ivr.flow_sid,
                ACCOUNT,
                s.name,
                s.transitioned_from,
                s.transitioned_to,
                s.parent_step_sid,
                s.at,
            )
            for e in ivr.executions
            for s in e.steps
        ],
    )
    return await rebuild_flow_rollup(conn, ivr.flow_sid)


StepRows = list[tuple[IvrExecution, IvrStep]]


async def merge_as_backfill(conn: asyncpg.Connection[Any], ivr: Ivr, rows: StepRows) -> None:
    """Steps as the backfill merges them from the REST API (its named query)."""
    await conn.execute(
        query("merge_api_steps"),
        [s.sid for _, s in rows],
        [e.sid for e, _ in rows],
        [ivr.flow_sid] * len(rows),
        [ACCOUNT] * len(rows),
        [s.name for _, s in rows],
        [s.transitioned_from for _, s in rows],
        [s.transitioned_to for _, s in rows],
        [s.parent_step_sid for _, s in rows],
        [STATES.get(s.transitioned_to, ("run-subflow",))[0] for _, s in rows],
        [s.at for _, s in rows],
        [s.at for _, s in rows],
    )


async def merge_as_replay(conn: asyncpg.Connection[Any], ivr: Ivr, rows: StepRows) -> None:
    """Steps merged again from stored events, as ``studio-sink replay`` does."""
    await conn.execute(
        query("merge_event_steps"),
        [s.sid for _, s in rows],
        [e.sid for e, _ in rows],
        [ivr.flow_sid] * len(rows),
        [ACCOUNT] * len(rows),
        [s.name for _, s in rows],
        [s.transitioned_from for _, s in rows],
        [s.transitioned_to for _, s in rows],
        [s.parent_step_sid for _, s in rows],
        [s.at for _, s in rows],
    )
