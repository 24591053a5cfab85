"""One request's model decision: session lookup -> route -> pin (SPEC §4 steps 2-4, §6, §16).

Plain arguments in, a :class:`Decision` out; no Flask, no HTTP. Affinity is an optimisation,
so nothing here fails a request because the session cache or the router failed: both degrade
to "route without affinity" (``affinity = "unavailable"``), are logged and counted.

Affinity modes (SPEC §16) on the same path:

* ``session_ttl_mode: sliding``: a lookup that finds a pin (or a turn record) renews its TTL
  in the same round trip (``SessionCache.get_renewing``).
* Implicit sessions: the caller passes the id derived from the conversation
  (:mod:`app.affinity`) with ``implicit=True``; it is pinned only with
  ``implicit_affinity: true``, but always names the session's turn record.
* Agent sessions (SPEC §18): the caller passes an agent's session id scoped by its lane
  with ``agent=True``; it is pinned with a sliding TTL whatever ``session_ttl_mode`` says,
  or, with ``route_on_user_only``, only names the session's turn record.
* ``route_on_user_only``: with a session id and something to route between, a request that
  does not start a user turn reuses the model recorded for the session's current turn (key
  ``turn:<logical key>``, the session TTL) without calling the router; every routed request
  of such a session records its turn (last writer wins). A pin still wins over all of it.
* ``routing_budget`` (SPEC §20, which turns turn-level routing on): a user turn whose
  router decision names another model than the session's current one, while the session is
  warm, switches only within the budget (:mod:`app.affinity.budget`); the state is read
  from the session's usage totals (one HGETALL per routed user turn) and written back into
  them after the answer (:meth:`app.usage.recorder.UsageRecorder.write_budget`).
  ``x-plano-max-switch-spend-pct`` sets the cap per request.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Callable, ContextManager

from app.affinity import budget as switch_budget
from app.config import Config, ModelEndpoint, RouteConfig, RoutingBudgetConfig
from app.errors import ModelNotFoundError, RouterError, SessionCacheError
from app.observability.metrics import Metrics
from app.pipeline.parse import ChatRequest
from app.router.base import Router
from app.router.embedded import EmbeddedRouter
from app.session_cache.base import (
    TURN_KEY_PREFIX,
    USAGE_KEY_PREFIX,
    SessionBinding,
    SessionCache,
)
from app.usage.prices import Prices

log = logging.getLogger(__name__)

#: Turn records live next to the pins: ``key_prefix + "turn:" + logical key``.

AFFINITY_NEW = "new"
AFFINITY_PINNED = "pinned"
AFFINITY_UNAVAILABLE = "unavailable"
AFFINITY_FAILOVER = "failover"
#: Ranked candidate lists kept per (model, route); wildcard models make the keys open-ended.
_MAX_RANKED = 4096


@dataclass(frozen=True, slots=True)
class Decision:
    """Which configured model serves the request, and why.

    ``pinned``: the model came from the session cache (a hit, or another writer's pin that
    won a race). ``affinity``: ``None`` without a session id, else ``new`` / ``pinned`` /
    ``unavailable``. ``routing_skipped``: turn-level routing reused the model of the
    session's current turn instead of calling the router. ``switch``: the routing budget's
    judgement of this user turn (SPEC §20), ``None`` when none was made. ``budget``: a
    routing budget applies to this request's session (its activity is recorded).
    """

    endpoint: ModelEndpoint
    route_name: str | None
    pinned: bool
    affinity: str | None
    routing_skipped: bool = False
    switch: switch_budget.Verdict | None = None
    budget: bool = False


@dataclass(frozen=True, slots=True)
class _RouteOutcome:
    endpoint: ModelEndpoint
    route_name: str | None
    failed: bool
    skipped: bool = False
    switch: switch_budget.Verdict | None = None


def session_key(session_id: str, tenant: str | None) -> str:
    """The logical cache key: ``tenant:session`` when a tenant is known, else the id."""
    return f"{tenant}:{session_id}" if tenant else session_id


class Gateway:
    """Decides the model for each request from config, session cache and router.

    ``routing_span`` makes the context manager entered around each router run (and only
    then: a pinned hit never enters it); tracing passes :meth:`app.observability.tracing.Tracing.
    routing_span`. What it returns on entry, unless ``None``, is told the outcome with
    ``outcome(route_name, error=None)``.
    """

    def __init__(self, config: Config, session_cache: SessionCache, router: Router | None,
                 metrics: Metrics | None = None,
                 routing_span: Callable[[], ContextManager] | None = None,
                 prices: Prices | None = None, clock: Callable[[], float] = time.time):
        self._config = config
        self._cache = session_cache
        self._backend = session_cache.backend_name
        self._router = router
        self._metrics = metrics or Metrics()
        self._routing_span = routing_span or contextlib.nullcontext
        routing = config.routing
        self._ttl = routing.session_ttl_seconds
        self._sliding = routing.sliding_ttl
        self._implicit_affinity = routing.implicit_affinity
        self._turns = routing.turn_routing
        self._budget = routing.routing_budget
        self._warm_window = float(config.prompt_caching.warm_window_seconds)
        self._prices = prices
        self._clock = clock
        self._routes = config.routes_by_name
        self._ranked: dict[tuple[str, str | None], tuple[ModelEndpoint, ...]] = {}

    def candidates(self, decision: Decision) -> tuple[ModelEndpoint, ...]:
        """The models that may serve ``decision``, ranked (SPEC §15): the decided model
        first, then the other models of its route in their configured order (a route given
        in the request body, or none: the decided model alone)."""
        key = (decision.endpoint.name, decision.route_name)
        ranked = self._ranked.get(key)
        if ranked is None:
            ranked = (decision.endpoint,)
            route = self._routes.get(decision.route_name) if decision.route_name else None
            for name in route.models if route is not None else ():
                endpoint = self._config.endpoint(name)
                if endpoint is not None and all(e.name != endpoint.name for e in ranked):
                    ranked += (endpoint,)
            if len(self._ranked) < _MAX_RANKED:
                self._ranked[key] = ranked
        return ranked

    def repin(self, key: str, failed_model: str, route_name: str | None,
              served_model: str) -> bool:
        """Move the pin under ``key`` to ``served_model`` if it still names
        ``failed_model`` (compare-and-set, one round trip); ``True`` when moved. A cache
        failure is logged and counted, never raised."""
        binding = SessionBinding(served_model, route_name)
        try:
            winner = self._cache.replace_stale(key, failed_model, binding, self._ttl)
        except SessionCacheError as error:
            self._cache_event("store_error" if error.outcome == "error" else error.outcome,
                              error)
            return False
        moved = winner is binding
        self._cache_event("store" if moved else "conflict")
        return moved

    def decide(self, request: ChatRequest, session_id: str | None = None,
               tenant: str | None = None, *, implicit: bool = False,
               user_turn: bool = True, agent: bool = False,
               max_switch_spend_pct: float | None = None) -> Decision:
        """The model for ``request``; raises ``ModelNotFoundError`` for an unknown model.

        ``session_id`` is the ``X-Model-Affinity`` value, or with ``implicit`` the id
        derived from the conversation, or with ``agent`` an agent's session id scoped by its
        lane (SPEC §18: pinned with a sliding TTL; with turn-level routing it only keys the
        turn record); ``user_turn`` says whether the request starts a user turn (only
        consulted with turn-level routing); ``max_switch_spend_pct`` is the request's
        ``x-plano-max-switch-spend-pct`` (overrides the configured cap, or sets one).
        """
        fallback = self._fallback_endpoint(request.model)
        sliding = self._sliding or agent
        turn_key = None
        budget = None
        if self._turns and session_id is not None:
            turn_key = TURN_KEY_PREFIX + session_key(session_id, tenant)
            budget = self._budget_for(max_switch_spend_pct)
        if (session_id is None or (implicit and not self._implicit_affinity)
                or (agent and self._turns)):
            outcome = self._choose(request, fallback, turn_key, user_turn, sliding, budget)
            decision = self._unpinned(outcome, affinity=None)
            return dataclasses.replace(decision, budget=True) if budget else decision

        key = session_key(session_id, tenant)
        try:
            binding = self._lookup(key, sliding)
        except SessionCacheError as error:
            self._cache_event(error.outcome, error)
            # The cache just failed: do not ask it for a turn record as well.
            return self._unpinned(self._choose(request, fallback, None, user_turn, sliding),
                                  AFFINITY_UNAVAILABLE)

        stale_model = None
        if binding is not None:
            endpoint = self._config.endpoint(binding.model_name)
            if endpoint is not None:
                self._cache_event("hit")
                return Decision(endpoint, binding.route_name, pinned=True,
                                affinity=AFFINITY_PINNED)
            # Pinned to a model no longer configured: re-route and replace that pin.
            stale_model = binding.model_name
        self._cache_event("miss")

        outcome = self._choose(request, fallback, turn_key, user_turn, sliding)
        if outcome.failed:
            # Routing failed: serve the fallback but do not pin it, so the next request of
            # this session gets a real decision.
            return self._unpinned(outcome, AFFINITY_UNAVAILABLE)
        return self._pin(key, outcome, stale_model)

    def _lookup(self, key: str, sliding: bool) -> SessionBinding | None:
        """One read of ``key``; ``sliding`` renews the TTL in the same round trip."""
        if sliding:
            return self._cache.get_renewing(key, self._ttl)
        return self._cache.get(key)

    def _budget_for(self, header_pct: float | None) -> RoutingBudgetConfig | None:
        """The routing budget of one request: the configured one, its cap replaced by the
        request header's; one with Plano's defaults when only the header sets a cap."""
        if header_pct is None:
            return self._budget
        if self._budget is None:
            return RoutingBudgetConfig(max_switch_spend_pct=header_pct)
        return dataclasses.replace(self._budget, max_switch_spend_pct=header_pct)

    def _choose(self, request: ChatRequest, fallback: ModelEndpoint, turn_key: str | None,
                user_turn: bool, sliding: bool,
                budget: RoutingBudgetConfig | None = None) -> _RouteOutcome:
        """Route, or (turn-level routing, a continuation) reuse the current turn's model.

        Nothing to route between (no routes): the fallback, and no turn record is read or
        written. The router is made here, never before a pinned hit: a request's own
        ``routing_preferences`` are ignored (not even checked) on a hit.
        """
        router = self._router_for(request)
        if router is None:
            return _RouteOutcome(fallback, None, failed=False)
        if turn_key is not None and not user_turn:
            reused = self._current_turn(turn_key, sliding)
            if reused is not None:
                self._metrics.router_skip(reused.route_name, reused.endpoint.name)
                return reused
        outcome = self._route(request, router, fallback)
        if turn_key is not None and not outcome.failed:
            if budget is not None:
                outcome = self._judge_switch(turn_key, request, outcome, budget)
            self._record_turn(turn_key, outcome)
        return outcome

    def _judge_switch(self, turn_key: str, request: ChatRequest, outcome: _RouteOutcome,
                      budget: RoutingBudgetConfig) -> _RouteOutcome:
        """The routed user turn of a session under a routing budget: the router's model, or
        the session's current one when the switch is over the cap. Reading the state
        failing (or a backend that keeps no totals) leaves the router's decision as it is:
        the budget never fails a request."""
        key = turn_key[len(TURN_KEY_PREFIX):]
        try:
            totals = self._cache.usage(USAGE_KEY_PREFIX + key)
        except SessionCacheError as error:
            self._cache_event(error.outcome, error)
            return outcome
        except NotImplementedError:
            return outcome
        state = switch_budget.BudgetState.from_totals(totals)
        current = state.current_model
        if current is not None and self._served_endpoint(current) is None:
            state = switch_budget.BudgetState()  # its model left the configuration
        if self._prices is None:
            self._prices = Prices(self._config.model_providers)
        verdict = switch_budget.decide(
            state, outcome.endpoint.name, budget=budget, price_of=self._prices.price,
            request_tokens=estimated_tokens(request), now=self._clock(),
            warm_window=self._warm_window)
        if verdict.decision is not None:
            self._metrics.switch_decision(verdict.decision, verdict.reason)
        if verdict.model == outcome.endpoint.name:
            return dataclasses.replace(outcome, switch=verdict)
        if verdict.counterfactual is not None and outcome.route_name:
            verdict = dataclasses.replace(
                verdict, counterfactual=f"{verdict.counterfactual} ({outcome.route_name})")
        recorded = self._current_turn(turn_key, sliding=False)
        route_name = (recorded.route_name if recorded is not None
                      and recorded.endpoint.name == verdict.model else None)
        return _RouteOutcome(self._served_endpoint(verdict.model), route_name, failed=False,
                             switch=verdict)

    def _served_endpoint(self, model_name: str) -> ModelEndpoint | None:
        """The endpoint of a model that served this session (a wildcard-admitted one too)."""
        return self._config.endpoint(model_name)

    def _current_turn(self, turn_key: str, sliding: bool) -> _RouteOutcome | None:
        """The model recorded for the session's current turn; ``None`` when there is none
        usable (never recorded, expired, unreadable, a model no longer configured, or the
        cache failed: then the continuation is routed)."""
        try:
            record = self._lookup(turn_key, sliding)
        except SessionCacheError as error:
            self._cache_event(error.outcome, error)
            return None
        endpoint = self._config.endpoint(record.model_name) if record is not None else None
        if endpoint is None:
            return None
        return _RouteOutcome(endpoint, record.route_name, failed=False, skipped=True)

    def _record_turn(self, turn_key: str, outcome: _RouteOutcome) -> None:
        """Remember the model this turn started on, for its continuations."""
        try:
            self._cache.put(turn_key, SessionBinding(outcome.endpoint.name, outcome.route_name),
                            self._ttl)
        except SessionCacheError as error:
            self._cache_event("store_error" if error.outcome == "error" else error.outcome,
                              error)

    def _pin(self, key: str, outcome: _RouteOutcome, stale_model: str | None) -> Decision:
        chosen = SessionBinding(outcome.endpoint.name, outcome.route_name)
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
        endpoint = self._config.endpoint(winner.model_name)
        self._cache_event("conflict")
        if endpoint is None:
            # Another writer pinned a model this replica does not know (config skew).
            return self._unpinned(outcome, AFFINITY_UNAVAILABLE)
        return Decision(endpoint, winner.route_name, pinned=True, affinity=AFFINITY_PINNED,
                        routing_skipped=outcome.skipped)

    def _router_for(self, request: ChatRequest) -> Router | None:
        """The configured router, or one over the request's own routes (their models
        resolved like a request's ``model``); ``None`` when there is nothing to choose."""
        if request.routes is None:
            return self._router if self._router is not None and self._router.routes else None
        routes = []
        for route in request.routes:
            models = []
            for model in route.models:
                endpoint = self._config.resolve_model(model)
                if endpoint is None:
                    raise ModelNotFoundError(
                        f"routing_preferences: model '{model}' is not configured",
                        param="routing_preferences")
                models.append(endpoint.name)
            routes.append(RouteConfig(route.name, route.description, tuple(models)))
        return (self._router or EmbeddedRouter(())).for_routes(routes)

    def _route(self, request: ChatRequest, router: Router,
               fallback: ModelEndpoint) -> _RouteOutcome:
        started = time.perf_counter()
        with self._routing_span() as span:
            try:
                route = router.select_route(request.messages)
                failed = False
            except RouterError as error:
                log.warning("router %s failed, serving %s unpinned: %s",
                            router.kind, fallback.name, error,
                            extra={"event": "router_error", "cause": str(error)})
                route, failed = None, True
                if span is not None:
                    span.outcome(None, error)
            else:
                if span is not None:
                    span.outcome(route.name if route else None)
        endpoint = fallback
        if route is not None:
            endpoint = self._config.endpoint(route.models[0])
        self._metrics.router_decision(route.name if route else None, endpoint.name, failed,
                                      time.perf_counter() - started)
        return _RouteOutcome(endpoint, route.name if route else None, failed)

    def _fallback_endpoint(self, requested: str | None) -> ModelEndpoint:
        if requested is None:
            return self._config.default_endpoint
        endpoint = self._config.resolve_model(requested)
        if endpoint is None:
            raise ModelNotFoundError(f"model '{requested}' is not configured", param="model")
        return endpoint

    @staticmethod
    def _unpinned(outcome: _RouteOutcome, affinity: str | None) -> Decision:
        return Decision(outcome.endpoint, outcome.route_name, pinned=False, affinity=affinity,
                        routing_skipped=outcome.skipped, switch=outcome.switch)

    def _cache_event(self, outcome: str, error: Exception | None = None) -> None:
        self._metrics.session_cache_event(self._backend, outcome)
        if error is not None and outcome != "skipped":
            # Skipped calls (breaker open) are not logged one by one: the cache logged the
            # outage once when it opened the breaker.
            log.warning("session cache %s %s, serving without affinity: %s",
                        self._backend, outcome, error,
                        extra={"event": "session_cache_error", "outcome": outcome,
                               "cause": str(error)})


def estimated_tokens(request: ChatRequest) -> int:
    """The conversation's size in tokens, about characters / 4 (SPEC §20: used until an
    answer of the session reported its usage)."""
    return sum(len(str(message.get("content") or "")) for message in request.messages) // 4
