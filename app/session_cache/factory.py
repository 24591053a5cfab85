"""Build the session cache named by ``routing.session_cache.type``.

The Redis backend is imported only when asked for, so the memory backend works without
redis-py's import cost. Configuration mistakes (a bad URL, missing sentinel settings) are
rejected by the config schema, before this runs.
"""

from __future__ import annotations

from app.config import RoutingConfig
from app.session_cache.base import SessionCache


def _create_memory(routing: RoutingConfig) -> SessionCache:
    from app.session_cache.memory import MemorySessionCache
    return MemorySessionCache(max_entries=routing.session_max_entries)


def _create_redis(routing: RoutingConfig) -> SessionCache:
    from app.session_cache.redis_cache import create_redis_session_cache
    return create_redis_session_cache(routing.session_cache)


_BACKENDS = {"memory": _create_memory, "redis": _create_redis}


def create_session_cache(routing: RoutingConfig) -> SessionCache:
    """The configured backend; raises ``ValueError`` for an unknown type."""
    try:
        build = _BACKENDS[routing.session_cache.type]
    except KeyError:
        raise ValueError(f"unknown session_cache.type {routing.session_cache.type!r}") from None
    return build(routing)
