"""The quarantine: deliveries refused for their signature, kept (bounded) for a retry.

A wrong SINK_PUBLIC_URL or Auth Token makes every delivery fail its signature check, and
Twilio drops an event for good when it is answered 401. So the receiver keeps each refused
delivery here (``Keeper.keep``): when, why, the request as it arrived (scheme, Host, path
and query), the URL the signature was checked against, the few headers a re-check and the
parser read, and the raw body, never parsed. ``retry`` checks every kept delivery again
with the current configuration and stores those that now pass through the live path's
parser and store (``parse_delivery``, ``sink.ingest.store.ingest``), removing them.

The caps (bytes kept per hour, bytes held in all, oldest dropped first) are enforced by
``sink.quarantine_keep`` in the statement that inserts, under one row lock that every keep
takes first, so any number of replicas keep the quarantine within its caps exactly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import asyncpg
from multidict import CIMultiDict, CIMultiDictProxy

from sink import jsontext
from sink.db.pool import DB_ERRORS, Conn, is_bad_data, redact_url, retry_in_place, unavailable
from sink.db.queries import query
from sink.errors import DatabaseUnavailable
from sink.ingest.arrays import BatchItem
from sink.ingest.cloudevents import parse_delivery
from sink.ingest.redact import KEEP, Policy
from sink.ingest.signature import SETTINGS_HEADER, SIGNATURE_HEADER, SignatureCheck
from sink.ingest.store import ingest

log = logging.getLogger(__name__)

# What a re-check and the parser read: the signature headers, the content type, binary-mode
# CloudEvents attributes, and what a proxy says about the URL (SINK_TRUST_FORWARDED); not
# X-Forwarded-For (the client's address: no part of the URL).
KEPT_HEADERS: Final = frozenset(
    name.lower() for name in (SIGNATURE_HEADER, SETTINGS_HEADER, "Content-Type")
)
KEPT_PREFIXES: Final = ("ce-", "x-forwarded-")
LEFT_OUT: Final = frozenset({"x-forwarded-for"})

KEPT: Final = "kept"  # kept; the oldest deliveries made room if needed
TOO_LARGE: Final = "too_large"  # alone over a cap: never kept
HOUR_FULL: Final = "hour_full"  # this hour's SINK_QUARANTINE_MAX_BYTES_PER_HOUR is spent
FULL: Final = "full"  # the oldest deliveries are being retried and cannot make room now
BUSY: Final = "busy"  # too many refused deliveries waiting to be written
DISABLED: Final = "disabled"  # a cap is 0
UNSTORABLE: Final = "unstorable"  # Postgres refused the row for its content
UNAVAILABLE: Final = "unavailable"  # the database could not take it (down, too slow)
# Not kept now, but kept later if Twilio sends it again: the receiver answers 503, not 401.
RETRY_LATER: Final = frozenset({HOUR_FULL, FULL, BUSY, UNAVAILABLE})

KEEP_CONCURRENCY: Final = 2  # pooled connections refused deliveries may take at once
KEEP_MAX_WAITING: Final = 64  # refused deliveries waiting for one; more: answered at once
RETRY_ROWS: Final = 100  # kept deliveries read at a time by a retry
RETRY_BYTES: Final = 16 * 1024 * 1024  # and about this many bytes


def _storable(text: str) -> str:
    """Text Postgres can store: no NUL, no lone surrogate (neither comes from Twilio)."""
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def _without_password(url: str) -> str:
    """The URL with a password in it (basic auth in SINK_PUBLIC_URL) replaced."""
    try:
        return redact_url(url)
    except ValueError:  # not a URL urllib parses (a Host such as "[x"): it has no password
        return url


def _is_kept(header: str) -> bool:
    if header in KEPT_HEADERS:
        return True
    return header.startswith(KEPT_PREFIXES) and header not in LEFT_OUT


@dataclass(frozen=True, slots=True)
class KeptRequest:
    """A refused request as the receiver saw it: what ``signed_url`` and the parser read."""

    scheme: str
    host: str
    raw_path: str
    headers: CIMultiDictProxy[str]

    @classmethod
    def of(
        cls, scheme: str, host: str, raw_path: str, headers: Iterable[tuple[str, str]]
    ) -> KeptRequest:
        kept: CIMultiDict[str] = CIMultiDict()
        for name, value in headers:
            if _is_kept(name.lower()):
                kept.add(_storable(name), _storable(value))
        return cls(_storable(scheme), _storable(host), _storable(raw_path), CIMultiDictProxy(kept))

    @property
    def url_seen(self) -> str:
        return f"{self.scheme}://{self.host}{self.raw_path}"


@dataclass(frozen=True, slots=True)
class Refused:
    """One delivery refused for its signature, as the receiver hands it over."""

    reason: str
    request: KeptRequest
    url_checked: str
    body: bytes = field(repr=False)
    request_id: str | None = None

    def args(self) -> tuple[Any, ...]:
        headers = jsontext.dumps([[k, v] for k, v in self.request.headers.items()])
        r = self.request
        return (
            self.reason,
            r.scheme,
            r.host,
            r.raw_path,
            _storable(_without_password(self.url_checked)),
            headers,
            self.body,
            self.request_id,
        )


class Keeper:
    """Keeps refused deliveries through the sink's pool, a few at a time, so a flood of
    forged requests cannot take the connections the group-commit writers need."""

    def __init__(self, *, max_bytes: int, max_bytes_per_hour: int) -> None:
        self.max_bytes = max_bytes
        self.max_bytes_per_hour = max_bytes_per_hour
        self._gate = asyncio.Semaphore(KEEP_CONCURRENCY)
        self._waiting = 0
        self._hour_full_until = 0.0  # epoch seconds: this hour's budget is known spent

    async def keep(self, pool: asyncpg.Pool[Any], refused: Refused, *, within: float) -> str:
        """The outcome (``KEPT``, ...); DatabaseUnavailable when it could not be written."""
        if self.max_bytes <= 0 or self.max_bytes_per_hour <= 0:
            return DISABLED
        if time.time() < self._hour_full_until:
            return HOUR_FULL
        if self._waiting >= KEEP_MAX_WAITING:
            return BUSY
        self._waiting += 1
        try:
            async with asyncio.timeout(within), self._gate:
                row = await pool.fetchrow(
                    query("quarantine_keep"),
                    *refused.args(),
                    self.max_bytes,
                    self.max_bytes_per_hour,
                )
        except TimeoutError:
            raise DatabaseUnavailable(
                f"the quarantine write did not finish within {within:.1f} s"
                " (SINK_DELIVERY_TIMEOUT); check that the database is up"
            ) from None
        except asyncpg.PostgresError as exc:
            if not is_bad_data(exc):
                raise unavailable(exc) from exc
            log.warning("refused delivery not kept: Postgres refused it: [%s]", exc.sqlstate)
            return UNSTORABLE
        except DB_ERRORS as exc:
            raise unavailable(exc) from exc
        finally:
            self._waiting -= 1
        assert row is not None
        if row["outcome"] == HOUR_FULL:
            self._hour_full_until = (int(time.time()) // 3600 + 1) * 3600.0
        outcome: str = row["outcome"]
        return outcome


# --- reading it --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Usage:
    bytes: int
    deliveries: int
    hour_bytes: int


async def usage(conn: Conn) -> Usage:
    row = await conn.fetchrow(query("quarantine_usage"))
    assert row is not None
    return Usage(row["bytes"], row["deliveries"], row["hour_bytes"])


async def summary(conn: Conn) -> list[asyncpg.Record]:
    """Kept deliveries by reason, URL seen and URL checked, with first and last seen."""
    rows: list[asyncpg.Record] = await conn.fetch(query("quarantine_summary"))
    return rows


async def recent_by_reason(conn: Conn, seconds: float = 3600) -> dict[str, int]:
    """Deliveries quarantined in the last ``seconds``, by reason, the most frequent first."""
    rows = await conn.fetch(query("quarantine_recent_by_reason"), seconds)
    return {row["reason"]: row["deliveries"] for row in rows}


# --- retrying it -------------------------------------------------------------------------

Check = Callable[[KeptRequest, bytes], SignatureCheck]
"""Checks a kept request's signature with the current configuration (the receiver's check:
the tokens of the account its URL names, or every account's); a valid check names the
account that signed, when known, for the parser's account check."""


