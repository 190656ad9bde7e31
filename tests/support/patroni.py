"""A real two-node HA Postgres (Patroni + etcd + Postgres 15) for failover tests.

``PatroniCluster().start(workdir)`` starts, all on 127.0.0.1 and on free ports:

* one etcd 3.4 (Debian ``etcd-server``) with its data in a scratch dir;
* N Patroni 3.0 nodes (``pg0``, ``pg1``, ...), each with its own Postgres 15 data dir, Postgres
  port and REST API port.

Patroni talks to etcd through the **v3 API** (its ``etcd3`` DCS, which speaks JSON to etcd's
gRPC gateway and needs only ``python3-etcd`` and ``urllib3``, both installed with Debian's
``patroni``; the separate ``etcd3`` Python client is not used).

Replication is synchronous (``synchronous_mode: true``) with ``synchronous_mode_strict: false``:
Patroni only promotes a standby that is listed as synchronous in etcd, so no acknowledged commit
is lost on failover, yet once the old primary is gone the promoted survivor clears
``synchronous_standby_names`` and accepts writes on its own.  (Strict mode would set it to
``'*'`` and every commit on the lone survivor would hang until a standby came back.)
``PatroniCluster(synchronous_mode=False)`` gives the asynchronous setup instead (Patroni's
default): standbys stream, none is synchronous, and a promotion can lose acknowledged commits.

Postgres and Patroni refuse to run as root, so when the harness runs as root (as CI does) every
process is started as the ``postgres`` system user (``subprocess.Popen(user=..., group=...)``,
so the PIDs we hold are the real processes, not ``runuser`` wrappers) and everything they write
lives in a fresh ``/tmp/patroni-*`` dir owned by that user (a pytest ``tmp_path`` is usually not
reachable by another user).  Logs go to ``workdir``: ``etcd.log`` and one ``<node>.log`` per
node holding both Patroni's output and its Postgres server log (Postgres inherits Patroni's
stderr; its lines are tagged ``[pg <node>]``).  ``workdir`` also gets a copy of each node's
Patroni config.

All methods are synchronous and block (``start`` for ~10 s, ``wait_for_new_leader`` for a
failover, typically ~10 s with the defaults); from async tests call them through
``asyncio.to_thread``.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

PG_BIN_DIR = Path("/usr/lib/postgresql/15/bin")
PATRONI_BIN = Path("/usr/bin/patroni")
ETCD_BIN = Path("/usr/bin/etcd")
HOST = "127.0.0.1"
SUPERUSER = "postgres"
REPLICATION_USER = "replicator"
#: Which system user runs everything when the harness itself runs as root.
SERVICE_USER = "postgres"

_LOG_TAIL_LINES = 40
_POLL = 0.1
#: A direct opener: never send loopback REST calls through an ``http_proxy`` from the env.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class PatroniClusterError(RuntimeError):
    """The cluster did not come up, or did not fail over, in time (message has log tails)."""


@dataclass
class _Node:
    name: str
    pg_port: int
    api_port: int
    home: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    crashed: bool = False
    #: PIDs stopped by :meth:`PatroniCluster.freeze` (empty: not frozen).
    frozen: list[int] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def config_path(self) -> Path:
        return self.home / "patroni.yml"

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass(frozen=True)
class _Proc:
    pid: int
    ppid: int
    sid: int
    cmdline: str


@dataclass
class _Etcd:
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.client_port}"


class PatroniCluster:
    """One etcd plus ``nodes`` Patroni-managed Postgres 15 servers on 127.0.0.1.

    Use as ``with PatroniCluster().start(tmp_path) as cluster: ...``, or call :meth:`stop`.
    ``pg0`` is always the first leader (it is started alone; the others clone it).
    """

    def __init__(
        self,
        *,
        nodes: int = 2,
        ttl: int = 10,
        loop_wait: int = 1,
        retry_timeout: int = 5,
        synchronous_mode_strict: bool = False,
        synchronous_mode: bool = True,
        start_timeout: float = 90.0,
        pg_parameters: Mapping[str, str | int] | None = None,
    ) -> None:
        """Configure (not start) the cluster.

        ``ttl``/``loop_wait``/``retry_timeout`` are Patroni's DCS timings: after a crash the
        leader key expires within ``ttl`` seconds and the sync standby promotes on its next
        loop.  ``pg_parameters`` are extra Postgres settings (bootstrap DCS config).
        ``synchronous_mode=False`` makes replication asynchronous (``start`` then waits for
        the standbys to stream, not for one to become synchronous).
        """
        if nodes < 2:
            raise ValueError("a failover cluster needs at least two nodes")
        self.ttl = ttl
        self.loop_wait = loop_wait
        self.retry_timeout = retry_timeout
        self.synchronous_mode_strict = synchronous_mode_strict
        self.synchronous_mode = synchronous_mode
        self.start_timeout = start_timeout
        self.pg_parameters: dict[str, str | int] = dict(pg_parameters or {})
        self.node_count = nodes
        self.superuser = SUPERUSER
        self.password = secrets.token_hex(12)
        self.scope = f"pgha-{secrets.token_hex(4)}"
        #: Seconds the last :meth:`start` took.
        self.start_seconds: float | None = None
        self._replication_password = secrets.token_hex(12)
        self._workdir: Path | None = None
        self._scratch: Path | None = None
        self._etcd: _Etcd | None = None
        self._nodes: dict[str, _Node] = {}
        self._postmasters: set[int] = set()
        self._uid: int | None = None
        self._gid: int | None = None
        self._started = False
        self._stopped = False

    # ----------------------------------------------------------------------------- lifecycle

    def start(self, workdir: Path) -> PatroniCluster:
        """Start etcd and the nodes; return once a leader runs and a standby is synchronous.

        Bounded by ``start_timeout``; on failure everything is torn down and a
        :class:`PatroniClusterError` carrying the log tails is raised.
        """
        if self._started:
            raise RuntimeError("PatroniCluster.start() may only be called once")
        self._started = True
        began = time.monotonic()
        deadline = began + self.start_timeout
        workdir.mkdir(parents=True, exist_ok=True)
        self._workdir = workdir
        if os.geteuid() == 0:
            account = pwd.getpwnam(SERVICE_USER)
            self._uid, self._gid = account.pw_uid, account.pw_gid
        scratch = Path(tempfile.mkdtemp(prefix="patroni-", dir="/tmp"))
        self._scratch = scratch
        atexit.register(self.stop)
        try:
            ports = _free_ports(2 + 2 * self.node_count)
            self._etcd = _Etcd(
                client_port=ports[0],
                peer_port=ports[1],
                data_dir=scratch / "etcd",
                log_path=workdir / "etcd.log",
            )
            for i in range(self.node_count):
                name = f"pg{i}"
                self._nodes[name] = _Node(
                    name=name,
                    pg_port=ports[2 + 2 * i],
                    api_port=ports[3 + 2 * i],
                    home=scratch / name,
                    log_path=workdir / f"{name}.log",
                )
            self._prepare_dirs()
            self._start_etcd(deadline)
            first, *others = self._nodes.values()
            self._spawn_node(first)
            self._wait(deadline, lambda: self._primary_status(first), "pg0 to become leader")
            for node in others:
                self._spawn_node(node)
            self._wait(deadline, self._replication_status, "standbys to stream")
        except BaseException:
            self.stop()
            raise
        for node in self._nodes.values():
            pid = self._postmaster_pid(node)
            if pid is not None:
                self._postmasters.add(pid)
        self.start_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Stop every process the cluster started, remove its scratch dir; idempotent.

        Patroni gets SIGTERM (it shuts its Postgres down cleanly) and a few seconds; anything
        of ours still alive afterwards (found by the unique scratch path or cluster name in
        its command line) is SIGKILLed, and orphaned SysV shared memory of crashed
        postmasters is removed.  The logs in ``workdir`` are kept.
        """
        if self._stopped or not self._started:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        for node in self._nodes.values():
            pid = self._postmaster_pid(node)
            if pid is not None:
                self._postmasters.add(pid)
        for node in self._nodes.values():
            if node.frozen and not node.crashed:
                self.kill(node.name)  # a stopped process would sit out SIGTERM's grace
        for node in self._nodes.values():
            if node.proc is not None and node.running:
                node.proc.send_signal(signal.SIGTERM)
        _wait_exit([n.proc for n in self._nodes.values() if n.proc is not None], 15.0)
        etcd = self._etcd.proc if self._etcd else None
        if etcd is not None and etcd.poll() is None:
            etcd.send_signal(signal.SIGTERM)
            _wait_exit([etcd], 5.0)
        self._kill_leftovers()
        self._remove_orphan_shm()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> PatroniCluster:
        """Context manager over a started cluster; :meth:`stop` on exit."""
        if not self._started:
            raise RuntimeError("call start(workdir) first: `with PatroniCluster().start(d) as c`")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Tear the cluster down."""
        self.stop()

    # ----------------------------------------------------------------------------- queries

    @property
    def node_names(self) -> list[str]:
        """Node names in start order (``pg0``, ``pg1``, ...)."""
        return list(self._nodes)

    def port(self, node: str) -> int:
        """The Postgres port of ``node``."""
        return self._nodes[node].pg_port

    def url(self, node: str, database: str = "postgres") -> str:
        """A superuser URL for one node only."""
        n = self._nodes[node]
        return f"postgresql://{self.superuser}:{self.password}@{HOST}:{n.pg_port}/{database}"

    def multi_host_url(self, database: str = "postgres") -> str:
        """A superuser URL listing every node that only accepts the read-write one.

        ``postgresql://u:pw@127.0.0.1:p0,127.0.0.1:p1/db?target_session_attrs=read-write``;
        asyncpg (>= 0.25) and libpq both try the hosts in order.
        """
        hosts = ",".join(f"{HOST}:{n.pg_port}" for n in self._nodes.values())
        return (
            f"postgresql://{self.superuser}:{self.password}@{hosts}/{database}"
            "?target_session_attrs=read-write"
        )

    def cluster_state(self) -> dict[str, Any]:
        """Patroni's ``GET /cluster`` as seen by the first node that answers."""
        for node in self._live_nodes():
            status, body = _get_json(f"{node.api_url}/cluster")
            if status == 200 and isinstance(body, dict):
                return body
        raise PatroniClusterError("no Patroni REST API answered GET /cluster\n" + self.log_tails())

    def leader(self) -> str:
        """The node holding the leader key in etcd (it can be a crashed node until ``ttl``)."""
        for member in _members(self.cluster_state()):
            if member.get("role") == "leader":
                return str(member["name"])
        raise PatroniClusterError("the cluster has no leader\n" + self.log_tails())

    def log_tails(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of every log written so far in ``workdir``."""
        logs = [self._etcd.log_path] if self._etcd else []
        logs += [n.log_path for n in self._nodes.values()]
        return "\n".join(_tail(path, lines) for path in logs if path.exists())

    # ----------------------------------------------------------------------------- faults

    def kill_leader(self) -> str:
        """Crash the current leader like a machine failure; return its name.

        Its Patroni, its postmaster and every postmaster child are frozen with SIGSTOP, then
        SIGKILLed, so nothing gets to shut down, demote or release the leader key.
        """
        name = self.leader()
        self.kill(name)
        return name

    def kill(self, node: str) -> None:
        """Crash ``node`` (SIGSTOP, then SIGKILL its Patroni, postmaster and backends)."""
        n = self._nodes[node]
        if n.crashed:
            raise RuntimeError(f"{node} was already killed")
        targets = n.frozen or self._stop_node(n)
        for pid in targets:
            _signal(pid, signal.SIGKILL)
        n.crashed = True
        if n.proc is not None:
            n.proc.wait()
        _wait_gone(targets, 10.0)

    def freeze_leader(self) -> str:
        """Freeze the current leader like a paused VM (see :meth:`freeze`); return its name."""
        name = self.leader()
        self.freeze(name)
        return name

    def freeze(self, node: str) -> None:
        """Pause ``node``: SIGSTOP its Patroni, postmaster and every backend, and leave them.

        Unlike :meth:`kill` the kernel keeps every socket open: clients' connections stay
        established and new TCP handshakes still complete (the listen backlog), but nothing
        answers.  The leader key expires after ``ttl`` and the sync standby promotes.
        :meth:`stop` kills a frozen node.
        """
        n = self._nodes[node]
        if n.crashed or n.frozen:
            raise RuntimeError(f"{node} was already killed or frozen")
        n.frozen = self._stop_node(n)

    def _stop_node(self, n: _Node) -> list[int]:
        """SIGSTOP the node's Patroni, its postmaster, then every child; return their PIDs."""
        targets: list[int] = []
        if n.proc is not None and n.running:
            targets.append(n.proc.pid)
            _signal(n.proc.pid, signal.SIGSTOP)
        postmaster = self._postmaster_pid(n)
        if postmaster is not None:
            self._postmasters.add(postmaster)
            targets.append(postmaster)
            _signal(postmaster, signal.SIGSTOP)  # no more forks from here on
        table = _processes()
        for proc in table.values():
            in_patroni_session = n.proc is not None and proc.sid == n.proc.pid
            if (in_patroni_session or proc.ppid == postmaster) and proc.pid not in targets:
                targets.append(proc.pid)
                _signal(proc.pid, signal.SIGSTOP)
        return targets

    def wait_for_new_leader(self, old: str, timeout: float = 30.0) -> str:
        """Wait until a node other than ``old`` holds the leader key and runs as primary."""
        deadline = time.monotonic() + timeout
        seen = ""
        while True:
            for node in self._live_nodes():
                if node.name == old:
                    continue
                status, body = _get_json(f"{node.api_url}/primary")
                if isinstance(body, dict):
                    seen = f"{node.name}: HTTP {status} role={body.get('role')} "
                    seen += f"state={body.get('state')}"
                if _is_running_primary(status, body):
                    return node.name
            if time.monotonic() >= deadline:
                raise PatroniClusterError(
                    f"no new leader (old: {old}) within {timeout} s; last seen {seen or 'nothing'}"
                    f"\n{self.log_tails()}"
                )
            time.sleep(_POLL)

    # ----------------------------------------------------------------------------- internals

    def _live_nodes(self) -> list[_Node]:
        return [n for n in self._nodes.values() if n.running and not n.crashed and not n.frozen]

    def _prepare_dirs(self) -> None:
        assert self._scratch is not None and self._etcd is not None
        for node in self._nodes.values():
            node.home.mkdir(mode=0o700)
        for path in [self._scratch, *(n.home for n in self._nodes.values())]:
            if self._uid is not None and self._gid is not None:
                os.chown(path, self._uid, self._gid)

    def _env(self) -> dict[str, str]:
        assert self._scratch is not None
        # A clean environment: no PG*, proxy or virtualenv variables from the test runner.
        return {
            "PATH": f"{PG_BIN_DIR}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self._scratch),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "TZ": "UTC",
            "PYTHONDONTWRITEBYTECODE": "1",
        }

    def _spawn(self, argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        assert self._scratch is not None
        with log_path.open("ab") as log:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env(),
                cwd=self._scratch,
                start_new_session=True,
                umask=0o077,
                user=self._uid,
                group=self._gid,
                extra_groups=[] if self._uid is not None else None,
            )

    def _start_etcd(self, deadline: float) -> None:
        etcd = self._etcd
        assert etcd is not None
        peer = f"http://{HOST}:{etcd.peer_port}"
        etcd.proc = self._spawn(
            [
                str(ETCD_BIN),
                "--name=etcd0",
                f"--data-dir={etcd.data_dir}",
                f"--listen-client-urls={etcd.url}",
                f"--advertise-client-urls={etcd.url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=etcd0={peer}",
                "--initial-cluster-state=new",
                f"--initial-cluster-token={self.scope}",
                "--logger=zap",
                "--log-outputs=stderr",
            ],
            etcd.log_path,
        )

        def healthy() -> str | None:
            status, body = _get_json(f"{etcd.url}/health")
            if status == 200 and isinstance(body, dict) and body.get("health") == "true":
                return None
            return f"etcd /health: HTTP {status} {body!r}"

        self._wait(deadline, healthy, "etcd to become healthy")

    def _patroni_config(self, node: _Node) -> dict[str, Any]:
        assert self._etcd is not None
        dcs_parameters: dict[str, str | int] = {
            "max_connections": 100,
            "max_wal_senders": 10,
            "max_replication_slots": 10,
            "wal_level": "replica",
            "hot_standby": "on",
            "wal_keep_size": "128MB",
            "shared_buffers": "32MB",
            **self.pg_parameters,
        }
        return {
            "scope": self.scope,
            "namespace": "/service/",
            "name": node.name,
            "log": {"level": "INFO", "format": f"%(asctime)s [patroni {node.name}] %(message)s"},
            "restapi": {
                "listen": f"{HOST}:{node.api_port}",
                "connect_address": f"{HOST}:{node.api_port}",
            },
            "etcd3": {"hosts": [f"{HOST}:{self._etcd.client_port}"], "protocol": "http"},
            "bootstrap": {
                "dcs": {
                    "ttl": self.ttl,
                    "loop_wait": self.loop_wait,
                    "retry_timeout": self.retry_timeout,
                    "maximum_lag_on_failover": 1048576,
                    "synchronous_mode": self.synchronous_mode,
                    "synchronous_mode_strict": self.synchronous_mode_strict,
                    "postgresql": {
                        "use_pg_rewind": False,
                        "use_slots": True,
                        "parameters": dcs_parameters,
                    },
                },
                "initdb": [{"encoding": "UTF8"}, {"locale": "C"}, "data-checksums"],
            },
            "postgresql": {
                "listen": f"{HOST}:{node.pg_port}",
                "connect_address": f"{HOST}:{node.pg_port}",
                "data_dir": str(node.data_dir),
                "bin_dir": str(PG_BIN_DIR),
                "pgpass": str(node.home / "pgpass"),
                "authentication": {
                    "superuser": {"username": self.superuser, "password": self.password},
                    "replication": {
                        "username": REPLICATION_USER,
                        "password": self._replication_password,
                    },
                },
                "parameters": {
                    # Our own socket dir: never collide with another server's /var/run socket.
                    "unix_socket_directories": str(node.home),
                    # DSM segments in the data dir, not /dev/shm: a SIGKILLed postmaster
                    # leaves nothing behind that rmtree does not remove.
                    "dynamic_shared_memory_type": "mmap",
                    "log_line_prefix": f"%m [pg {node.name}] %p ",
                },
                "pg_hba": [
                    "local all all trust",
                    f"host all all {HOST}/32 md5",
                    f"host replication {REPLICATION_USER} {HOST}/32 md5",
                ],
                "basebackup": [{"checkpoint": "fast"}],
            },
            "watchdog": {"mode": "off"},
            "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
        }

    def _spawn_node(self, node: _Node) -> None:
        assert self._workdir is not None
        # JSON is YAML, so no YAML library is needed to write Patroni's config.
        text = json.dumps(self._patroni_config(node), indent=2)
        node.config_path.write_text(text)
        if self._uid is not None and self._gid is not None:
            os.chown(node.config_path, self._uid, self._gid)
        (self._workdir / f"{node.name}.patroni.yml").write_text(text)
        node.proc = self._spawn([str(PATRONI_BIN), str(node.config_path)], node.log_path)

    def _primary_status(self, node: _Node) -> str | None:
        status, body = _get_json(f"{node.api_url}/primary")
        if _is_running_primary(status, body):
            return None
        return f"{node.name} GET /primary: HTTP {status} {body!r}"

    def _replication_status(self) -> str | None:
        """None once every standby streams from the leader and (in synchronous mode) one is
        sync in etcd and in Postgres."""
        state = None
        for node in self._live_nodes():
            status, body = _get_json(f"{node.api_url}/cluster")
            if status == 200 and isinstance(body, dict):
                state = body
                break
        if state is None:
            return "no node answers GET /cluster"
        members = _members(state)
        leaders = [m for m in members if m.get("role") == "leader"]
        if len(members) != self.node_count or len(leaders) != 1:
            return f"/cluster members: {members!r}"
        leader = self._nodes[str(leaders[0]["name"])]
        if self.synchronous_mode and not any(m.get("role") == "sync_standby" for m in members):
            return f"no sync_standby in etcd yet: {members!r}"
        status, body = _get_json(f"{leader.api_url}/patroni")
        replication = body.get("replication") if isinstance(body, dict) else None
        rows = (
            [r for r in replication if isinstance(r, dict)] if isinstance(replication, list) else []
        )
        streaming = {str(r.get("application_name")) for r in rows if r.get("state") == "streaming"}
        sync = [r for r in rows if r.get("sync_state") == "sync"]
        standbys = set(self._nodes) - {leader.name}
        if not standbys <= streaming or (self.synchronous_mode and not sync):
            return f"{leader.name} pg_stat_replication: {rows!r}"
        return None

    def _wait(self, deadline: float, ready: Callable[[], str | None], what: str) -> None:
        """Poll ``ready() -> str | None`` (None: done) until ``deadline``; fail fast on exits."""
        detail = ""
        while True:
            for proc, label in self._watched():
                if proc.poll() is not None:
                    raise PatroniClusterError(
                        f"{label} exited with code {proc.returncode} while waiting for {what}"
                        f"\n{self.log_tails()}"
                    )
            result = ready()
            if result is None:
                return
            detail = str(result)
            if time.monotonic() >= deadline:
                raise PatroniClusterError(
                    f"timed out after {self.start_timeout} s waiting for {what}; last: {detail}"
                    f"\n{self.log_tails()}"
                )
            time.sleep(_POLL)

    def _watched(self) -> list[tuple[subprocess.Popen[bytes], str]]:
        watched = []
        if self._etcd is not None and self._etcd.proc is not None:
            watched.append((self._etcd.proc, "etcd"))
        for node in self._nodes.values():
            if node.proc is not None and not node.crashed:
                watched.append((node.proc, f"patroni {node.name}"))
        return watched

    def _postmaster_pid(self, node: _Node) -> int | None:
        """The live postmaster of ``node`` (from ``postmaster.pid``, checked against /proc)."""
        try:
            pid = int((node.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        proc = _processes().get(pid)
        if proc is None or str(node.data_dir) not in proc.cmdline:
            return None
        return pid

    def _ours(self, proc: _Proc) -> bool:
        assert self._scratch is not None
        # Patroni, etcd and postmasters carry the scratch path in argv; Postgres children
        # retitle themselves "postgres: <cluster_name>: ..." and cluster_name is our scope.
        return str(self._scratch) in proc.cmdline or proc.cmdline.startswith(
            f"postgres: {self.scope}:"
        )

    def _kill_leftovers(self) -> None:
        if self._scratch is None:
            return
        me = os.getpid()
        leftovers = [p.pid for p in _processes().values() if p.pid != me and self._ours(p)]
        for pid in leftovers:
            _signal(pid, signal.SIGKILL)
        for popen in [n.proc for n in self._nodes.values()]:
            if popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    popen.wait(timeout=5.0)
        if self._etcd is not None and self._etcd.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._etcd.proc.wait(timeout=5.0)
        _wait_gone(leftovers, 10.0)

    def _remove_orphan_shm(self) -> None:
        """Remove SysV segments created by our postmasters that nobody is attached to."""
        try:
            rows = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
        except OSError:
            return
        for row in rows:
            fields = row.split()
            if len(fields) < 8:
                continue
            shmid, cpid, nattch = fields[1], int(fields[4]), int(fields[6])
            if cpid in self._postmasters and nattch == 0:
                subprocess.run(["ipcrm", "-m", shmid], check=False, capture_output=True)


# --------------------------------------------------------------------------------- helpers


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (all held open together while choosing)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((HOST, 0))
            sockets.append(s)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _get_json(url: str, timeout: float = 1.0) -> tuple[int | None, object]:
    """``(status, parsed body)``; ``(None, error text)`` when nothing answered."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with _HTTP.open(request, timeout=timeout) as response:
            status, raw = int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (OSError, http.client.HTTPException) as exc:
        return None, str(exc)
    try:
        body: object = json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")
    return status, body


def _members(state: Mapping[str, object]) -> list[dict[str, object]]:
    members = state.get("members")
    if not isinstance(members, list):
        return []
    return [m for m in members if isinstance(m, dict)]


def _is_running_primary(status: int | None, body: object) -> bool:
    # Patroni 3.0 reports "master"; later versions say "primary".
    return (
        status == 200
        and isinstance(body, dict)
        and body.get("role") in ("master", "primary")
        and body.get("state") == "running"
    )


def _processes() -> dict[int, _Proc]:
    """A snapshot of /proc (zombies excluded)."""
    table: dict[int, _Proc] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            raw = Path(entry.path, "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if fields[0] in ("Z", "X"):
            continue
        pid = int(entry.name)
        table[pid] = _Proc(
            pid=pid,
            ppid=int(fields[1]),
            sid=int(fields[3]),
            cmdline=raw.replace(b"\0", b" ").decode(errors="replace").strip(),
        )
    return table


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_gone(pids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = _processes()
        if not any(pid in alive for pid in pids):
            return
        time.sleep(0.05)


def _wait_exit(procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))


def _tail(path: Path, lines: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 200 * lines))
            text = f.read().decode(errors="replace")
    except OSError as exc:
        return f"--- {path}: {exc}"
    return f"--- {path} (last {lines} lines) ---\n" + "\n".join(text.splitlines()[-lines:])
