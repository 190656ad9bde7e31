"""A Twilio REST client for one base URL and one credential: JSON answers, form-encoded
bodies, paging by ``meta.next_page_url``, and retries.

429, 5xx and transport errors are retried with exponential backoff and full jitter; a
``Retry-After`` is honoured (up to ``RetryPolicy.max_retry_after``). A 401/403 raises
``CredentialsRefused`` at once, naming the account and the credential (never its secret);
another 4xx raises ``TwilioApiError``, which a retry cannot fix.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from yarl import URL

from sink.accounts.model import FROM_SETTINGS, Account, RestCredential
from sink.backfill.client import parse_retry_after
from sink.errors import SinkError

Form = Sequence[tuple[str, str]]


class TwilioApiError(SinkError):
    """A Twilio REST call failed in a way a retry cannot fix; the message says what to do."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class CredentialsRefused(TwilioApiError):
    """Twilio answered 401/403 to the account's credential(s)."""


class TwilioUnavailable(TwilioApiError):
    """429, 5xx or transport errors persisted through every retry."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 6
    backoff_base: float = 0.5
    backoff_cap: float = 20.0
    max_retry_after: float = 60.0
    timeout: float = 15.0


def credential_hint(account: Account, credential: RestCredential) -> str:
    """The credential's name and where it is configured, so that a message says what to
    check without showing it."""
    is_key = credential.username != account.sid
    if account.source == FROM_SETTINGS or (is_key and account.api_key_sid is None):
        where = (
            "SINK_TWILIO_API_KEY_SID / SINK_TWILIO_API_KEY_SECRET"
            if is_key
            else "SINK_TWILIO_AUTH_TOKEN"
        )
    else:
        key = "api_key_sid / api_key_secret" if is_key else "auth_tokens"
        where = f"{key} of [accounts.{account.sid}] in SINK_ACCOUNTS_FILE"
    return f"the {credential.name} ({where})"


def account_name(account: Account) -> str:
    return account.sid if account.label == account.sid else f"{account.label} ({account.sid})"


class RestClient:
    """Calls one Twilio API (``api``: "Events API", "Studio API") as one account."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        account: Account,
        credential: RestCredential,
        *,
        api: str,
        policy: RetryPolicy | None = None,
    ) -> None:
        self._session = session
        self._base = URL(base_url.rstrip("/"))
        self.account = account
        self.credential = credential
        self._authorization = aiohttp.encode_basic_auth(
            credential.username, credential.password.get_secret_value()
        )
        self._api = api
        self._policy = policy or RetryPolicy()
        self._random = random.SystemRandom()

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        url = self._base.with_path(self._base.path.rstrip("/") + path)
        return await self._call("GET", url.with_query(params or {}), None)

    async def post(self, path: str, form: Form = ()) -> dict[str, Any]:
        url = self._base.with_path(self._base.path.rstrip("/") + path)
        return await self._call("POST", url, list(form))

    async def pages(
        self, path: str, key: str, params: Mapping[str, str] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Every item of a list, following ``meta.next_page_url`` (absolute, opaque)."""
        url = self._base.with_path(self._base.path.rstrip("/") + path).with_query(params or {})
        seen: set[str] = set()
        while True:
            seen.add(str(url))
            page = await self._call("GET", url, None)
            items = page.get(key)
            if not isinstance(items, list):
                raise TwilioApiError(
                    f"{self._api} answered {url.path} without a list under {key!r}; check"
                    f" the base URL ({self._base})"
                )
            for item in items:
                if isinstance(item, dict):
                    yield item
            meta = page.get("meta")
            following = meta.get("next_page_url") if isinstance(meta, dict) else None
            if not isinstance(following, str) or not following:
                return
            url = self._next(following)
            if str(url) in seen:
                raise TwilioApiError(f"{self._api} paging of {url.path} loops; stopping")

    def _next(self, next_page_url: str) -> URL:
        url = URL(next_page_url, encoded=True)
        if not url.is_absolute():
            url = self._base.join(url)
        if url.origin() != self._base.origin():
            raise TwilioApiError(
                f"{self._api} next_page_url points to {url.origin()}, not {self._base.origin()};"
                " refusing to send credentials there. Check the configured base URL"
            )
        return url

    async def _call(
        self, method: str, url: URL, form: list[tuple[str, str]] | None
    ) -> dict[str, Any]:
        policy = self._policy
        status: int | None = None
        error = ""
        for attempt in range(policy.attempts):
            status, body, retry_after, error = await self._attempt(method, url, form)
            if status is not None and 200 <= status < 300:
                return self._decode(url, body)
            if status is not None and status != 429 and status < 500:
                raise self._refusal(method, url, status, body)
            if attempt + 1 < policy.attempts:
                await asyncio.sleep(self._delay(attempt, retry_after))
        last = f"HTTP {status}" if status is not None else error
        raise TwilioUnavailable(
            f"{self._api} {method} {url.path} for {account_name(self.account)} still failing"
            f" after {policy.attempts} attempts (last: {last}): Twilio is unavailable or rate"
            " limiting. Run the command again later.",
            status=status,
        )

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        told = parse_retry_after(retry_after)
        if told is not None:
            return min(told, self._policy.max_retry_after)
        ceiling = min(self._policy.backoff_cap, self._policy.backoff_base * 2**attempt)
        return self._random.uniform(0, ceiling)

    async def _attempt(
        self, method: str, url: URL, form: list[tuple[str, str]] | None
    ) -> tuple[int | None, bytes, str | None, str]:
        try:
            async with self._session.request(
                method,
                url,
                data=form,
                headers={"Accept": "application/json", "Authorization": self._authorization},
                timeout=aiohttp.ClientTimeout(total=self._policy.timeout),
                allow_redirects=False,
            ) as response:
                body = await response.read()
                return response.status, body, response.headers.get("Retry-After"), ""
        except (aiohttp.ClientError, TimeoutError) as exc:
            return None, b"", None, f"{type(exc).__name__}: {exc}".rstrip(": ")

    def _decode(self, url: URL, body: bytes) -> dict[str, Any]:
        if not body:
            return {}
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            raise TwilioApiError(
                f"{self._api} answered {url.path} with a body that is not a JSON object;"
                f" check the base URL ({self._base})"
            )
        return data

    def _refusal(self, method: str, url: URL, status: int, body: bytes) -> TwilioApiError:
        try:
            error = orjson.loads(body)
        except orjson.JSONDecodeError:
            error = None
        error = error if isinstance(error, dict) else {}
        code = error.get("code") if isinstance(error.get("code"), int) else None
        twilio = f"Twilio error {code}: {error.get('message', '')}" if code else "no Twilio error"
        where = f"{method} {url.path}: HTTP {status}, {twilio}"
        if status in (401, 403):
            return CredentialsRefused(
                f"the {self._api} refused {credential_hint(self.account, self.credential)} of"
                f" account {account_name(self.account)} ({where}). Check that credential: it"
                " must belong to this account and be current.",
                status=status,
                code=code,
            )
        return TwilioApiError(
            f"the {self._api} refused {where}; repeating it will not help",
            status=status,
            code=code,
        )
