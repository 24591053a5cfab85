"""One :class:`ProviderClient` per configured provider, built once per worker."""

from __future__ import annotations

from app.config import Config
from app.providers.openai_compat import ProviderClient


def create_provider_clients(config: Config) -> dict[str, ProviderClient]:
    """Clients keyed by provider name (``openai/gpt-5.2``); read timeout = listener timeout,
    upstream size and stream-duration caps from ``server``."""
    timeout = config.model_listener.timeout_seconds
    server = config.server
    return {provider.name: ProviderClient(provider, read_timeout_seconds=timeout,
                                          max_body_bytes=server.max_upstream_body_bytes,
                                          max_stream_seconds=server.max_stream_seconds)
            for provider in config.model_providers}
