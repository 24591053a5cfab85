"""Configs and request bodies of the tests: :mod:`devkit.configs` plus the tests' shortcuts."""

from __future__ import annotations

from devkit import configs
from devkit.configs import DEEP_PROMPT, FAST_PROMPT, chat_body

__all__ = ["BASE_CONFIG", "DEEP_PROMPT", "FAST_PROMPT", "chat_body", "gateway_config",
           "make_config_dict", "redis_cache"]

BASE_CONFIG = configs.gateway_config()


def make_config_dict(**sections) -> dict:
    """A copy of the base config with top-level sections replaced or deep-merged."""
    return configs.gateway_config(**sections)


def gateway_config(mock, *, cache: dict | None = None, **sections) -> dict:
    """The test config with providers pointing at ``mock`` (a :class:`devkit.stubs.Stub`)
    and, when given, ``cache`` as the whole session-cache section."""
    raw = configs.gateway_config(upstream=mock.base_url, **sections)
    if cache is not None:
        raw["routing"]["session_cache"] = cache
    return raw


def redis_cache(server, **extra) -> dict:
    """A Redis session-cache section for ``server`` with short timeouts for fault tests."""
    return {"type": "redis", "url": server.url, "timeout_ms": 200, "cooldown_seconds": 0.5,
            **extra}
