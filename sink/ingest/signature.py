"""Twilio webhook signature check. Pure: no I/O, no framework imports.

Twilio appends ``bodySHA256=<hex sha256 of the body>`` to the configured URL and sends
``X-Twilio-Signature = base64(HMAC(key, full URL))``. We check both the HMAC over the URL
and the body hash, in constant time, for every configured key (rotation) and for the URL
with and without its default port (as twilio-python does).

Requests carrying ``X-Twilio-Webhooks-Signature-Settings`` are signed with a SharedKey
secret and the algorithm that header names (HMAC_SHA256 today); without it, the legacy
HMAC-SHA1 with the account's Auth Token applies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, urlsplit, urlunsplit

SIGNATURE_HEADER: Final = "X-Twilio-Signature"
SETTINGS_HEADER: Final = "X-Twilio-Webhooks-Signature-Settings"
BODY_HASH_PARAM: Final = "bodySHA256"

HMAC_SHA1: Final = "HMAC_SHA1"
HMAC_SHA256: Final = "HMAC_SHA256"
_DIGESTS: Final[dict[str, Callable[..., hashlib._Hash]]] = {
    HMAC_SHA1: hashlib.sha1,
    HMAC_SHA256: hashlib.sha256,
}
_DEFAULT_PORTS: Final = {"https": 443, "http": 80}

# Reasons are bounded (metric labels) and explain themselves in logs.
REASONS: Final = {
    "missing_signature": "no X-Twilio-Signature header",
    "missing_body_hash": "the URL has no bodySHA256 query parameter",
    "duplicate_body_hash": "the URL has bodySHA256 more than once",
    "body_hash_mismatch": "bodySHA256 does not match the body received",
    "bad_signature": "X-Twilio-Signature does not match any configured key for this URL",
    "unknown_account": "the URL names an account that is not configured (SINK_ACCOUNTS_FILE)",
    "unsupported_algorithm": "X-Twilio-Webhooks-Signature-Settings names an unknown algorithm",
    "no_key_configured": "no key is configured for the signature scheme this request uses",
    "bad_host": "the URL rebuilt from the request has no valid host[:port] or is not UTF-8"
    " (its Host, X-Forwarded-Host or X-Forwarded-Proto header); set SINK_PUBLIC_URL to the"
    " exact URL configured in Twilio",
}


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """The outcome of a check. ``key``: the position, in the keys given to ``verify``, of
    the key that signed. ``account``: the account that signed, when the caller knows it
    (the one the URL names, or the only owner of that key). ``detail``: an explanation
    more precise than the reason's own (naming the account)."""

    ok: bool
    reason: str | None = None
    key: int | None = field(default=None, compare=False)
    account: str | None = field(default=None, compare=False)
    detail: str | None = field(default=None, compare=False)

    @property
    def explanation(self) -> str:
        if self.detail is not None:
            return self.detail
        return "signature valid" if self.reason is None else REASONS[self.reason]


VALID: Final = SignatureCheck(ok=True)


def algorithm_from_settings(header: str | None) -> str:
    """The algorithm named by X-Twilio-Webhooks-Signature-Settings (HMAC_SHA1 if absent)."""
    for part in (header or "").split(","):
        name, sep, value = part.partition("=")
        if sep and name.strip().lower() == "algorithm" and value.strip():
            return value.strip().upper()
    return HMAC_SHA1


def is_checkable(url: str) -> bool:
    """Whether the URL has a host[:port] that parses and is text HMAC can sign.

    A URL rebuilt from a Host header such as ``a:b``, ``[x``, ``a:99999`` (or one with
    bytes that are not UTF-8) is not; ``url_variants`` and ``verify`` need one that is.
    """
    try:
        url.encode("utf-8")
        urlsplit(url).port  # noqa: B018 - raises ValueError for a bad host or port
    except ValueError:
        return False
    return True


def url_variants(url: str) -> list[str]:
    """The URL as given, without its port, and with the scheme's default port added.

    Raises ValueError for a URL that is not ``is_checkable``.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    variants = [url]
    if parts.port is not None:
        variants.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}")))
    else:
        default = _DEFAULT_PORTS.get(parts.scheme)
        if default is not None:
            variants.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}")))
    return variants


def compute_signature(url: str, key: bytes, algorithm: str = HMAC_SHA1) -> str:
    """base64(HMAC(key, url)) as Twilio computes it for a JSON body (no form parameters)."""
    digest = hmac.new(key, url.encode("utf-8"), _DIGESTS[algorithm]).digest()
    return base64.b64encode(digest).decode("ascii")


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _query_body_hashes(url: str) -> list[str]:
    query = urlsplit(url).query
    return [v for k, v in parse_qsl(query, keep_blank_values=True) if k == BODY_HASH_PARAM]


def verify(
    *,
    urls: Sequence[str],
    body: bytes,
    signature: str | None,
    settings_header: str | None,
    auth_tokens: Sequence[bytes],
    shared_keys: Sequence[bytes] = (),
) -> SignatureCheck:
    """Check a delivery. ``urls`` are the candidate full URLs (public URL, rebuilt URL);
    those that are not ``is_checkable`` are left out (``bad_host`` when none is left).
    A valid check says which of the keys signed (``key``), so the caller can tell whose
    key it is; every key is still tried, in constant time each."""
    if not signature:
        return SignatureCheck(False, "missing_signature")
    algorithm = algorithm_from_settings(settings_header)
    if algorithm not in _DIGESTS:
        return SignatureCheck(False, "unsupported_algorithm")
    keys = shared_keys if settings_header else auth_tokens
    if not keys:
        return SignatureCheck(False, "no_key_configured")
    urls = [url for url in urls if is_checkable(url)]
    if not urls:
        return SignatureCheck(False, "bad_host")

    given = signature.strip().encode("ascii", errors="replace")
    matched = False
    body_ok = False
    signer: int | None = None
    hash_seen = False
    actual_hash = body_hash(body).encode("ascii")
    for url in urls:
        hashes = _query_body_hashes(url)
        if len(hashes) > 1:
            return SignatureCheck(False, "duplicate_body_hash")
        if not hashes:
            continue
        hash_seen = True
        claimed = hashes[0].lower().encode("ascii", "replace")
        this_body_ok = hmac.compare_digest(claimed, actual_hash)
        for variant in url_variants(url):
            for n, key in enumerate(keys):
                expected = compute_signature(variant, key, algorithm).encode("ascii")
                # No short-circuit: every comparison runs, each in constant time.
                hit = hmac.compare_digest(expected, given)
                matched |= hit
                if hit and this_body_ok:
                    body_ok = True
                    signer = n
    if not hash_seen:
        return SignatureCheck(False, "missing_body_hash")
    if not matched:
        return SignatureCheck(False, "bad_signature")
    if not body_ok:
        return SignatureCheck(False, "body_hash_mismatch")
    return SignatureCheck(True, key=signer)
