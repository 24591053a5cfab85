"""Integration fixtures: real mock upstream, real redis-server, real gunicorn gateways."""

from __future__ import annotations

import pytest

from devkit.gateway import Gateway
from devkit.redis_servers import RedisServer
from devkit.stubs import Stub
from tests.support.servers import require_redis_server


@pytest.fixture(scope="session")
def mock_llm():
    """One mock upstream for the whole run (requests are told apart by their headers)."""
    with Stub() as mock:
        yield mock


@pytest.fixture
def redis_server():
    """A redis-server of this test's own (it may be killed, paused, restarted)."""
    require_redis_server()
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def shared_redis():
    """A redis-server shared by tests that only read and write their own keys."""
    require_redis_server()
    with RedisServer() as server:
        yield server


@pytest.fixture
def start_gateway():
    """Factory: ``start_gateway(config_dict, workers=2)`` -> a running :class:`Gateway`."""
    started: list[Gateway] = []

    def start(config: dict, workers: int = 2, **kwargs) -> Gateway:
        gateway = Gateway(config, workers=workers, **kwargs)
        started.append(gateway)
        return gateway.start()

    yield start
    for gateway in started:
        gateway.stop()
