"""A real nginx terminating TLS in front of the sink, so tests see what a production proxy sends.

Twilio signs the URL it was configured with, and behind a TLS proxy the sink has to rebuild
that URL from what the proxy forwards: the scheme (``X-Forwarded-Proto``) and the host *as
Twilio sent it*, port included when there is one (``Host``/``X-Forwarded-Host`` from
``$http_host``). A fake cannot show what nginx really forwards, so this module starts the
real binary with a certificate the test generates::

    cert = make_certificate(tmp_path)
    with TlsProxy.start(f"127.0.0.1:{sink_port}", tmp_path, certificate=cert) as proxy:
        async with session.post(proxy.url("/events"), ssl=proxy.ssl_context(), ...) as r:
            ...

``proxy.base_url`` is ``https://localhost:PORT``; the certificate is valid for
``DNS:localhost`` and ``IP:127.0.0.1`` and is issued by a throwaway CA that
:meth:`TlsProxy.ssl_context` (or :meth:`Certificate.ssl_context`) trusts, so clients verify
it normally (no ``ssl=False``).

Port 443
--------
Twilio leaves the port out of the URL it signs when the public port is 443, and a browser or
HTTP client leaves it out of ``Host``. Only a proxy really listening on 443 shows that case
(``https://localhost/events``), so ``TlsProxy.start(..., listen_port=443)`` is supported.
Binding 443 needs root (or CAP_NET_BIND_SERVICE, or a lowered
``net.ipv4.ip_unprivileged_port_start``), and only one test at a time can hold it. Callers
must skip rather than fail when it is unavailable::

    reason = port_unavailable_reason(443)
    if reason:
        pytest.skip(reason)

and should not run such tests in parallel (pytest-xdist): a second proxy fails with
"Address already in use".

Processes
---------
nginx runs in the foreground (``-g 'daemon off;'``) with its prefix, config, pid file, logs
and temp directories in ``workdir/nginx-<port>/``, in its own session. As root the master
keeps root (to bind 443 and read the key) and the workers drop to ``nobody``; the temp
directories are then chowned to that user, and ancestors of the workdir get the search bit
(x only, never r) so the workers can reach them. As any other user there is no ``user``
directive (nginx would ignore it with a warning).

The certificate is generated with the ``openssl`` command: the ``cryptography`` package is
not a dependency of the project.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import grp
import ipaddress
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from tests.support.daemons import ensure_traversable

HOST: Final = "127.0.0.1"
"""The only address the proxy listens on."""
CLIENT_HOSTNAME: Final = "localhost"
"""The host name in :attr:`TlsProxy.base_url`, covered by the certificate."""

_UNPRIVILEGED_USER: Final = "nobody"
_PORT_ATTEMPTS: Final = 5
_LOG_TAIL_LINES: Final = 40
_CERT_DAYS: Final = 7
_UPSTREAM_RE: Final = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$")
_TEMP_DIRS: Final = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


# --- certificates -------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificate:
    """A throwaway CA and a server certificate it issued, as PEM files.

    ``cert_path``/``key_path`` go to the server (nginx's ``ssl_certificate`` and
    ``ssl_certificate_key``); clients trust ``ca_path``. The CA key is deleted once the
    server certificate is signed.
    """

    ca_path: Path
    """The self-signed CA certificate: what a client trusts (``cafile=``)."""
    cert_path: Path
    """The server certificate (leaf only), issued by the CA."""
    key_path: Path
    """The server's private key (0600)."""
    hostnames: tuple[str, ...]
    """The subjectAltName entries: DNS names and IP addresses."""

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that verifies the server against this CA, host names included
        (``ssl.create_default_context``: CERT_REQUIRED and check_hostname)."""
        return ssl.create_default_context(cafile=str(self.ca_path))


def find_openssl() -> str | None:
    """Path of the ``openssl`` command, or None (``SINK_TEST_OPENSSL`` names one)."""
    given = os.environ.get("SINK_TEST_OPENSSL")
    if given:
        return given if os.access(given, os.X_OK) else None
    return shutil.which("openssl")


def make_certificate(
    workdir: Path, hostnames: tuple[str, ...] = (CLIENT_HOSTNAME, HOST)
) -> Certificate:
    """Generate a CA and a server certificate for ``hostnames`` under ``workdir/tls/``.

    Each host name becomes a subjectAltName entry, ``IP:`` for an address and ``DNS:``
    otherwise (clients match SANs, not the CN). Keys are ECDSA P-256; the certificates are
    valid from now for a week and carry the extensions strict verifiers require
    (``basicConstraints``, ``keyUsage``, key identifiers, ``extendedKeyUsage=serverAuth``),
    so Python 3.13's VERIFY_X509_STRICT default accepts them too. Raises RuntimeError when
    openssl is missing or fails.
    """
    if not hostnames:
        raise ValueError("at least one host name is needed")
    binary = find_openssl()
    if binary is None:
        raise RuntimeError("openssl is not installed (apt-get install openssl)")
    directory = workdir / "tls"
    directory.mkdir(parents=True, exist_ok=True)
    # a fresh name per call, so two certificates can share a workdir
    stem = f"{_safe_stem(hostnames[0])}-{secrets.token_hex(4)}"
    config = directory / f"{stem}.cnf"
    ca_key = directory / f"{stem}-ca.key"
    ca_path = directory / f"{stem}-ca.pem"
    key_path = directory / f"{stem}.key"
    csr = directory / f"{stem}.csr"
    cert_path = directory / f"{stem}.pem"
    config.write_text(_openssl_config(hostnames))
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    days = ["-days", str(_CERT_DAYS)]
    ca_subject = ["-subj", "/CN=studio-sink test CA"]
    # the CA: self-signed, with the v3_ca extensions
    _openssl(
        binary,
        ["req", "-x509", *new_key, "-config", str(config), "-extensions", "v3_ca", *days,
         *ca_subject, "-keyout", str(ca_key), "-out", str(ca_path)],
    )  # fmt: skip
    # the server key and a request for it (the extensions are added when signing)
    _openssl(
        binary,
        ["req", "-new", *new_key, "-config", str(config), "-subj", f"/CN={_cn(hostnames[0])}",
         "-keyout", str(key_path), "-out", str(csr)],
    )  # fmt: skip
    # the server certificate, signed by the CA, with the v3_leaf extensions
    _openssl(
        binary,
        ["x509", "-req", "-in", str(csr), "-CA", str(ca_path), "-CAkey", str(ca_key),
         "-set_serial", f"0x{secrets.token_hex(16)}", *days,
         "-extfile", str(config), "-extensions", "v3_leaf", "-out", str(cert_path)],
    )  # fmt: skip
    for path in (ca_key, csr, config):
        path.unlink()
    key_path.chmod(0o600)
    return Certificate(
        ca_path=ca_path, cert_path=cert_path, key_path=key_path, hostnames=tuple(hostnames)
    )


def _san(hostname: str) -> str:
    """One subjectAltName entry: ``IP:`` for an IPv4/IPv6 address, else ``DNS:``."""
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9*.-]+", hostname):
            raise ValueError(f"not a DNS name or IP address: {hostname!r}") from None
        return f"DNS:{hostname}"
    return f"IP:{hostname}"


def _cn(hostname: str) -> str:
    """The subject CN: the first host name (informational only; SANs are what count)."""
    return hostname.replace("/", "").replace("=", "")


def _safe_stem(hostname: str) -> str:
    """A file-name-safe form of a host name."""
    return re.sub(r"[^A-Za-z0-9.-]", "_", hostname) or "server"


def _openssl_config(hostnames: tuple[str, ...]) -> str:
    """A self-contained openssl config (the system openssl.cnf is not read)."""
    sans = ", ".join(_san(name) for name in hostnames)
    return (
        "[req]\n"
        "distinguished_name = dn\n"
        "prompt = no\n"
        "[dn]\n"
        "CN = unused\n"
        "[v3_ca]\n"
        "basicConstraints = critical, CA:TRUE, pathlen:0\n"
        "keyUsage = critical, keyCertSign, cRLSign\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid:always\n"
        "[v3_leaf]\n"
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature\n"
        "extendedKeyUsage = serverAuth\n"
        f"subjectAltName = {sans}\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid:always\n"
    )


def _openssl(binary: str, args: list[str]) -> None:
    """Run one openssl command; RuntimeError with its output if it fails."""
    result = subprocess.run(
        [binary, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "OPENSSL_CONF": os.devnull},
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"openssl {args[0]} failed with status {result.returncode}:\n"
            f"{result.stderr.strip() or result.stdout.strip()}"
        )


# --- ports --------------------------------------------------------------------------------


def free_port() -> int:
    """A 127.0.0.1 TCP port that was free a moment ago (nginx binds it; a race is retried
    by :meth:`TlsProxy.start`)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def port_unavailable_reason(port: int = 443) -> str | None:
    """Why the proxy cannot listen on ``127.0.0.1:port``, or None when it can: a test skip
    reason for the port-443 case.

    It tries the bind nginx will do (with SO_REUSEADDR, as nginx does, so connections of a
    previous test in TIME_WAIT do not count): a permission error means not root (nor
    CAP_NET_BIND_SERVICE), "address in use" means another listener holds the port. The
    answer is only valid for a moment; :meth:`TlsProxy.start` still raises if it loses a
    race.
    """
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
            s.listen(1)
        except PermissionError:
            return (
                f"binding {HOST}:{port} needs root or CAP_NET_BIND_SERVICE"
                f" (running as uid {os.geteuid()})"
            )
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return f"{HOST}:{port} is already in use by another listener"
            return f"cannot bind {HOST}:{port}: {e}"
    return None


