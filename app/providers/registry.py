"""One :class:`ProviderClient` per configured provider, built once per worker."""

from __future__ import annotations

from app.config import Config
from app.providers.openai_compat import ProviderClient


def create_provider_clients(config: Config) -> dict[str, ProviderClient]:
    """Clients keyed by provider name (``openai/gpt-5.2``); read timeout = listener timeout."""
    timeout = config.model_listener.timeout_seconds
    return {provider.name: ProviderClient(provider, read_timeout_seconds=timeout)
            for provider in config.model_providers}
