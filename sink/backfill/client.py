"""Studio v2 REST client: auth, paging, retries, rate limit.

The REST API only fills gaps the event stream left (contexts, missed executions).
Every call goes through one rate limit (``sink.backfill.ratelimit``: shared by every
replica, per account, when ``sink.backfill.accounts`` built it, else by the process) and a
concurrency cap. A client calls as one account, with the credentials its
``CredentialSource`` gives at each call: when Twilio refuses one (401/403), the same call is
made with the next (a token rotation), and the source is told which one worked;
429/5xx/transport errors are retried with exponential backoff and full jitter. A
``Retry-After`` is honoured up to ``max_retry_after``: a short one is waited out here, a
longer one (more than ``retry_in_place`` seconds) raises ``StudioRetryLater`` so the item
waits in the queue instead of holding a worker. Resources come back as plain dicts: the
client reads both the seed (v1.27.0) and the current spec shapes and requires no field that
only one of them has.
"""

from __future__ import annotations

import asyncio
import base64
import random
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import quote, urlencode

import aiohttp
import orjson
from yarl import URL

from sink import jsontext
from sink.backfill.ratelimit import Limiter, RateLimiter, RateLimitPaused
from sink.twilio import is_sid, sid_rule

__all__ = [
    "CredentialSource",
    "FixedCredentials",
    "RateLimiter",
    "StudioApiError",
    "StudioClient",
    "StudioCredentials",
    "StudioCredentialsError",
    "StudioGone",
    "StudioRetryLater",
    "StudioUnavailable",
    "parse_retry_after",
]

PAGE_SIZE = 1000
_CREDENTIALS_HINT = (
    "check the account's api_key_sid/api_key_secret/auth_tokens in SINK_ACCOUNTS_FILE, or"
    " SINK_TWILIO_ACCOUNT_SID / SINK_TWILIO_API_KEY_SID / SINK_TWILIO_API_KEY_SECRET (or the"
    " auth token), and that the key may read Studio"
)
_REVISION = re.compile(r"\d+|LatestPublished|LatestRevision")


