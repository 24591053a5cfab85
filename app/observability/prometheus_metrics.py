"""Prometheus implementation of :class:`app.observability.metrics.Metrics`, at ``GET /metrics``.

Names and labels (SPEC §10)::

    plano_session_cache_events_total{backend,outcome}      counter
    plano_router_decisions_total{route,model,fallback}     counter (route "other": no match)
    plano_router_decision_duration_seconds                 histogram
    plano_router_skips_total{route,model}                  counter (turn-level routing)
    plano_session_switch_decisions_total{decision,reason}  counter (routing budget, SPEC §20)
    plano_requests_total{endpoint,status,pinned}           counter
    plano_model_requests_total{route,model,pinned}         counter (SPEC §21: per route)
    plano_upstream_duration_seconds{model}                 histogram
    plano_admin_requests_total{action,status}              counter
    plano_failovers_total{from_model,to_model,reason}      counter (SPEC §15)
    plano_agent_session_ignored_total{header,reason}       counter (SPEC §18)
    plano_tokens_total{model,kind}                         counter (SPEC §19; kind: input,
                                                           cache_read, cache_write, output)
    plano_cost_usd_total{model}                            counter (priced models only)
    plano_prompt_cache_requests_total{model,outcome}       counter (hit: cache reads > 0)

Under gunicorn the numbers of all workers are added up: ``config/gunicorn.conf.py`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory in the master before any worker starts,
each worker's values live in memory-mapped files there, and a scrape (served by whichever
worker gets it) reads them all through ``MultiProcessCollector``. Without that variable
(tests, the Flask test client) the metrics live in a private ``CollectorRegistry`` per
instance: nothing is ever registered on prometheus_client's global ``REGISTRY``, so apps
built one after another never collide.

Label values that name a model or a route come from the configuration, never from a
client (SPEC §8): :mod:`app.observability.metric_labels` maps a wildcard-admitted model to
its wildcard entry (``openai/*``) and a request-body route to ``request``, so the series are
bounded by the configuration whatever names clients send. New metrics with a model label call
:meth:`PrometheusMetrics.model_label`.

Hot path: label children are resolved once per label set and kept in a dict; the label sets
known at start-up (backend x outcome, routes and models, the endpoints' usual answers) are
resolved in the constructor, which also makes them appear as 0 before the first event.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

from app.affinity.agent import IGNORED_REASONS
from app.affinity.budget import DECISIONS as SWITCH_DECISIONS
from app.config import Config
from app.observability.metric_labels import OTHER_LABEL, route_label, served_model_label
from app.observability.metrics import Metrics

MULTIPROC_ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"

#: Every outcome the gateway reports for a session-cache operation (SPEC §10).
CACHE_OUTCOMES = ("hit", "miss", "store", "conflict", "error", "store_error", "invalid",
                  "skipped")
#: The ``route`` label of a decision that matched no route ("other", as Arch-Router says).
NO_ROUTE_LABEL = OTHER_LABEL
#: Embedded router: microseconds; LLM router: up to its timeout (seconds).
ROUTER_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                  0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Whole provider answers, streams included.
UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0, 120.0)
CHAT_ENDPOINTS = ("/v1/chat/completions", "/routing/v1/chat/completions")
#: The ``kind`` label of ``plano_tokens_total``, in the order of :meth:`Metrics.usage`.
TOKEN_KINDS = ("input", "cache_read", "cache_write", "output")


def multiprocess_dir() -> str | None:
    """The multiprocess directory when prometheus_client runs in multiprocess mode.

    prometheus_client decides at import time (from ``PROMETHEUS_MULTIPROC_DIR``), so the
    value class it chose is what counts, not the variable as it is now.
    """
    if values.ValueClass is values.MutexValue:
        return None
    return os.environ.get(MULTIPROC_ENV_VAR)


class _Children:
    """The label children of one metric, each resolved once (no label lookups per event)."""

    __slots__ = ("_metric", "_children", "_label")

    def __init__(self, metric, label=str):
        self._metric = metric
        self._children: dict[tuple, Any] = {}
        self._label = label

    def get(self, key: tuple):
        """The child for ``key`` (raw values; converted to label strings on first use)."""
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._metric.labels(*map(self._label, key))
        return child

    def prepare(self, keys: Iterable[tuple]) -> None:
        """Resolve ``keys`` now (start-up) so the first events are dictionary hits."""
        for key in keys:
            self.get(key)


def _label(value: Any) -> str:
    if value is None:
        return NO_ROUTE_LABEL
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class PrometheusMetrics(Metrics):
    """:class:`Metrics` recorded with prometheus_client, exposed by :meth:`exposition`."""

    def __init__(self, config: Config, *, cache_backend: str = "memory",
                 multiproc_dir: str | None = None):
        """``multiproc_dir`` defaults to :func:`multiprocess_dir` (gunicorn's directory)."""
        self._config = config
        self.registry = CollectorRegistry(auto_describe=True)
        self._multiproc_dir = multiproc_dir if multiproc_dir is not None else \
            multiprocess_dir()
        if self._multiproc_dir:
            # A registry of its own whose collector reads every worker's files at scrape
            # time; the metrics below still write into this process's file.
            self._scrape_registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(self._scrape_registry, self._multiproc_dir)
        else:
            self._scrape_registry = self.registry
        registry = self.registry

        self._cache_events = _Children(Counter(
            "plano_session_cache_events_total", "Session-cache outcomes by backend.",
            ("backend", "outcome"), registry=registry), _label)
        self._cache_events.prepare((cache_backend, outcome) for outcome in CACHE_OUTCOMES)

        self._router_decisions = _Children(Counter(
            "plano_router_decisions_total",
            "Router runs by route (other: no match), model served and fallback (routing "
            "failed).", ("route", "model", "fallback"), registry=registry), _label)
        self._router_decisions.prepare(_known_decisions(config))
        self._router_duration = Histogram(
            "plano_router_decision_duration_seconds", "Time the router took to decide.",
            buckets=ROUTER_BUCKETS, registry=registry)

        self._router_skips = _Children(Counter(
            "plano_router_skips_total",
            "Requests served without a router call: a continuation reused the model of its "
            "session's current turn (routing.route_on_user_only).", ("route", "model"),
            registry=registry), _label)
        if config.routing.turn_routing:
            self._router_skips.prepare((route, model) for route, model, failed
                                       in _known_decisions(config) if not failed)

        self._switch_decisions = _Children(Counter(
            "plano_session_switch_decisions_total",
            "Routing-budget judgements of warm sessions' user turns (SPEC §20): allowed or "
            "retained, and why.", ("decision", "reason"), registry=registry))
        if config.routing.turn_routing:
            self._switch_decisions.prepare(SWITCH_DECISIONS)

        self._requests = _Children(Counter(
            "plano_requests_total", "Answered requests by endpoint, status and pinned.",
            ("endpoint", "status", "pinned"), registry=registry), _label)
        self._requests.prepare((endpoint, 200, pinned) for endpoint in CHAT_ENDPOINTS
                               for pinned in (False, True))

        self._model_requests = _Children(Counter(
            "plano_model_requests_total",
            "Answered requests a model was decided for, by route (other: no match; request: "
            "routes given in the request body), serving model and pinned.",
            ("route", "model", "pinned"), registry=registry), _label)
        self._model_requests.prepare((route.name, model, pinned)
                                     for route in config.routing_preferences
                                     for model in route.models for pinned in (False, True))

        self._upstream = _Children(Histogram(
            "plano_upstream_duration_seconds",
            "Provider calls from sending to the last byte received, by model.",
            ("model",), buckets=UPSTREAM_BUCKETS, registry=registry), _label)
        self._upstream.prepare((provider.name,) for provider in config.model_providers)

        self._stream_errors = _Children(Counter(
            "plano_upstream_stream_errors_total",
            "Upstream streams that did not end as an answer (SPEC §18), by model and reason: "
            "incomplete, error_event, finish_reason_error, broken.",
            ("model", "reason"), registry=registry), _label)

        self._failovers = _Children(Counter(
            "plano_failovers_total", "Moves to the next model of a route: from the model "
            "that failed or was skipped as down, to the one tried next, and why.",
            ("from_model", "to_model", "reason"), registry=registry))
        self._agent_ignored = _Children(Counter(
            "plano_agent_session_ignored_total",
            "Agent session header values ignored (served as if that header were absent), "
            "by configured header and reason.", ("header", "reason"), registry=registry))
        agent_sessions = config.routing.agent_sessions
        if agent_sessions.enabled:
            self._agent_ignored.prepare((header, reason) for header in agent_sessions.headers
                                        for reason in IGNORED_REASONS)
        concrete = [(p.name,) for p in config.model_providers if not p.is_wildcard]
        self._tokens = _Children(Counter(
            "plano_tokens_total", "Tokens of provider answers by model and kind (input: "
            "uncached prompt tokens; cache_read, cache_write: prompt tokens read from or "
            "written to the provider's prompt cache; output).", ("model", "kind"),
            registry=registry))
        self._tokens.prepare((name, kind) for (name,) in concrete for kind in TOKEN_KINDS)
        self._cost = _Children(Counter(
            "plano_cost_usd_total", "USD cost of provider answers by model (models with a "
            "price only: an unpriced model has no series, never a cost of 0).", ("model",),
            registry=registry))
        self._prompt_cache = _Children(Counter(
            "plano_prompt_cache_requests_total", "Answers by model and prompt-cache outcome "
            "(hit: the provider read cached prompt tokens).", ("model", "outcome"),
            registry=registry))
        self._prompt_cache.prepare((name, outcome) for (name,) in concrete
                                   for outcome in ("hit", "miss"))
        self._admin = _Children(Counter(
            "plano_admin_requests_total", "Admin API calls by action and status.",
            ("action", "status"), registry=registry), _label)

    def model_label(self, model_name: str | None) -> str:
        """The ``model`` label value of a served model (:func:`served_model_label`): use it
        for every metric labelled by model."""
        return served_model_label(self._config, model_name)

    def route_label(self, route_name: str | None) -> str:
        """The ``route`` label value of a route
        (:func:`app.observability.metric_labels.route_label`)."""
        return route_label(self._config, route_name)

    def session_cache_event(self, backend: str, outcome: str) -> None:
        self._cache_events.get((backend, outcome)).inc()

    def router_decision(self, route: str | None, model: str, fallback: bool,
                        seconds: float) -> None:
        self._router_decisions.get((self.route_label(route), self.model_label(model),
                                    fallback)).inc()
        self._router_duration.observe(seconds)

    def router_skip(self, route: str | None, model: str) -> None:
        self._router_skips.get((self.route_label(route), self.model_label(model))).inc()

    def agent_session_ignored(self, header: str, reason: str) -> None:
        self._agent_ignored.get((header, reason)).inc()

    def switch_decision(self, decision: str, reason: str) -> None:
        self._switch_decisions.get((decision, reason)).inc()

    def request_finished(self, endpoint: str, status: int, pinned: bool) -> None:
        self._requests.get((endpoint, status, pinned)).inc()

    def model_request(self, route: str | None, model: str, pinned: bool) -> None:
        self._model_requests.get((self.route_label(route), self.model_label(model),
                                  pinned)).inc()

    def upstream_finished(self, model: str, seconds: float) -> None:
        self._upstream.get((self.model_label(model),)).observe(seconds)

    def upstream_stream_error(self, model: str, reason: str) -> None:
        self._stream_errors.get((self.model_label(model), reason)).inc()

    def admin_request(self, action: str, status: int) -> None:
        self._admin.get((action, status)).inc()

    def failover(self, from_model: str, to_model: str, reason: str) -> None:
        self._failovers.get((self.model_label(from_model), self.model_label(to_model),
                             reason)).inc()

    def usage(self, model: str, tokens: tuple[int, int, int, int], cost_usd: float,
              cache_hits: int, cache_misses: int) -> None:
        model = self.model_label(model)
        for kind, count in zip(TOKEN_KINDS, tokens, strict=True):
            if count:
                self._tokens.get((model, kind)).inc(count)
        if cost_usd:  # an unpriced model has no cost series: unknown, not free
            self._cost.get((model,)).inc(cost_usd)
        if cache_hits:
            self._prompt_cache.get((model, "hit")).inc(cache_hits)
        if cache_misses:
            self._prompt_cache.get((model, "miss")).inc(cache_misses)

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text of every worker (multiprocess) or of this instance."""
        return generate_latest(self._scrape_registry), CONTENT_TYPE_LATEST


def _known_decisions(config: Config) -> Iterable[tuple]:
    """Decisions the config makes possible: each route's primary model; no match and
    routing failure on any model (the fallback is the requested or the default model)."""
    if not config.routing_preferences:
        return
    for route in config.routing_preferences:
        yield route.name, served_model_label(config, route.models[0]), False
    for provider in config.model_providers:
        yield NO_ROUTE_LABEL, provider.name, False
        yield NO_ROUTE_LABEL, provider.name, True
