"""The supervisor's hold on the port: free ones are held, a taken one is refused."""

from __future__ import annotations

import contextlib
import socket

import pytest

from sink.errors import ConfigError
from sink.workers.ports import reserve_port


def listener(port: int, reuse_port: bool) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    return sock


def test_port_zero_picks_one_that_workers_can_share_and_the_holder_never_accepts() -> None:
    held = reserve_port("127.0.0.1", 0)
    with contextlib.ExitStack() as stack:
        stack.callback(held.close)
        assert held.port > 0
        workers = [stack.enter_context(listener(held.port, reuse_port=True)) for _ in range(2)]
        for _ in range(20):
            stack.enter_context(socket.create_connection(("127.0.0.1", held.port)))
        accepted = 0
        for worker in workers:
            worker.setblocking(False)
            while True:
                try:
                    worker.accept()[0].close()
                except BlockingIOError:
                    break
                accepted += 1
        assert accepted == 20  # every connection went to a listening worker


@pytest.mark.parametrize("reuse_port", [False, True])
def test_a_port_another_process_listens_on_is_refused_with_the_fix(reuse_port: bool) -> None:
    """Even one whose socket has SO_REUSEPORT: two sinks must not split a port's traffic."""
    other = listener(0, reuse_port)
    try:
        port = other.getsockname()[1]
        with pytest.raises(ConfigError, match="Set SINK_PORT"):
            reserve_port("127.0.0.1", port)
    finally:
        other.close()
