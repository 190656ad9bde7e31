"""Flows for the flow-page tests: Studio v2 definitions, executions walking them, storage."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from sink import jsontext
from tests.support.studio import ENDED, STARTED, execution_event, sid, step_event


def state(
    name: str, kind: str, x: float, y: float, *transitions: tuple[str, str | None]
) -> dict[str, Any]:
    """A Studio v2 state at offset (x, y) with (event, next) transitions."""
    return {
        "name": name,
        "type": kind,
        "transitions": [
            {"event": event, **({"next": to} if to else {})} for event, to in transitions
        ],
        "properties": {"offset": {"x": x, "y": y}},
    }


def definition(states: Sequence[dict[str, Any]], initial: str = "Trigger") -> dict[str, Any]:
    return {
        "description": "a test flow",
        "initial_state": initial,
        "flags": {"allow_concurrent_calls": True},
        "states": list(states),
    }


def small_ivr() -> dict[str, Any]:
    """Trigger → greet → menu (gather) → split → sales | support; noMatch loops to menu."""
    return definition(
        [
            state("Trigger", "trigger", 0, 0, ("incomingCall", "greet"), ("incomingMessage", None)),
            state("greet", "say-play", 0, 200, ("audioComplete", "menu")),
            state(
                "menu", "gather-input-on-call", 0, 400, ("keypress", "route"), ("timeout", "menu")
            ),
            state(
                "route",
                "split-based-on",
                0,
                600,
                ("noMatch", "menu"),
                ("match", "sales"),
                ("match", "support"),
            ),
            state("sales", "connect-call-to", -300, 800, ("callCompleted", None)),
            state("support", "connect-call-to", 300, 800, ("callCompleted", None)),
        ]
    )


def walk(
    flow_sid: str,
    path: Sequence[tuple[str, str]],
    *,
    at: datetime,
    revision: int = 3,
    ended: bool = True,
    seconds: float = 2.0,
) -> tuple[str, list[dict[str, Any]]]:
    """One execution's events: started, a step per (event, widget entered), then ended."""
    execution = sid("FN")
    events = [execution_event(STARTED, execution, flow_sid, at=at, revision=revision)]
    previous = "Trigger"
    when = at
    for event, widget in path:
        when += timedelta(seconds=seconds)
        step = step_event(execution, flow_sid, at=when, name=event, came_from=previous)
        step["data"]["transitioned_to"] = widget
        events.append(step)
        previous = widget
    if ended:
        end = when + timedelta(seconds=seconds)
        events.append(
            execution_event(ENDED, execution, flow_sid, at=end, created=at, revision=revision)
        )
    return execution, events


async def store_flow(
    conn: asyncpg.Connection[Any],
    flow_sid: str,
    revision: int,
    body: Any,
    *,
    friendly_name: str = "Support line",
) -> None:
    """The flow and its revision as the backfill stores them."""
    text = jsontext.dumps(body)
    await conn.execute(
        "INSERT INTO sink.flows (flow_sid, friendly_name, status, revision, definition)"
        " VALUES ($1, $2, 'published', $3, $4::jsonb)",
        flow_sid,
        friendly_name,
        revision,
        text,
    )
    await conn.execute(
        "INSERT INTO sink.flow_revisions (flow_sid, revision, friendly_name, status, definition)"
        " VALUES ($1, $2, $3, 'published', $4::jsonb)",
        flow_sid,
        revision,
        friendly_name,
        text,
    )


