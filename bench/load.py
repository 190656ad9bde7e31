"""Twilio-like deliveries, built and signed before the clock starts.

A delivery is a JSON array of 50 Studio CloudEvents (executions started/ended and steps
ended, as Event Streams sends them), signed as Twilio signs: HMAC-SHA1 of the full URL
including ``bodySHA256``. About 2% of the events repeat one sent earlier (Twilio retries).
Bodies come from string templates rather than dicts: building a million events this way
takes a few seconds, so generating the load never competes with the sink for long.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

EVENTS_PER_DELIVERY = 50
STEPS_PER_EXECUTION = 8  # started + 8 steps + ended = 10 events per execution
DUPLICATE_SHARE = 0.02
ACCOUNT = "AC0a1b2c3d4e5f60718293a4b5c6d7e8f9"
TOKEN = "bench-auth-token-0123456789abcdef"
# The sink under load: checks the signatures these deliveries carry, logs warnings only.
SINK_ENV = {"SINK_TWILIO_AUTH_TOKEN": TOKEN, "SINK_LOG_LEVEL": "warning"}

_EXECUTION = (
    '{"specversion":"1.0","type":"com.twilio.studio.flow.execution.%(kind)s",'
    '"source":"/v2/Flows/%(flow)s/Executions/%(execution)s","id":"%(id)s",'
    '"dataschema":"https://events-schemas.twilio.com/Studio.FlowExecutionEvent/2",'
    '"datacontenttype":"application/json","time":"%(time)s",'
    '"data":{"execution_sid":"%(execution)s","account_sid":"' + ACCOUNT + '",'
    '"flow_sid":"%(flow)s","contact_channel_address":"+15017122661",'
    '"status":"%(status)s","started_by":"Trigger","flow_revision":3,'
    '"date_created":"%(created)s","date_updated":"%(time)s"%(extra)s}}'
)
_STEP = (
    '{"specversion":"1.0","type":"com.twilio.studio.flow.step.ended",'
    '"source":"/v2/Flows/%(flow)s/Executions/%(execution)s/Steps/%(step)s","id":"%(id)s",'
    '"dataschema":"https://events-schemas.twilio.com/Studio.FlowStepEvent/1",'
    '"datacontenttype":"application/json","time":"%(time)s",'
    '"data":{"account_sid":"' + ACCOUNT + '","flow_sid":"%(flow)s",'
    '"execution_sid":"%(execution)s","step_sid":"%(step)s","parent_step_sid":null,'
    '"name":"%(name)s","transitioned_from":"%(came_from)s","transitioned_to":"%(name)s",'
    '"date_created":"%(time)s"}}'
)


@dataclass(frozen=True, slots=True)
class Delivery:
    path_qs: str  # /events?bodySHA256=...
    body: bytes
    signature: str
    events: int


class EventFactory:
    """Unique Studio events from a seed: the same seed gives the same events."""

    def __init__(self, seed: int, flows: int = 20) -> None:
        self._rng = random.Random(seed)
        self._flows = [self._sid("FW") for _ in range(flows)]
        self._t0 = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)
        self._sent: list[str] = []

    def _sid(self, prefix: str) -> str:
        return prefix + self._rng.getrandbits(128).to_bytes(16, "big").hex()

    def _time(self, seconds: int) -> str:
        return (self._t0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def execution(self) -> list[str]:
        """The events of one execution: started, steps, ended."""
        flow = self._rng.choice(self._flows)
        execution = self._sid("FN")
        start = self._rng.randrange(86_400)
        created = self._time(start)
        common = {"flow": flow, "execution": execution, "created": created}
        events = [
            _EXECUTION
            % {
                **common,
                "kind": "started",
                "id": self._sid("EZ"),
                "time": created,
                "status": "active",
                "extra": "",
            }
        ]
        came_from = "Trigger"
        for n in range(STEPS_PER_EXECUTION):
            name = f"widget_{n}"
            events.append(
                _STEP
                % {
                    **common,
                    "step": self._sid("FT"),
                    "id": self._sid("EZ"),
                    "time": self._time(start + n + 1),
                    "name": name,
                    "came_from": came_from,
                }
            )
            came_from = name
        events.append(
            _EXECUTION
            % {
                **common,
                "kind": "ended",
                "id": self._sid("EZ"),
                "time": self._time(start + STEPS_PER_EXECUTION + 2),
                "status": "ended",
                "extra": ',"ended_reason":"FLOW_END"',
            }
        )
        return events

    def events(self, count: int) -> list[str]:
        """``count`` events, about 2% of them repeats of events returned earlier."""
        out: list[str] = []
        fresh: list[str] = []
        while len(out) < count:
            if self._sent and self._rng.random() < DUPLICATE_SHARE:
                out.append(self._rng.choice(self._sent))
                continue
            if not fresh:
                fresh = self.execution()
            event = fresh.pop(0)
            out.append(event)
            self._sent.append(event)
            if len(self._sent) > 5000:
                del self._sent[:2500]
        return out


def sign(url: str, token: str = TOKEN) -> str:
    digest = hmac.new(token.encode(), url.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def deliveries(factory: EventFactory, count: int, base_url: str) -> list[Delivery]:
    """``count`` signed deliveries of 50 events for POST ``{base_url}/events``."""
    out = []
    for _ in range(count):
        body = ("[" + ",".join(factory.events(EVENTS_PER_DELIVERY)) + "]").encode()
        path_qs = f"/events?bodySHA256={hashlib.sha256(body).hexdigest()}"
        out.append(Delivery(path_qs, body, sign(base_url + path_qs), EVENTS_PER_DELIVERY))
    return out


def bodies(factory: EventFactory, count: int) -> list[bytes]:
    """Unsigned bodies (for the baselines, which skip HTTP)."""
    return [
        ("[" + ",".join(factory.events(EVENTS_PER_DELIVERY)) + "]").encode() for _ in range(count)
    ]
