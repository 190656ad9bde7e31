"""POST /events: verify, parse, hand to the group-commit writer, answer after the commit."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web

from sink.config import Settings
from sink.errors import CommitTimeout, DatabaseUnavailable, Overloaded, ShuttingDown
from sink.ingest import redact, signature
from sink.ingest.cloudevents import Delivery, parse_delivery
from sink.ingest.store import ItemOutcome
from sink.maintenance import quarantine
from sink.metrics import Metrics, type_label
from sink.twilio import TEST_EVENT_TYPE
from sink.web.keys import HEALTH, METRICS, POOL, QUARANTINE, REQUEST_ID, SETTINGS, WRITER
from sink.web.responses import error_response

log = logging.getLogger(__name__)


class RequestView(Protocol):
    """What the signature check reads of a request: an aiohttp request, or one kept in
    quarantine (``sink.maintenance.quarantine.KeptRequest``) and checked again later."""

    @property
    def scheme(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def raw_path(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...


def signed_url(request: RequestView, settings: Settings) -> str:
    """The URL Twilio signed: SINK_PUBLIC_URL's origin and path with the query received,
    or the URL rebuilt from the request (and trusted X-Forwarded-* headers).

    A forwarded host without a port takes X-Forwarded-Port's (proxies configured with
    nginx's ``$host`` send the name alone); the signature check tries the URL with and
    without the scheme's default port, so 443 there matches Twilio's port-less URL."""
    raw_query = urlsplit(request.raw_path).query
    if settings.public_url:
        public = urlsplit(settings.public_url)
        return urlunsplit((public.scheme, public.netloc, public.path, raw_query, ""))
    scheme = request.scheme
    host = request.host
    if settings.trust_forwarded:
        forwarded = {
            name: request.headers.get(f"X-Forwarded-{name}", "").split(",")[0].strip()
            for name in ("Proto", "Host", "Port")
        }
        scheme = forwarded["Proto"] or scheme
        host = forwarded["Host"] or host
        has_port = host.rsplit("]", 1)[-1].count(":") == 1  # "[::1]:8443", not "[::1]"
        if forwarded["Port"].isdigit() and not has_port:
            host = f"{host}:{forwarded['Port']}"
    return f"{scheme}://{host}{request.raw_path}"


def check_signature(
    request: RequestView, body: bytes, settings: Settings
) -> signature.SignatureCheck:
    if not settings.verify_signature:
        return signature.VALID
    return signature.verify(
        urls=[signed_url(request, settings)],
        body=body,
        signature=request.headers.get(signature.SIGNATURE_HEADER),
        settings_header=request.headers.get(signature.SETTINGS_HEADER),
        auth_tokens=settings.auth_tokens(),
        shared_keys=settings.shared_keys(),
    )


def _count(metrics: Metrics, outcome: str, types: Iterable[str | None]) -> None:
    """One counter update per event type and delivery, not per event."""
    for event_type, n in Counter(type_label(t) for t in types).items():
        metrics.events.labels(event_type, outcome).inc(n)


def _count_parsed(metrics: Metrics, delivery: Delivery) -> None:
    _count(metrics, "received", (event.type for event in delivery.events))
    _count(metrics, "rejected", (rejection.event_type for rejection in delivery.rejected))


async def _read_body(request: web.Request, settings: Settings) -> bytes | web.Response:
    length = request.content_length
    if length is not None and length > settings.max_body_bytes:
        return error_response(
            413,
            "body_too_large",
            f"the body is {length} bytes, over the limit of {settings.max_body_bytes}"
            " (SINK_MAX_BODY_BYTES)",
        )
    try:
        return await asyncio.wait_for(request.read(), settings.client_timeout)
    except web.HTTPRequestEntityTooLarge:
        return error_response(
            413,
            "body_too_large",
            f"the body is over the limit of {settings.max_body_bytes} bytes (SINK_MAX_BODY_BYTES)",
        )
    except TimeoutError:
        return error_response(
            503,
            "body_timeout",
            f"the body did not arrive within {settings.client_timeout} s; send it again",
            retry_after=1,
        )


async def handle_events(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    settings = request.app[SETTINGS]
    metrics = request.app[METRICS]
    response = await _handle(request, settings, metrics, started)
    metrics.deliveries.labels(str(response.status)).inc()
    metrics.delivery_seconds.observe(time.perf_counter() - started)
    return response


@dataclass(frozen=True, slots=True)
class _Stored:
    """A delivery the writer committed, with what the commit made of it."""

    request_id: str
    delivery: Delivery
    outcome: ItemOutcome


async def _handle(
    request: web.Request, settings: Settings, metrics: Metrics, started: float
) -> web.StreamResponse:
    """refuse → read and verify → store → answer; each step may answer early."""
    refusal = _refuse(request, settings)
    if refusal is not None:
        return refusal
    body = await _read_and_verify(request, settings, metrics, started)
    if isinstance(body, web.Response):
        return body
    stored = await _store(request, settings, metrics, body, started)
    if isinstance(stored, web.Response):
        return stored
    return _answer(metrics, stored)


def _refuse(request: web.Request, settings: Settings) -> web.Response | None:
    """Refuse before reading anything: 503 while draining, 429 while the queue is full."""
    if request.app[HEALTH].draining:
        response = error_response(
            503, "shutting_down", "the sink is shutting down; retry", retry_after=1
        )
        response.force_close()
        return response
    # A full queue refuses before reading and parsing: under overload, a delivery that will
    # get 429 anyway must not cost a parse (docs/benchmarks.md, overload at 2x).
    pending = request.app[WRITER].pending_events
    if pending >= settings.max_pending_events:
        return error_response(
            429,
            "overloaded",
            f"{pending} events are waiting to be written (limit {settings.max_pending_events},"
            " SINK_MAX_PENDING_EVENTS); retry shortly",
            retry_after=1,
        )
    return None


async def _read_and_verify(
    request: web.Request, settings: Settings, metrics: Metrics, started: float
) -> bytes | web.Response:
    """The body (413 or 503 when it is too large or too slow), its signature checked (401)."""
    body = await _read_body(request, settings)
    if isinstance(body, web.Response):
        return body
    check = check_signature(request, body, settings)
    if not check.ok:
        return await _refuse_signature(request, settings, metrics, check, body, started)
    return body


async def _refuse_signature(
    request: web.Request,
    settings: Settings,
    metrics: Metrics,
    check: signature.SignatureCheck,
    body: bytes,
    started: float,
) -> web.Response:
    """401, once the delivery is kept in quarantine for a retry after the fix; 503 when it
    cannot be kept now (database down, this hour's cap spent): Twilio retries a 503, while
    a 401 drops the event for good."""
    reason = check.reason or "bad_signature"
    metrics.signature_failures.labels(reason).inc()
    outcome = await _quarantine(request, settings, reason, body, started)
    log.warning(
        "delivery refused: %s (quarantine: %s)",
        check.explanation,
        outcome,
        extra={"reason": reason, "quarantine": outcome},
    )
    fix = (
        "Check that SINK_TWILIO_AUTH_TOKEN holds this account's Auth Token and that"
        " SINK_PUBLIC_URL is the exact URL configured in Twilio."
    )
    if outcome in quarantine.RETRY_LATER:
        return error_response(
            503,
            "quarantine_unavailable",
            f"{check.explanation}, and the delivery cannot be kept in quarantine now"
            f" ({outcome}): answered 503 so that Twilio sends it again. {fix}",
            retry_after=60 if outcome == quarantine.HOUR_FULL else 2,
            reason=reason,
        )
    if outcome == quarantine.KEPT:
        fix += " The delivery is kept: after the fix, `studio-sink quarantine retry` stores it."
    return error_response(
        401,
        "invalid_signature",
        f"{check.explanation}. {fix}",
        reason=reason,
        quarantined=outcome == quarantine.KEPT,
    )


async def _quarantine(
    request: web.Request, settings: Settings, reason: str, body: bytes, started: float
) -> str:
    """Keep the refused delivery within SINK_DELIVERY_TIMEOUT: the keeper's outcome."""
    kept = quarantine.KeptRequest.of(
        request.scheme, request.host, request.raw_path, request.headers.items()
    )
    try:
        url_checked = signed_url(request, settings)
    except ValueError:  # a Host the URL parser refuses: kept as seen
        url_checked = kept.url_seen
    refused = quarantine.Refused(reason, kept, url_checked, body, request[REQUEST_ID])
    budget = max(settings.delivery_timeout - (time.perf_counter() - started), 0.01)
    try:
        return await request.app[QUARANTINE].keep(request.app[POOL], refused, within=budget)
    except DatabaseUnavailable as exc:
        log.warning("a refused delivery could not be kept in quarantine: %s", exc)
        return quarantine.UNAVAILABLE


async def _store(
    request: web.Request, settings: Settings, metrics: Metrics, body: bytes, started: float
) -> _Stored | web.Response:
    """Parse, submit to the group-commit writer, and wait for the commit within the budget."""
    delivery = redact.policy(settings).delivery(parse_delivery(request.headers, body))
    _count_parsed(metrics, delivery)
    request_id = request[REQUEST_ID]
    future = _submit(request, request_id, delivery)
    if isinstance(future, web.Response):
        return future
    outcome = await _await_commit(future, settings, started)
    if isinstance(outcome, web.Response):
        return outcome
    return _Stored(request_id, delivery, outcome)


def _submit(
    request: web.Request, request_id: str, delivery: Delivery
) -> asyncio.Future[ItemOutcome] | web.Response:
    try:
        return request.app[WRITER].submit(request_id, delivery.events, delivery.rejected)
    except Overloaded as exc:
        return error_response(429, "overloaded", str(exc), retry_after=1)
    except ShuttingDown as exc:
        return error_response(503, "shutting_down", str(exc), retry_after=1)


async def _await_commit(
    future: asyncio.Future[ItemOutcome], settings: Settings, started: float
) -> ItemOutcome | web.Response:
    """The commit's outcome, or a 503 when it misses SINK_DELIVERY_TIMEOUT or the database
    is unavailable (Twilio retries; duplicates are ignored)."""
    budget = settings.delivery_timeout - (time.perf_counter() - started)
    try:
        return await asyncio.wait_for(asyncio.shield(future), max(budget, 0.01))
    except TimeoutError:
        timeout = CommitTimeout(
            f"the commit did not finish within {settings.delivery_timeout} s"
            " (SINK_DELIVERY_TIMEOUT); Twilio will retry and duplicates are ignored"
        )
        log.warning("%s", timeout)
        return error_response(503, "commit_timeout", str(timeout), retry_after=1)
    except (DatabaseUnavailable, ShuttingDown) as exc:
        return error_response(503, "database_unavailable", str(exc), retry_after=2)


def _answer(metrics: Metrics, stored: _Stored) -> web.Response:
    """Count what was stored, then 400 for a fatal delivery or 200 with the counts."""
    _count_stored(metrics, stored.delivery, stored.outcome)
    if stored.delivery.fatal:
        return _refuse_fatal(stored)
    delivery, outcome = stored.delivery, stored.outcome
    return web.json_response(
        {
            "request_id": stored.request_id,
            "received": len(delivery.events) + len(delivery.rejected),
            "stored": outcome.stored,
            "duplicates": outcome.duplicates,
            "rejected": outcome.rejected,
        }
    )


def _count_stored(metrics: Metrics, delivery: Delivery, outcome: ItemOutcome) -> None:
    """Metrics for the events stored and the duplicates; a log line for Twilio's test event."""
    _count(metrics, "stored", (event.type for event in outcome.new_events))
    if any(event.type == TEST_EVENT_TYPE for event in outcome.new_events):
        log.info("Event Streams sink test event received: Twilio reaches this sink")
    if outcome.duplicates:
        new = {id(event) for event in outcome.new_events}
        _count(metrics, "duplicate", (e.type for e in delivery.events if id(e) not in new))


def _refuse_fatal(stored: _Stored) -> web.Response:
    """400 for a delivery with nothing storable; its body is kept as rejected events."""
    rejected = stored.delivery.rejected
    reasons = sorted({r.reason for r in rejected})
    detail = rejected[0].detail if rejected else "no events"
    log.info("delivery rejected (%s): %s", ",".join(reasons), detail)
    return error_response(
        400,
        reasons[0] if reasons else "not_cloudevents",
        f"{detail}. The body is kept in studio.rejected_events.",
        rejected=stored.outcome.rejected,
        request_id=stored.request_id,
    )
