"""The exception tree. Every message names the problem and what to do about it."""

from __future__ import annotations

SHOWN_MAX = 40


def shown(text: str) -> str:
    """``text`` cut to ``SHOWN_MAX`` characters for a message: a value received (a field,
    a path segment) is named in an error, never echoed whole."""
    return text if len(text) <= SHOWN_MAX else f"{text[: SHOWN_MAX - 3]}..."


class SinkError(Exception):
    """Base of every error studio-sink raises on purpose."""


class ConfigError(SinkError):
    """A setting is missing or inconsistent; the message names the variable to set."""


class AccountsFileError(ConfigError):
    """The accounts file (SINK_ACCOUNTS_FILE) cannot be read or is refused: the message
    gives its path, the line, and the fix. On a reload the previous accounts stay."""


class MigrationError(SinkError):
    """The database schema cannot be brought to, or is not at, the version this code needs."""


class SchemaBehind(MigrationError):
    """The database has migrations this code needs that were not applied."""


class DatabaseUnavailable(SinkError):
    """Postgres cannot be reached or failed in a way a retry may fix (answer 503)."""


class Overloaded(SinkError):
    """More events are waiting to be written than the sink holds (answer 503/429)."""


class ShuttingDown(SinkError):
    """The sink is draining and takes no new deliveries (answer 503)."""


class BatchRefused(SinkError):
    """Postgres refused a batch for its content (a value it cannot store): write its
    deliveries, then its events, one by one, and keep what it still refuses as rejected."""

    def __init__(self, message: str, *, sqlstate: str | None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class CommitTimeout(SinkError):
    """A commit did not finish within the delivery budget (answer 503; Twilio retries)."""
