"""Integration fixtures: the real mock upstream and real gunicorn gateways (the Redis
fixtures are in tests/conftest.py, shared with the contract suite)."""

from __future__ import annotations

import pytest

from devkit.gateway import Gateway
from devkit.stubs import Stub


@pytest.fixture(scope="session")
def mock_llm():
    """One mock upstream for the whole run (requests are told apart by their headers)."""
    with Stub() as mock:
        yield mock


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
