"""``studio-sink send-example``: POST a signed, Twilio-shaped delivery to a running sink."""

from __future__ import annotations

import argparse
import secrets
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from sink import jsontext
from sink.config import Settings
from sink.ingest import signature


def example_delivery(now: datetime | None = None) -> list[dict[str, Any]]:
    """One execution (started, two steps, ended) plus the sink test event, fresh SIDs."""
    t0 = (now or datetime.now(UTC)).replace(microsecond=0)
    account = "AC" + secrets.token_hex(16)
    flow = "FW" + secrets.token_hex(16)
    execution = "FN" + secrets.token_hex(16)
    source = f"/v2/Flows/{flow}/Executions/{execution}"

    def at(seconds: int) -> str:
        return (t0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")

    def envelope(kind: str, src: str, schema: str, when: str, data: Any) -> dict[str, Any]:
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

    execution_data = {
        "execution_sid": execution,
        "account_sid": account,
        "flow_sid": flow,
        "contact_channel_address": "+15017122661",
        "started_by": "Trigger",
        "flow_revision": 1,
        "date_created": at(0),
    }
    events = [
        envelope(
            "com.twilio.studio.flow.execution.started",
            source,
            "Studio.FlowExecutionEvent/2",
            at(0),
            {**execution_data, "status": "active", "date_updated": at(0)},
        )
    ]
    previous = "Trigger"
    for n, name in enumerate(("send_greeting", "gather_reply"), start=1):
        step = "FT" + secrets.token_hex(16)
        events.append(
            envelope(
                "com.twilio.studio.flow.step.ended",
                f"{source}/Steps/{step}",
                "Studio.FlowStepEvent/1",
                at(n),
                {
                    "account_sid": account,
                    "flow_sid": flow,
                    "execution_sid": execution,
                    "step_sid": step,
                    "parent_step_sid": None,
                    "name": name,
                    "transitioned_from": previous,
                    "transitioned_to": name,
                    "date_created": at(n),
                },
            )
        )
        previous = name
    events.append(
        envelope(
            "com.twilio.studio.flow.execution.ended",
            source,
            "Studio.FlowExecutionEvent/2",
            at(4),
            {
                **execution_data,
                "status": "ended",
                "ended_reason": "FLOW_END",
                "date_updated": at(4),
            },
        )
    )
    events.append(
        envelope(
            "com.twilio.eventstreams.test-event",
            "Sink",
            "EventStreams.TestSink/1.json",
            at(0),
            {"test_id": secrets.token_hex(16)},
        )
    )
    return events


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
