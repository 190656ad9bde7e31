"""The signature check of a delivery as the receiver (and ``quarantine retry``) runs it.

``POST /events/{AccountSid}`` is checked against that account's tokens alone, so its cost
does not grow with the number of accounts; ``POST /events`` against every configured token.
Either way the check says which account signed when that is known: the one the URL names
(the URL is part of what Twilio signs), or the only account holding the token that matched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Final, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

from sink.accounts.model import Accounts
from sink.config import Settings
from sink.errors import shown
from sink.ingest import signature
from sink.twilio import is_sid, sid_rule

EVENTS_PATH: Final = "/events"
ACCOUNT_PREFIX: Final = f"{EVENTS_PATH}/"


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


def _account_segment(raw_path: str) -> str | None:
    """The last segment of ``/events/{AccountSid}`` as received (percent-encoded)."""
    path = raw_path.partition("?")[0]
    if not path.startswith(ACCOUNT_PREFIX):
        return None
    segment = path[len(ACCOUNT_PREFIX) :]
    return segment if segment and "/" not in segment else None


def account_in_path(raw_path: str) -> str | None:
    """The account a ``POST /events/{AccountSid}`` names (None for ``POST /events``)."""
    segment = _account_segment(raw_path)
    return None if segment is None else unquote(segment)


def signed_url(request: RequestView, settings: Settings) -> str:
    """The URL Twilio signed: SINK_PUBLIC_URL's origin and path with the query received,
    or the URL rebuilt from the request (and trusted X-Forwarded-* headers).

    SINK_PUBLIC_URL is the URL of ``POST /events``; a delivery to ``/events/{AccountSid}``
    was signed with the account's segment after it (unless the setting has it already).
    A forwarded host without a port takes X-Forwarded-Port's (proxies configured with
    nginx's ``$host`` send the name alone); the signature check tries the URL with and
    without the scheme's default port, so 443 there matches Twilio's port-less URL."""
    raw_query = urlsplit(request.raw_path).query
    if settings.public_url:
        public = urlsplit(settings.public_url)
        path = public.path
        segment = _account_segment(request.raw_path)
        if segment is not None and not path.endswith(f"/{segment}"):
            path = f"{path.rstrip('/')}/{segment}"
        return urlunsplit((public.scheme, public.netloc, path, raw_query, ""))
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


def _unknown_account(sid: str) -> signature.SignatureCheck:
    if not is_sid(sid, "AC"):
        detail = (
            f"the URL names account {shown(sid)!r}, which is not an Account SID"
            f" ({sid_rule('AC')}): configure Twilio with {ACCOUNT_PREFIX}<AccountSid>, or"
            f" {EVENTS_PATH} alone"
        )
    else:
        detail = (
            f"the URL names account {sid}, which is not configured: add [accounts.{sid}]"
            " with its auth_tokens to the accounts file (SINK_ACCOUNTS_FILE), which the sink"
            " reads again when it changes"
        )
    return signature.SignatureCheck(False, "unknown_account", detail=detail)


def _explained(check: signature.SignatureCheck, sid: str) -> signature.SignatureCheck:
    """A path-form failure that names the account whose tokens were tried."""
    if check.reason == "bad_signature":
        detail = f"X-Twilio-Signature does not match any auth token of account {sid} for this URL"
    elif check.reason == "no_key_configured":
        detail = (
            f"account {sid} has no auth token configured (auth_tokens in SINK_ACCOUNTS_FILE,"
            " or SINK_TWILIO_AUTH_TOKEN with SINK_TWILIO_ACCOUNT_SID)"
        )
    else:
        return check
    return replace(check, detail=detail)


def check_signature(
    request: RequestView, body: bytes, settings: Settings, accounts: Accounts
) -> signature.SignatureCheck:
    """The check of one delivery; a valid one names the account that signed, when known."""
    if not settings.verify_signature:
        return signature.VALID
    sid = account_in_path(request.raw_path)
    if sid is not None and accounts.get(sid) is None:
        return _unknown_account(sid)
    settings_header = request.headers.get(signature.SETTINGS_HEADER)
    tokens = accounts.signing_keys(sid)
    check = signature.verify(
        urls=[signed_url(request, settings)],
        body=body,
        signature=request.headers.get(signature.SIGNATURE_HEADER),
        settings_header=settings_header,
        auth_tokens=tokens,
        shared_keys=settings.shared_keys(),
    )
    if not check.ok:
        return check if sid is None else _explained(check, sid)
    if sid is None and not settings_header and check.key is not None:
        sid = accounts.signer_of(tokens[check.key])
    return replace(check, account=sid)
