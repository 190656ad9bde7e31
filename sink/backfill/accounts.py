"""Studio clients per Twilio account: each item is fetched with its own account's credentials,
under its own account's rate limit (Twilio's limits are per account).

``AccountClients`` reads the accounts in force (``sink.accounts.watch.AccountsHolder``) at
each use, so a reload is seen at once. For an account it gives a ``Caller``: a client whose
credentials are that account's (``sink.backfill.credentials``: rotation-aware) and whose
rate limit is the account's row of ``sink.rate_limits``, shared by every replica.

Which account, when nothing names one (an execution not stored with its account, a flow
whose account is unknown): the one account with REST credentials if there is exactly one,
or the API key set without an Account SID (``SINK_TWILIO_API_KEY_SID`` alone, the
one-account form). With several accounts the sink does not guess: a guess would send one
account's credentials for another account's resource, and the 401 that earns would mark
good credentials invalid. Such an item fails and says to name the account
(``studio-sink backfill --account AC...``). "Every flow" (``--flows``) with several
accounts means every flow of each of them (``fan_out``).

An account without REST credentials, or whose credentials Twilio refused (all of them,
less than ``REFUSED_SECONDS`` ago), raises ``WaitForCredentials``: its items wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import aiohttp
import asyncpg

from sink.accounts.load import load_accounts
from sink.accounts.model import Accounts, RestCredential
from sink.accounts.watch import AccountsHolder
from sink.backfill import queue as q
from sink.backfill.client import StudioClient
from sink.backfill.credentials import AccountCredentials
from sink.backfill.ratelimit import Limiter, RateLimiter, SharedRateLimiter
from sink.config import Settings
from sink.metrics import Metrics

REFUSED_SECONDS: Final = 300.0
"""How long an account whose every credential Twilio refused is not called again from this
process (unless the accounts are reloaded first); its waiting items are then tried again."""
OK_WRITE_SECONDS: Final = 60.0  # sink.accounts.credentials_checked_at: refreshed this often


class WaitForCredentials(Exception):
    """The item's account has no REST credentials that work; the item waits (not failed)
    until the accounts are reloaded or the sink restarts with credentials that work."""

    def __init__(self, account_sid: str | None, message: str) -> None:
        super().__init__(message)
        self.account_sid = account_sid


class AccountUnknown(Exception):
    """Several accounts are configured and nothing says which one an item belongs to."""


@dataclass(frozen=True, slots=True)
class Caller:
    """A client calling as ``account_sid`` (None: the API key set without an Account SID)."""

    account_sid: str | None
    client: StudioClient


class Callers(Protocol):
    """What the item worker needs: a client per account, and what to remember of them."""

    def caller(self, account_sid: str | None) -> Caller:
        """The client for the account (None: unknown); ``WaitForCredentials`` when it has no
        credentials that work, ``AccountUnknown`` when several accounts could be meant."""
        ...

    def fan_out(self) -> list[str]:
        """The accounts "every flow" means when no account is named (several, or none:
        the one ``caller(None)`` gives)."""
        ...

    def refused(self, account_sid: str | None) -> None:
        """Twilio refused every credential of the account."""
        ...

    def worked(self, account_sid: str | None) -> bool:
        """A call as the account was answered; True when ``sink.accounts`` should be told."""
        ...


class OneClient:
    """``Callers`` over one client, for every account (tests, and callers with one key)."""

    def __init__(self, client: StudioClient) -> None:
        self._client = client

    def caller(self, account_sid: str | None) -> Caller:
        return Caller(account_sid, self._client)

    def fan_out(self) -> list[str]:
        return []

    def refused(self, account_sid: str | None) -> None:
        return None

    def worked(self, account_sid: str | None) -> bool:
        return account_sid is not None


def callable_accounts(accounts: Accounts) -> list[str]:
    """The accounts with REST credentials of their own, by label."""
    return [account.sid for account in accounts.listed() if account.rest_credentials()]


class AccountClients:
    """``Callers`` over the accounts in force; ``close()`` at the end. After ``bind(pool)``
    each account's rate limit is shared by every replica (a row of ``sink.rate_limits``
    keyed by the account, or by the API key serving accounts without credentials of their
    own); before, it is this process's alone.

    The memory of which credential worked is kept per account for the process's life; the
    accounts whose credentials were refused, the clients and their rates are forgotten on
    each accepted reload."""

    def __init__(
        self, settings: Settings, holder: AccountsHolder, metrics: Metrics | None = None
    ) -> None:
        self._settings = settings
        self._holder = holder
        self._metrics = metrics
        self._semaphore = asyncio.Semaphore(settings.backfill_concurrency)  # per process
        self._session: aiohttp.ClientSession | None = None
        self._pool: asyncpg.Pool[Any] | None = None
        self._clients: dict[str, tuple[float, StudioClient]] = {}  # key: (rate, client)
        self._credentials: dict[str, AccountCredentials] = {}
        self._refused: dict[str | None, float] = {}  # account: time.monotonic() of it
        self._ok_written: dict[str, float] = {}
        holder.on_change(self._reloaded)

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics | None = None) -> AccountClients:
        """Over the accounts the settings load now, never reloaded (commands, tests);
        ``AccountsFileError`` when the accounts file is refused."""
        return cls(settings, AccountsHolder.fixed(settings, load_accounts(settings)), metrics)

    @property
    def accounts(self) -> Accounts:
        return self._holder.current

    def bind(self, pool: asyncpg.Pool[Any]) -> None:
        self._pool = pool

    def caller(self, account_sid: str | None) -> Caller:
        accounts = self._holder.current
        if account_sid is None:
            account_sid = self._only_account(accounts)
        credentials = self._credentials_of(account_sid)
        if not credentials:
            raise WaitForCredentials(account_sid, _missing(account_sid))
        refused_at = self._refused.get(account_sid)
        if refused_at is not None and time.monotonic() - refused_at < REFUSED_SECONDS:
            raise WaitForCredentials(account_sid, _invalid(account_sid))
        configured = accounts.get(account_sid) if account_sid is not None else None
        if configured is not None and configured.rest_credentials():  # its own credentials
            return Caller(account_sid, self._client(configured.sid, configured.sid))
        key = credentials[0].username  # the API key that serves accounts without their own
        return Caller(account_sid, self._client(key, None))

    def fan_out(self) -> list[str]:
        found = callable_accounts(self._holder.current)
        return found if len(found) > 1 else []

    def refused(self, account_sid: str | None) -> None:
        self._refused[account_sid] = time.monotonic()
        if account_sid is not None:
            self._ok_written.pop(account_sid, None)

    def worked(self, account_sid: str | None) -> bool:
        self._refused.pop(account_sid, None)
        if account_sid is None:
            return False
        now = time.monotonic()
        last = self._ok_written.get(account_sid)
        if last is not None and now - last < OK_WRITE_SECONDS:
            return False
        self._ok_written[account_sid] = now
        return True

    def preferred(self, account_sid: str) -> str | None:
        """The name of the credential the account's calls try first, once one was refused
        and another worked (``auth token 2 of 2``); None until then."""
        source = self._credentials.get(account_sid)
        preferred = source.preferred if source is not None else None
        return preferred.name if preferred is not None else None

    async def close(self) -> None:
        self._clients.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- inside ------------------------------------------------------------------------

    def _only_account(self, accounts: Accounts) -> str | None:
        found = callable_accounts(accounts)
        if len(found) > 1:
            raise AccountUnknown(
                f"{len(found)} accounts are configured and the stored rows do not say which"
                " one this item belongs to (its execution or flow is not stored with its"
                " account); queue it again naming it: studio-sink backfill --account AC..."
            )
        return found[0] if found else None

    def _credentials_of(self, account_sid: str | None) -> Sequence[RestCredential]:
        accounts = self._holder.current
        if account_sid is not None:
            return accounts.rest_credentials(account_sid)
        return (accounts.fallback,) if accounts.fallback is not None else ()

    def _client(self, key: str, account_sid: str | None) -> StudioClient:
        accounts = self._holder.current
        default = self._settings.backfill_rate_limit
        rate = accounts.rate_limit(account_sid, default) if account_sid else default
        cached = self._clients.get(key)
        if cached is not None and cached[0] == rate:
            return cached[1]
        limiter: Limiter = RateLimiter(rate)  # this process only, until bind(pool)
        if self._pool is not None:
            limiter = SharedRateLimiter(rate, key=key, source=q.PostgresSlots(self._pool, key))
        source = self._credentials.get(key)
        if source is None:
            named = f"{account_sid} ({accounts.metric_label(account_sid)})" if account_sid else key
            source = AccountCredentials(named, lambda: self._credentials_of(account_sid))
            self._credentials[key] = source
        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"User-Agent": "studio-sink"})
        client = StudioClient(
            self._settings.studio_base_url,
            source,
            max_retry_after=self._settings.backfill_max_retry_after,
            on_call=self._on_call,
            on_retry=self._on_retry,
            rate_limiter=limiter,
            semaphore=self._semaphore,
            session=self._session,
        )
        self._clients[key] = (rate, client)
        return client

    def _on_call(self, endpoint: str, status: int | None) -> None:
        if self._metrics is not None:
            label = str(status) if status is not None else "error"
            self._metrics.studio_api_calls.labels(endpoint, label).inc()

    def _on_retry(self, endpoint: str) -> None:
        if self._metrics is not None:
            self._metrics.studio_api_retries.labels(endpoint).inc()

    def _reloaded(self, _accounts: Accounts) -> None:
        """New accounts: refusals and rates are those of the old ones."""
        self._refused.clear()
        self._ok_written.clear()
        self._clients.clear()


def _missing(account_sid: str | None) -> str:
    if account_sid is None:
        return (
            "no REST credentials are configured: give the account an API key (api_key_sid and"
            " api_key_secret) or auth_tokens in SINK_ACCOUNTS_FILE, or set"
            " SINK_TWILIO_API_KEY_SID and SINK_TWILIO_API_KEY_SECRET (or SINK_TWILIO_ACCOUNT_SID"
            " with SINK_TWILIO_AUTH_TOKEN); the item waits and proceeds once they are loaded"
        )
    return (
        f"account {account_sid} has no REST credentials in this sink: add its table to"
        " SINK_ACCOUNTS_FILE with an API key (api_key_sid, api_key_secret) or auth_tokens,"
        " then reload (SIGHUP; a changed file is read by itself); the item waits until then"
    )


def _invalid(account_sid: str | None) -> str:
    who = f"account {account_sid}" if account_sid else "the API key"
    return (
        f"Twilio refused every REST credential of {who} (credentials_status 'invalid' in"
        " studio.accounts): fix them in SINK_ACCOUNTS_FILE or the SINK_TWILIO_* settings and"
        " reload (SIGHUP) or restart; the item waits until then"
    )
