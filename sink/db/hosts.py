"""The hosts of a database URL: one URL per host of a multi-host URL, the order to try
them in (the host that last gave a session first), and the error naming each one's reason."""

from __future__ import annotations

import os
from typing import Final
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg

# target_session_attrs that check the server's role: the order of the hosts then only decides
# how fast the right one is found, so the host that last worked is tried first.
_ROLE_CHECKS: Final = frozenset({"read-write", "primary", "standby", "read-only"})


class NoUsableHost(OSError):
    """No host of a multi-host database URL gave a usable session; a retry may find one."""


def host_urls(dsn: str) -> list[str]:
    """One URL per host of a multi-host URL (``postgresql://u:pw@h1:p1,h2:p2/db?...``), in
    its order; ``[dsn]`` when it names one host or none (a socket, ``PGHOST``)."""
    parts = urlsplit(dsn)
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    hosts = [h for h in hostlist.split(",") if h]
    if len(hosts) < 2:
        return [dsn]
    return [urlunsplit(parts._replace(netloc=f"{userinfo}{at}{host}")) for host in hosts]


def _host_of(url: str) -> str:
    return urlsplit(url).netloc.rpartition("@")[2] or "the default host"


def _target_role(dsn: str) -> str:
    role = parse_qs(urlsplit(dsn).query).get("target_session_attrs", [""])[-1]
    return role or os.environ.get("PGTARGETSESSIONATTRS", "any")


class HostOrder:
    """The order in which to try the hosts of one database URL. When the URL asks for a
    role (``target_session_attrs=read-write``...), the host that last gave a session comes
    first and a host that hung goes last, so after a failover a new connection does not
    wait for the old primary first every time."""

    def __init__(self, dsn: str) -> None:
        self.role = _target_role(dsn)
        self._order = host_urls(dsn)
        self._reorder = len(self._order) > 1 and self.role in _ROLE_CHECKS

    def __len__(self) -> int:
        return len(self._order)

    def attempts(self) -> list[str]:
        return list(self._order)

    def worked(self, url: str) -> None:
        if self._reorder and url in self._order:
            self._order.remove(url)
            self._order.insert(0, url)

    def hung(self, url: str) -> None:
        if self._reorder and url in self._order:
            self._order.remove(url)
            self._order.append(url)


def no_usable_host(
    failures: list[tuple[str, BaseException]], role: str, timeout: float
) -> BaseException:
    """The error naming the problem: a server's own refusal (a wrong password) when one
    answered so, else every host's reason."""
    for _, exc in failures:
        if isinstance(exc, asyncpg.PostgresError) and exc.sqlstate != "57P03":
            return exc
    reasons = []
    for url, exc in failures:
        if isinstance(exc, TimeoutError):
            why = f"no answer within {timeout:g} s"
        elif isinstance(exc, asyncpg.TargetServerAttributeNotMatched):
            why = f"not {role}"
        else:
            why = type(exc).__name__
        reasons.append(f"{_host_of(url)}: {why}")
    return NoUsableHost(
        f"no host of the database URL gave a {role} session ({'; '.join(reasons)}); during a"
        " failover this lasts until the new primary is promoted"
    )