def realistic_ivr() -> dict[str, Any]:
    """A support line as a Studio author draws it: 15 widgets, a gather, splits, a subflow,
    an HTTP request, queues and a survey."""
    return definition(
        [
            state(
                "Trigger",
                "trigger",
                250,
                0,
                ("incomingCall", "greeting"),
                ("incomingMessage", None),
            ),
            state("greeting", "say-play", 250, 200, ("audioComplete", "main_menu")),
            state(
                "main_menu",
                "gather-input-on-call",
                250,
                400,
                ("keypress", "route_menu"),
                ("speech", "route_menu"),
                ("timeout", "main_menu"),
            ),
            state(
                "route_menu",
                "split-based-on",
                250,
                620,
                ("noMatch", "main_menu"),
                ("match", "check_account"),
                ("match", "sales_queue"),
                ("match", "voicemail"),
            ),
            state(
                "check_account",
                "make-http-request",
                -150,
                860,
                ("success", "account_found"),
                ("failed", "support_queue"),
            ),
            state(
                "account_found",
                "split-based-on",
                -150,
                1080,
                ("noMatch", "support_queue"),
                ("match", "verify_pin"),
            ),
            state(
                "verify_pin",
                "run-subflow",
                -400,
                1300,
                ("completed", "billing_queue"),
                ("failed", "support_queue"),
            ),
            state(
                "billing_queue",
                "enqueue-call",
                -400,
                1520,
                ("callComplete", "survey_sms"),
                ("failedToEnqueue", "voicemail"),
            ),
            state(
                "support_queue",
                "enqueue-call",
                0,
                1520,
                ("callComplete", "survey_sms"),
                ("failedToEnqueue", "voicemail"),
            ),
            state(
                "sales_queue",
                "connect-call-to",
                450,
                860,
                ("callCompleted", "survey_sms"),
                ("hangup", None),
            ),
            state(
                "voicemail",
                "record-voicemail",
                750,
                1520,
                ("recordingComplete", "thanks"),
                ("noAudio", "thanks"),
                ("hangup", None),
            ),
            state(
                "survey_sms",
                "send-message",
                -150,
                1760,
                ("sent", "log_outcome"),
                ("failed", "log_outcome"),
            ),
            state(
                "log_outcome", "make-http-request", -150, 1980, ("success", None), ("failed", None)
            ),
            state("thanks", "say-play", 750, 1760, ("audioComplete", None)),
            state("after_hours", "say-play", 1050, 400, ("audioComplete", "voicemail")),
        ]
    )


def ivr_paths(count: int, seed: int = 7) -> list[list[tuple[str, str]]]:
    """``count`` plausible walks through ``realistic_ivr()``: menus retried, callers who hang
    up, lookups that fail, each ending with a step into ``Ended``."""
    rng = random.Random(seed)
    paths = []
    for _ in range(count):
        path = [("incomingCall", "greeting"), ("audioComplete", "main_menu")]
        while rng.random() < 0.18:
            path.append(("timeout", "main_menu"))
        if rng.random() < 0.06:
            path.append(("hangup", "Ended"))
            paths.append(path)
            continue
        path.append((rng.choice(["keypress", "keypress", "speech"]), "route_menu"))
        while rng.random() < 0.12:
            path += [("noMatch", "main_menu"), ("keypress", "route_menu")]
        choice = rng.random()
        if choice < 0.55:
            path.append(("match", "check_account"))
            if rng.random() < 0.1:
                path.append(("failed", "support_queue"))
            elif rng.random() < 0.8:
                path += [("success", "account_found"), ("match", "verify_pin")]
                if rng.random() < 0.85:
                    path.append(("completed", "billing_queue"))
                else:
                    path.append(("failed", "support_queue"))
            else:
                path += [("success", "account_found"), ("noMatch", "support_queue")]
            if rng.random() < 0.05:
                path += [("failedToEnqueue", "voicemail"), ("recordingComplete", "thanks")]
                path.append(("audioComplete", "Ended"))
            elif rng.random() < 0.12:
                path.append(("hangup", "Ended"))
            else:
                path += [("callComplete", "survey_sms"), ("sent", "log_outcome")]
                path.append(("success", "Ended"))
        elif choice < 0.85:
            path.append(("match", "sales_queue"))
            if rng.random() < 0.25:
                path.append(("hangup", "Ended"))
            else:
                path += [("callCompleted", "survey_sms"), ("sent", "log_outcome")]
                path.append(("success", "Ended"))
        else:
            path += [("match", "voicemail"), ("recordingComplete", "thanks")]
            path.append(("audioComplete", "Ended"))
        paths.append(path)
    return paths
