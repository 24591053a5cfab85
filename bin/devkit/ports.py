"""Loopback TCP ports: a free one, a free pair for a Redis Cluster node, a busy check, and
:class:`Listener`, the URL of a server of ours."""

from __future__ import annotations

import socket

from devkit import HOST

CLUSTER_BUS_OFFSET = 10000  # Redis < 7 always puts the cluster bus on port + 10000


def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether a server could bind ``host:port`` now.

    Binds as servers do (``SO_REUSEADDR``), so connections of an earlier server lingering in
    TIME_WAIT do not make the port look busy.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


class Listener:
    """Something of ours listening for HTTP on ``HOST:port``."""

    port: int = 0

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{HOST}:{self.port}"


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is also free and valid."""
    for _ in range(200):
        port = free_port()
        if port + CLUSTER_BUS_OFFSET <= 65535 and port_is_free(port + CLUSTER_BUS_OFFSET):
            return port
    raise OSError("no free port pair (port, port + 10000) found")
