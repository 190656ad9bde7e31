"""Admin HTTP endpoints: ``POST /backfill`` and ``GET /backfill/{id}``.

``POST /backfill`` takes an optional ``account_sid``, as ``studio-sink backfill --account``
does: the account whose credentials fetch what the stored rows do not place. Without one,
with several accounts configured, an item no stored row places fails saying to name it.

Bearer auth with ``SINK_ADMIN_TOKEN`` (compared in constant time); a token in the query
string is refused, since URLs end up in logs. Without a configured token the endpoints
answer 404 and say how to enable them.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web

from sink.backfill import queue as q
from sink.db.pool import CONNECTION_ERRORS, is_transient, unavailable
from sink.ingest import redact
from sink.maintenance import privacy
from sink.twilio import is_sid, parse_timestamp, sid_rule
from sink.web.keys import ACCOUNTS, BACKFILL, POOL, SETTINGS
from sink.web.responses import error_response

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_EXECUTION_SIDS = 10_000
_QUERY_TOKENS = frozenset({"token", "access_token", "admin_token", "auth", "authorization"})
_DISABLED = "admin endpoints are disabled: set SINK_ADMIN_TOKEN"


def _unauthorized(message: str) -> web.Response:
    response = error_response(401, "unauthorized", message)
    response.headers["WWW-Authenticate"] = 'Bearer realm="studio-sink admin"'
    return response


def _authorize(request: web.Request) -> web.Response | None:
    """None when the request may proceed, else the answer to give."""
    token = request.app[SETTINGS].admin_token
    if token is None:
        return error_response(404, "admin_disabled", _DISABLED)
    if _QUERY_TOKENS.intersection(k.lower() for k in request.query):
        return _unauthorized(
            "a token in the query string is refused (URLs are logged); send it as"
            " 'Authorization: Bearer <SINK_ADMIN_TOKEN>'"
        )
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not given.strip():
        return _unauthorized("send 'Authorization: Bearer <SINK_ADMIN_TOKEN>'")
    if not hmac.compare_digest(given.strip().encode(), expected):
        return _unauthorized("the bearer token is not SINK_ADMIN_TOKEN")
    return None


def _guarded(handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        refused = _authorize(request)
        if refused is not None:
            return refused
        try:
            return await handler(request)
        except CONNECTION_ERRORS as exc:
            return error_response(503, "database_unavailable", str(unavailable(exc)), retry_after=2)
        except asyncpg.PostgresError as exc:
            if is_transient(exc):
                return error_response(
                    503, "database_unavailable", str(unavailable(exc)), retry_after=2
                )
            raise

    return guarded


class _BadRequest(ValueError):
    pass


def _when(body: dict[str, Any], name: str, default: datetime | None) -> datetime:
    value = body.get(name)
    if value is None:
        if default is None:
            raise _BadRequest(f"'{name}' is required (ISO 8601, e.g. 2026-11-01T00:00:00Z)")
        return default
    if not isinstance(value, str):
        raise _BadRequest(f"'{name}' must be an ISO 8601 string")
    try:
        return parse_timestamp(value, assume_utc=True)
    except ValueError:
        raise _BadRequest(
            f"'{name}' is not ISO 8601: {value[:40]!r} (e.g. 2026-11-01T00:00:00Z)"
        ) from None


def _account(body: dict[str, Any]) -> str | None:
    """The optional ``account_sid``; never echoed back (a pasted token may sit there)."""
    value = body.get("account_sid")
    if value is None:
        return None
    if not is_sid(value, "AC"):
        raise _BadRequest(
            f"'account_sid' is not an Account SID: {sid_rule('AC')}; give the account whose"
            " credentials fetch the items, or leave 'account_sid' out"
        )
    account: str = value
    return account


def _parse(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _BadRequest("the body must be a JSON object")
    account = _account(body)
    sids = body.get("execution_sids")
    if sids is not None and body.get("flow_sid") is not None:
        raise _BadRequest("give either 'execution_sids' or 'flow_sid', not both")
    if sids is not None:
        if not isinstance(sids, list) or not sids or not all(isinstance(s, str) for s in sids):
            raise _BadRequest("'execution_sids' must be a non-empty list of Execution SIDs")
        if len(sids) > MAX_EXECUTION_SIDS:
            raise _BadRequest(f"at most {MAX_EXECUTION_SIDS} execution SIDs per request")
        return {"kind": "executions", "execution_sids": sids, "account_sid": account}
    flow = body.get("flow_sid")
    if not isinstance(flow, str):
        raise _BadRequest(
            "give 'execution_sids': [...] or 'flow_sid' with 'since' (and optionally 'until')"
        )
    since = _when(body, "since", None)
    until = _when(body, "until", datetime.now(UTC))
    return {
        "kind": "flow",
        "flow_sid": flow,
        "since": since,
        "until": until,
        "account_sid": account,
    }


async def handle_post_backfill(request: web.Request) -> web.Response:
    try:
        spec = _parse(await request.json())
    except ValueError as exc:  # includes JSON errors
        message = str(exc) if isinstance(exc, _BadRequest) else "the body is not valid JSON"
        return error_response(400, "bad_request", message)
    kind = spec.pop("kind")
    try:
        async with request.app[POOL].acquire() as conn:
            rid = await q.enqueue(conn, kind, "http", **spec)
    except asyncpg.InvalidParameterValueError as exc:
        hint = f" ({exc.hint})" if getattr(exc, "hint", None) else ""
        return error_response(400, "bad_request", f"{exc}{hint}")
    account = spec["account_sid"]
    log.info(
        "backfill request %d queued over HTTP (%s%s)",
        rid,
        kind,
        f", account {account}" if account else "",
    )
    body: dict[str, Any] = {"request_id": rid, "status": "queued", "url": f"/backfill/{rid}"}
    notes: list[str] = []
    service = request.app[BACKFILL]
    if not service.running:
        notes.append(
            f"this process runs no backfill workers ({service.unavailable_reason}); the request"
            " waits for a process that does, or for `studio-sink backfill`"
        )
    if account is not None and not request.app[ACCOUNTS].current.rest_credentials(account):
        notes.append(
            f"account {account} has no REST credentials in this sink, so its items wait"
            " (waiting_for_credentials): add its table to SINK_ACCOUNTS_FILE with an API key"
            " (api_key_sid, api_key_secret) or auth_tokens, then reload (SIGHUP)"
        )
    if notes:
        body["note"] = "; ".join(notes)
    return web.json_response(body, status=202)


async def handle_get_backfill(request: web.Request) -> web.Response:
    try:
        rid = int(request.match_info["request_id"])
    except ValueError:
        return error_response(404, "not_found", "backfill request ids are integers")
    async with request.app[POOL].acquire() as conn:
        found = await q.progress(conn, rid, failures=20)
    if found is None:
        return error_response(404, "not_found", f"no backfill request {rid}")
    body: dict[str, Any] = {
        "request_id": found.request_id,
        "kind": found.kind,
        "status": found.status,  # queued, running, waiting_for_credentials or finished
        "account_sid": found.account_sid,
        "flow_sid": found.flow_sid,
        "since": _iso(found.since),
        "until": _iso(found.until),
        "items_total": found.items_total,
        "items_done": found.items_done,
        "items_failed": found.items_failed,
        "items_gone": found.items_gone,
        "items_waiting": found.items_waiting,
        "created_at": _iso(found.created_at),
        "finished_at": _iso(found.finished_at),
        "requested_by": found.requested_by,
        "error": found.error,
        "failures": [
            {"sid": sid, "state": state, "reason": reason} for sid, state, reason in found.failures
        ],
    }
    if found.items_waiting:
        body["note"] = (
            f"{found.items_waiting} items wait for their account's credentials (each one's"
            " reason, in 'failures', names the account): they proceed once its credentials"
            " work: fix them in SINK_ACCOUNTS_FILE or the SINK_TWILIO_* settings, then reload"
            " (SIGHUP) or restart"
        )
    return web.json_response(body)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# --- privacy: POST /privacy/forget, POST /privacy/contact-key --------------------------
# The contact travels in the JSON body, never in the URL: URLs end up in proxies' logs.

ADMIN_LABEL = "admin-token"  # who asked, in studio.erasures.requested_by


def _contact_or_execution(body: Any) -> tuple[str | None, str | None, bool]:
    if not isinstance(body, dict):
        raise _BadRequest("the body must be a JSON object")
    contact, execution = body.get("contact"), body.get("execution_sid")
    if (contact is None) == (execution is None):
        raise _BadRequest('give {"contact": "+1..."} or {"execution_sid": "FN..."}')
    if contact is not None and (not isinstance(contact, str) or not contact.strip()):
        raise _BadRequest("'contact' must be a non-empty string, e.g. \"+15551234567\"")
    if execution is not None and not is_sid(execution, "FN"):
        raise _BadRequest(f"'execution_sid' is not an Execution SID: {sid_rule('FN')}")
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise _BadRequest("'dry_run' must be true or false")
    return contact, execution, dry_run


async def handle_forget(request: web.Request) -> web.Response:
    try:
        contact, execution, dry_run = _contact_or_execution(await request.json())
    except ValueError as exc:
        message = str(exc) if isinstance(exc, _BadRequest) else "the body is not valid JSON"
        return error_response(400, "bad_request", message)
    policy = redact.policy(request.app[SETTINGS])
    async with request.app[POOL].acquire() as conn:
        if execution is not None:
            report = await privacy.forget_execution(
                conn, execution, policy, requested_by=ADMIN_LABEL, dry_run=dry_run
            )
        else:
            assert contact is not None
            report = await privacy.forget_contact(
                conn, contact, policy, requested_by=ADMIN_LABEL, dry_run=dry_run
            )
    return web.json_response(
        {"dry_run": dry_run, "erasure_id": report.erasure_id, "removed": report.removed}
    )


async def handle_contact_key(request: web.Request) -> web.Response:
    try:
        contact, _, _ = _contact_or_execution(await request.json())
    except ValueError as exc:
        message = str(exc) if isinstance(exc, _BadRequest) else "the body is not valid JSON"
        return error_response(400, "bad_request", message)
    key = request.app[SETTINGS].pii_key
    if key is None or contact is None:
        return error_response(
            404,
            "no_pii_key",
            "SINK_PII_KEY is not set, so contacts are not hashed and have no key; set it"
            " (with SINK_CONTACT_MODE=hash) to store and look up hashed contacts",
        )
    hashed = redact.contact_key(contact, key.get_secret_value().encode())
    return web.json_response({"contact_key": hashed})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/backfill", _guarded(handle_post_backfill))
    app.router.add_get("/backfill/{request_id}", _guarded(handle_get_backfill))
    app.router.add_post("/privacy/forget", _guarded(handle_forget))
    app.router.add_post("/privacy/contact-key", _guarded(handle_contact_key))
