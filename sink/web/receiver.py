"""POST /events: verify, parse, hand to the group-commit writer, answer after the commit."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web

from sink.accounts.model import Accounts
from sink.config import Settings
from sink.errors import CommitTimeout, DatabaseUnavailable, Overloaded, ShuttingDown
from sink.ingest import redact, signature
from sink.ingest.cloudevents import Delivery, Event, parse_delivery
from sink.ingest.store import ItemOutcome
from sink.maintenance import quarantine
from sink.metrics import Metrics, type_label
from sink.twilio import TEST_EVENT_TYPE
from sink.web.keys import ACCOUNTS, HEALTH, METRICS, POOL, QUARANTINE, REQUEST_ID, SETTINGS, WRITER
from sink.web.responses import error_response
from sink.web.verify import account_in_path, check_signature, signed_url

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Context:
    """One delivery's view of the accounts (taken once: a reload swaps them whole) and the
    account it is for: the one its URL names, then the one that signed it."""

    accounts: Accounts
    account: str | None

    def label(self, account: str | None = None) -> str:
        """The metrics' bounded ``account`` label (a configured label, else "other")."""
        return self.accounts.metric_label(account or self.account)


def _count(metrics: Metrics, outcome: str, labels: Iterable[tuple[str | None, str]]) -> None:
    """One counter update per event type, account and delivery, not per event."""
    for (event_type, account), n in Counter((type_label(t), a) for t, a in labels).items():
        metrics.events.labels(event_type, outcome, account).inc(n)


def _event_labels(ctx: _Context, events: Iterable[Event]) -> Iterable[tuple[str, str]]:
    return ((event.type, ctx.label(event.account_sid)) for event in events)


def _count_parsed(metrics: Metrics, ctx: _Context, delivery: Delivery) -> None:
    _count(metrics, "received", _event_labels(ctx, delivery.events))
    rejected = ((rejection.event_type, ctx.label()) for rejection in delivery.rejected)
    _count(metrics, "rejected", rejected)


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
    """``POST /events`` and ``POST /events/{account_sid}``."""
    started = time.perf_counter()
    settings = request.app[SETTINGS]
    metrics = request.app[METRICS]
    ctx = _Context(request.app[ACCOUNTS].current, account_in_path(request.raw_path))
    response = await _handle(request, settings, metrics, ctx, started)
    metrics.deliveries.labels(str(response.status), ctx.label()).inc()
    metrics.delivery_seconds.observe(time.perf_counter() - started)
    return response


@dataclass(frozen=True, slots=True)
class _Stored:
    """A delivery the writer committed, with what the commit made of it."""

    request_id: str
    delivery: Delivery
    outcome: ItemOutcome


async def _handle(
    request: web.Request, settings: Settings, metrics: Metrics, ctx: _Context, started: float
) -> web.StreamResponse:
    """refuse → read and verify → store → answer; each step may answer early."""
    refusal = _refuse(request, settings)
    if refusal is not None:
        return refusal
    verified = await _read_and_verify(request, settings, metrics, ctx, started)
    if isinstance(verified, web.Response):
        return verified
    body, check = verified
    stored = await _store(request, settings, metrics, ctx, body, check.account, started)
    if isinstance(stored, web.Response):
        return stored
    return _answer(metrics, ctx, stored)


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
    request: web.Request, settings: Settings, metrics: Metrics, ctx: _Context, started: float
) -> tuple[bytes, signature.SignatureCheck] | web.Response:
    """The body (413 or 503 when it is too large or too slow), its signature checked (401)
    against the tokens of the account the URL names, or of every account."""
    body = await _read_body(request, settings)
    if isinstance(body, web.Response):
        return body
    check = check_signature(request, body, settings, ctx.accounts)
    if not check.ok:
        return await _refuse_signature(request, settings, metrics, check, body, started)
    ctx.account = check.account or ctx.account
    return body, check


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
    fix = _signature_fix(check, account_in_path(request.raw_path))
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


def _signature_fix(check: signature.SignatureCheck, sid: str | None) -> str:
    """What to do about a refused signature, for the account the URL names if any."""
    if check.reason == "unknown_account":
        return "Until it is, every delivery to this URL is refused."
    if sid is None:
        return (
            "Check that SINK_TWILIO_AUTH_TOKEN (or auth_tokens in SINK_ACCOUNTS_FILE) holds"
            " this account's Auth Token and that SINK_PUBLIC_URL is the exact URL configured"
            " in Twilio."
        )
    return (
        f"Check that auth_tokens of [accounts.{sid}] in SINK_ACCOUNTS_FILE hold this"
        " account's Auth Token and that SINK_PUBLIC_URL is the exact URL configured in"
        f" Twilio without /{sid} (the sink adds it)."
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
    request: web.Request,
    settings: Settings,
    metrics: Metrics,
    ctx: _Context,
    body: bytes,
    signer: str | None,
    started: float,
) -> _Stored | web.Response:
    """Parse (checking the events against the account that signed them), submit to the
    group-commit writer, and wait for the commit within the budget."""
    parsed = parse_delivery(request.headers, body, account=signer)
    delivery = redact.policy(settings).delivery(parsed)
    _count_parsed(metrics, ctx, delivery)
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


def _answer(metrics: Metrics, ctx: _Context, stored: _Stored) -> web.Response:
    """Count what was stored, then 400 for a fatal delivery or 200 with the counts."""
    _count_stored(metrics, ctx, stored.delivery, stored.outcome)
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


def _count_stored(
    metrics: Metrics, ctx: _Context, delivery: Delivery, outcome: ItemOutcome
) -> None:
    """Metrics for the events stored and the duplicates; a log line for Twilio's test event."""
    _count(metrics, "stored", _event_labels(ctx, outcome.new_events))
    for event in outcome.new_events:
        if event.type == TEST_EVENT_TYPE:
            log.info(
                "Event Streams sink test event received: Twilio reaches this sink (account %s)",
                event.account_sid or "not known",
                extra={"account_sid": event.account_sid, "event_id": event.event_id},
            )
    if outcome.duplicates:
        new = {id(event) for event in outcome.new_events}
        repeated = (e for e in delivery.events if id(e) not in new)
        _count(metrics, "duplicate", _event_labels(ctx, repeated))


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
