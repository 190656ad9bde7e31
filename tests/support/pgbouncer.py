"""A real PgBouncer in front of the test Postgres, so tests can run the sink through a pooler.

Production deployments often put PgBouncer in ``pool_mode = transaction`` between the sink
and Postgres. Under transaction pooling a client's consecutive transactions may run on
different server connections, which breaks session state: prepared statements (asyncpg's
statement cache), ``LISTEN``, ``SET``, advisory locks held across transactions. A fake
cannot reproduce that, so this module starts the real ``pgbouncer`` binary::

    bouncer = PgBouncer.start(pg_server_url, workdir)
    try:
        conn = await asyncpg.connect(bouncer.url("some_db"), statement_cache_size=0)
    finally:
        bouncer.stop()

or ``with PgBouncer.start(...) as bouncer:``. Every database on the upstream is reachable
(``* =`` fallback entry), including ones created after the bouncer started.

PgBouncer refuses to run as root. When the tests run as root (CI), the process is started
as an unprivileged user: the owner of the upstream's Unix socket when the upstream is a
socket directory (the embedded server's socket lives in its 0700 data directory, which only
that user can enter), otherwise ``nobody``.
"""

from __future__ import annotations

import atexit
import getpass
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Self
from urllib.parse import parse_qs, quote, unquote, urlsplit

from tests.support.daemons import ensure_traversable

POOL_MODES: Final = frozenset({"session", "transaction", "statement"})
SSL_MODES: Final = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})

# Startup parameters PgBouncer 1.18 drops instead of refusing the client. It tracks
# client_encoding, DateStyle, TimeZone, standard_conforming_strings and application_name
# itself (asyncpg sends client_encoding, and the sink sends application_name); any other
# parameter is refused with "unsupported startup parameter" (SQLSTATE 08P01).
# extra_float_digits is what psql, JDBC and other libpq-based tools send. Anything listed
# here is silently *not applied* on the server, so search_path and statement_timeout are
# deliberately not listed: a test passing them as server_settings fails loudly instead.
DEFAULT_IGNORED_STARTUP_PARAMETERS: Final = ("extra_float_digits",)

_UNPRIVILEGED_USER: Final = "nobody"
_PORT_ATTEMPTS: Final = 5
_LOG_TAIL_LINES: Final = 40
# what url() and the readiness check rely on
_FIXED_SETTINGS: Final = frozenset({"listen_addr", "listen_port", "auth_type", "auth_file"})


def find_pgbouncer() -> str | None:
    """Path of the ``pgbouncer`` binary, or None, so tests can skip with a clear reason.

    Looks on PATH and in /usr/sbin (Debian's location, often not on a non-root PATH).
    ``SINK_TEST_PGBOUNCER`` names a binary explicitly.
    """
    given = os.environ.get("SINK_TEST_PGBOUNCER")
    if given:
        return given if os.access(given, os.X_OK) else None
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/local/sbin")


@dataclass(frozen=True)
class Upstream:
    """Where and as whom PgBouncer logs in to Postgres, parsed from a postgresql:// URL."""

    host: str
    """A host name or address, or a Unix socket directory (starts with ``/``)."""
    port: int
    user: str
    password: str | None
    sslmode: str | None

    @classmethod
    def parse(cls, url: str) -> Upstream:
        """Parse the URLs tests.support.pg produces: host, port and user in the netloc or in
        the query (``?host=/socket/dir``), as asyncpg and libpq accept them."""
        parts = urlsplit(url)
        if parts.scheme not in {"postgres", "postgresql"}:
            raise ValueError(f"not a postgresql:// URL: {parts.scheme}://…")
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        host = query.get("host") or unquote(parts.hostname or "")
        if not host:
            raise ValueError("the upstream URL names no host or socket directory")
        if "," in host:
            raise ValueError(f"multi-host upstream URLs are not supported: {host}")
        port = int(query.get("port") or parts.port or 5432)
        user = query.get("user") or unquote(parts.username or "") or getpass.getuser()
        password = query.get("password") or unquote(parts.password or "") or None
        sslmode = query.get("sslmode")
        if sslmode is not None and sslmode not in SSL_MODES:
            raise ValueError(f"unknown sslmode {sslmode!r}")
        return cls(host=host, port=port, user=user, password=password, sslmode=sslmode)

    @property
    def socket_path(self) -> Path | None:
        """The Unix socket Postgres listens on, when the host is a socket directory."""
        if not self.host.startswith("/"):
            return None
        return Path(self.host) / f".s.PGSQL.{self.port}"


