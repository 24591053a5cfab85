"""The gateway application factory: the only place where the parts are wired together.

``create_app`` runs in each gunicorn worker (no ``preload_app``), after gevent patched the
standard library, so the Redis client, the HTTP sessions, the router, the metrics and the
tracer provider are made per worker and never shared across a fork.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    from flask import Flask

    from app.config import Config
    from app.observability.metrics import Metrics
    from app.observability.tracing import Tracing
    from app.providers.openai_compat import ProviderClient
    from app.router import Router
    from app.session_cache import SessionCache

__version__ = "0.1.0"

_FROM_CONFIG = object()


def create_app(config: Config | None = None, *, session_cache: SessionCache | None = None,
               router: Router | None | object = _FROM_CONFIG,
               providers: Mapping[str, ProviderClient] | None = None,
               metrics: Metrics | None = None,
               tracer_provider: object = _FROM_CONFIG) -> Flask:
    """Build the Flask app from ``config`` (default: ``load_config()``).

    Keyword overrides inject services instead of building them from config, so tests and
    embedders never patch: ``session_cache``, ``router`` (``None`` disables routing),
    ``providers`` (provider name -> client), ``metrics`` (default: Prometheus) and
    ``tracer_provider`` (an OpenTelemetry ``TracerProvider``; ``None`` turns tracing off;
    default: built from ``tracing`` when an OTLP endpoint is configured).
    """
    # Imported here, not at module level: gunicorn's master imports ``app.config`` (and so
    # this package) to validate the configuration before forking, and must not import
    # requests/urllib3/ssl before the gevent worker monkey-patches them.
    from flask import Flask

    from app.config import load_config
    from app.errors import register_error_handlers
    from app.http.api import bp
    from app.http.auth import KeySet
    from app.http.request_body import gevent_is_serving
    from app.observability.prometheus_metrics import PrometheusMetrics
    from app.observability.relay_observers import create_relay_observers
    from app.observability.tracing import provider_span_specs
    from app.pipeline.decide import Gateway
    from app.pipeline.failover import Failover
    from app.pipeline.relay import Relay
    from app.providers.registry import create_provider_clients
    from app.router import create_router
    from app.services import Services, install_services
    from app.session_cache import create_session_cache
    from app.usage.recorder import UsageRecorder

    config = config or load_config()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.server.max_body_bytes
    app.json.sort_keys = False
    app.json.compact = True

    cache = session_cache if session_cache is not None else create_session_cache(config.routing)
    if metrics is None:
        metrics = PrometheusMetrics(config, cache_backend=cache.backend_name)
    tracing = _create_tracing(config, tracer_provider)
    clients = dict(providers) if providers is not None else create_provider_clients(config)
    chosen_router = (create_router(config, _router_clients(config, clients, tracing))
                     if router is _FROM_CONFIG else router)
    usage = UsageRecorder(config, metrics, cache)
    gateway = Gateway(config, cache, chosen_router, metrics=metrics,
                      routing_span=tracing.routing_span if tracing else None,
                      prices=usage.prices)
    relay = Relay(clients, create_relay_observers(
        metrics, tracing, provider_span_specs(config) if tracing else None))

    install_services(app, Services(
        config=config, gateway=gateway, relay=relay, session_cache=cache,
        metrics=metrics, version=__version__,
        worker_id=f"{socket.gethostname()}:{os.getpid()}"
        if config.server.expose_worker_header else None,
        tracing=tracing, client_keys=KeySet(config.server.api_keys),
        admin_keys=KeySet([config.admin.token] if config.admin.token else []),
        gevent_sockets=gevent_is_serving(),
        failover=Failover(config.routing.failover,
                          timeout_seconds=config.model_listener.timeout_seconds,
                          max_retries=config.model_listener.max_retries, metrics=metrics),
        usage=usage))
    app.register_blueprint(bp)
    if config.admin.token:
        from app.http.admin import admin_bp
        from app.http.status import status_bp
        app.register_blueprint(admin_bp)
        app.register_blueprint(status_bp)
    register_error_handlers(app)
    if tracing is not None:
        _instrument_flask(app, tracing)
    return app


def _instrument_flask(app: Flask, tracing: Tracing) -> None:
    """Server spans from opentelemetry-instrumentation-flask, for this app only (SPEC §10).

    The request hook gives a request that matched no route a fixed span name instead of
    its raw path (404 scans would otherwise mint a span name per path).
    """
    from flask import request
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    from app.observability.tracing import name_unmatched_span

    def request_hook(span, environ) -> None:
        if request.url_rule is None:
            name_unmatched_span(span, environ.get("REQUEST_METHOD", ""))

    FlaskInstrumentor.instrument_app(app, request_hook=request_hook,
                                     **tracing.flask_instrumentation_options())


def _create_tracing(config: Config, tracer_provider: object) -> Tracing | None:
    """Tracing around the given provider, or one built from config; ``None``: no tracing."""
    from app.observability.tracing import Tracing, create_tracer_provider
    if tracer_provider is _FROM_CONFIG:
        tracer_provider = create_tracer_provider(config.tracing, service_version=__version__)
    if tracer_provider is None:
        return None
    return Tracing(tracer_provider, service_version=__version__)


def _router_clients(config: Config, clients: Mapping[str, ProviderClient],
                    tracing: Tracing | None) -> Mapping[str, object]:
    """The clients the router may use; with tracing, the routing model's call is a span."""
    routing_model = config.routing.model
    if tracing is None or routing_model is None or routing_model not in clients:
        return clients
    provider = config.endpoints_by_name[routing_model]
    traced = tracing.traced_completion_client(clients[routing_model], provider.model_id,
                                              provider.base_url)
    return {**clients, routing_model: traced}
