"""Shared fixtures: a real validated Config built from a dict, the app and its test client.

Integration fixtures (real processes) live in ``tests/integration/conftest.py``.
"""

from __future__ import annotations

import copy

import pytest

from app import create_app
from app.config import config_from_dict

BASE_CONFIG = {
    "version": "v0.4.0",
    "listeners": [{"name": "model_listener", "type": "model", "address": "127.0.0.1",
                   "port": 12000, "timeout": "5s"}],
    "model_providers": [
        {"model": "openai/gpt-4o-mini", "base_url": "http://127.0.0.1:9/v1",
         "access_key": "sk-test-secret-key", "default": True},
        {"model": "openai/gpt-5.2", "base_url": "http://127.0.0.1:9/v1",
         "access_key": "sk-test-secret-key"},
    ],
    "model_aliases": {"fast-model": {"target": "openai/gpt-4o-mini"}},
    "routing_preferences": [
        {"name": "deep_reasoning",
         "description": "complex reasoning, mathematics with equations, detailed technical "
                        "explanations",
         "models": ["openai/gpt-5.2"]},
        {"name": "fast_responses",
         "description": "short answers, greetings, simple questions, quick creative snippets",
         "models": ["openai/gpt-4o-mini"]},
    ],
    "routing": {"session_ttl_seconds": 300, "session_cache": {"type": "memory"}},
}

DEEP_PROMPT = "Explain quantum entanglement in detail with equations."
FAST_PROMPT = "hi"


def make_config_dict(**sections) -> dict:
    """A copy of the base config with top-level sections replaced or deep-merged."""
    return _merge(copy.deepcopy(BASE_CONFIG), sections)


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def chat_body(content: str = FAST_PROMPT, **extra) -> dict:
    """A minimal chat-completions body."""
    return {"messages": [{"role": "user", "content": content}], **extra}


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
