"""Postgres failover under load, and a primary that freezes rather than crashes.

The first tests put a freezing TCP relay (``FreezingRelay``) in front of the real test
server: quick checks of what a hung connection does to the pool and the multi-host
connect, and of ``/readyz`` (those two wait out connect timeouts, so they are marked slow).
The other slow ones start a real two-node Patroni cluster (tests/support/patroni.py)
and real ``studio-sink serve`` processes under load with a ledger of every acknowledged
event: SIGKILL the primary, freeze it (SIGSTOP, like a paused VM), or replicate
asynchronously (the documented risk, which the sink warns about).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest

from sink.db.hosts import HostOrder
from sink.db.pool import KEEPALIVE_INTERVAL, KEEPALIVE_PROBES, connect, create_pool
from sink.db.replication import replication_warning
from tests.conftest import Sink
from tests.support.patroni import ETCD_BIN, PATRONI_BIN, PG_BIN_DIR, PatroniCluster
from tests.support.process import free_port, sink_env
from tests.system import (
    TWILIO_TIMEOUT,
    FreezingRelay,
    Ledger,
    Load,
    assert_nothing_lost,
    report,
    round_robin,
    start_sinks,
)

COMMAND_TIMEOUT = 0.5  # the relay tests' SINK_DB_COMMAND_TIMEOUT
# Seconds from the promotion to the first 2xx after a freeze: a generous bound, not a benchmark.
# Expected: writers free 2 x SINK_DB_COMMAND_TIMEOUT (5 s) after the freeze, then at most one
# SINK_DB_CONNECT_TIMEOUT (3 s) on the frozen host; Patroni promotes ~10-12 s after the freeze.
RECOVERY_BOUND = 15.0
ANSWERS = {"200", "429", "503", "connection_error"}  # what Twilio may see during a failover


@pytest.fixture
async def relay(direct_database_url: str) -> AsyncIterator[FreezingRelay]:
    """A freezing relay in front of the test server (TCP, or its Unix socket)."""
    parts = urlsplit(direct_database_url)
    socket_dir = parse_qs(parts.query).get("host", [""])[0]
    port = parts.port or 5432
    target = f"{socket_dir}/.s.PGSQL.{port}" if socket_dir else (parts.hostname or "", port)
    started = await FreezingRelay(target).start()
    yield started
    await started.close()


def via(url: str, *ports: int) -> str:
    """``url``'s user and database at 127.0.0.1 on each of ``ports`` in turn (several:
    ``target_session_attrs=read-write``, as a Patroni cluster's URL)."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    hosts = ",".join(f"127.0.0.1:{port}" for port in ports)
    query = "?target_session_attrs=read-write" if len(ports) > 1 else ""
    return f"postgresql://{userinfo}@{hosts}{parts.path}{query}"


async def test_a_hung_connection_is_terminated_and_the_pool_drops_the_others(
    relay: FreezingRelay, direct_database_url: str
) -> None:
    url = via(direct_database_url, relay.port)
    pool = await create_pool(
        url, size=4, connect_timeout=2, command_timeout=COMMAND_TIMEOUT, statement_cache=0
    )
    try:
        async with pool.acquire() as a, pool.acquire() as b:
            before = {await x.fetchval("SELECT pg_backend_pid()") for x in (a, b)}
        with relay.frozen(), pytest.raises(TimeoutError):
            started = time.monotonic()
            async with pool.acquire() as hung:
                await hung.fetchval("SELECT 1")
        hung_for = time.monotonic() - started  # the command, then its unanswered cancel
        async with pool.acquire() as c, pool.acquire() as d:
            after = {await x.fetchval("SELECT pg_backend_pid()") for x in (c, d)}
    finally:
        await asyncio.wait_for(pool.close(), 5)
    print(f"\nhung connection: released after {hung_for:.2f} s")
    assert hung_for < 3 * COMMAND_TIMEOUT + 0.5
    assert not after & before  # neither the hung one nor the idle one came back


