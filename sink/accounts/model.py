"""The Twilio accounts a sink serves: their signing tokens and REST credentials. Pure.

An account comes from the accounts file (``SINK_ACCOUNTS_FILE``) or from the one-account
settings (``SINK_TWILIO_ACCOUNT_SID`` with ``SINK_TWILIO_AUTH_TOKEN`` and the API key).
Secrets are ``SecretStr``, and the bytes kept for the HMAC are left out of every repr.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal

from pydantic import SecretStr

FROM_FILE: Final = "file"
FROM_SETTINGS: Final = "settings"
OTHER_ACCOUNT: Final = "other"
"""The metrics' ``account`` label of an account that is not configured: labels stay bounded."""


@dataclass(frozen=True, slots=True)
class RestCredential:
    """One HTTP basic-auth pair for Twilio's REST APIs, and how to name it in a message
    without showing it (``API key SK…`` or ``auth token 2 of 3``)."""

    username: str
    password: SecretStr
    name: str


@dataclass(frozen=True, slots=True)
class Account:
    """One Twilio account: its tokens (several during a rotation), its optional API key,
    and its own rate limit for the Studio REST API (Twilio's limits are per account)."""

    sid: str
    label: str
    auth_tokens: tuple[SecretStr, ...] = ()
    api_key_sid: str | None = None
    api_key_secret: SecretStr | None = None
    backfill_rate_limit: float | None = None
    source: Literal["file", "settings"] = FROM_FILE
    signing_keys: tuple[bytes, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        keys = tuple(token.get_secret_value().encode() for token in self.auth_tokens)
        object.__setattr__(self, "signing_keys", keys)

    def rest_credentials(self) -> tuple[RestCredential, ...]:
        """Every credential for the REST APIs, in the order to try them: the API key
        (preferred), then the Account SID with each auth token, current one first."""
        found: list[RestCredential] = []
        if self.api_key_sid and self.api_key_secret is not None:
            found.append(
                RestCredential(self.api_key_sid, self.api_key_secret, f"API key {self.api_key_sid}")
            )
        count = len(self.auth_tokens)
        for n, token in enumerate(self.auth_tokens, start=1):
            name = "auth token" if count == 1 else f"auth token {n} of {count}"
            found.append(RestCredential(self.sid, token, name))
        return tuple(found)

    def rate_limit(self, default: float) -> float:
        """Studio REST calls per second for this account."""
        return self.backfill_rate_limit if self.backfill_rate_limit is not None else default


@dataclass(frozen=True, slots=True)
class Accounts:
    """The accounts in force. ``unbound_tokens``: tokens set without an Account SID (the
    one-account form before accounts had SIDs), tried by ``POST /events`` like any other.
    ``fallback``: an API key set without an Account SID, used for an account that has no
    credentials of its own (the behaviour of a sink that knew one account)."""

    by_sid: Mapping[str, Account] = field(default_factory=lambda: MappingProxyType({}))
    unbound_tokens: tuple[SecretStr, ...] = ()
    fallback: RestCredential | None = None
    every_signing_key: tuple[bytes, ...] = field(default=(), repr=False, compare=False)
    key_owners: Mapping[bytes, str | None] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )

    def __post_init__(self) -> None:
        keys: dict[bytes, None] = {}
        owners: dict[bytes, str | None] = {}
        for account in self.by_sid.values():
            keys.update(dict.fromkeys(account.signing_keys))
            for key in account.signing_keys:  # a token two accounts share names neither
                owners[key] = account.sid if owners.get(key, account.sid) == account.sid else None
        unbound = [t.get_secret_value().encode() for t in self.unbound_tokens]
        keys.update(dict.fromkeys(unbound))
        owners.update(dict.fromkeys(unbound))
        object.__setattr__(self, "every_signing_key", tuple(keys))
        object.__setattr__(self, "key_owners", MappingProxyType(owners))
        object.__setattr__(self, "by_sid", MappingProxyType(dict(self.by_sid)))

    @classmethod
    def of(
        cls,
        accounts: Iterable[Account],
        *,
        unbound_tokens: Iterable[SecretStr] = (),
        fallback: RestCredential | None = None,
    ) -> Accounts:
        return cls(
            {account.sid: account for account in accounts},
            tuple(unbound_tokens),
            fallback,
        )

    def get(self, sid: str) -> Account | None:
        return self.by_sid.get(sid)

    def __len__(self) -> int:
        return len(self.by_sid)

    def listed(self) -> list[Account]:
        """Every account, by label."""
        return sorted(self.by_sid.values(), key=lambda account: (account.label, account.sid))

    def signing_keys(self, sid: str | None = None) -> tuple[bytes, ...]:
        """The tokens a delivery may be signed with: that account's alone when the URL
        names it (``POST /events/{AccountSid}``), else every configured one."""
        if sid is None:
            return self.every_signing_key
        account = self.by_sid.get(sid)
        return account.signing_keys if account is not None else ()

    def signer_of(self, key: bytes) -> str | None:
        """The account a signing key belongs to; None when it is no account's own (an
        unbound token) or several accounts have it."""
        return self.key_owners.get(key)

    def rest_credentials(self, sid: str) -> tuple[RestCredential, ...]:
        """The credentials to call the REST APIs for ``sid``, in the order to try them."""
        account = self.by_sid.get(sid)
        if account is not None and account.rest_credentials():
            return account.rest_credentials()
        return (self.fallback,) if self.fallback is not None else ()

    def rate_limit(self, sid: str, default: float) -> float:
        account = self.by_sid.get(sid)
        return account.rate_limit(default) if account is not None else default

    def metric_label(self, sid: str | None) -> str:
        """The ``account`` label of a metric: a configured account's label, else "other",
        so that an arbitrary SID in an event cannot add a time series."""
        account = self.by_sid.get(sid) if sid is not None else None
        return account.label if account is not None else OTHER_ACCOUNT