class PgBouncer:
    """A running ``pgbouncer`` process listening on 127.0.0.1, started by :meth:`start`.

    Clients authenticate with SCRAM-SHA-256 as the upstream user (:meth:`url` carries the
    credentials); PgBouncer logs in upstream with the upstream URL's own user and password,
    so every client shares one pool per database. The admin console is the database
    ``pgbouncer`` (:attr:`admin_url`); it speaks only the simple query protocol, so use
    ``conn.execute("SHOW POOLS")`` or psql rather than ``fetch``.
    """

    def __init__(
        self,
        *,
        process: subprocess.Popen[bytes],
        port: int,
        user: str,
        password: str,
        directory: Path,
        log_path: Path,
    ) -> None:
        """Use :meth:`start`; this only records what it set up."""
        self.process = process
        self.host: Final = "127.0.0.1"
        self.port = port
        self.user = user
        self.password = password
        self.directory = directory
        self.config_path = directory / "pgbouncer.ini"
        self.log_path = log_path
        atexit.register(self.stop)

    @classmethod
    def start(
        cls,
        upstream_url: str,
        workdir: Path,
        *,
        pool_mode: str = "transaction",
        pool_size: int = 10,
        settings: Mapping[str, str | int] | None = None,
        ignore_startup_parameters: tuple[str, ...] = DEFAULT_IGNORED_STARTUP_PARAMETERS,
        run_as: str | None = None,
        timeout: float = 10.0,
    ) -> PgBouncer:
        """Write a config under ``workdir/pgbouncer-<port>/``, start PgBouncer, wait until it
        accepts TCP connections.

        ``settings`` adds or overrides ``[pgbouncer]`` settings (e.g. ``query_wait_timeout``,
        ``server_lifetime``). ``run_as`` names the Unix user when running as root; by default
        the upstream socket's owner, or ``nobody``. Raises RuntimeError, with the tail of
        PgBouncer's log, if it exits or does not listen within ``timeout`` seconds.
        """
        if pool_mode not in POOL_MODES:
            raise ValueError(f"pool_mode must be one of {sorted(POOL_MODES)}, not {pool_mode!r}")
        if pool_size < 1:
            raise ValueError(f"pool_size must be positive, not {pool_size}")
        fixed = _FIXED_SETTINGS.intersection(settings or {})
        if fixed:
            raise ValueError(f"these settings are the harness's own: {sorted(fixed)}")
        binary = find_pgbouncer()
        if binary is None:
            raise RuntimeError("pgbouncer is not installed (apt-get install pgbouncer)")
        upstream = Upstream.parse(upstream_url)
        account = _account(upstream, run_as)
        password = upstream.password or secrets.token_urlsafe(18)
        for _ in range(_PORT_ATTEMPTS):
            port = _free_port()
            directory = workdir / f"pgbouncer-{port}"
            directory.mkdir(parents=True)
            config = _config(
                upstream,
                port=port,
                auth_file=directory / "userlist.txt",
                pool_mode=pool_mode,
                pool_size=pool_size,
                ignore_startup_parameters=ignore_startup_parameters,
                settings=settings or {},
            )
            _write_private(directory / "userlist.txt", _userlist(upstream.user, password), account)
            _write_private(directory / "pgbouncer.ini", config, account)
            if account is not None:
                os.chown(directory, account.pw_uid, account.pw_gid)
                directory.chmod(0o700)
                ensure_traversable(directory, account)
            log_path = directory / "pgbouncer.log"
            process = _spawn(binary, directory / "pgbouncer.ini", log_path, account)
            bouncer = cls(
                process=process,
                port=port,
                user=upstream.user,
                password=password,
                directory=directory,
                log_path=log_path,
            )
            if bouncer._wait_listening(timeout):
                return bouncer
            exited = process.poll()
            bouncer.stop()
            if "Address already in use" not in bouncer.log_tail():
                what = (
                    f"exited with status {exited}"
                    if exited is not None
                    else f"did not listen on {bouncer.host}:{port} within {timeout} s"
                )
                raise RuntimeError(
                    f"pgbouncer {what}; last lines of {log_path}:\n{bouncer.log_tail()}"
                )
        raise RuntimeError(f"pgbouncer found no free port in {_PORT_ATTEMPTS} attempts")

    def url(self, database: str) -> str:
        """A postgresql:// URL for ``database`` through the pooler, with the credentials."""
        return (
            f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{quote(database, safe='')}"
        )

    @property
    def admin_url(self) -> str:
        """The admin console (SHOW POOLS, PAUSE, RESUME, KILL db, RECONNECT …)."""
        return self.url("pgbouncer")

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines PgBouncer logged, for assertion and error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def is_running(self) -> bool:
        """Whether the process is still alive (a test may kill it on purpose)."""
        return self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """Shut PgBouncer down: SIGTERM (immediate shutdown, clients are cut off), then
        SIGKILL after ``timeout`` seconds. Idempotent; also run at interpreter exit."""
        atexit.unregister(self.stop)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)

    def __enter__(self) -> Self:
        """The bouncer itself; :meth:`stop` runs on exit."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop PgBouncer."""
        self.stop()

    def __repr__(self) -> str:
        """Where it listens and whether it runs, without the password."""
        state = "running" if self.is_running() else f"exited {self.process.returncode}"
        return f"PgBouncer({self.host}:{self.port}, {state}, log={self.log_path})"

    def _wait_listening(self, timeout: float) -> bool:
        """Poll the TCP port until it accepts; False if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.02)
        return False


def _free_port() -> int:
    """A localhost TCP port that was free a moment ago (PgBouncer binds it; a race is
    retried by :meth:`PgBouncer.start`)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _account(upstream: Upstream, run_as: str | None) -> pwd.struct_passwd | None:
    """The Unix account to run PgBouncer as, or None to run as ourselves (not root).

    As root, prefer the owner of the upstream's Unix socket: that user can reach the socket
    even inside a 0700 data directory (the embedded server's case). ``nobody`` otherwise,
    which suffices for a TCP upstream.
    """
    if os.geteuid() != 0:
        if run_as is not None and run_as != pwd.getpwuid(os.geteuid()).pw_name:
            raise ValueError(f"run_as={run_as!r} needs root")
        return None
    if run_as is not None:
        return pwd.getpwnam(run_as)
    socket_path = upstream.socket_path
    if socket_path is not None:
        for candidate in (socket_path, socket_path.parent):
            try:
                owner = candidate.stat().st_uid
            except OSError:
                continue
            if owner != 0:
                return pwd.getpwuid(owner)
    return pwd.getpwnam(_UNPRIVILEGED_USER)