class StudioApiError(Exception):
    """A Studio REST call failed; ``status``/``code`` carry HTTP status and Twilio code."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class StudioGone(StudioApiError):
    """404: the resource expired or never existed. Never retried."""


class StudioCredentialsError(StudioApiError):
    """401/403 from every credential the client has: Twilio refused them all. Never retried
    with the same credentials (one refused, the client tries the next one itself)."""


class StudioUnavailable(StudioApiError):
    """429/5xx/timeouts/connection errors persisted through every retry."""


class StudioRetryLater(StudioUnavailable):
    """Twilio asked to wait longer than a worker should hold an item (a long ``Retry-After``,
    or the pause a 429 started): try again in ``retry_after`` seconds. ``refund``: a 429,
    which says nothing against the item, so its attempt is not counted."""

    def __init__(self, message: str, *, retry_after: float, refund: bool, status: int | None = 429):
        super().__init__(message, status=status)
        self.retry_after = retry_after
        self.refund = refund


@dataclass(frozen=True)
class StudioCredentials:
    """HTTP basic auth: AccountSid:AuthToken or ApiKeySid:ApiKeySecret, and how a message
    names it without showing it (``API key SK...``, ``auth token 2 of 2``)."""

    username: str
    password: str = field(repr=False)
    name: str = "credentials"


class CredentialSource(Protocol):
    """The credentials a client calls with, read at each call: several during a rotation,
    tried in order until one is not refused."""

    def candidates(self) -> Sequence[StudioCredentials]:
        """Every credential to try, in order (the one that worked last first)."""
        ...

    def worked(self, credentials: StudioCredentials) -> None:
        """``credentials`` was not refused after an earlier candidate was: prefer it."""
        ...


class FixedCredentials:
    """One credential, always the same."""

    def __init__(self, credentials: StudioCredentials) -> None:
        self._candidates = (credentials,)

    def candidates(self) -> Sequence[StudioCredentials]:
        return self._candidates

    def worked(self, credentials: StudioCredentials) -> None:
        return None


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or HTTP-date)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    return seconds if 0 <= seconds < float("inf") else None


def _format_date(value: datetime, *, round_up: bool) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: pass an aware one, e.g. datetime.now(UTC)")
    whole = value.replace(microsecond=0)
    if round_up and value.microsecond:
        whole += timedelta(seconds=1)
    return whole.isoformat()


def _sid(prefix: str, value: str) -> str:
    if not is_sid(value, prefix):
        raise StudioApiError(
            f"not a valid SID: {value!r} ({sid_rule(prefix)}); fix the SID recorded for this item"
        )
    return value


@dataclass
class _Reply:
    status: int | None
    body: bytes = b""
    retry_after: str | None = None
    error: str = ""


class StudioClient:
    """Async client for the Studio v2 REST API (GET endpoints the backfill needs)."""

    def __init__(
        self,
        base_url: str,
        credentials: StudioCredentials | CredentialSource,
        *,
        rate_per_second: float = 10.0,
        max_concurrency: int = 10,
        timeout: float = 10.0,
        max_retries: int = 6,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        max_retry_after: float = 300.0,
        retry_in_place: float = 5.0,
        session: aiohttp.ClientSession | None = None,
        on_call: Callable[[str, int | None], None] | None = None,
        on_retry: Callable[[str], None] | None = None,
        rate_limiter: Limiter | None = None,
        semaphore: asyncio.Semaphore | None = None,
    ) -> None:
        self._base = URL(base_url.rstrip("/"))
        self._credentials: CredentialSource = (
            FixedCredentials(credentials)
            if isinstance(credentials, StudioCredentials)
            else credentials
        )
        self._limiter: Limiter = rate_limiter or RateLimiter(rate_per_second)
        self._semaphore = semaphore or asyncio.Semaphore(max_concurrency)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_retries = max_retries
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._max_retry_after = max_retry_after
        self._retry_in_place = retry_in_place
        self._session = session
        self._owns_session = session is None
        self._on_call = on_call
        self._on_retry = on_retry
        self._random = random.SystemRandom()  # jitter

    @property
    def rate_limiter(self) -> Limiter:
        return self._limiter

    async def __aenter__(self) -> StudioClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    # -- endpoints ---------------------------------------------------------------

    def _execution_path(self, flow_sid: str, execution_sid: str) -> str:
        flow = _sid("FW", flow_sid)
        return f"/v2/Flows/{flow}/Executions/{_sid('FN', execution_sid)}"

    async def fetch_execution(self, flow_sid: str, execution_sid: str) -> dict[str, Any]:
        return await self._get(
            "execution", self._url(self._execution_path(flow_sid, execution_sid))
        )

    async def fetch_execution_context(self, flow_sid: str, execution_sid: str) -> dict[str, Any]:
        path = self._execution_path(flow_sid, execution_sid) + "/Context"
        return await self._get("execution_context", self._url(path))

    def iter_executions(
        self, flow_sid: str, *, date_from: datetime | None, date_to: datetime | None
    ) -> AsyncIterator[dict[str, Any]]:
        params: dict[str, str] = {}
        if date_from is not None:
            params["DateCreatedFrom"] = _format_date(date_from, round_up=False)
        if date_to is not None:
            params["DateCreatedTo"] = _format_date(date_to, round_up=True)
        params["PageSize"] = str(PAGE_SIZE)
        path = f"/v2/Flows/{_sid('FW', flow_sid)}/Executions"
        return self._iter_list("executions", "executions", self._url(path, params))

    def iter_steps(self, flow_sid: str, execution_sid: str) -> AsyncIterator[dict[str, Any]]:
        path = self._execution_path(flow_sid, execution_sid) + "/Steps"
        return self._iter_list("steps", "steps", self._url(path, {"PageSize": str(PAGE_SIZE)}))

    async def fetch_step_context(
        self, flow_sid: str, execution_sid: str, step_sid: str
    ) -> dict[str, Any]:
        step = _sid("FT", step_sid)
        path = f"{self._execution_path(flow_sid, execution_sid)}/Steps/{step}/Context"
        return await self._get("step_context", self._url(path))

    async def fetch_flow(self, flow_sid: str) -> dict[str, Any]:
        return await self._get("flow", self._url(f"/v2/Flows/{_sid('FW', flow_sid)}"))

    def iter_flows(self) -> AsyncIterator[dict[str, Any]]:
        """Every flow of the account (GET /v2/Flows), page by page."""
        return self._iter_list(
            "flows", "flows", self._url("/v2/Flows", {"PageSize": str(PAGE_SIZE)})
        )

    async def fetch_flow_revision(self, flow_sid: str, revision: int | str) -> dict[str, Any]:
        rev = str(revision)
        if isinstance(revision, bool) or not _REVISION.fullmatch(rev):
            raise StudioApiError(
                f"not a valid Flow revision: {revision!r}; "
                "use a number, 'LatestPublished' or 'LatestRevision'"
            )
        path = f"/v2/Flows/{_sid('FW', flow_sid)}/Revisions/{rev}"
        return await self._get("flow_revision", self._url(path))

    # -- paging ------------------------------------------------------------------

    def _url(self, path: str, params: Mapping[str, str] | None = None) -> URL:
        query = "?" + urlencode(params, quote_via=quote, safe="") if params else ""
        return URL(str(self._base) + path + query, encoded=True)

    def _next_url(self, next_page_url: str) -> URL:
        url = URL(next_page_url, encoded=True)
        if not url.is_absolute():
            url = self._base.join(url)
        if url.origin() != self._base.origin():
            raise StudioApiError(
                f"next_page_url points to {url.origin()}, not {self._base.origin()}; refusing "
                "to send credentials there. Check the configured Studio base URL"
            )
        return url

    async def _iter_list(self, label: str, key: str, url: URL) -> AsyncIterator[dict[str, Any]]:
        """Yield items page by page; holds one page at a time."""
        seen: set[str] = set()
        while True:
            seen.add(str(url))
            page = await self._get(label, url)
            meta = page.get("meta")
            meta = meta if isinstance(meta, dict) else {}
            items = page.get(key, page.get(str(meta.get("key", key)), []))
            if not isinstance(items, list):
                raise StudioApiError(f"Studio API {label} page has no list under {key!r}")
            next_page_url = meta.get("next_page_url")
            del page
            for item in items:
                if isinstance(item, dict):
                    yield item
            del items
            if not next_page_url or not isinstance(next_page_url, str):
                return
            url = self._next_url(next_page_url)
            if str(url) in seen:
                raise StudioApiError(
                    f"Studio API {label} paging loops back to {url.path}; stopping"
                )

    # -- one GET with retries ----------------------------------------------------

    async def _get(self, label: str, url: URL) -> dict[str, Any]:
        """One GET, with each credential in turn while Twilio refuses them (a rotation:
        the old token refused, the new one works); StudioCredentialsError when every one
        is refused."""
        candidates = tuple(self._credentials.candidates())
        if not candidates:
            raise StudioCredentialsError(
                f"Studio API {label}: no REST credentials to call with; {_CREDENTIALS_HINT}"
            )
        refused: list[str] = []
        for credentials in candidates:
            try:
                body = await self._get_as(label, url, credentials, candidates)
            except StudioCredentialsError as exc:
                refused.append(f"{credentials.name}: HTTP {exc.status}")
                last = exc
                continue
            if refused:
                self._credentials.worked(credentials)
            return body
        if len(candidates) == 1:
            raise last
        raise StudioCredentialsError(
            self._redact(
                f"Studio API refused every credential on {label} {url.path}"
                f" ({'; '.join(refused)}); {_CREDENTIALS_HINT}",
                candidates,
            ),
            status=last.status,
            code=last.code,
        )

    async def _get_as(
        self,
        label: str,
        url: URL,
        credentials: StudioCredentials,
        candidates: Sequence[StudioCredentials],
    ) -> dict[str, Any]:
        attempt = 0
        while True:
            reply = await self._attempt(label, url, credentials)
            status = reply.status
            if status is not None and 200 <= status < 300:
                return self._decode(label, url, reply.body)
            if status is not None and status != 429 and status < 500:
                raise self._client_error(label, url, status, reply.body, candidates)
            delay = await self._before_retry(label, reply, attempt)
            if attempt >= self._max_retries:
                last = f"HTTP {status}" if status is not None else reply.error
                raise StudioUnavailable(
                    self._redact(
                        f"Studio API {label} still failing after {attempt + 1} attempts "
                        f"(last: {last}); Twilio is unavailable or rate limiting. Retry later, "
                        "or lower the backfill rate/concurrency",
                        candidates,
                    ),
                    status=status,
                )
            if self._on_retry is not None:
                self._on_retry(label)
            attempt += 1
            await asyncio.sleep(delay)

    async def _before_retry(self, label: str, reply: _Reply, attempt: int) -> float:
        """Seconds to wait before trying again here; StudioRetryLater when Twilio asked for
        a longer wait than a worker should spend holding an item."""
        told = parse_retry_after(reply.retry_after)
        if told is None:
            ceiling = min(self._backoff_cap, self._backoff_base * 2 ** min(attempt, 32))
            delay = self._random.uniform(0, ceiling)  # full jitter
        else:
            delay = min(told, self._max_retry_after)
        if reply.status == 429:
            await self._limiter.record_429(delay)
        if told is not None and delay > self._retry_in_place:
            raise StudioRetryLater(
                f"Studio API {label}: Twilio answered HTTP {reply.status} with Retry-After"
                f" {reply.retry_after} (honoured up to {self._max_retry_after:.0f} s); the item"
                f" waits {delay:.0f} s in the queue"
                + (", no attempt counted" if reply.status == 429 else ""),
                retry_after=delay,
                refund=reply.status == 429,
                status=reply.status,
            )
        return delay

    async def _attempt(self, label: str, url: URL, credentials: StudioCredentials) -> _Reply:
        async with self._semaphore:
            try:
                await self._limiter.acquire(self._retry_in_place)
            except RateLimitPaused as exc:
                raise StudioRetryLater(
                    f"Studio API {label}: {exc}; the item waits in the queue until then,"
                    " no attempt counted",
                    retry_after=exc.seconds,
                    refund=True,
                ) from None
            try:
                session = self._get_session()
                async with session.get(
                    url,
                    headers=_headers(credentials),
                    timeout=self._timeout,
                    allow_redirects=False,
                ) as resp:
                    body = await resp.read()
                    reply = _Reply(resp.status, body, resp.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError) as exc:
                reply = _Reply(None, error=f"{type(exc).__name__}: {exc}".rstrip(": "))
        if self._on_call is not None:
            self._on_call(label, reply.status)
        return reply

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"User-Agent": "studio-sink"})
            self._owns_session = True
        return self._session

    def _decode(self, label: str, url: URL, body: bytes) -> dict[str, Any]:
        try:
            data = jsontext.loads_lenient(body)  # keeps a lone surrogate, for storable()
        except jsontext.JsonError:
            data = None
        if not isinstance(data, dict):
            raise StudioApiError(
                f"Studio API {label} answered {url.path} with a body that is not a JSON object; "
                "check the configured Studio base URL"
            )
        return data

    def _client_error(
        self,
        label: str,
        url: URL,
        status: int,
        body: bytes,
        candidates: Sequence[StudioCredentials],
    ) -> StudioApiError:
        try:
            err = orjson.loads(body)
        except orjson.JSONDecodeError:
            err = None
        err = err if isinstance(err, dict) else {}
        raw_code = err.get("code")
        code = raw_code if isinstance(raw_code, int) else None
        twilio = f"Twilio error {code}: {err.get('message', '')}" if code else "no Twilio error"
        if err.get("more_info"):
            twilio += f" (see {err['more_info']})"
        where = f"{label} {url.path}: HTTP {status}, {twilio}"
        if status == 404:
            return StudioGone(
                self._redact(
                    f"Studio {where}. It has expired or never existed; retrying will not help",
                    candidates,
                ),
                status=status,
                code=code,
            )
        if status in (401, 403):
            return StudioCredentialsError(
                self._redact(
                    f"Studio API refused the credentials on {where}; {_CREDENTIALS_HINT}",
                    candidates,
                ),
                status=status,
                code=code,
            )
        return StudioApiError(
            self._redact(f"Studio API rejected {where}; repeating it will not help", candidates),
            status=status,
            code=code,
        )

    @staticmethod
    def _redact(message: str, candidates: Sequence[StudioCredentials]) -> str:
        for credentials in candidates:
            if credentials.password:
                message = message.replace(credentials.password, "***")
        return message


def _headers(credentials: StudioCredentials) -> dict[str, str]:
    token = base64.b64encode(f"{credentials.username}:{credentials.password}".encode())
    return {"Accept": "application/json", "Authorization": f"Basic {token.decode()}"}
