"""Settings, read from ``SINK_*`` environment variables (and CLI flags layered on top).

Secrets are ``SecretStr``: their repr and str print ``**********``, so a settings object
can be logged or shown in an error without leaking a token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_PORT = 8080


def _split_secrets(value: Any) -> Any:
    if isinstance(value, str):
        return [SecretStr(part.strip()) for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Every setting of studio-sink. The README's configuration table lists them all."""

    model_config = SettingsConfigDict(env_prefix="SINK_", extra="ignore", frozen=True)

    # --- receiver -------------------------------------------------------------------
    host: str = "0.0.0.0"  # noqa: S104 - a webhook receiver listens on all interfaces
    port: int = Field(DEFAULT_PORT, ge=0, le=65535)
    public_url: str | None = None
    trust_forwarded: bool = False
    verify_signature: bool = True
    twilio_auth_token: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    twilio_shared_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    max_body_bytes: int = Field(5 * 1024 * 1024, ge=1024)
    client_timeout: float = Field(5.0, gt=0)

    # refused for their signature: kept for `studio-sink quarantine retry`, within caps
    quarantine_max_bytes: int = Field(500 * 1024 * 1024, ge=0)
    quarantine_max_bytes_per_hour: int = Field(50 * 1024 * 1024, ge=0)

    # --- database -------------------------------------------------------------------
    database_url: SecretStr | None = None
    database_direct_url: SecretStr | None = None
    db_statement_cache: int | Literal["auto"] = "auto"
    # a little over delivery_timeout: a command still unanswered after Twilio's 5 s is hung
    db_command_timeout: float = Field(5.0, gt=0)
    db_keepalive_idle: float = Field(10.0, ge=0)  # TCP keepalive after this silence; 0: off
    data_dir: Path = Path(".studio-sink")
    db_pool_size: int = Field(8, ge=2)
    db_connect_timeout: float = Field(3.0, gt=0)

    # --- group commit ---------------------------------------------------------------
    batch_max_events: int = Field(2000, ge=1)
    batch_max_wait_ms: float = Field(4.0, ge=0)
    writers: int = Field(2, ge=1)
    max_pending_events: int = Field(10000, ge=1)  # ~1 s of commits at max: see docs/benchmarks.md
    delivery_timeout: float = Field(4.0, gt=0)

    # --- operation ------------------------------------------------------------------
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    log_format: Literal["json", "text"] = "json"
    shutdown_grace: float = Field(20.0, gt=0)
    shutdown_delay: float = Field(1.0, ge=0)
    # serve's processes sharing the port: a number, or "auto" (usable CPUs, at most 8)
    workers: int | Literal["auto"] = 1

    # --- admin and backfill ---------------------------------------------------------
    admin_token: SecretStr | None = None
    accounts_file: Path | None = None
    twilio_account_sid: str | None = None
    twilio_api_key_sid: str | None = None
    twilio_api_key_secret: SecretStr | None = None
    studio_base_url: str = "https://studio.twilio.com"
    events_base_url: str = "https://events.twilio.com"
    backfill_workers: int = Field(4, ge=0)
    backfill_rate_limit: float = Field(10.0, gt=0)
    backfill_concurrency: int = Field(8, ge=1)
    backfill_max_attempts: int = Field(8, ge=1)
    backfill_max_retry_after: float = Field(300.0, gt=0)
    auto_backfill: bool = False

    # --- data life cycle ------------------------------------------------------------
    retention_days: int | None = Field(None, ge=1)
    typed_retention_days: int | None = Field(None, ge=1)
    maintain_interval: float = Field(3600.0, ge=0)

    # --- privacy (docs/privacy.md) --------------------------------------------------
    contact_mode: Literal["keep", "hash", "mask"] = "keep"
    pii_key: SecretStr | None = None
    redact_context_paths: Annotated[list[str], NoDecode] = Field(default_factory=list)
    rejected_retention_days: int | None = Field(7, ge=1)
    context_retention_days: int | None = Field(None, ge=1)

    @field_validator("twilio_auth_token", "twilio_shared_keys", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split_secrets(value)

    @field_validator("redact_context_paths", mode="before")
    @classmethod
    def _path_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator(
        "database_url",
        "database_direct_url",
        "admin_token",
        "twilio_api_key_secret",
        "pii_key",
        "public_url",
        "twilio_account_sid",
        "twilio_api_key_sid",
        "accounts_file",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        """An empty variable (``SINK_X=``, as templates often render) means unset."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("public_url")
    @classmethod
    def _a_webhook_url(cls, value: str | None) -> str | None:
        """The URL Twilio signs: refused at start when it cannot be one (every delivery
        would fail its check), rather than answering each delivery with an error."""
        if value is None:
            return value
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises on a port that is not a number in range
        except ValueError as exc:
            raise ValueError(f"is not a URL ({exc}); give the exact URL set in Twilio") from None
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(
                "must be the full http(s) URL configured in Twilio, e.g."
                " https://sink.example.com/events"
            )
        return value

    @field_validator("db_statement_cache", mode="before")
    @classmethod
    def _auto_or_size(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip().lower()
            if text in ("", "auto"):
                return "auto"
            if not text.isdigit():
                raise ValueError("must be 'auto' or a number of statements (0 turns it off)")
            return int(text)
        return value

    @field_validator("workers", mode="before")
    @classmethod
    def _auto_or_count(cls, value: Any) -> Any:
        text = str(value).strip().lower()
        if text in ("", "auto"):
            return 1 if not text else "auto"  # empty (as templates render): the default
        if not text.isdigit() or int(text) < 1:
            raise ValueError("must be a number of processes (1 or more) or 'auto'")
        return int(text)

    @property
    def embedded(self) -> bool:
        """True when no database URL is given: studio-sink runs its own Postgres."""
        return self.database_url is None

    def auth_tokens(self) -> list[bytes]:
        return [t.get_secret_value().encode() for t in self.twilio_auth_token]

    def shared_keys(self) -> list[bytes]:
        return [t.get_secret_value().encode() for t in self.twilio_shared_keys]


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with explicit overrides (CLI flags) winning."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)
