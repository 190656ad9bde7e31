"""A fake Event Streams REST API (Events v1), an aiohttp app built from Twilio's own spec,
``shared/specs/twilio_events_v1.yaml``.

    fake = FakeEvents()
    account = fake.add_account("acme", auth_token="...")
    server = await aiohttp_server(create_app(fake))
    base_url = str(server.make_url("")).rstrip("/")

Every route, its path parameters (their patterns), its query parameters (types, bounds)
and its form-encoded body (known names, required ones, enums) come from the spec; a
request the spec does not allow gets 400 as a Twilio JSON error ``{code, message,
more_info, status}``. Each account sees only its own sinks and subscriptions, and is
known by its credentials (HTTP basic: AccountSid:AuthToken or an API key). Faults:
``inject(status, count, endpoint=operationId, retry_after=...)``. ``log`` records every
request by its spec operationId.

``POST /v1/Sinks/{Sid}/Test`` answers at once and, when ``deliver_tests`` is set, then
POSTs the test event to the sink's destination the way Twilio does: real HTTP, signed
with the account's Auth Token (``X-Twilio-Signature`` over the URL with ``bodySHA256``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from tests.fakes.studio_api import _page as page_of
from tests.fakes.studio_data import Fault
from tests.support.twilio import signed_request

__all__ = ["FAKE_EVENTS", "EventsAccount", "FakeEvents", "create_app"]

SPEC_PATH = Path(__file__).resolve().parents[3] / "shared" / "specs" / "twilio_events_v1.yaml"
TEST_EVENT = "com.twilio.eventstreams.test-event"
STUDIO_SCHEMAS = {
    "com.twilio.studio.flow.execution.started": "Studio.FlowExecutionEvent",
    "com.twilio.studio.flow.execution.ended": "Studio.FlowExecutionEvent",
    "com.twilio.studio.flow.step.ended": "Studio.FlowStepEvent",
    TEST_EVENT: "EventStreams.TestSink",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


# -- the spec ------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    operation_id: str
    method: str
    path: str  # the spec's, e.g. /v1/Sinks/{Sid}
    path_params: dict[str, dict[str, Any]]
    query_params: dict[str, dict[str, Any]]
    form: dict[str, dict[str, Any]]
    required_form: frozenset[str]


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        node: Any = spec
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        return dict(node)
    return schema


def load_operations(path: Path = SPEC_PATH) -> list[Operation]:
    spec = yaml.safe_load(path.read_text())
    found = []
    for route, item in spec["paths"].items():
        for method, op in item.items():
            if method not in ("get", "post", "delete"):
                continue
            params = op.get("parameters", [])
            body = op.get("requestBody", {}).get("content", {})
            form_schema = body.get("application/x-www-form-urlencoded", {}).get("schema", {})
            found.append(
                Operation(
                    op["operationId"],
                    method.upper(),
                    route,
                    {p["name"]: p.get("schema", {}) for p in params if p["in"] == "path"},
                    {p["name"]: p.get("schema", {}) for p in params if p["in"] == "query"},
                    {
                        name: _resolve(spec, schema)
                        for name, schema in form_schema.get("properties", {}).items()
                    },
                    frozenset(form_schema.get("required", [])),
                )
            )
    return found


def _check_value(name: str, value: str, schema: dict[str, Any]) -> str | None:
    """Why ``value`` does not fit the parameter's schema, or None."""
    kind = schema.get("type")
    if kind == "integer":
        if not re.fullmatch(r"-?\d+", value):
            return f"{name} must be an integer"
        number = int(value)
        if "minimum" in schema and number < schema["minimum"]:
            return f"{name} must be at least {schema['minimum']}"
        if "maximum" in schema and number > schema["maximum"]:
            return f"{name} must be at most {schema['maximum']}"
    if kind == "boolean" and value not in ("true", "false", "True", "False"):
        return f"{name} must be true or false"
    if "pattern" in schema and not re.search(schema["pattern"], value):
        return f"{name} {value!r} does not match {schema['pattern']}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{name} must be one of {', '.join(schema['enum'])}"
    return None


def validate(op: Operation, request: web.Request, form: list[tuple[str, str]]) -> str | None:
    """Why the request breaks the spec's parameters, or None."""
    for name, schema in op.path_params.items():
        problem = _check_value(name, request.match_info.get(name, ""), schema)
        if problem:
            return problem
    for name, value in request.query.items():
        if name not in op.query_params:
            return f"unknown query parameter {name}"
        problem = _check_value(name, value, op.query_params[name])
        if problem:
            return problem
    names = [name for name, _ in form]
    for name, value in form:
        if name not in op.form:
            return f"unknown parameter {name}"
        schema = op.form[name]
        if schema.get("type") != "array" and names.count(name) > 1:
            return f"{name} given more than once"
        problem = _check_value(name, value, schema)
        if problem:
            return problem
    missing = sorted(op.required_form - set(names))
    if missing:
        return f"missing required parameter {missing[0]}"
    return None


