"""The accounts file, a TOML document, read into ``Account`` values. Pure: text in.

::

    [accounts.AC0123456789abcdef0123456789abcdef]
    label = "acme-prod"                 # shown in the UI, the metrics and the views
    auth_tokens = ["current", "next"]   # several during a rotation
    api_key_sid = "SK..."               # optional; preferred for REST calls
    api_key_secret = "..."
    backfill_rate_limit = 10            # optional, calls/s for this account

Every refusal names the line and the fix; a secret never appears in one.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any, Final

from pydantic import SecretStr

from sink.accounts.model import FROM_FILE, Account
from sink.errors import AccountsFileError
from sink.twilio import is_sid, sid_rule

KEYS: Final = ("label", "auth_tokens", "api_key_sid", "api_key_secret", "backfill_rate_limit")
_API_KEY_SID: Final = re.compile(r"SK[0-9a-fA-F]{32}")
_LABEL: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._:/-]{0,62}")


class _Refusal(Exception):
    def __init__(self, message: str, *, sid: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.sid = sid
        self.key = key


def parse_accounts(text: str, source: str) -> list[Account]:
    """The accounts of the file's text; ``AccountsFileError`` naming ``source:line``."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = _decode_error_line(str(exc), text)
        raise AccountsFileError(
            f"{source}{f':{line}' if line else ''}: not valid TOML ({_decode_reason(exc)});"
            " fix the file, which must hold [accounts.AC...] tables"
        ) from None
    try:
        return _accounts(document)
    except _Refusal as refusal:
        line = _line_of(text, refusal.sid, refusal.key)
        raise AccountsFileError(f"{source}{f':{line}' if line else ''}: {refusal}") from None


def _accounts(document: dict[str, Any]) -> list[Account]:
    extra = sorted(set(document) - {"accounts"})
    if extra:
        raise _Refusal(
            f"unknown top-level key {extra[0]!r}: the file holds [accounts.AC...] tables only"
        )
    tables = document.get("accounts", {})
    if not isinstance(tables, dict):
        raise _Refusal("'accounts' must be tables, one per account: [accounts.AC...]")
    accounts = [_account(sid, table) for sid, table in tables.items()]
    labels: dict[str, str] = {}
    for account in accounts:
        if account.label in labels:
            raise _Refusal(
                f"label {account.label!r} is used by {labels[account.label]} too;"
                " give each account its own label",
                sid=account.sid,
                key="label",
            )
        labels[account.label] = account.sid
    return accounts


def _account(sid: str, table: Any) -> Account:
    if not is_sid(sid, "AC"):
        raise _Refusal(f"[accounts.{sid}]: {sid_rule('AC')}", sid=sid)
    if not isinstance(table, dict):
        raise _Refusal(f"accounts.{sid} must be a table: [accounts.{sid}]", sid=sid)
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise _Refusal(
            f"[accounts.{sid}] has an unknown key {unknown[0]!r}; the keys are {', '.join(KEYS)}",
            sid=sid,
            key=unknown[0],
        )
    api_key_sid, api_key_secret = _api_key(sid, table)
    return Account(
        sid=sid,
        label=_label(sid, table.get("label", sid)),
        auth_tokens=_tokens(sid, table.get("auth_tokens")),
        api_key_sid=api_key_sid,
        api_key_secret=api_key_secret,
        backfill_rate_limit=_rate(sid, table.get("backfill_rate_limit")),
        source=FROM_FILE,
    )


def _label(sid: str, value: Any) -> str:
    if not isinstance(value, str) or not _LABEL.fullmatch(value):
        raise _Refusal(
            f"[accounts.{sid}] label must be 1 to 63 letters, digits, spaces or ._:/-"
            " starting with a letter or digit",
            sid=sid,
            key="label",
        )
    return value


def _tokens(sid: str, value: Any) -> tuple[SecretStr, ...]:
    if isinstance(value, str):
        value = [value]
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(token, str) and token.strip() for token in value)
    ):
        raise _Refusal(
            f"[accounts.{sid}] needs auth_tokens, a list of this account's Auth Tokens"
            ' (auth_tokens = ["current"], or ["current", "next"] during a rotation)',
            sid=sid,
            key="auth_tokens" if value is not None else None,
        )
    return tuple(SecretStr(token.strip()) for token in value)


def _api_key(sid: str, table: dict[str, Any]) -> tuple[str | None, SecretStr | None]:
    key_sid, secret = table.get("api_key_sid"), table.get("api_key_secret")
    if key_sid is None and secret is None:
        return None, None
    if not isinstance(key_sid, str) or not _API_KEY_SID.fullmatch(key_sid):
        raise _Refusal(
            f"[accounts.{sid}] api_key_sid must be an API key SID (SK followed by 32 hex"
            " digits), set together with api_key_secret",
            sid=sid,
            key="api_key_sid" if key_sid is not None else "api_key_secret",
        )
    if not isinstance(secret, str) or not secret.strip():
        raise _Refusal(
            f"[accounts.{sid}] api_key_sid is set without api_key_secret: add the key's secret",
            sid=sid,
            key="api_key_sid",
        )
    return key_sid, SecretStr(secret.strip())


def _rate(sid: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise _Refusal(
            f"[accounts.{sid}] backfill_rate_limit must be a positive number of calls per second",
            sid=sid,
            key="backfill_rate_limit",
        )
    return float(value)


def _decode_error_line(message: str, text: str) -> int | None:
    found = re.search(r"line (\d+)", message)
    if found:
        return int(found.group(1))
    return max(len(text.splitlines()), 1) if "end of document" in message else None


def _decode_reason(exc: tomllib.TOMLDecodeError) -> str:
    """tomllib's reason without its position, which the message gives as ``source:line``."""
    return re.sub(r"\s*\(at [^)]*\)", "", str(exc)) or "unreadable"


def _line_of(text: str, sid: str | None, key: str | None) -> int | None:
    """The line of ``[accounts.SID]`` (or of ``key =`` within that table), 1-based."""
    lines = text.splitlines()
    start = 0
    if sid is not None:
        header = re.compile(rf"^\s*\[\s*accounts\s*\.\s*\"?{re.escape(sid)}\"?\s*\]")
        found = next((n for n, line in enumerate(lines) if header.match(line)), None)
        if found is None:
            return None
        start = found
    if key is None:
        return start + 1 if sid is not None else None
    assignment = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for n in range(start + 1 if sid is not None else 0, len(lines)):
        if sid is not None and n > start and lines[n].lstrip().startswith("["):
            break
        if assignment.match(lines[n]):
            return n + 1
    return start + 1 if sid is not None else None