def _write_private(path: Path, text: str, account: pwd.struct_passwd | None) -> None:
    """Write a 0600 file (it holds passwords) owned by the account PgBouncer runs as."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)


def _cstr(value: str) -> str:
    """A value quoted for a PgBouncer connection string (``''`` escapes a quote)."""
    if "\n" in value or "\r" in value:
        raise ValueError("connection string values cannot contain newlines")
    return "'" + value.replace("'", "''") + "'"


def _userlist(user: str, password: str) -> str:
    """An auth_file line: ``"user" "password"``, ``""`` escaping a double quote."""
    for value in (user, password):
        if "\n" in value or "\r" in value:
            raise ValueError("auth_file values cannot contain newlines")
    return '"{}" "{}"\n'.format(user.replace('"', '""'), password.replace('"', '""'))


def _config(
    upstream: Upstream,
    *,
    port: int,
    auth_file: Path,
    pool_mode: str,
    pool_size: int,
    ignore_startup_parameters: tuple[str, ...],
    settings: Mapping[str, str | int],
) -> str:
    """The pgbouncer.ini text."""
    target = f"host={_cstr(upstream.host)} port={upstream.port} user={_cstr(upstream.user)}"
    if upstream.password is not None:
        target += f" password={_cstr(upstream.password)}"
    values: dict[str, str | int] = {
        "listen_addr": "127.0.0.1",
        "listen_port": port,
        # no listening Unix socket: tests connect over TCP, and a socket path under a
        # deep workdir could exceed the 107-byte limit
        "unix_socket_dir": "",
        "auth_type": "scram-sha-256",
        "auth_file": str(auth_file),
        "admin_users": upstream.user,
        "stats_users": upstream.user,
        "pool_mode": pool_mode,
        "default_pool_size": pool_size,
        "min_pool_size": 0,
        "reserve_pool_size": 0,
        "max_client_conn": 500,
        # DISCARD ALL between clients in session mode; in transaction mode PgBouncer does
        # not run it anyway, and empty says so
        "server_reset_query": "DISCARD ALL" if pool_mode == "session" else "",
        "ignore_startup_parameters": ",".join(ignore_startup_parameters),
        "application_name_add_host": 0,
        # retry a failed upstream login after 1 s rather than 15 s (outage tests)
        "server_login_retry": 1,
        "server_connect_timeout": 5,
        # a client waiting for a server connection errors after 20 s (08P01
        # "query_wait_timeout"), inside pytest's 60 s timeout, rather than after 120 s
        "query_wait_timeout": 20,
    }
    if upstream.sslmode is not None:
        values["server_tls_sslmode"] = upstream.sslmode
    values.update(settings)
    lines = ["[databases]", f"* = {target}", "", "[pgbouncer]"]
    for key, value in values.items():
        text = str(value)
        if "\n" in text or "\n" in key:
            raise ValueError(f"setting {key!r} cannot contain newlines")
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def _spawn(
    binary: str, config: Path, log_path: Path, account: pwd.struct_passwd | None
) -> subprocess.Popen[bytes]:
    """Start PgBouncer in the foreground, logging to ``log_path`` through stderr.

    The log file is opened here, so the unprivileged user needs no write access anywhere;
    its own session keeps a terminal's Ctrl-C from reaching it before the test's cleanup.
    """
    with log_path.open("ab") as log:
        if account is None:
            return subprocess.Popen(
                [binary, str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        return subprocess.Popen(
            [binary, str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            user=account.pw_uid,
            group=account.pw_gid,
            extra_groups=[],
            env={**os.environ, "HOME": account.pw_dir, "USER": account.pw_name},
        )