# -- the state -----------------------------------------------------------------------


@dataclass
class EventsAccount:
    sid: str
    auth_token: str
    api_key: tuple[str, str] | None = None  # (SK..., secret)
    sinks: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Logged:
    endpoint: str | None
    method: str
    path: str
    account: str | None
    form: list[tuple[str, str]]
    status: int = 0
    answer: Any = None  # the JSON body answered
    at: float = field(default_factory=time.monotonic)


@dataclass
class Delivery:
    sink_sid: str
    url: str
    test_id: str
    status: int | None
    error: str = ""


class FakeEvents:
    """Accounts, their Event Streams objects, the event types' schemas, and the knobs."""

    def __init__(self) -> None:
        self.accounts: dict[str, EventsAccount] = {}
        self.schemas: dict[str, list[int]] = {
            "Studio.FlowExecutionEvent": [1, 2],
            "Studio.FlowStepEvent": [1],
            "EventStreams.TestSink": [1],
        }
        self.types: dict[str, str] = dict(STUDIO_SCHEMAS)
        self.faults: list[Fault] = []
        self.log: list[Logged] = []
        self.deliver_tests = False
        self.new_sink_status = "active"
        self.deliveries: list[Delivery] = []
        self.tests: dict[str, list[str]] = {}  # sink SID: test_ids sent
        self._tasks: set[asyncio.Task[None]] = set()

    def add_account(
        self, auth_token: str, *, sid: str | None = None, api_key: tuple[str, str] | None = None
    ) -> EventsAccount:
        account = EventsAccount(sid or _sid("AC"), auth_token, api_key)
        self.accounts[account.sid] = account
        return account

    def add_sink(
        self,
        account: EventsAccount,
        destination: str,
        *,
        method: str = "POST",
        batch_events: bool = True,
        status: str = "active",
        sink_type: str = "webhook",
        description: str = "made in the Console",
    ) -> str:
        """A sink made without studio-sink (e.g. in the Console)."""
        sid = _sid("DG")
        account.sinks[sid] = {
            "sid": sid,
            "description": description,
            "sink_type": sink_type,
            "status": status,
            "sink_configuration": {
                "destination": destination,
                "method": method,
                "batch_events": batch_events,
            },
            "date_created": _now(),
            "date_updated": _now(),
        }
        return sid

    def add_subscription(self, account: EventsAccount, sink_sid: str, types: dict[str, int]) -> str:
        sid = _sid("DF")
        account.subscriptions[sid] = {
            "sid": sid,
            "sink_sid": sink_sid,
            "description": "made in the Console",
            "types": dict(types),
            "date_created": _now(),
            "date_updated": _now(),
        }
        return sid

    def inject(
        self,
        status: int,
        count: int = 1,
        *,
        endpoint: str | None = None,
        retry_after: str | float | None = None,
    ) -> None:
        header = None if retry_after is None else str(retry_after)
        self.faults.extend(Fault(status, header, endpoint) for _ in range(count))

    def take_fault(self, endpoint: str | None) -> Fault | None:
        for fault in self.faults:
            if fault.endpoint is None or fault.endpoint == endpoint:
                self.faults.remove(fault)
                return fault
        return None

    def calls(self, *endpoints: str) -> list[Logged]:
        return [entry for entry in self.log if entry.endpoint in endpoints]

    def changes(self) -> list[Logged]:
        """Every request that created or changed something (a test is no change)."""
        return [
            e
            for e in self.log
            if e.method in ("POST", "DELETE")
            and e.endpoint not in ("CreateSinkTest", None)
            and 200 <= e.status < 300
        ]

    def account_of(self, request: web.Request) -> EventsAccount | None:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        try:
            decoded = base64.b64decode(encoded, validate=True).decode()
        except ValueError:
            return None
        username, _, password = decoded.partition(":")
        if scheme.lower() != "basic":
            return None
        for account in self.accounts.values():
            if (username, password) == (account.sid, account.auth_token):
                return account
            if account.api_key is not None and (username, password) == account.api_key:
                return account
        return None

    async def settle(self) -> None:
        """Wait for the test deliveries under way."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def deliver(self, account: EventsAccount, sink: dict[str, Any], test_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(account, sink, test_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, account: EventsAccount, sink: dict[str, Any], test_id: str) -> None:
        config = sink["sink_configuration"]
        event = {
            "specversion": "1.0",
            "type": TEST_EVENT,
            "source": "Sink",
            "id": account.sid,  # Twilio's test event: the Account SID, every time
            "dataschema": "https://events-schemas.twilio.com/EventStreams.TestSink/1.json",
            "datacontenttype": "application/json",
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "data": {"test_id": test_id},
        }
        body = json.dumps([event] if config.get("batch_events") else event).encode()
        url, headers = signed_request(config["destination"], body, account.auth_token)
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.post(url, data=body, headers=headers) as response,
            ):
                await response.read()
                self.deliveries.append(Delivery(sink["sid"], url, test_id, response.status))
        except aiohttp.ClientError as exc:
            self.deliveries.append(Delivery(sink["sid"], url, test_id, None, str(exc)))


FAKE_EVENTS = web.AppKey("fake_events", FakeEvents)
OPERATION = web.AppKey("operations", dict)
CALLER = web.RequestKey("fake_events_caller", EventsAccount)  # the account authenticated
FORM = web.RequestKey("fake_events_form", list)  # the form-encoded body, as pairs


# -- answers -------------------------------------------------------------------------


def twilio_error(
    status: int, message: str, *, headers: dict[str, str] | None = None
) -> web.Response:
    code = {400: 20001, 401: 20003, 404: 20404, 409: 20409}.get(status, 20000 + status)
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return web.json_response(body, status=status, headers=headers)


def _base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _sink_json(request: web.Request, sink: dict[str, Any]) -> dict[str, Any]:
    url = f"{_base(request)}/v1/Sinks/{sink['sid']}"
    return {
        "date_created": sink["date_created"],
        "date_updated": sink["date_updated"],
        "description": sink["description"],
        "sid": sink["sid"],
        "sink_configuration": sink["sink_configuration"],
        "sink_type": sink["sink_type"],
        "status": sink["status"],
        "url": url,
        "links": {"sink_test": f"{url}/Test", "sink_validate": f"{url}/Validate"},
    }


def _subscription_json(
    request: web.Request, account: EventsAccount, sub: dict[str, Any]
) -> dict[str, Any]:
    url = f"{_base(request)}/v1/Subscriptions/{sub['sid']}"
    return {
        "account_sid": account.sid,
        "sid": sub["sid"],
        "date_created": sub["date_created"],
        "date_updated": sub["date_updated"],
        "description": sub["description"],
        "sink_sid": sub["sink_sid"],
        "url": url,
        "links": {"subscribed_events": f"{url}/SubscribedEvents"},
    }


def _subscribed_json(
    request: web.Request, account: EventsAccount, sub: dict[str, Any], kind: str
) -> dict[str, Any]:
    return {
        "account_sid": account.sid,
        "type": kind,
        "schema_version": sub["types"][kind],
        "subscription_sid": sub["sid"],
        "url": f"{_base(request)}/v1/Subscriptions/{sub['sid']}/SubscribedEvents/{kind}",
    }


def _page(request: web.Request, key: str, items: list[dict[str, Any]]) -> web.Response:
    """One page, as the Studio fake pages (``PageSize``, ``Page``, ``PageToken``; an
    absolute ``next_page_url`` keeping the list's filters)."""
    kept = {k: v for k, v in request.query.items() if k not in ("PageSize", "Page", "PageToken")}
    return page_of(request, key, items, lambda item: item, kept)


# -- handlers, by operationId --------------------------------------------------------


def _fake(request: web.Request) -> FakeEvents:
    return request.app[FAKE_EVENTS]


def _account(request: web.Request) -> EventsAccount:
    return request[CALLER]


def _form(request: web.Request) -> list[tuple[str, str]]:
    form: list[tuple[str, str]] = request[FORM]
    return form


def _one(request: web.Request, name: str) -> str | None:
    return next((v for k, v in _form(request) if k == name), None)


def _find_sink(request: web.Request) -> dict[str, Any] | None:
    return _account(request).sinks.get(request.match_info["Sid"])


def _find_subscription(request: web.Request) -> dict[str, Any] | None:
    sid = request.match_info.get("SubscriptionSid") or request.match_info["Sid"]
    return _account(request).subscriptions.get(sid)


def _missing(request: web.Request) -> web.Response:
    return twilio_error(404, f"The requested resource {request.path} was not found")


async def list_sinks(request: web.Request) -> web.StreamResponse:
    sinks = list(_account(request).sinks.values())
    status = request.query.get("Status")
    if status:
        sinks = [s for s in sinks if s["status"] == status]
    return _page(request, "sinks", [_sink_json(request, s) for s in sinks])


async def create_sink(request: web.Request) -> web.StreamResponse:
    try:
        config = json.loads(_one(request, "SinkConfiguration") or "")
    except ValueError:
        return twilio_error(400, "SinkConfiguration must be JSON")
    if _one(request, "SinkType") == "webhook" and (
        not isinstance(config, dict)
        or not isinstance(config.get("destination"), str)
        or config.get("method") not in ("POST", "GET")
    ):
        return twilio_error(400, "a webhook SinkConfiguration needs destination and method")
    sid = _sid("DG")
    sink = {
        "sid": sid,
        "description": _one(request, "Description"),
        "sink_type": _one(request, "SinkType"),
        "status": _fake(request).new_sink_status,
        "sink_configuration": config,
        "date_created": _now(),
        "date_updated": _now(),
    }
    _account(request).sinks[sid] = sink
    return web.json_response(_sink_json(request, sink), status=201)


async def fetch_sink(request: web.Request) -> web.StreamResponse:
    sink = _find_sink(request)
    return web.json_response(_sink_json(request, sink)) if sink else _missing(request)


async def test_sink(request: web.Request) -> web.StreamResponse:
    sink = _find_sink(request)
    if sink is None:
        return _missing(request)
    fake = _fake(request)
    test_id = str(uuid.uuid4())
    fake.tests.setdefault(sink["sid"], []).append(test_id)
    if fake.deliver_tests:
        fake.deliver(_account(request), sink, test_id)
    return web.json_response({"result": "submitted"}, status=201)


async def validate_sink(request: web.Request) -> web.StreamResponse:
    sink = _find_sink(request)
    if sink is None:
        return _missing(request)
    if _one(request, "TestId") not in _fake(request).tests.get(sink["sid"], []):
        return twilio_error(400, "TestId is not a test event sent to this sink")
    sink["status"] = "active"
    return web.json_response({"result": "valid"}, status=201)


async def list_subscriptions(request: web.Request) -> web.StreamResponse:
    account = _account(request)
    subs = list(account.subscriptions.values())
    sink_sid = request.query.get("SinkSid")
    if sink_sid:
        subs = [s for s in subs if s["sink_sid"] == sink_sid]
    return _page(request, "subscriptions", [_subscription_json(request, account, s) for s in subs])


def _types(request: web.Request, given: list[str]) -> dict[str, int] | web.Response:
    fake, types = _fake(request), {}
    for text in given:
        try:
            item = json.loads(text)
            kind, version = item["type"], int(item.get("schema_version", 1))
        except (ValueError, KeyError, TypeError):
            return twilio_error(400, f"Types: {text!r} is not {{type, schema_version}} JSON")
        if kind not in fake.types or version not in fake.schemas[fake.types[kind]]:
            return twilio_error(400, f"Types: no event type {kind} at schema version {version}")
        types[kind] = version
    return types


async def create_subscription(request: web.Request) -> web.StreamResponse:
    account = _account(request)
    sink = account.sinks.get(_one(request, "SinkSid") or "")
    if sink is None:
        return twilio_error(400, "SinkSid: no such sink")
    if sink["status"] != "active":
        return twilio_error(400, "Sink must be active for the subscription to be created")
    types = _types(request, [v for k, v in _form(request) if k == "Types"])
    if isinstance(types, web.Response):
        return types
    sid = _fake(request).add_subscription(account, sink["sid"], types)
    sub = account.subscriptions[sid]
    sub["description"] = _one(request, "Description")
    return web.json_response(_subscription_json(request, account, sub), status=201)


async def list_subscribed_events(request: web.Request) -> web.StreamResponse:
    sub = _find_subscription(request)
    if sub is None:
        return _missing(request)
    account = _account(request)
    items = [_subscribed_json(request, account, sub, kind) for kind in sub["types"]]
    return _page(request, "types", items)


async def create_subscribed_event(request: web.Request) -> web.StreamResponse:
    sub = _find_subscription(request)
    if sub is None:
        return _missing(request)
    kind = _one(request, "Type") or ""
    if kind in sub["types"]:
        return twilio_error(409, f"{kind} is already subscribed")
    version = _one(request, "SchemaVersion") or "1"
    types = _types(request, [json.dumps({"type": kind, "schema_version": int(version)})])
    if isinstance(types, web.Response):
        return types
    sub["types"].update(types)
    return web.json_response(_subscribed_json(request, _account(request), sub, kind), status=201)


async def update_subscribed_event(request: web.Request) -> web.StreamResponse:
    sub = _find_subscription(request)
    kind = request.match_info["Type"]
    if sub is None or kind not in sub["types"]:
        return _missing(request)
    version = _one(request, "SchemaVersion") or str(sub["types"][kind])
    types = _types(request, [json.dumps({"type": kind, "schema_version": int(version)})])
    if isinstance(types, web.Response):
        return types
    sub["types"].update(types)
    return web.json_response(_subscribed_json(request, _account(request), sub, kind))


async def fetch_type(request: web.Request) -> web.StreamResponse:
    kind = request.match_info["Type"]
    schema_id = _fake(request).types.get(kind)
    if schema_id is None:
        return _missing(request)
    return web.json_response(
        {
            "date_created": "2020-08-13T13:28:20Z",
            "date_updated": "2020-08-13T13:28:20Z",
            "type": kind,
            "schema_id": schema_id,
            "status": "available",
            "documentation_url": None,
            "description": kind,
            "url": f"{_base(request)}/v1/Types/{kind}",
            "links": {"schema": f"{_base(request)}/v1/Schemas/{schema_id}/Versions"},
        }
    )


async def list_schema_versions(request: web.Request) -> web.StreamResponse:
    schema_id = request.match_info["Id"]
    versions = _fake(request).schemas.get(schema_id)
    if versions is None:
        return _missing(request)
    base = _base(request)
    items = [
        {
            "id": schema_id,
            "schema_version": version,
            "date_created": "2020-07-30T20:00:00Z",
            "url": f"{base}/v1/Schemas/{schema_id}/Versions/{version}",
            "raw": f"https://events-schemas.twilio.com/{schema_id}/{version}",
        }
        for version in versions
    ]
    return _page(request, "schema_versions", items)


HANDLERS: dict[str, Handler] = {
    "ListSink": list_sinks,
    "CreateSink": create_sink,
    "FetchSink": fetch_sink,
    "CreateSinkTest": test_sink,
    "CreateSinkValidate": validate_sink,
    "ListSubscription": list_subscriptions,
    "CreateSubscription": create_subscription,
    "ListSubscribedEvent": list_subscribed_events,
    "CreateSubscribedEvent": create_subscribed_event,
    "UpdateSubscribedEvent": update_subscribed_event,
    "FetchEventType": fetch_type,
    "ListSchemaVersion": list_schema_versions,
}


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    fake = _fake(request)
    resource = request.match_info.route.resource
    name = resource.name if resource is not None else None
    op: Operation | None = request.app[OPERATION].get(name) if name else None
    form = list((await request.post()).items()) if request.method == "POST" else []
    form = [(k, v) for k, v in form if isinstance(v, str)]
    account = fake.account_of(request)
    entry = Logged(name, request.method, request.path, account.sid if account else None, form)
    fake.log.append(entry)
    response = await _answer(request, handler, fake, op, account, form)
    entry.status = response.status
    if isinstance(response, web.Response) and isinstance(response.body, bytes):
        entry.answer = json.loads(response.body) if response.body else None
    return response


async def _answer(
    request: web.Request,
    handler: Handler,
    fake: FakeEvents,
    op: Operation | None,
    account: EventsAccount | None,
    form: list[tuple[str, str]],
) -> web.StreamResponse:
    if account is None:
        return twilio_error(
            401, "Authenticate", headers={"WWW-Authenticate": 'Basic realm="Twilio API"'}
        )
    if op is None:
        return _missing(request)
    fault = fake.take_fault(op.operation_id)
    if fault is not None:
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
        return twilio_error(fault.status, f"injected {fault.status}", headers=headers)
    problem = validate(op, request, form)
    if problem is not None:
        return twilio_error(400, f"Invalid parameter: {problem}")
    request[CALLER], request[FORM] = account, form
    return await handler(request)


def create_app(fake: FakeEvents) -> web.Application:
    app = web.Application(middlewares=[_middleware])
    app[FAKE_EVENTS] = fake
    operations = {}
    for op in load_operations():
        if op.operation_id not in HANDLERS:
            continue
        operations[op.operation_id] = op
        app.router.add_route(op.method, op.path, HANDLERS[op.operation_id], name=op.operation_id)
    app[OPERATION] = operations

    async def settle(_app: web.Application) -> AsyncIterator[None]:
        yield
        await fake.settle()

    app.cleanup_ctx.append(settle)
    return app
