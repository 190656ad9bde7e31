"""A fake Studio v2 REST API (aiohttp app) shaped after shared/specs/twilio_studio_v2.yaml.

    fake = FakeStudio()
    executions = fake.populate(executions=120, steps=3)
    server = await aiohttp_server(create_app(fake))
    base_url = str(server.make_url("")).rstrip("/")
    username, password = fake.credentials

Paths, field names, paging ``meta`` and dates (``2019-05-10T20:51:29Z``) follow the
spec; errors are Twilio JSON ``{code, message, more_info, status}``. Lists accept
``PageSize`` (1..1000, default 50), ``Page`` and ``PageToken``; ``next_page_url`` is
absolute, built from the request's host. Executions filter on ``DateCreatedFrom``
(inclusive), ``DateCreatedTo`` (exclusive) and ``status``, newest first; steps list
oldest first. As in the spec's examples, the execution and step resources carry
``context: {}``; the real context is served by the ``/Context`` endpoints.

Route names double as endpoint labels in ``fake.log``: flows, flow, revisions,
flow_revision, executions, execution, execution_context, steps, step, step_context.

Credentials are per account: a request is answered only with credentials some account
accepts right now (else 401, Twilio's 20003), and a resource (a flow, its revisions,
executions and steps) only to its own account; valid credentials of another account get
401 as well, recorded as ``wrong_account`` in the log. ``GET /v2/Flows`` lists the caller's
flows only.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

from aiohttp import web

from .studio_data import (
    Execution,
    FakeStudio,
    Flow,
    FlowRevision,
    RequestRecord,
    Step,
)

__all__ = ["FAKE_STUDIO", "FakeStudio", "create_app"]

FAKE_STUDIO = web.AppKey("fake_studio", FakeStudio)
CALLER = web.RequestKey("fake_studio_caller", str)  # the account the credentials authenticate
T = TypeVar("T")
Handler = Callable[[web.Request], Any]

_MESSAGES = {
    400: "Invalid parameter",
    401: "Authenticate",
    403: "Forbidden",
    404: "The requested resource was not found",
    429: "Too Many Requests",
    500: "An internal server error has occurred",
    503: "Service Unavailable",
}


def create_app(fake: FakeStudio) -> web.Application:
    app = web.Application(middlewares=[_middleware])
    app[FAKE_STUDIO] = fake
    add = app.router.add_get
    execution = "/v2/Flows/{FlowSid}/Executions/{ExecutionSid}"
    add("/v2/Flows", _list_flows, name="flows")
    add("/v2/Flows/{Sid}", _flow, name="flow")
    add("/v2/Flows/{Sid}/Revisions", _list_revisions, name="revisions")
    add("/v2/Flows/{Sid}/Revisions/{Revision}", _revision, name="flow_revision")
    add("/v2/Flows/{FlowSid}/Executions", _list_executions, name="executions")
    add(execution, _execution, name="execution")
    add(execution + "/Context", _execution_context, name="execution_context")
    add(execution + "/Steps", _list_steps, name="steps")
    add(execution + "/Steps/{StepSid}", _step, name="step")
    add(execution + "/Steps/{StepSid}/Context", _step_context, name="step_context")
    return app


# -- errors, auth, faults, log ---------------------------------------------------


def twilio_error(
    status: int, message: str | None = None, *, headers: dict[str, str] | None = None
) -> web.Response:
    code = {400: 20001, 401: 20003}.get(status, 20000 + status)  # Twilio: 20003 Authenticate
    body = {
        "code": code,
        "message": message or _MESSAGES.get(status, "Error"),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return web.json_response(body, status=status, headers=headers)


def _not_found(request: web.Request) -> web.Response:
    return twilio_error(404, f"The requested resource {request.path} was not found")


def _caller(request: web.Request, fake: FakeStudio) -> tuple[str | None, str | None]:
    """(the account the credentials authenticate or None, the basic-auth username)."""
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    try:
        decoded = base64.b64decode(encoded, validate=True).decode()
    except ValueError:
        return None, None
    username, _, password = decoded.partition(":")
    if scheme.lower() != "basic":
        return None, username
    return fake.account_of(username, password), username


def _owner(request: web.Request, fake: FakeStudio) -> str | None:
    """The account of the flow the path names (None: no flow, or one nobody has)."""
    flow_sid = request.match_info.get("FlowSid", request.match_info.get("Sid"))
    flow = fake.flows.get(flow_sid) if flow_sid is not None else None
    return flow.account_sid if flow is not None else None


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    fake = request.app[FAKE_STUDIO]
    resource = request.match_info.route.resource
    endpoint = resource.name if resource is not None else None
    record = RequestRecord(
        endpoint, request.method, request.path, request.query_string, time.monotonic()
    )
    fake.log.append(record)
    if fake.on_request is not None:
        fake.on_request(record)  # e.g. Twilio promotes a new token at this very moment
    fake.in_flight += 1
    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
    try:
        response = await _answer(request, handler, fake, endpoint, record)
    finally:
        fake.in_flight -= 1
        record.finished = time.monotonic()
    record.status = response.status
    return response


async def _answer(
    request: web.Request,
    handler: Handler,
    fake: FakeStudio,
    endpoint: str | None,
    record: RequestRecord,
) -> web.StreamResponse:
    if fake.latency:
        await asyncio.sleep(fake.latency)
    account, username = _caller(request, fake)
    record.account_sid, record.username = account, username
    if account is None:
        return twilio_error(401, headers={"WWW-Authenticate": 'Basic realm="Twilio API"'})
    owner = _owner(request, fake)
    if owner is not None and owner != account:
        record.wrong_account = True
        return twilio_error(401, headers={"WWW-Authenticate": 'Basic realm="Twilio API"'})
    request[CALLER] = account
    if endpoint is None:
        return _not_found(request)
    fault = fake.take_fault(endpoint)
    if fault is not None:
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
        return twilio_error(fault.status, headers=headers)
    if fake.gone.intersection(request.match_info.values()):
        return _not_found(request)
    response: web.StreamResponse = await handler(request)
    return response


# -- shapes ----------------------------------------------------------------------


def _date(value: datetime | None) -> str | None:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def _base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def execution_json(fake: FakeStudio, e: Execution, base: str) -> dict[str, Any]:
    url = f"{base}/v2/Flows/{e.flow_sid}/Executions/{e.sid}"
    body: dict[str, Any] = {
        "sid": e.sid,
        "account_sid": e.account_sid,
        "flow_sid": e.flow_sid,
        "contact_channel_address": e.contact_channel_address,
        "contact_sid": e.contact_sid,
        "flow_version": e.flow_version,
        "context": {},
        "status": e.status,
        "date_created": _date(e.date_created),
        "date_updated": _date(e.date_updated),
        "initiated_by": e.initiated_by,
        "url": url,
        "links": {"steps": f"{url}/Steps", "execution_context": f"{url}/Context"},
    }
    if fake.legacy_shape:
        for name in ("contact_sid", "flow_version", "initiated_by"):
            del body[name]
    return body


def step_json(fake: FakeStudio, s: Step, base: str) -> dict[str, Any]:
    url = f"{base}/v2/Flows/{s.flow_sid}/Executions/{s.execution_sid}/Steps/{s.sid}"
    body: dict[str, Any] = {
        "sid": s.sid,
        "account_sid": s.account_sid,
        "flow_sid": s.flow_sid,
        "execution_sid": s.execution_sid,
        "parent_step_sid": s.parent_step_sid,
        "name": s.name,
        "context": {},
        "transitioned_from": s.transitioned_from,
        "transitioned_to": s.transitioned_to,
        "type": s.type,
        "date_created": _date(s.date_created),
        "date_updated": _date(s.date_updated),
        "url": url,
        "links": {"step_context": f"{url}/Context"},
    }
    if fake.legacy_shape:
        del body["parent_step_sid"], body["type"]
    return body


def revision_json(flow: Flow, rev: FlowRevision, base: str) -> dict[str, Any]:
    return {
        "sid": flow.sid,
        "account_sid": flow.account_sid,
        "author_sid": flow.author_sid,
        "friendly_name": rev.friendly_name,
        "definition": rev.definition,
        "status": rev.status,
        "revision": rev.revision,
        "commit_message": rev.commit_message,
        "valid": rev.valid,
        "errors": rev.errors,
        "date_created": _date(rev.date_created),
        "date_updated": _date(rev.date_updated),
        "url": f"{base}/v2/Flows/{flow.sid}/Revisions/{rev.revision}",
    }


def flow_json(flow: Flow, base: str) -> dict[str, Any]:
    url = f"{base}/v2/Flows/{flow.sid}"
    body = revision_json(flow, flow.latest, base)
    body.update(
        date_created=_date(flow.revisions[0].date_created),
        date_updated=_date(flow.latest.date_created) if len(flow.revisions) > 1 else None,
        warnings=flow.latest.warnings,
        webhook_url=f"https://webhooks.twilio.com/v1/Accounts/{flow.account_sid}/Flows/{flow.sid}",
        url=url,
        links={
            "test_users": f"{url}/TestUsers",
            "revisions": f"{url}/Revisions",
            "executions": f"{url}/Executions",
        },
    )
    return body


# -- paging ----------------------------------------------------------------------


def _page(
    request: web.Request,
    key: str,
    items: Sequence[T],
    shape: Callable[[T], dict[str, Any]],
    filters: dict[str, str] | None = None,
) -> web.Response:
    query = request.query
    try:
        page_size = int(query.get("PageSize", "50"))
        page = int(query.get("Page", "0"))
        token = query.get("PageToken")
        offset = int(token[2:]) if token else page * page_size
        if token and not token.startswith("PT"):
            raise ValueError(token)
    except ValueError:
        return twilio_error(400, "Invalid PageSize, Page or PageToken")
    if not 1 <= page_size <= 1000 or page < 0 or offset < 0:
        return twilio_error(400, "PageSize must be between 1 and 1000")

    def link(page_no: int, at: int | None) -> str:
        params: dict[str, str | int] = {**(filters or {}), "PageSize": page_size, "Page": page_no}
        if at is not None:
            params["PageToken"] = f"PT{at}"
        return f"{_base(request)}{request.path}?{urlencode(params)}"

    end = offset + page_size
    meta = {
        "page": page,
        "page_size": page_size,
        "first_page_url": link(0, None),
        "previous_page_url": link(page - 1, max(0, offset - page_size)) if page > 0 else None,
        "url": link(page, offset if token else None),
        "next_page_url": link(page + 1, end) if end < len(items) else None,
        "key": key,
    }
    return web.json_response({key: [shape(item) for item in items[offset:end]], "meta": meta})


def _parse_date(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


# -- handlers --------------------------------------------------------------------


def _fake(request: web.Request) -> FakeStudio:
    return request.app[FAKE_STUDIO]


def _find_execution(request: web.Request) -> Execution | None:
    fake = _fake(request)
    e = fake.executions.get(request.match_info["ExecutionSid"])
    return e if e is not None and e.flow_sid == request.match_info["FlowSid"] else None


def _find_step(request: web.Request) -> Step | None:
    s = _fake(request).steps.get(request.match_info["StepSid"])
    e = _find_execution(request)
    return s if s is not None and e is not None and s.execution_sid == e.sid else None


async def _list_flows(request: web.Request) -> web.Response:
    base = _base(request)
    mine = [f for f in _fake(request).flows.values() if f.account_sid == request[CALLER]]
    return _page(request, "flows", mine, lambda f: flow_json(f, base))


async def _flow(request: web.Request) -> web.Response:
    flow = _fake(request).flows.get(request.match_info["Sid"])
    return web.json_response(flow_json(flow, _base(request))) if flow else _not_found(request)


async def _list_revisions(request: web.Request) -> web.Response:
    flow = _fake(request).flows.get(request.match_info["Sid"])
    if flow is None:
        return _not_found(request)
    base = _base(request)
    revs = flow.revisions[::-1]
    return _page(request, "revisions", revs, lambda r: revision_json(flow, r, base))


async def _revision(request: web.Request) -> web.Response:
    flow = _fake(request).flows.get(request.match_info["Sid"])
    rev = flow.revision(request.match_info["Revision"]) if flow else None
    if flow is None or rev is None:
        return _not_found(request)
    return web.json_response(revision_json(flow, rev, _base(request)))


async def _list_executions(request: web.Request) -> web.Response:
    fake = _fake(request)
    flow_sid = request.match_info["FlowSid"]
    if flow_sid not in fake.flows:
        return _not_found(request)
    filters = {
        name: request.query[name]
        for name in ("status", "DateCreatedFrom", "DateCreatedTo")
        if name in request.query
    }
    try:
        since = _parse_date(filters["DateCreatedFrom"]) if "DateCreatedFrom" in filters else None
        until = _parse_date(filters["DateCreatedTo"]) if "DateCreatedTo" in filters else None
    except ValueError as exc:
        return twilio_error(400, f"Invalid DateCreatedFrom/DateCreatedTo: {exc}")
    found = [
        e
        for e in fake.executions.values()
        if e.flow_sid == flow_sid
        and (since is None or e.date_created >= since)
        and (until is None or e.date_created < until)
        and filters.get("status", e.status) == e.status
    ]
    found.sort(key=lambda e: (e.date_created, e.sid), reverse=True)
    base = _base(request)
    return _page(request, "executions", found, lambda e: execution_json(fake, e, base), filters)


async def _execution(request: web.Request) -> web.Response:
    e = _find_execution(request)
    if e is None:
        return _not_found(request)
    return web.json_response(execution_json(_fake(request), e, _base(request)))


async def _execution_context(request: web.Request) -> web.Response:
    e = _find_execution(request)
    if e is None:
        return _not_found(request)
    return web.json_response(
        {
            "account_sid": e.account_sid,
            "context": e.context,
            "execution_sid": e.sid,
            "flow_sid": e.flow_sid,
            "url": f"{_base(request)}{request.path}",
        }
    )


async def _list_steps(request: web.Request) -> web.Response:
    e = _find_execution(request)
    if e is None:
        return _not_found(request)
    fake, base = _fake(request), _base(request)
    return _page(request, "steps", e.steps, lambda s: step_json(fake, s, base))


async def _step(request: web.Request) -> web.Response:
    s = _find_step(request)
    if s is None:
        return _not_found(request)
    return web.json_response(step_json(_fake(request), s, _base(request)))


async def _step_context(request: web.Request) -> web.Response:
    s = _find_step(request)
    if s is None:
        return _not_found(request)
    return web.json_response(
        {
            "account_sid": s.account_sid,
            "context": s.context,
            "execution_sid": s.execution_sid,
            "flow_sid": s.flow_sid,
            "step_sid": s.sid,
            "url": f"{_base(request)}{request.path}",
        }
    )
