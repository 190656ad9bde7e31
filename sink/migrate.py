"""Forward-only migrations from ``sql/NNNN_name.sql``, with checksums, under an advisory lock."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final

from sink.db import Conn
from sink.errors import MigrationError, SchemaBehind

log = logging.getLogger(__name__)

LOCK_KEY: Final = 0x53_54_55_44_49_4F  # "STUDIO": serializes concurrent migrators
_NAME: Final = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")

BOOTSTRAP: Final = """
CREATE SCHEMA IF NOT EXISTS sink;
CREATE TABLE IF NOT EXISTS sink.schema_migrations (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""


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


def _sql_files() -> list[tuple[str, str]]:
    """The migrations shipped as package data (``sql/`` is packaged as ``sink.sql``), or,
    when running from a source tree that is not installed, the ``sql/`` beside ``sink/``."""
    try:
        package = resources.files("sink.sql")
    except ModuleNotFoundError:
        source_tree = Path(__file__).resolve().parent.parent / "sql"
        return [(p.name, p.read_text("utf-8")) for p in source_tree.glob("*.sql")]
    return [
        (entry.name, entry.read_text("utf-8"))
        for entry in package.iterdir()
        if entry.name.endswith(".sql")
    ]


def load_migrations() -> list[Migration]:
    found: list[Migration] = []
    for filename, text in _sql_files():
        match = _NAME.fullmatch(filename)
        if not match:
            raise MigrationError(
                f"sql/{filename} is not named NNNN_name.sql; rename it so it can be ordered"
            )
        found.append(Migration(int(match.group(1)), match.group(2), text))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError("two files in sql/ share a version number; renumber one")
    return found


async def _applied(conn: Conn) -> dict[int, tuple[str, str]]:
    exists = await conn.fetchval("SELECT to_regclass('sink.schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT version, name, checksum FROM sink.schema_migrations")
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
                f"sql/{migration.filename} was edited after it was applied (checksum"
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
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        await conn.execute(BOOTSTRAP)
        todo = await pending(conn)
        for migration in todo:
            log.info("applying migration %s", migration.filename)
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO sink.schema_migrations (version, name, checksum)"
                    " VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
        return todo
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)


async def check_current(conn: Conn) -> None:
    """Raise SchemaBehind when migrations are pending."""
    todo = await pending(conn)
    if todo:
        names = ", ".join(m.filename for m in todo)
        raise SchemaBehind(
            f"the database schema is behind ({len(todo)} pending: {names}). Run"
            " `studio-sink migrate` with the same SINK_DATABASE_URL, then start again."
        )
