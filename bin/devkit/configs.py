"""The gateway configurations the tests and ``bin/bench`` run with, built in one place.

:func:`gateway_config` is the base every test starts from (two OpenAI models, one alias,
the two routes below, memory session cache) with sections replaced or deep-merged;
the bench derives its configs from it too. ``config/*.yaml`` are the product's own files.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from devkit import HOST

FAST_MODEL = "openai/gpt-4o-mini"
DEEP_MODEL = "openai/gpt-5.2"
#: The routes of every test and bench config (config/*.yaml say the same).
ROUTES = (
    {"name": "deep_reasoning",
     "description": "complex reasoning, mathematics with equations, detailed technical "
                    "explanations",
     "models": [DEEP_MODEL]},
    {"name": "fast_responses",
     "description": "short answers, greetings, simple questions, quick creative snippets",
     "models": [FAST_MODEL]},
)
#: Prompts the embedded router sends to ``deep_reasoning`` and ``fast_responses``.
DEEP_PROMPT = "Explain quantum entanglement in detail with equations."
FAST_PROMPT = "hi"
#: Where providers point by default: a closed port, so nothing is reached by accident.
NOWHERE = "http://127.0.0.1:9/v1"


def gateway_config(*, upstream: str = NOWHERE, port: int = 12000,
                   access_key: str | None = "sk-test-secret-key", **sections) -> dict:
    """A config dict: both models at ``upstream``, listening on ``port``, plus ``sections``
    (a dict section is deep-merged into the base one, anything else replaces it)."""
    providers = [{"model": FAST_MODEL, "base_url": upstream, "default": True},
                 {"model": DEEP_MODEL, "base_url": upstream}]
    if access_key is not None:
        for provider in providers:
            provider["access_key"] = access_key
    base = {
        "version": "v0.4.0",
        "listeners": [{"name": "model_listener", "type": "model", "address": HOST,
                       "port": port, "timeout": "5s"}],
        "model_providers": providers,
        "model_aliases": {"fast-model": {"target": FAST_MODEL}},
        "routing_preferences": copy.deepcopy(list(ROUTES)),
        "routing": {"session_ttl_seconds": 300, "session_cache": {"type": "memory"}},
    }
    return merge(base, sections)


def merge(base: dict, extra: dict) -> dict:
    """``base`` with ``extra`` deep-merged into it (dicts merge, other values replace)."""
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def chat_body(content: str = FAST_PROMPT, **extra) -> dict:
    """A minimal chat-completions body."""
    return {"messages": [{"role": "user", "content": content}], **extra}


def write_config(config: dict, path: Path) -> Path:
    """Write ``config`` as YAML to ``path``; returns the path."""
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
