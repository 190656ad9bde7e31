"""Forward-only migrations from ``sql/NNNN_name.sql``, with checksums, under an advisory lock."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Final

from sink.constants import MIGRATE_LOCK
from sink.db.pool import Conn
from sink.db.queries import query, sql_files
from sink.errors import MigrationError, SchemaBehind

log = logging.getLogger(__name__)

_NAME: Final = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()

    @property
    def filename(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"


def load_migrations() -> list[Migration]:
    found: list[Migration] = []
    for filename, text in sql_files("migrations"):
        match = _NAME.fullmatch(filename)
        if not match:
            raise MigrationError(
                f"sql/migrations/{filename} is not named NNNN_name.sql; rename it so it can be"
                " ordered"
            )
        found.append(Migration(int(match.group(1)), match.group(2), text))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError("two files in sql/migrations/ share a version number; renumber one")
    return found


async def _applied(conn: Conn) -> dict[int, tuple[str, str]]:
    exists = await conn.fetchval(query("migrations_table_exists"))
    if not exists:
        return {}
    rows = await conn.fetch(query("applied_migrations"))
    return {r["version"]: (r["name"], r["checksum"]) for r in rows}


def _verify_applied(known: list[Migration], applied: dict[int, tuple[str, str]]) -> None:
    by_version = {m.version: m for m in known}
    for version, (name, checksum) in sorted(applied.items()):
        migration = by_version.get(version)
        if migration is None:
            log.warning(
                "database has migration %04d_%s that this version of studio-sink does not"
                " know; it was applied by a newer release",
                version,
                name,
            )
            continue
        if migration.checksum != checksum:
            raise MigrationError(
                f"sql/migrations/{migration.filename} was edited after it was applied (checksum"
                " differs). Applied migrations are immutable: restore the file and put the"
                " change in a new migration."
            )


async def pending(conn: Conn) -> list[Migration]:
    known = load_migrations()
    applied = await _applied(conn)
    _verify_applied(known, applied)
    return [m for m in known if m.version not in applied]


async def migrate(conn: Conn) -> list[Migration]:
    """Apply every pending migration, each in its own transaction. Safe to run concurrently."""
    await conn.execute(query("advisory_lock"), MIGRATE_LOCK)
    try:
        await conn.execute(query("migrations_bootstrap"))
        todo = await pending(conn)
        for migration in todo:
            log.info("applying migration %s", migration.filename)
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    query("record_migration"),
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
        return todo
    finally:
        await conn.execute(query("advisory_unlock"), MIGRATE_LOCK)


async def check_current(conn: Conn) -> None:
    """Raise SchemaBehind when migrations are pending."""
    todo = await pending(conn)
    if todo:
        names = ", ".join(m.filename for m in todo)
        raise SchemaBehind(
            f"the database schema is behind ({len(todo)} pending: {names}). Run"
            " `studio-sink migrate` with the same SINK_DATABASE_URL, then start again."
        )
