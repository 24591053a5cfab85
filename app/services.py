"""What the blueprints need, built once per worker by ``create_app`` (STYLE: services on
``app.extensions``, never module globals).

Blueprints read it with :func:`current_services`; code that holds the app object (gunicorn's
hooks, tests) with :func:`services_of`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.http.auth import KeySet

if TYPE_CHECKING:
    from flask import Flask

    from app.config import Config
    from app.observability.metrics import Metrics
    from app.observability.tracing import Tracing
    from app.pipeline.decide import Gateway
    from app.pipeline.failover import Failover
    from app.pipeline.relay import Relay
    from app.session_cache.base import SessionCache
    from app.usage.recorder import UsageRecorder

#: The key under ``app.extensions``.
EXTENSION_KEY = "plano"


@dataclass(frozen=True)
class Services:
    """Everything the endpoints use."""

    config: Config
    gateway: Gateway
    relay: Relay
    session_cache: SessionCache
    metrics: Metrics
    version: str
    #: ``host:pid`` for the ``x-plano-worker`` header, or ``None`` when not exposed.
    worker_id: str | None = None
    #: ``None`` when tracing is off: then no span is touched on the request path.
    tracing: Tracing | None = None
    #: ``server.api_keys``; empty: clients are not authenticated.
    client_keys: KeySet = KeySet(())
    #: ``admin.token``; empty: the admin API is not mounted.
    admin_keys: KeySet = KeySet(())
    #: Sockets are gevent's (gunicorn worker): the body-read deadline can be enforced.
    gevent_sockets: bool = False
    #: The attempt chain and this worker's model health marks (SPEC §15).
    failover: Failover | None = None
    #: Usage, prices and per-session totals (SPEC §19); ``None``: not accounted.
    usage: UsageRecorder | None = None


def install_services(app: Flask, services: Services) -> None:
    """Attach ``services`` to ``app``."""
    app.extensions[EXTENSION_KEY] = services


def services_of(app: object) -> Services | None:
    """The services of ``app`` (a Flask app), or ``None`` when it has none."""
    return getattr(app, "extensions", {}).get(EXTENSION_KEY)


def current_services() -> Services:
    """The services of the app handling the current request."""
    from flask import current_app

    return current_app.extensions[EXTENSION_KEY]
