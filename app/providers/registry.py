"""The provider clients of one worker, looked up by model name (:class:`ProviderClients`)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Iterator, Mapping

from app.config import Config, ModelEndpoint
from app.providers.openai_compat import ProviderClient, UpstreamPool, origin_of

#: Clients kept for models admitted by a wildcard entry (``openai/*``): clients name their
#: model, so one is made per model id a client asks for; the least recently used go first.
MAX_WILDCARD_CLIENTS = 256


class ProviderClients(Mapping[str, ProviderClient]):
    """A client per configured model (``openai/gpt-5.2``), built once per worker, and one
    made on first use for each model a wildcard entry admits (``openai/gpt-4.1`` under
    ``openai/*``). Every model on one origin (scheme, host, port) shares one
    :class:`UpstreamPool` sized from ``worker_connections``.

    The read timeout is the listener's; upstream size and stream-duration caps come from
    ``server``. Unknown names raise ``KeyError``, like any mapping.
    """

    def __init__(self, config: Config):
        self._config = config
        self._pools: dict[str, UpstreamPool] = {}
        self._configured = {endpoint.name: self._client(endpoint)
                            for endpoint in config.model_providers
                            if not endpoint.is_wildcard}
        self._admitted: OrderedDict[str, ProviderClient] = OrderedDict()
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> ProviderClient:
        client = self._configured.get(name)
        if client is not None:
            return client
        with self._lock:
            client = self._admitted.get(name)
            if client is not None:
                self._admitted.move_to_end(name)
                return client
        endpoint = self._config.endpoint(name)
        if endpoint is None:
            raise KeyError(name)
        client = self._client(endpoint)
        with self._lock:
            client = self._admitted.setdefault(name, client)
            while len(self._admitted) > MAX_WILDCARD_CLIENTS:
                self._admitted.popitem(last=False)
        return client

    def __iter__(self) -> Iterator[str]:
        return iter(self._configured)

    def __len__(self) -> int:
        return len(self._configured)

    def close(self) -> None:
        """Close every pooled connection."""
        for pool in self._pools.values():
            pool.close()

    def _client(self, endpoint: ModelEndpoint) -> ProviderClient:
        origin = origin_of(endpoint.url("/"))
        pool = self._pools.get(origin) or self._pools.setdefault(origin, UpstreamPool(origin))
        server = self._config.server
        return ProviderClient(endpoint, read_timeout_seconds=self._config.model_listener
                              .timeout_seconds, pool=pool,
                              max_body_bytes=server.max_upstream_body_bytes,
                              max_stream_seconds=server.max_stream_seconds)


def create_provider_clients(config: Config) -> ProviderClients:
    """The clients of ``config`` (see :class:`ProviderClients`)."""
    return ProviderClients(config)
