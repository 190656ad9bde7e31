"""Redaction of personal data before it is stored. Pure: no I/O.

``SINK_CONTACT_MODE`` says how a contact address is stored: as received (``keep``), as
``h:<hex>`` = HMAC-SHA256(SINK_PII_KEY, address) (``hash``), or with only its channel prefix
and last four characters (``mask``: ``whatsapp:+*******0123``). ``SINK_REDACT_CONTEXT_PATHS``
names context values (dotted paths, ``*`` matches one level) replaced by ``[redacted]``.

Every function here is idempotent: a value already hashed or masked is left as it is, so
replay and ``studio-sink privacy apply`` can run any number of times. The key lives in the
settings only; it is never stored and never part of a repr.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Any, Final, Literal, TypeVar
from urllib.parse import quote

from sink import jsontext
from sink.config import Settings
from sink.errors import ConfigError
from sink.ingest.cloudevents import Delivery, Event, Rejection
from sink.ingest.studio_facts import ExecutionFacts

Mode = Literal["keep", "hash", "mask"]
REDACTED: Final = "[redacted]"
CONTACT_FIELD: Final = "contact_channel_address"
_HASHED = re.compile(r"h:[0-9a-f]{64}")
# A channel address that is a phone number (an optional channel prefix, then E.164), in text.
_PHONE = re.compile(r"(?<![0-9A-Za-z])(?:[a-z][a-z0-9-]*:)?(?:\+|%2[bB])[1-9][0-9]{6,14}(?![0-9])")
_PHONE_IN_BYTES = re.compile(
    rb"(?:[a-z][a-z0-9-]*:)?(?:\+|%2[bB]|\\u002[bB])[1-9][0-9]{6,14}(?![0-9])"
)
_PLUS_FORMS = ("%2B", "%2b", "\\u002b", "\\u002B")

T = TypeVar("T")


def contact_key(address: str, key: bytes) -> str:
    """The hashed form of an address: ``h:`` + HMAC-SHA256(key, address) in hex."""
    return "h:" + hmac.new(key, address.encode("utf-8"), hashlib.sha256).hexdigest()


def mask(address: str) -> str:
    """The channel prefix (``whatsapp:``) and ``+`` kept, the rest but the last 4 starred."""
    prefix, sep, rest = address.rpartition(":")
    head = prefix + sep
    plus = "+" if rest.startswith("+") else ""
    body = rest[len(plus) :]
    if len(body) <= 4:
        return head + plus + "*" * len(body)
    return head + plus + "*" * (len(body) - 4) + body[-4:]


def is_redacted(value: str) -> bool:
    """True for a value already hashed or masked (a real address never holds a ``*``)."""
    return bool(_HASHED.fullmatch(value)) or "*" in value


def text_forms(address: str) -> list[str]:
    """The ways an address can be written in raw bytes: plain, digits only, URL-encoded,
    JSON-escaped. Erasure searches rejected raw bytes for each."""
    digits = "".join(ch for ch in address if ch.isdigit())
    escaped = "".join(ch if ch.isalnum() else f"\\u{ord(ch):04x}" for ch in address)
    forms = [address, quote(address, safe=""), escaped]
    if len(digits) >= 7:
        forms.append(digits)
    return list(dict.fromkeys(forms))


def _pattern(text: str) -> tuple[str, ...]:
    return tuple(part for part in text.strip().split(".") if part)


@dataclass(frozen=True, slots=True)
class Policy:
    """What to redact, and how. ``key`` is the HMAC key (bytes of SINK_PII_KEY)."""

    mode: Mode = "keep"
    key: bytes = field(default=b"", repr=False)
    context_paths: tuple[tuple[str, ...], ...] = ()

    @property
    def active(self) -> bool:
        return self.mode != "keep" or bool(self.context_paths)

    def contact(self, value: str | None) -> str | None:
        """An address as this policy stores it."""
        if value is None or self.mode == "keep" or is_redacted(value):
            return value
        return contact_key(value, self.key) if self.mode == "hash" else mask(value)

    def stored_forms(self, address: str) -> list[str]:
        """Every form a stored copy of the address can take: plain, hashed (with a key),
        masked. Erasure matches them all, whatever the mode was when a row was written."""
        forms = [address, mask(address)]
        if self.key:
            forms.append(contact_key(address, self.key))
        return forms

    def json_value(self, value: Any) -> Any:
        """A decoded JSON value with every contact address in it redacted: the values of
        ``contact_channel_address`` keys and every phone address inside any string."""
        if self.mode == "keep":
            return value
        return self._walk(value, contact_field=False)

    def _walk(self, value: Any, *, contact_field: bool) -> Any:
        if isinstance(value, str):
            if contact_field:
                return self.contact(value)
            return _PHONE.sub(self._text_match, value) if "+" in value or "%" in value else value
        if isinstance(value, dict):
            return {k: self._walk(v, contact_field=k == CONTACT_FIELD) for k, v in value.items()}
        if isinstance(value, list):
            return [self._walk(v, contact_field=False) for v in value]
        return value

    def context(self, context: Any) -> Any:
        """A Studio context with the configured paths replaced by ``[redacted]`` (the keys
        stay, so it shows that a value existed) and its addresses redacted."""
        if self.context_paths:
            context = _redact_paths(context, self.context_paths, ())
        return self.json_value(context)

    def rows(self, rows: Sequence[T]) -> list[T]:
        """Dataclass rows with a ``contact_channel_address`` field, redacted."""
        if self.mode == "keep":
            return list(rows)
        return [
            replace(row, contact_channel_address=self.contact(row.contact_channel_address))  # type: ignore[type-var, attr-defined]
            for row in rows
        ]

    def raw(self, raw: bytes) -> bytes:
        """Raw bytes of a rejected element: its JSON redacted when it parses, else every
        phone address in the text (plain or URL-encoded) redacted in place."""
        if self.mode == "keep":
            return raw
        try:
            decoded = jsontext.loads(raw)
        except jsontext.JsonError:
            return _PHONE_IN_BYTES.sub(self._raw_match, raw)
        try:
            return jsontext.dumps(self.json_value(decoded)).encode("utf-8", "surrogatepass")
        except (TypeError, ValueError):
            return _PHONE_IN_BYTES.sub(self._raw_match, raw)

    def _text_match(self, match: re.Match[str]) -> str:
        return self.contact(_plus(match.group(0))) or ""

    def _raw_match(self, match: re.Match[bytes]) -> bytes:
        return (self.contact(_plus(match.group(0).decode("ascii"))) or "").encode("ascii")

    def delivery(self, delivery: Delivery) -> Delivery:
        """A parsed delivery as it will be stored: events and rejected elements redacted."""
        if self.mode == "keep":
            return delivery
        return replace(
            delivery,
            events=[self._event(event) for event in delivery.events],
            rejected=[self._rejection(rejection) for rejection in delivery.rejected],
        )

    def _event(self, event: Event) -> Event:
        studio = event.studio
        if isinstance(studio, ExecutionFacts):
            studio = replace(
                studio, contact_channel_address=self.contact(studio.contact_channel_address)
            )
        return replace(
            event,
            data_json=self._json_text(event.data_json),
            extensions_json=self._json_text(event.extensions_json),
            studio=studio,
        )

    def _json_text(self, text: str | None) -> str | None:
        if text is None:
            return None
        return jsontext.dumps(self.json_value(jsontext.loads(text)))

    def _rejection(self, rejection: Rejection) -> Rejection:
        return replace(rejection, raw=self.raw(rejection.raw))


def _plus(text: str) -> str:
    """An address with its encoded ``+`` (URL-encoded, JSON-escaped) written as ``+``."""
    for form in _PLUS_FORMS:
        text = text.replace(form, "+")
    return text


def _redact_paths(value: Any, patterns: tuple[tuple[str, ...], ...], path: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return value
    out: dict[str, Any] | list[Any] = {} if isinstance(value, dict) else []
    for key, child in items:
        here = (*path, key)
        if child is not None and any(_matches(p, here) for p in patterns):
            child = REDACTED
        else:
            child = _redact_paths(child, patterns, here)
        if isinstance(out, dict):
            out[key] = child
        else:
            out.append(child)
    return out


def _matches(pattern: tuple[str, ...], path: tuple[str, ...]) -> bool:
    return len(pattern) == len(path) and all(map(fnmatchcase, path, pattern))


def policy(settings: Settings) -> Policy:
    """The redaction policy the settings ask for; ConfigError when hash mode has no key."""
    key = settings.pii_key.get_secret_value() if settings.pii_key is not None else ""
    return _policy(settings.contact_mode, key, tuple(settings.redact_context_paths))


@functools.lru_cache(maxsize=8)
def _policy(mode: Mode, key: str, paths: tuple[str, ...]) -> Policy:
    if mode == "hash" and not key:
        raise ConfigError(
            "SINK_CONTACT_MODE=hash needs SINK_PII_KEY, the secret key of the HMAC that"
            " hashes contact addresses: set it to a long random value (e.g. `openssl rand"
            " -hex 32`) and keep it outside the database; without it, use"
            " SINK_CONTACT_MODE=mask or keep"
        )
    patterns = tuple(p for p in (_pattern(text) for text in paths) if p)
    return Policy(mode=mode, key=key.encode("utf-8"), context_paths=patterns)


KEEP: Final = Policy()
