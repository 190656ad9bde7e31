"""The port of ``serve --workers N``, held by the supervisor while its workers come and go.

Each worker binds its own listening socket with SO_REUSEPORT, and the kernel spreads new
connections over the listening ones. The supervisor first checks that nobody else holds
the port (a bind without SO_REUSEPORT, which another sink's sockets would refuse: two
sinks must not silently share a port), picks it when SINK_PORT is 0, then keeps a bound
socket with SO_REUSEPORT that never listens (so it never receives a connection): the port
stays this command's while a worker is restarted.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from sink.errors import ConfigError


@dataclass
class HeldPort:
    port: int
    sockets: list[socket.socket] = field(default_factory=list)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()


def _socket(family: int, kind: int, proto: int, reuse_port: bool) -> socket.socket:
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp's TCPSite does
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:  # as asyncio binds: one socket per address family
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return sock


def reserve_port(host: str, port: int) -> HeldPort:
    """Hold ``port`` (0: a free one) on every address ``host`` resolves to."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigError(
            "serve --workers N needs SO_REUSEPORT, which this system lacks; run one worker"
            " (SINK_WORKERS=1) per port instead"
        )
    held = HeldPort(port)
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        for family, kind, proto, _, address in dict.fromkeys(infos):
            where = (address[0], held.port, *address[2:])
            with _socket(family, kind, proto, reuse_port=False) as probe:
                probe.bind(where)
                held.port = held.port or probe.getsockname()[1]
            keep = _socket(family, kind, proto, reuse_port=True)
            held.sockets.append(keep)
            keep.bind((address[0], held.port, *address[2:]))
    except OSError as exc:
        held.close()
        raise ConfigError(
            f"cannot listen on {host}:{held.port} ({exc.strerror or exc}): another process"
            " holds that port, or the address is not one of this machine's. Set SINK_PORT"
            " (--port) to a free port, or SINK_HOST (--host) to an address of this machine"
        ) from exc
    return held