# --- nginx --------------------------------------------------------------------------------


def find_nginx() -> str | None:
    """Path of the ``nginx`` binary, or None, so tests can skip with a clear reason.

    Looks on PATH and in /usr/sbin (Debian's location, often not on a non-root PATH).
    ``SINK_TEST_NGINX`` names a binary explicitly.
    """
    given = os.environ.get("SINK_TEST_NGINX")
    if given:
        return given if os.access(given, os.X_OK) else None
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


class TlsProxy:
    """A running nginx that terminates TLS on ``127.0.0.1:port`` and proxies plain HTTP to
    an upstream, started by :meth:`start`.

    It forwards ``Host`` exactly as the client sent it (with the port unless it is 443),
    plus ``X-Forwarded-Proto``, ``X-Forwarded-Host`` and ``X-Forwarded-For`` unless started
    with ``forwarded_headers=False``. :attr:`config_text` is the generated nginx.conf.
    """

    def __init__(
        self,
        *,
        process: subprocess.Popen[bytes],
        port: int,
        upstream: str,
        certificate: Certificate,
        directory: Path,
        config_text: str,
    ) -> None:
        """Use :meth:`start`; this only records what it set up."""
        self.process = process
        self.host: Final = HOST
        self.port = port
        self.upstream = upstream
        self.certificate = certificate
        self.directory = directory
        self.config_path = directory / "nginx.conf"
        self.config_text = config_text
        self.error_log = directory / "error.log"
        self.access_log = directory / "access.log"
        self.stderr_log = directory / "stderr.log"
        atexit.register(self.stop)

    @classmethod
    def start(
        cls,
        upstream: str,
        workdir: Path,
        *,
        listen_port: int | None = None,
        forwarded_headers: bool = True,
        certificate: Certificate | None = None,
        run_as: str | None = None,
        timeout: float = 10.0,
        client_header_timeout: float = 10.0,
        client_body_timeout: float = 10.0,
        forwarded_port: bool = False,
    ) -> TlsProxy:
        """Write ``workdir/nginx-<port>/nginx.conf``, start nginx, and wait until it
        completes a TLS handshake that the client context verifies.

        ``upstream`` is ``"127.0.0.1:PORT"`` of a plain-HTTP server. ``listen_port`` None
        picks a free port (retried if another process takes it first); 443 or any other
        fixed port is tried once (see :func:`port_unavailable_reason` to skip).
        ``forwarded_headers=False`` makes a proxy that sends no ``X-Forwarded-*`` headers
        at all (those a client sent are removed too), for the sink's "no trusted proxy"
        path. ``certificate`` defaults to a new :func:`make_certificate` in ``workdir``.
        ``run_as`` names the worker user when running as root (default ``nobody``).
        ``client_header_timeout``/``client_body_timeout`` are nginx's slow-client limits in
        seconds (10 by default, as in production; a test of slow clients passes less).
        ``forwarded_port=True`` forwards the host the way many proxy configs do: the name
        alone in ``X-Forwarded-Host`` (``$host``) and the port in ``X-Forwarded-Port``.

        Raises RuntimeError, with the tail of nginx's error log, if nginx exits or does not
        accept TLS within ``timeout`` seconds.
        """
        if not _UPSTREAM_RE.match(upstream):
            raise ValueError(f"upstream must be HOST:PORT, not {upstream!r}")
        if listen_port is not None and not 0 < listen_port < 65536:
            raise ValueError(f"listen_port must be 1-65535, not {listen_port}")
        binary = find_nginx()
        if binary is None:
            raise RuntimeError("nginx is not installed (apt-get install nginx-light)")
        account = _account(run_as)
        cert = certificate if certificate is not None else make_certificate(workdir)
        attempts = 1 if listen_port is not None else _PORT_ATTEMPTS
        for _ in range(attempts):
            port = listen_port if listen_port is not None else free_port()
            directory = workdir / f"nginx-{port}"
            _prepare_directory(directory, account)
            config_text = render_config(
                upstream=upstream,
                port=port,
                certificate=cert,
                directory=directory,
                forwarded_headers=forwarded_headers,
                account=account,
                client_header_timeout=client_header_timeout,
                client_body_timeout=client_body_timeout,
                forwarded_port=forwarded_port,
            )
            (directory / "nginx.conf").write_text(config_text)
            process = _spawn(binary, directory)
            proxy = cls(
                process=process,
                port=port,
                upstream=upstream,
                certificate=cert,
                directory=directory,
                config_text=config_text,
            )
            problem = proxy._wait_ready(timeout)
            if problem is None:
                return proxy
            proxy.stop()
            tail = proxy.log_tail()
            if listen_port is None and "Address already in use" in tail:
                continue
            raise RuntimeError(
                f"nginx {problem}; last lines of {proxy.error_log} and {proxy.stderr_log}:\n{tail}"
            )
        raise RuntimeError(f"nginx found no free port in {_PORT_ATTEMPTS} attempts")

    @property
    def base_url(self) -> str:
        """``https://localhost:PORT``, or ``https://localhost`` on port 443 (no trailing
        slash), as Twilio would write the webhook URL."""
        if self.port == 443:
            return f"https://{CLIENT_HOSTNAME}"
        return f"https://{CLIENT_HOSTNAME}:{self.port}"

    def url(self, path_and_query: str = "/") -> str:
        """:attr:`base_url` plus a path (and query), e.g. ``/events?bodySHA256=…``."""
        if not path_and_query.startswith("/"):
            raise ValueError(f"the path must start with '/': {path_and_query!r}")
        return self.base_url + path_and_query

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting the proxy's CA, with hostname checking: pass it as
        aiohttp's ``ssl=`` (or ``aiohttp.TCPConnector(ssl=...)``)."""
        return self.certificate.ssl_context()

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of nginx's error log and stderr, for assertion and error
        messages."""
        parts: list[str] = []
        for path in (self.error_log, self.stderr_log):
            try:
                text = path.read_text(errors="replace")
            except FileNotFoundError:
                continue
            if text.strip():
                parts.append("\n".join(text.splitlines()[-lines:]))
        return "\n".join(parts) or "(nothing logged)"

    def is_running(self) -> bool:
        """Whether the master process is still alive (a test may kill it on purpose)."""
        return self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """Shut nginx down: SIGTERM (fast shutdown: open connections are closed), then
        SIGKILL to its whole process group after ``timeout`` seconds, so no worker
        outlives the master. Idempotent; also run at interpreter exit."""
        atexit.unregister(self.stop)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                # the master is not reaped yet, so its pid still names our process group
                _kill_group(self.process.pid)
                self.process.wait(timeout)
        elif self.process.returncode is not None and self.process.returncode < 0:
            # the master was killed by a signal: its workers may still run, orphaned
            _kill_group(self.process.pid)

    def __enter__(self) -> Self:
        """The proxy itself; :meth:`stop` runs on exit."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop nginx."""
        self.stop()

    def __repr__(self) -> str:
        """Where it listens, where it proxies, and whether it runs."""
        state = "running" if self.is_running() else f"exited {self.process.returncode}"
        return f"TlsProxy({self.base_url} -> http://{self.upstream}, {state}, {self.directory})"

    def _wait_ready(self, timeout: float) -> str | None:
        """Poll with verified TLS handshakes until one succeeds: None when ready, else what
        went wrong (exited, timed out, or a certificate the client rejects)."""
        context = self.ssl_context()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return f"exited with status {self.process.returncode}"
            try:
                with (
                    socket.create_connection((self.host, self.port), timeout=1.0) as sock,
                    context.wrap_socket(sock, server_hostname=CLIENT_HOSTNAME),
                ):
                    return None
            except ssl.SSLCertVerificationError as e:
                return f"serves a certificate the client rejects: {e}"
            except OSError:
                time.sleep(0.02)
        return f"did not complete a TLS handshake on {self.host}:{self.port} within {timeout} s"


