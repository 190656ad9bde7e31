"""Export: stream executions or steps for a time range to a writer (CSV, JSON Lines)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

import asyncpg

from sink.db.pool import Conn
from sink.db.queries import query

Exportable = Literal["executions", "steps"]


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str  # Postgres type name: 'jsonb', 'timestamptz', 'text', ...


class RowWriter(Protocol):
    """Where exported rows go (a CSV or JSON Lines writer)."""

    def start(self, columns: Sequence[Column]) -> None: ...

    def row(self, values: asyncpg.Record) -> None: ...


async def export(
    conn: Conn,
    what: Exportable,
    out: RowWriter,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    prefetch: int = 1000,
) -> int:
    """Writes the rows of ``studio.<what>`` created in [since, until) as they come.

    A server-side cursor in one read-only transaction: at most ``prefetch`` rows are held
    in memory, whatever the size of the table. Returns the number of rows written.
    """
    written = 0
    async with conn.transaction(readonly=True, isolation="repeatable_read"):
        statement = await conn.prepare(query(f"export_{what}"))
        out.start([Column(a.name, a.type.name) for a in statement.get_attributes()])
        async for row in statement.cursor(since, until, prefetch=prefetch):
            out.row(row)
            written += 1
    return written
