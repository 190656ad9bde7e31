"""The accounts in force: the accounts file, if any, plus the one-account settings."""

from __future__ import annotations

from pathlib import Path

from sink.accounts.model import FROM_SETTINGS, Account, Accounts, RestCredential
from sink.accounts.parse import parse_accounts
from sink.config import Settings
from sink.errors import AccountsFileError, ConfigError
from sink.twilio import is_sid, sid_rule


def read_accounts_file(path: Path) -> list[Account]:
    """The accounts of the file at ``path``; ``AccountsFileError`` naming what is wrong."""
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise AccountsFileError(
            f"{path}: no such file (SINK_ACCOUNTS_FILE); create it or unset the variable"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise AccountsFileError(f"{path}: cannot be read ({reason}); check the file") from None
    return parse_accounts(text, str(path))


def settings_account(settings: Settings) -> Account | None:
    """The one-account form: SINK_TWILIO_ACCOUNT_SID with its tokens and API key."""
    sid = settings.twilio_account_sid
    if sid is None:
        return None
    if not is_sid(sid, "AC"):
        raise ConfigError(f"SINK_TWILIO_ACCOUNT_SID: {sid_rule('AC')}")
    return Account(
        sid=sid,
        label=sid,
        auth_tokens=tuple(settings.twilio_auth_token),
        api_key_sid=settings.twilio_api_key_sid,
        api_key_secret=settings.twilio_api_key_secret,
        backfill_rate_limit=settings.backfill_rate_limit,
        source=FROM_SETTINGS,
    )


def load_accounts(settings: Settings) -> Accounts:
    """Every account: the file's, and the settings' one. An account in both is refused,
    since which of its two sets of tokens is meant cannot be told."""
    from_file = read_accounts_file(settings.accounts_file) if settings.accounts_file else []
    single = settings_account(settings)
    if single is not None and any(account.sid == single.sid for account in from_file):
        raise AccountsFileError(
            f"{settings.accounts_file}: account {single.sid} is also set by"
            " SINK_TWILIO_ACCOUNT_SID; keep it in one place (unset SINK_TWILIO_ACCOUNT_SID"
            " and its tokens, or remove its table from the file)"
        )
    fallback = None
    if single is None and settings.twilio_api_key_sid and settings.twilio_api_key_secret:
        key = settings.twilio_api_key_sid
        fallback = RestCredential(key, settings.twilio_api_key_secret, f"API key {key}")
    return Accounts.of(
        [*from_file, *([single] if single is not None else [])],
        unbound_tokens=settings.twilio_auth_token if single is None else (),
        fallback=fallback,
    )