def render_config(
    *,
    upstream: str,
    port: int,
    certificate: Certificate,
    directory: Path,
    forwarded_headers: bool = True,
    account: pwd.struct_passwd | None = None,
    client_header_timeout: float = 10.0,
    client_body_timeout: float = 10.0,
    forwarded_port: bool = False,
) -> str:
    """The nginx.conf text :meth:`TlsProxy.start` writes (exposed for the README and for
    tests that only check the config). Paths are absolute; ``account`` adds the ``user``
    directive (root only); the other arguments are those of :meth:`TlsProxy.start`."""

    def q(path: Path) -> str:
        text = str(path)
        if any(c in text for c in '"\\$;{}\n\r'):
            raise ValueError(f"path not usable in nginx.conf: {text!r}")
        return f'"{text}"'

    temp = directory / "temp"
    user = ""
    if account is not None:
        group = grp.getgrgid(account.pw_gid).gr_name
        user = f"user {account.pw_name} {group};  # workers drop root (the master keeps it)\n"
    if forwarded_headers and forwarded_port:
        forwarded = """\
            # what the sink rebuilds the signed URL from (SINK_TRUST_FORWARDED=true), in
            # the style of many proxy configs: the host name alone, the port apart
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Port $server_port;
            proxy_set_header X-Forwarded-For $remote_addr;
"""
    elif forwarded_headers:
        forwarded = """\
            # what the sink rebuilds the signed URL from (SINK_TRUST_FORWARDED=true)
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            # this proxy is the edge: replace any client-supplied chain instead of appending
            proxy_set_header X-Forwarded-For $remote_addr;
"""
    else:
        forwarded = """\
            # no forwarded headers (an empty value removes the header a client sent)
            proxy_set_header X-Forwarded-Proto "";
            proxy_set_header X-Forwarded-Host "";
            proxy_set_header X-Forwarded-Port "";
            proxy_set_header X-Forwarded-For "";
"""
    header_timeout = _duration(client_header_timeout)
    body_timeout = _duration(client_body_timeout)
    return f"""\
# generated by tests/support/tlsproxy.py
{user}worker_processes 1;  # tests; production: auto (one per core)
pid {q(directory / "nginx.pid")};
error_log {q(directory / "error.log")} info;  # info logs client timeouts and resets

events {{
    worker_connections 1024;  # per worker: caps open connections, idle ones included
}}

http {{
    access_log {q(directory / "access.log")};
    server_tokens off;  # no nginx version in headers and error pages

    # temp dirs inside the prefix (the compiled-in /var/lib/nginx needs root)
    client_body_temp_path {q(temp / "client_body")};
    proxy_temp_path {q(temp / "proxy")};
    fastcgi_temp_path {q(temp / "fastcgi")};
    uwsgi_temp_path {q(temp / "uwsgi")};
    scgi_temp_path {q(temp / "scgi")};

    # --- slow and abusive clients ---
    # TLS handshake, request line and all headers must arrive within this time of
    # connecting (one deadline, not per read); else nginx closes the connection (408)
    client_header_timeout {header_timeout};
    # the longest pause between two reads of the body: per read, not a total deadline,
    # so a 1-byte-per-9-s sender is not cut; limit_conn below caps how many can do it
    client_body_timeout {body_timeout};
    # the longest pause between two writes of the response to the client
    send_timeout 10s;
    # idle keep-alive connections are closed after 30 s
    keepalive_timeout 30s;
    # free a timed-out connection at once with a RST instead of a lingering close
    reset_timedout_connection on;
    # = SINK_MAX_BODY_BYTES (5 MiB): larger bodies get 413 from nginx, before the sink
    client_max_body_size 5m;
    # bodies up to 128 KiB stay in memory; larger ones are spooled to client_body_temp_path
    client_body_buffer_size 128k;
    # concurrent connections per client address; Twilio delivers from a shared pool of
    # addresses, so keep this generous
    limit_conn_zone $binary_remote_addr zone=per_ip:10m;
    limit_conn per_ip 100;
    limit_conn_status 429;

    upstream sink {{
        server {upstream};
        keepalive 16;  # idle connections to the sink kept for reuse
    }}

    server {{
        listen {HOST}:{port} ssl;
        server_name {CLIENT_HOSTNAME};

        ssl_certificate {q(certificate.cert_path)};
        ssl_certificate_key {q(certificate.key_path)};
        ssl_protocols TLSv1.2 TLSv1.3;  # Twilio requires TLS 1.2 or later
        ssl_session_cache shared:TLS:10m;  # resumed sessions skip the full handshake
        ssl_session_timeout 1h;

        location / {{
            proxy_pass http://sink;
            # HTTP/1.1 with no Connection header, so upstream keepalive works
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # the Host the client sent, port included: part of the URL Twilio signed
            proxy_set_header Host $http_host;
{forwarded}\
            # read the whole body before contacting the sink: a slow sender ties up
            # nginx, not the sink, and the sink gets the body in one piece
            proxy_request_buffering on;
            proxy_connect_timeout 5s;  # the sink is local: fail fast when it is down
            proxy_send_timeout 10s;  # the longest pause between two writes to the sink
            # the sink answers within SINK_DELIVERY_TIMEOUT (4 s); leave it room
            proxy_read_timeout 15s;
            # never resend a webhook to the sink: Twilio retries on its own
            proxy_next_upstream off;
        }}
    }}
}}
"""


