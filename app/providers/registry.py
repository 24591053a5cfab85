"""The provider clients, built once per worker: one per provider, one pool per origin."""

from __future__ import annotations

from app.config import Config
from app.providers.openai_compat import ProviderClient, UpstreamPool, origin_of


def create_provider_clients(config: Config) -> dict[str, ProviderClient]:
    """Clients keyed by provider name (``openai/gpt-5.2``); read timeout = listener timeout,
    upstream size and stream-duration caps from ``server``.

    Providers on the same origin (scheme, host, port), such as two models of one API,
    share one :class:`UpstreamPool` sized from ``worker_connections``.
    """
    timeout = config.model_listener.timeout_seconds
    server = config.server
    pools: dict[str, UpstreamPool] = {}
    clients = {}
    for provider in config.model_providers:
        origin = origin_of(f"{provider.base_url}/chat/completions")
        pool = pools.get(origin) or pools.setdefault(origin, UpstreamPool(origin))
        clients[provider.name] = ProviderClient(
            provider, read_timeout_seconds=timeout, pool=pool,
            max_body_bytes=server.max_upstream_body_bytes,
            max_stream_seconds=server.max_stream_seconds)
    return clients
