"""Build the configured router (SPEC §3 ``routing``, §5)."""

from __future__ import annotations

from typing import Mapping

from app.config import Config
from app.router.arch import ArchRouter
from app.router.base import Router
from app.router.embedded import EmbeddedRouter


def create_router(config: Config, clients: Mapping[str, object]) -> Router | None:
    """The router for ``config``, or ``None`` when nothing could ever be routed.

    ``routing.model`` set -> :class:`ArchRouter` speaking to that provider through
    ``clients[routing.model]`` (clients are keyed by provider name, e.g.
    ``openai/gpt-4o-mini``) with ``routing.timeout_ms`` as its budget (built even without
    configured routes: a request may bring its own); otherwise the network-free
    :class:`EmbeddedRouter`, or ``None`` without routes (the gateway then routes only
    requests that bring their own routes, with an embedded router).
    """
    routes = config.routing_preferences
    routing_model = config.routing.model
    if routing_model is None:
        return EmbeddedRouter(routes) if routes else None
    provider = config.endpoints_by_name[routing_model]
    return ArchRouter(routes, clients[routing_model], provider.model_id,
                      config.routing.timeout_ms / 1000)
