"""``studio-sink send-example``: POST a signed, Twilio-shaped delivery to a running sink."""

from __future__ import annotations

import argparse
import secrets
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from sink import jsontext
from sink.config import Settings
from sink.ingest import signature


@dataclass(frozen=True, slots=True)
class _Execution:
    """The fresh SIDs and the start time every event of the example shares."""

    t0: datetime
    account: str = field(default_factory=lambda: "AC" + secrets.token_hex(16))
    flow: str = field(default_factory=lambda: "FW" + secrets.token_hex(16))
    execution: str = field(default_factory=lambda: "FN" + secrets.token_hex(16))

    @property
    def source(self) -> str:
        return f"/v2/Flows/{self.flow}/Executions/{self.execution}"

    def at(self, seconds: int) -> str:
        return (self.t0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")

    def data(self) -> dict[str, Any]:
        """The attributes both execution events carry."""
        return {
            "execution_sid": self.execution,
            "account_sid": self.account,
            "flow_sid": self.flow,
            "contact_channel_address": "+15017122661",
            "started_by": "Trigger",
            "flow_revision": 1,
            "date_created": self.at(0),
        }


def example_delivery(now: datetime | None = None) -> list[dict[str, Any]]:
    """One execution (started, two steps, ended) plus the sink test event, fresh SIDs."""
    ex = _Execution((now or datetime.now(UTC)).replace(microsecond=0))
    events = [_execution_started(ex)]
    previous = "Trigger"
    for n, name in enumerate(("send_greeting", "gather_reply"), start=1):
        events.append(_step_ended(ex, n, name, previous))
        previous = name
    events.append(_execution_ended(ex))
    events.append(_test_event(ex))
    return events


def _envelope(kind: str, src: str, schema: str, when: str, data: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "type": kind,
        "source": src,
        "id": "EZ" + secrets.token_hex(16),
        "dataschema": f"https://events-schemas.twilio.com/{schema}",
        "datacontenttype": "application/json",
        "time": when,
        "data": data,
    }


def _execution_started(ex: _Execution) -> dict[str, Any]:
    return _envelope(
        "com.twilio.studio.flow.execution.started",
        ex.source,
        "Studio.FlowExecutionEvent/2",
        ex.at(0),
        {**ex.data(), "status": "active", "date_updated": ex.at(0)},
    )


def _step_ended(ex: _Execution, n: int, name: str, previous: str) -> dict[str, Any]:
    """Step ``n`` (seconds after the start), reached from ``previous``."""
    step = "FT" + secrets.token_hex(16)
    return _envelope(
        "com.twilio.studio.flow.step.ended",
        f"{ex.source}/Steps/{step}",
        "Studio.FlowStepEvent/1",
        ex.at(n),
        {
            "account_sid": ex.account,
            "flow_sid": ex.flow,
            "execution_sid": ex.execution,
            "step_sid": step,
            "parent_step_sid": None,
            "name": name,
            "transitioned_from": previous,
            "transitioned_to": name,
            "date_created": ex.at(n),
        },
    )


def _execution_ended(ex: _Execution) -> dict[str, Any]:
    return _envelope(
        "com.twilio.studio.flow.execution.ended",
        ex.source,
        "Studio.FlowExecutionEvent/2",
        ex.at(4),
        {
            **ex.data(),
            "status": "ended",
            "ended_reason": "FLOW_END",
            "date_updated": ex.at(4),
        },
    )


def _test_event(ex: _Execution) -> dict[str, Any]:
    return _envelope(
        "com.twilio.eventstreams.test-event",
        "Sink",
        "EventStreams.TestSink/1.json",
        ex.at(0),
        {"test_id": secrets.token_hex(16)},
    )


async def cmd_send_example(args: argparse.Namespace, settings: Settings) -> int:
    body = jsontext.dumps(example_delivery()).encode()
    url = f"{args.url}{'&' if '?' in args.url else '?'}bodySHA256={signature.body_hash(body)}"
    headers = {"Content-Type": "application/json"}
    tokens = settings.auth_tokens()
    if tokens:
        headers[signature.SIGNATURE_HEADER] = signature.compute_signature(url, tokens[0])
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as response,
    ):
        text = await response.text()
    print(f"{response.status} {text}")
    if response.status != 200:
        print("the sink did not accept the delivery; see its answer above", file=sys.stderr)
        return 1
    return 0


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "send-example",
        help="POST a signed example delivery (one execution, two steps, the test event)",
    )
    parser.add_argument(
        "--url",
        default="http://127.0.0.1:8080/events",
        help="the sink's webhook URL (default http://127.0.0.1:8080/events)",
    )
    parser.set_defaults(handler=cmd_send_example)
