"""One request's model decision: session lookup -> route -> pin (SPEC §4 steps 2-4, §6).

Plain arguments in, a :class:`Decision` out; no Flask, no HTTP. Affinity is an optimisation,
so nothing here fails a request because the session cache or the router failed: both degrade
to "route without affinity" (``affinity = "unavailable"``), are logged and counted.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Callable, ContextManager, Mapping

from app.chat_request import ChatRequest
from app.config import Config, ProviderConfig
from app.errors import ModelNotFoundError
from app.metrics import Metrics
from app.router.base import Router, RouterError
from app.session_cache.base import SessionBinding, SessionCache, SessionCacheError

log = logging.getLogger(__name__)

AFFINITY_NEW = "new"
AFFINITY_PINNED = "pinned"
AFFINITY_UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class Decision:
    """Which provider serves the request, and why.

    ``pinned``: the model came from the session cache (a hit, or another writer's pin that
    won a race). ``affinity``: ``None`` without a session id, else ``new`` / ``pinned`` /
    ``unavailable``. ``routed``: the router ran for this request.
    """

    provider: ProviderConfig
    route_name: str | None
    pinned: bool
    affinity: str | None
    routed: bool = False
    routing_failed: bool = False


@dataclass(frozen=True, slots=True)
class _RouteOutcome:
    provider: ProviderConfig
    route_name: str | None
    failed: bool
    ran: bool


def session_key(session_id: str, tenant: str | None) -> str:
    """The logical cache key: ``tenant:session`` when a tenant is known, else the id."""
    return f"{tenant}:{session_id}" if tenant else session_id


class Gateway:
    """Decides the model for each request from config, session cache and router.

    ``routing_span`` makes the context manager entered around each router run (and only
    then: a pinned hit never enters it); tracing passes :meth:`app.tracing.Tracing.
    routing_span`. What it returns on entry, unless ``None``, is told the outcome with
    ``outcome(route_name, error=None)``.
    """

    def __init__(self, config: Config, session_cache: SessionCache, router: Router | None,
                 metrics: Metrics | None = None,
                 routing_span: Callable[[], ContextManager] | None = None):
        self._config = config
        self._cache = session_cache
        self._backend = session_cache.backend_name
        self._router = router
        self._metrics = metrics or Metrics()
        self._routing_span = routing_span or contextlib.nullcontext
        self._ttl = config.routing.session_ttl_seconds
        self._providers = config.providers_by_name
        self._routes = config.routes_by_name

    def decide(self, request: ChatRequest, session_id: str | None = None,
               tenant: str | None = None,
               trace_headers: Mapping[str, str] | None = None) -> Decision:
        """The provider for ``request``; raises ``ModelNotFoundError`` for an unknown model."""
        fallback = self._fallback_provider(request.model)
        if session_id is None:
            outcome = self._route(request, fallback, trace_headers)
            return self._unpinned(outcome, affinity=None)

        key = session_key(session_id, tenant)
        try:
            binding = self._cache.get(key)
        except SessionCacheError as error:
            self._cache_event(error.outcome, error)
            return self._unpinned(self._route(request, fallback, trace_headers),
                                  AFFINITY_UNAVAILABLE)

        stale_model = None
        if binding is not None:
            provider = self._providers.get(binding.model_name)
            if provider is not None:
                self._cache_event("hit")
                return Decision(provider, binding.route_name, pinned=True,
                                affinity=AFFINITY_PINNED)
            # Pinned to a model no longer configured: re-route and replace that pin.
            stale_model = binding.model_name
        self._cache_event("miss")

        outcome = self._route(request, fallback, trace_headers)
        if outcome.failed:
            # Routing failed: serve the fallback but do not pin it, so the next request of
            # this session gets a real decision.
            return self._unpinned(outcome, AFFINITY_UNAVAILABLE)
        return self._pin(key, outcome, stale_model)

    def _pin(self, key: str, outcome: _RouteOutcome, stale_model: str | None) -> Decision:
        chosen = SessionBinding(outcome.provider.name, outcome.route_name)
        try:
            if stale_model is not None:
                # Compare-and-set: a racing request's fresh pin is kept, never deleted.
                winner = self._cache.replace_stale(key, stale_model, chosen, self._ttl)
            else:
                winner = self._cache.put_if_absent(key, chosen, self._ttl)
        except SessionCacheError as error:
            self._cache_event("store_error" if error.outcome == "error" else error.outcome,
                              error)
            return self._unpinned(outcome, AFFINITY_UNAVAILABLE)
        if winner is chosen:  # this request stored the pin (an equal one from a racing
            # request is a conflict it lost, even though the model is the same)
            self._cache_event("store")
            return self._unpinned(outcome, AFFINITY_NEW)
        provider = self._providers.get(winner.model_name)
        self._cache_event("conflict")
        if provider is None:
            # Another writer pinned a model this replica does not know (config skew).
            return self._unpinned(outcome, AFFINITY_UNAVAILABLE)
        return Decision(provider, winner.route_name, pinned=True, affinity=AFFINITY_PINNED,
                        routed=outcome.ran)

    def _route(self, request: ChatRequest, fallback: ProviderConfig,
               trace_headers: Mapping[str, str] | None) -> _RouteOutcome:
        if self._router is None:
            return _RouteOutcome(fallback, None, failed=False, ran=False)
        started = time.perf_counter()
        with self._routing_span() as span:
            try:
                route = self._router.select_route(request.messages, trace_headers)
                failed = False
            except RouterError as error:
                log.warning("router %s failed, serving %s unpinned: %s",
                            self._router.kind, fallback.name, error,
                            extra={"event": "router_error", "cause": str(error)})
                route, failed = None, True
                if span is not None:
                    span.outcome(None, error)
            else:
                if span is not None:
                    span.outcome(route.name if route else None)
        provider = fallback
        if route is not None:
            provider = self._providers[route.models[0]]
        self._metrics.router_decision(route.name if route else None, provider.name, failed,
                                      time.perf_counter() - started)
        return _RouteOutcome(provider, route.name if route else None, failed, ran=True)

    def _fallback_provider(self, requested: str | None) -> ProviderConfig:
        if requested is None:
            return self._config.default_provider
        provider = self._config.resolve_model(requested)
        if provider is None:
            raise ModelNotFoundError(f"model '{requested}' is not configured", param="model")
        return provider

    @staticmethod
    def _unpinned(outcome: _RouteOutcome, affinity: str | None) -> Decision:
        return Decision(outcome.provider, outcome.route_name, pinned=False, affinity=affinity,
                        routed=outcome.ran, routing_failed=outcome.failed)

    def _cache_event(self, outcome: str, error: Exception | None = None) -> None:
        self._metrics.session_cache_event(self._backend, outcome)
        if error is not None and outcome != "skipped":
            # Skipped calls (breaker open) are not logged one by one: the cache logged the
            # outage once when it opened the breaker.
            log.warning("session cache %s %s, serving without affinity: %s",
                        self._backend, outcome, error,
                        extra={"event": "session_cache_error", "outcome": outcome,
                               "cause": str(error)})
