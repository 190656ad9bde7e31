"""Logging in to the UI: the admin token, a signed session cookie, CSRF tokens.

The session is stateless: ``<expiry>.<nonce>.<mac>``, MACed with a key derived from
SINK_ADMIN_TOKEN, so rotating the token ends every session. The CSRF token is a MAC of the
session's nonce: a page's forms carry it, and a POST without the matching one is refused.
Comparisons are constant-time. The token itself is never logged or put in a cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from sink.config import Settings

SESSION_COOKIE: Final = "sink_ui_session"
LOGIN_COOKIE: Final = "sink_ui_login"
COOKIE_PATH: Final = "/ui"
SESSION_SECONDS: Final = 12 * 3600
CSRF_FIELD: Final = "csrf_token"
CSRF_HEADER: Final = "X-CSRF-Token"
LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


@dataclass(frozen=True, slots=True)
class Session:
    nonce: str
    expires: int


class UiAuth:
    """Checks the admin token and signs/reads sessions. Its repr shows no secret."""

    def __init__(self, admin_token: str) -> None:
        self._token_digest = hashlib.sha256(admin_token.encode()).digest()
        self._key = hmac.new(admin_token.encode(), b"studio-sink ui session v1", "sha256").digest()

    def __repr__(self) -> str:
        return "UiAuth(admin_token=**********)"

    def token_ok(self, candidate: str) -> bool:
        """Constant-time check (hashing first, so the length does not leak either)."""
        digest = hashlib.sha256(candidate.encode("utf-8", "surrogatepass")).digest()
        return hmac.compare_digest(digest, self._token_digest)

    def _mac(self, *parts: str) -> str:
        return hmac.new(self._key, "|".join(parts).encode(), "sha256").hexdigest()

    def new_session(self, now: float | None = None) -> tuple[Session, str]:
        expires = int(now if now is not None else time.time()) + SESSION_SECONDS
        session = Session(nonce=secrets.token_hex(16), expires=expires)
        value = f"{expires}.{session.nonce}.{self._mac('session', str(expires), session.nonce)}"
        return session, value

    def read_session(self, value: str | None, now: float | None = None) -> Session | None:
        if not value or value.count(".") != 2:
            return None
        expires_text, nonce, mac = value.split(".")
        expected = self._mac("session", expires_text, nonce)
        if not hmac.compare_digest(mac.encode(), expected.encode()):
            return None
        try:
            expires = int(expires_text)
        except ValueError:
            return None
        if expires < (now if now is not None else time.time()):
            return None
        return Session(nonce=nonce, expires=expires)

    def csrf_token(self, session: Session) -> str:
        return self._mac("csrf", session.nonce)

    def csrf_ok(self, session: Session, candidate: str | None) -> bool:
        if not candidate:
            return False
        return hmac.compare_digest(candidate.encode(), self.csrf_token(session).encode())


def is_https(request: web.Request, settings: Settings) -> bool:
    """True when the browser talks https to us (directly, through a trusted proxy, or as
    SINK_PUBLIC_URL says)."""
    if request.scheme == "https":
        return True
    if settings.public_url and settings.public_url.lower().startswith("https://"):
        return True
    if settings.trust_forwarded:
        proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        return proto == "https"
    return False


def is_loopback(request: web.Request) -> bool:
    host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
    return host.lower() in LOOPBACK_HOSTS


def login_allowed(request: web.Request, settings: Settings) -> bool:
    """The token may cross the network only over https; plain http only on localhost."""
    return is_https(request, settings) or is_loopback(request)


def set_cookie(
    response: web.StreamResponse,
    request: web.Request,
    settings: Settings,
    name: str,
    value: str,
    max_age: int,
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        secure=is_https(request, settings),
        httponly=True,
        samesite="Strict",
    )


def clear_cookie(response: web.StreamResponse, name: str) -> None:
    response.del_cookie(name, path=COOKIE_PATH)


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path under /ui on this site, never elsewhere."""
    if (
        target
        and target.startswith("/ui")
        and not target.startswith("//")
        and "\\" not in target
        and not any(ord(c) < 32 for c in target)
    ):
        return target
    return "/ui/"