def _duration(seconds: float) -> str:
    """An nginx time value: whole seconds as ``10s``, anything finer in milliseconds."""
    if not 0 < seconds < 86400:
        raise ValueError(f"a timeout must be between 0 and 86400 seconds, not {seconds}")
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


def _account(run_as: str | None) -> pwd.struct_passwd | None:
    """The Unix account nginx workers run as, or None to keep our own (not root)."""
    if os.geteuid() != 0:
        if run_as is not None and run_as != pwd.getpwuid(os.geteuid()).pw_name:
            raise ValueError(f"run_as={run_as!r} needs root")
        return None
    return pwd.getpwnam(run_as or _UNPRIVILEGED_USER)


def _prepare_directory(directory: Path, account: pwd.struct_passwd | None) -> None:
    """Create the prefix and its temp directories, writable by the workers."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in _TEMP_DIRS:
        path = directory / "temp" / name
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o700)
        if account is not None:
            os.chown(path, account.pw_uid, account.pw_gid)
    if account is not None:
        ensure_traversable(directory / "temp" / _TEMP_DIRS[0], account)


def _spawn(binary: str, directory: Path) -> subprocess.Popen[bytes]:
    """Start nginx in the foreground with ``directory`` as its prefix.

    ``-e`` sends the errors logged before the config is read to our log rather than the
    compiled-in /var/log/nginx/error.log; stderr (config errors) goes to stderr.log. Its
    own session keeps a terminal's Ctrl-C away and lets :meth:`TlsProxy.stop` kill the
    master and workers together.
    """
    with (directory / "stderr.log").open("ab") as log:
        return subprocess.Popen(
            [
                binary,
                "-p",
                f"{directory}/",
                "-c",
                str(directory / "nginx.conf"),
                "-e",
                str(directory / "error.log"),
                "-g",
                "daemon off;",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )


def _kill_group(pgid: int) -> None:
    """SIGKILL the nginx session we started (master and workers), if any of it is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
