"""Which database errors blame the data, and which a retry can fix."""

from __future__ import annotations

import asyncpg
import pytest

from sink.db.pool import is_bad_data, is_transient


def error(sqlstate: str) -> asyncpg.PostgresError:
    exc = asyncpg.PostgresError(f"test [{sqlstate}]")
    exc.sqlstate = sqlstate  # type: ignore[misc]
    return exc


@pytest.mark.parametrize("sqlstate", ["22P05", "22021", "22003", "23505", "23502", "54000"])
def test_data_classes_blame_the_data(sqlstate: str) -> None:
    assert is_bad_data(error(sqlstate)) and not is_transient(error(sqlstate))


@pytest.mark.parametrize(
    "sqlstate",
    [
        "26000",  # prepared statement does not exist: a transaction pooler
        "42P05",  # prepared statement already exists: the same
        "08P01",  # protocol violation
        "55P03",  # lock not available
        "57P01",  # admin shutdown
        "40P01",  # deadlock
        "53300",  # too many connections
        "XX000",  # internal error
        "42703",  # undefined column: the schema and the code disagree
    ],
)
def test_everything_else_is_retried(sqlstate: str) -> None:
    assert is_transient(error(sqlstate)) and not is_bad_data(error(sqlstate))