@dataclass(slots=True)
class RetryReport:
    dry_run: bool = False
    retried: int = 0  # kept deliveries checked again
    passed: int = 0  # of those, now valid
    stored: int = 0  # events stored from them
    duplicates: int = 0  # events already stored
    rejected: int = 0  # elements kept in rejected_events
    still_failing: Counter[str] = field(default_factory=Counter)  # by the reason now
    errors: int = 0  # valid, but Postgres refused to store them: left in quarantine

    def lines(self) -> list[str]:
        verb = "would store" if self.dry_run else "stored"
        failing = ", ".join(f"{r}: {n}" for r, n in self.still_failing.most_common())
        out = [
            f"retried: {self.retried}",
            f"now valid: {self.passed}"
            + (
                ""
                if self.dry_run
                else f" ({verb} {self.stored} events, {self.duplicates}"
                f" duplicates, {self.rejected} rejected)"
            ),
            f"still failing: {sum(self.still_failing.values())}"
            + (f" ({failing})" if failing else ""),
        ]
        if self.errors:
            out.append(f"not stored (Postgres refused them; still in quarantine): {self.errors}")
        return out


@dataclass(frozen=True, slots=True)
class _Kept:
    quarantine_id: int
    request: KeptRequest
    body: bytes = field(repr=False)
    request_id: str

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> _Kept:
        pairs = [(str(name), str(value)) for name, value in jsontext.loads(row["headers"])]
        headers = CIMultiDictProxy(CIMultiDict[str](pairs))
        request = KeptRequest(row["scheme"], row["host"], row["raw_path"], headers)
        rid = row["request_id"] or f"quarantine-{row['quarantine_id']}"
        return cls(row["quarantine_id"], request, bytes(row["body"]), rid)


