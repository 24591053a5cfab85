"""Shared fixtures: a real validated Config built from a dict, the app and its test client.

Helpers live in ``tests/support``; integration fixtures (real processes) in
``tests/integration/conftest.py``. Tests under ``tests/tooling`` get the ``tooling`` marker.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app import create_app
from app.config import config_from_dict
from tests.support.configs import make_config_dict

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
