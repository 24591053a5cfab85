"""The gateway application factory: the only place where the parts are wired together.

``create_app`` runs in each gunicorn worker (no ``preload_app``), after gevent patched the
standard library, so the Redis client, the HTTP sessions and the router are made per worker
and never shared across a fork.
"""

from __future__ import annotations

import os
import socket
from typing import Mapping

from flask import Flask

from app.api import Services, bp
from app.config import Config, load_config
from app.errors import register_error_handlers
from app.gateway import Gateway
from app.metrics import Metrics
from app.providers.openai_compat import ProviderClient
from app.providers.registry import create_provider_clients
from app.relay import Relay
from app.router import Router, create_router
from app.session_cache import SessionCache, create_session_cache

__version__ = "0.1.0"

_FROM_CONFIG = object()


def create_app(config: Config | None = None, *, session_cache: SessionCache | None = None,
               router: Router | None | object = _FROM_CONFIG,
               providers: Mapping[str, ProviderClient] | None = None,
               metrics: Metrics | None = None) -> Flask:
    """Build the Flask app from ``config`` (default: ``load_config()``).

    Keyword overrides inject services instead of building them from config, so tests and
    embedders never patch: ``session_cache``, ``router`` (``None`` disables routing),
    ``providers`` (provider name -> client) and ``metrics``.
    """
    config = config or load_config()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.server.max_body_bytes
    app.json.sort_keys = False
    app.json.compact = True

    metrics = metrics or Metrics()
    clients = dict(providers) if providers is not None else create_provider_clients(config)
    cache = session_cache if session_cache is not None else create_session_cache(config.routing)
    chosen_router = create_router(config, clients) if router is _FROM_CONFIG else router
    gateway = Gateway(config, cache, chosen_router, metrics=metrics)

    app.extensions["plano"] = Services(
        config=config, gateway=gateway, relay=Relay(clients, metrics), session_cache=cache,
        metrics=metrics, version=__version__,
        worker_id=f"{socket.gethostname()}:{os.getpid()}"
        if config.server.expose_worker_header else None)
    app.register_blueprint(bp)
    register_error_handlers(app)
    return app