async def retry(
    conn: Conn, check: Check, *, privacy: Policy = KEEP, dry_run: bool = False
) -> RetryReport:
    """Check every delivery kept so far again; store and remove those that now pass, parsed
    and redacted (``privacy``) as the receiver does.

    Each one that passes is stored and removed in a transaction of its own, so a retry
    interrupted, or run twice at once, never stores a delivery twice (and the dedup key
    would make a second store a duplicate anyway)."""
    report = RetryReport(dry_run=dry_run)
    after, last = 0, await conn.fetchval(query("quarantine_last_id"))
    while rows := await conn.fetch(query("quarantine_batch"), after, last, RETRY_ROWS, RETRY_BYTES):
        after = rows[-1]["quarantine_id"]
        for row in rows:
            kept = _Kept.of(row)
            result = check(kept.request, kept.body)
            report.retried += 1
            if not result.ok:
                report.still_failing[result.reason or "bad_signature"] += 1
                continue
            report.passed += 1
            if not dry_run:
                await _store(conn, kept, result.account, privacy, report)
    return report


async def _store(
    conn: Conn, kept: _Kept, account: str | None, privacy: Policy, report: RetryReport
) -> None:
    """Parse and store one delivery that now passes (its events checked against the
    account that signed it), and remove it, in one transaction."""
    parsed = parse_delivery(kept.request.headers, kept.body, account=account)
    delivery = privacy.delivery(parsed)
    item = BatchItem(kept.request_id, delivery.events, delivery.rejected)

    async def attempt() -> bool:
        async with conn.transaction():
            if await conn.fetchval(query("quarantine_lock"), kept.quarantine_id) is None:
                return False  # another retry stored it meanwhile
            (outcome,) = await ingest(conn, [item])
            await conn.execute(query("quarantine_remove"), kept.quarantine_id)
        report.stored += outcome.stored
        report.duplicates += outcome.duplicates
        report.rejected += outcome.rejected
        return True

    try:
        await retry_in_place(attempt)
    except asyncpg.PostgresError as exc:
        if not is_bad_data(exc):
            raise
        report.errors += 1
        log.warning(
            "quarantined delivery %d is valid but Postgres refused it: [%s] %s",
            kept.quarantine_id,
            exc.sqlstate,
            exc,
        )
