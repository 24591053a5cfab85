"""Shared fixtures: a real validated Config built from a dict, the app and its test client.

Also real redis-servers (``redis_server``: a test's own; ``shared_redis``: one per run).
Helpers live in ``tests/support``; the other integration fixtures (real processes) in
``tests/integration/conftest.py``. Tests under ``tests/tooling`` get the ``tooling`` marker.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app import create_app
from app.config import config_from_dict
from devkit.redis_servers import RedisServer
from tests.support.configs import make_config_dict
from tests.support.servers import require_redis_server

TOOLING = Path(__file__).parent / "tooling"


def pytest_collection_modifyitems(items):
    """Mark the tests of the developers' tools (``-m "not tooling"`` leaves them out)."""
    for item in items:
        if TOOLING in item.path.parents:
            item.add_marker(pytest.mark.tooling)


@pytest.fixture
def config():
    """The base configuration, validated for real."""
    return config_from_dict(make_config_dict())


@pytest.fixture
def app(config):
    """The app on the base config (memory session cache, embedded router)."""
    return create_app(config)


@pytest.fixture
def client(app):
    """Flask's test client for :func:`app`."""
    return app.test_client()


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