async def test_each_host_gets_its_own_connect_timeout(
    relay: FreezingRelay, direct_database_url: str
) -> None:
    live = await FreezingRelay(relay.target).start()  # a second way to the same server
    frozen_first = via(direct_database_url, relay.port, live.port)
    try:
        with relay.frozen():
            with pytest.raises(TimeoutError):  # asyncpg's one timeout: the frozen host uses it all
                await asyncpg.connect(frozen_first, timeout=1.0)
            order = HostOrder(frozen_first)
            timings = []
            for _ in range(2):
                started = time.monotonic()
                conn = await connect(frozen_first, host_timeout=1.0, hosts=order)
                timings.append(time.monotonic() - started)
                assert await conn.fetchval("SELECT 1") == 1
                await conn.close()
    finally:
        await live.close()
    print(f"\nfrozen first host: connected in {timings[0]:.2f} s, then {timings[1]:.2f} s")
    assert 1.0 <= timings[0] < 2.0  # one host timeout, then the next host
    assert timings[1] < 0.5  # the host that worked is tried first now


async def test_the_host_that_worked_is_tried_first(
    relay: FreezingRelay, direct_database_url: str
) -> None:
    closed = free_port()
    url = via(direct_database_url, closed, relay.port)
    order = HostOrder(url)
    conn = await connect(url, host_timeout=1.0, hosts=order)
    await conn.close()
    assert [urlsplit(u).port for u in order.attempts()] == [relay.port, closed]


async def test_no_usable_host_names_each_host_and_not_the_password(
    relay: FreezingRelay, direct_database_url: str
) -> None:
    closed = free_port()
    url = via(f"postgresql://sink:pw-{closed}@host/studio", relay.port, closed)
    with relay.frozen(), pytest.raises(OSError) as caught:
        await connect(url, host_timeout=0.3)
    message = str(caught.value)
    assert f"127.0.0.1:{relay.port}: no answer within 0.3 s" in message
    assert f"127.0.0.1:{closed}: ConnectionRefusedError" in message
    assert "read-write session" in message
    password = urlsplit(url).password
    assert password and password not in message


