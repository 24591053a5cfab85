"""The provider clients of one worker, looked up by model name (:class:`ProviderClients`)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable, Iterator, Mapping

from app.config import Config, ModelEndpoint
from app.providers.openai_compat import ProviderClient, UpstreamPool, origin_of

#: Clients kept for models admitted by a wildcard entry (``openai/*``): clients name their
#: model, so one is made per model id a client asks for; the least recently used go first.
MAX_WILDCARD_CLIENTS = 256
#: A wildcard-admitted client unused for this long is dropped (made again on next use).
WILDCARD_CLIENT_IDLE_SECONDS = 600.0


class ProviderClients(Mapping[str, ProviderClient]):
    """A client per configured model (``openai/gpt-5.2``), built once per worker, and one
    made on first use for each model a wildcard entry admits (``openai/gpt-4.1`` under
    ``openai/*``). Every model on one origin (scheme, host, port) shares one
    :class:`UpstreamPool` sized from ``worker_connections``.

    The read timeout is the listener's; upstream size and stream-duration caps come from
    ``server``. Unknown names raise ``KeyError``, like any mapping.

    The clients made for wildcard-admitted models are bounded whatever names clients send
    (SPEC §8): at most ``MAX_WILDCARD_CLIENTS``, each dropped after
    ``WILDCARD_CLIENT_IDLE_SECONDS`` unused. Pools are per origin, so they are bounded by
    the configuration already.
    """

    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic):
        self._config = config
        self._clock = clock
        self._pools: dict[str, UpstreamPool] = {}
        self._configured = {endpoint.name: self._client(endpoint)
                            for endpoint in config.model_providers
                            if not endpoint.is_wildcard}
        #: name -> (client, last used); least recently used first.
        self._admitted: OrderedDict[str, tuple[ProviderClient, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> ProviderClient:
        client = self._configured.get(name)
        if client is not None:
            return client
        now = self._clock()
        with self._lock:
            kept = self._admitted.get(name)
            if kept is not None and now - kept[1] < WILDCARD_CLIENT_IDLE_SECONDS:
                self._admitted[name] = (kept[0], now)
                self._admitted.move_to_end(name)
                return kept[0]
        endpoint = self._config.endpoint(name)
        if endpoint is None:
            raise KeyError(name)
        client = self._client(endpoint)
        with self._lock:
            self._admitted[name] = (client, now)
            self._admitted.move_to_end(name)
            self._drop_stale(now)
        return client

    @property
    def admitted_count(self) -> int:
        """How many clients of wildcard-admitted models are kept."""
        return len(self._admitted)

    def _drop_stale(self, now: float) -> None:
        """Drop the least recently used clients past the cap, and the idle ones."""
        admitted = self._admitted
        while admitted:
            _, (_, used) = next(iter(admitted.items()))
            if (len(admitted) <= MAX_WILDCARD_CLIENTS
                    and now - used < WILDCARD_CLIENT_IDLE_SECONDS):
                break
            admitted.popitem(last=False)

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