async def test_keepalive_on_pooled_connections(
    relay: FreezingRelay, direct_database_url: str
) -> None:
    pool = await create_pool(
        via(direct_database_url, relay.port),
        size=2,
        connect_timeout=2,
        command_timeout=5,
        statement_cache=0,
        keepalive_idle=7,
    )
    try:
        async with pool.acquire() as conn:
            sock = conn._con._transport.get_extra_info("socket")  # type: ignore[attr-defined]
            options = {
                name: sock.getsockopt(level, option)
                for name, level, option in [
                    ("keepalive", socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                    ("idle", socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                    ("interval", socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                    ("probes", socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                    ("user_timeout_ms", socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
                ]
            }
    finally:
        await pool.close()
    dead_after = 7 + KEEPALIVE_INTERVAL * KEEPALIVE_PROBES
    assert options == {
        "keepalive": 1,
        "idle": 7,
        "interval": KEEPALIVE_INTERVAL,
        "probes": KEEPALIVE_PROBES,
        "user_timeout_ms": dead_after * 1000,
    }


@pytest.mark.slow  # waits out connect timeouts: seconds, not milliseconds
async def test_readyz_on_a_frozen_server_says_unreachable_within_two_seconds(
    relay: FreezingRelay, direct_database_url: str, start_sink: Callable[..., Any]
) -> None:
    sink: Sink = await start_sink(database_url=via(direct_database_url, relay.port))
    assert (await sink.client.get("/readyz")).status == 200
    with relay.frozen():
        await asyncio.sleep(1.1)  # past the cached answer
        started = time.monotonic()
        response = await sink.client.get("/readyz")
        took = time.monotonic() - started
        body = await response.json()
    assert response.status == 503 and body["database"] == "unreachable", body
    assert "did not answer within 1.5 s" in body["error"]
    assert took < 2.0, took
    deadline = time.monotonic() + 10
    while (response := await sink.client.get("/readyz")).status != 200:
        assert time.monotonic() < deadline, await response.text()
        await asyncio.sleep(0.2)
    print(f"\n/readyz on a frozen server: 503 in {took:.2f} s")


@pytest.mark.slow  # waits out connect timeouts: seconds, not milliseconds
async def test_readyz_finds_the_next_host_by_itself_when_the_first_hangs(
    relay: FreezingRelay, direct_database_url: str, start_sink: Callable[..., Any]
) -> None:
    """No delivery comes to open a connection: readiness alone must get past the frozen
    first host (a probe that cancelled its connect after 1.5 s never would)."""
    second = await FreezingRelay(relay.target).start()
    url = via(direct_database_url, relay.port, second.port)
    try:
        sink: Sink = await start_sink(database_url=url, db_connect_timeout=2, db_command_timeout=1)
        assert (await sink.client.get("/readyz")).status == 200
        with relay.frozen():
            frozen_at = time.monotonic()
            slowest = 0.0
            while True:
                await asyncio.sleep(1.1)  # past the cached answer
                started = time.monotonic()
                response = await sink.client.get("/readyz")
                slowest = max(slowest, time.monotonic() - started)
                if response.status == 200:
                    break
                assert time.monotonic() - frozen_at < 20, await response.text()
            ready_again = time.monotonic() - frozen_at
    finally:
        await second.close()
    print(f"\n/readyz ready again {ready_again:.1f} s after the first host froze")
    assert slowest < 2.0


async def test_a_lone_postgres_has_no_replication_to_warn_about(
    conn: asyncpg.Connection[Any],
) -> None:
    assert await replication_warning(conn) is None


# --------------------------------------------------------------------- a real HA cluster

NEEDS = {PATRONI_BIN: "patroni", ETCD_BIN: "etcd-server", PG_BIN_DIR / "postgres": "postgresql-15"}
needs_patroni = pytest.mark.skipif(
    any(not path.exists() for path in NEEDS),
    reason="needs "
    + ", ".join(p for path, p in NEEDS.items() if not path.exists())
    + " (apt-get install; .ci/run does)",
)


@contextlib.asynccontextmanager
async def patroni(workdir: Path, **options: Any) -> AsyncIterator[PatroniCluster]:
    cluster = await asyncio.to_thread(PatroniCluster(**options).start, workdir / "patroni")
    try:
        yield cluster
    finally:
        await asyncio.to_thread(cluster.stop)


async def sink_database(cluster: PatroniCluster) -> str:
    """A database ``studio`` on the cluster, migrated by ``studio-sink migrate`` through
    the multi-host URL the sinks use; returns that URL."""
    admin = await asyncpg.connect(cluster.url(cluster.leader()))
    try:
        await admin.execute("CREATE DATABASE studio")
    finally:
        await admin.close()
    url = cluster.multi_host_url("studio")
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "sink", "migrate"],
        env=sink_env(0, url),
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()
    return url


async def check_stored(cluster: PatroniCluster, node: str, ledger: Ledger) -> set[str]:
    conn = await asyncpg.connect(cluster.url(node, "studio"))
    try:
        return await assert_nothing_lost(conn, ledger)
    finally:
        await conn.close()


def assert_only_retryable_answers(ledger: Ledger) -> None:
    assert set(ledger.statuses) <= ANSWERS, ledger.statuses  # no other 4xx, no 500, no hang
    assert ledger.slowest < TWILIO_TIMEOUT


async def check_synchronous_replication(cluster: PatroniCluster) -> None:
    """No warning on the synchronous cluster, unless commits stop waiting for the standby."""
    conn = await asyncpg.connect(cluster.url(cluster.leader(), "studio"))
    try:
        assert await replication_warning(conn) is None
        await conn.execute("SET synchronous_commit = local")
        warning = await replication_warning(conn)
    finally:
        await conn.close()
    assert warning is not None and "synchronous_commit = local" in warning


@pytest.mark.slow
@needs_patroni
@pytest.mark.timeout(150)
async def test_sigkilled_primary_under_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    async with patroni(tmp_path) as cluster:
        url = await sink_database(cluster)
        await check_synchronous_replication(cluster)
        sinks = await start_sinks(url, tmp_path, 2)  # replicas behind one Service
        try:
            load = Load(round_robin(sinks))
            async with load.running():
                await load.until_acked(40)
                old = await asyncio.to_thread(cluster.kill_leader)
                killed_at = time.monotonic()  # its processes are gone: nothing commits there
                new = await asyncio.to_thread(cluster.wait_for_new_leader, old, 60)
                promoted_at = time.monotonic()
                first_ack = await load.until_first_ack_sent_after(killed_at)
                await load.until_acked(40)
            assert all(sink.proc and sink.proc.poll() is None for sink in sinks)  # no restart
        finally:
            for sink in sinks:
                sink.stop()
        stored = await check_stored(cluster, new, load.ledger)
        warned = [s for s in sinks if "replicates to" in s.log_path.read_text()]
    report("failover (SIGKILL of the primary, 2 sinks)", load.ledger, stored)
    print(
        f"failover: first 2xx on the new primary {first_ack - killed_at:.1f} s after the kill"
        f" (Patroni promoted {promoted_at - killed_at:.1f} s after it)"
    )
    assert_only_retryable_answers(load.ledger)
    assert load.ledger.statuses.get("503", 0) > 0  # the kill was felt
    assert not warned  # synchronous replication: nothing to warn about


@pytest.mark.slow
@needs_patroni
@pytest.mark.timeout(150)
async def test_frozen_primary_the_sink_serves_again_soon_after_the_promotion(
    tmp_path: Path,
) -> None:
    """SIGSTOP, not SIGKILL: connections stay open and nothing answers (a paused VM)."""
    async with patroni(tmp_path) as cluster:
        url = await sink_database(cluster)
        sinks = await start_sinks(url, tmp_path, 1)
        try:
            load = Load(round_robin(sinks))
            async with load.running():
                await load.until_acked(40)
                old = await asyncio.to_thread(cluster.freeze_leader)
                frozen_at = time.monotonic()  # every process of it stopped: nothing answers
                new = await asyncio.to_thread(cluster.wait_for_new_leader, old, 60)
                promoted_at = time.monotonic()
                first_ack = await load.until_first_ack_sent_after(frozen_at)
                await load.until_acked(40)
        finally:
            for sink in sinks:
                sink.stop()
        stored = await check_stored(cluster, new, load.ledger)
    recovery = first_ack - promoted_at
    report("frozen primary (SIGSTOP)", load.ledger, stored)
    print(
        f"frozen primary: promoted {promoted_at - frozen_at:.1f} s after the freeze; first 2xx"
        f" {recovery:.1f} s after the promotion ({first_ack - frozen_at:.1f} s after the freeze)"
    )
    assert_only_retryable_answers(load.ledger)
    assert recovery < RECOVERY_BOUND


@pytest.mark.slow
@needs_patroni
@pytest.mark.timeout(120)
async def test_asynchronous_replication_is_warned_about_once_at_start(tmp_path: Path) -> None:
    async with patroni(tmp_path, synchronous_mode=False) as cluster:
        url = await sink_database(cluster)
        leader_url = cluster.url(cluster.leader(), "studio")
        conn = await asyncpg.connect(leader_url)
        try:
            warning = await replication_warning(conn)
            await conn.execute("CREATE ROLE watcher LOGIN PASSWORD 'watcher'")
        finally:
            await conn.close()
        watcher = await asyncpg.connect(leader_url, user="watcher", password="watcher")
        try:
            unseen = await replication_warning(watcher)  # no pg_read_all_stats: cannot tell
        finally:
            await watcher.close()
        sinks = await start_sinks(url, tmp_path, 1)
        sinks[0].stop()
        log = sinks[0].log_path.read_text()
    assert warning is not None, "an asynchronous standby went unnoticed"
    assert "replicates to 1 standby asynchronously" in warning
    assert "synchronous_standby_names is empty" in warning
    assert "synchronous_mode: true" in warning
    assert cluster.password not in warning
    assert unseen is None
    assert log.count(warning) == 1, log
    print(f"\nwarning: {warning}")
