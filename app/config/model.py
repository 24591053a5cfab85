"""The validated configuration as immutable value objects (built by :mod:`app.config.schema`).

Everything the request path needs is precomputed here once (provider lookup by name, alias
resolution, the default model), so nothing is parsed per request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"

@dataclass(frozen=True)
class ListenerConfig:
    """An inbound listener; its ``timeout_seconds`` bounds every provider call."""

    name: str
    type: str
    address: str
    port: int
    timeout_seconds: float


@dataclass(frozen=True)
class ModelEndpoint:
    """One configured model (a ``model_providers`` entry) and where it is served.

    ``name`` is ``<vendor>/<model id>`` (``openai/gpt-5.2``), ``vendor`` the part before the
    slash (``openai``), ``model_id`` what goes upstream (``gpt-5.2``).
    """

    name: str
    vendor: str
    model_id: str
    base_url: str
    access_key: str | None = field(default=None, repr=False)
    default: bool = False
    #: How the gateway speaks to it (SPEC §13): ``anthropic`` (Messages) for vendor
    #: ``anthropic``, else ``openai`` (Chat Completions).
    interface: str = "openai"
    #: ``responses:`` key: ``native`` / ``translate``; ``None``: native for vendor openai.
    responses: str | None = None
    #: ``max_tokens`` sent when the client API did not require one (Anthropic does).
    max_tokens: int = 4096

    @property
    def native_responses(self) -> bool:
        """Whether Responses clients reach it natively at ``{base_url}/responses``."""
        if self.interface != "openai":
            return False
        return self.responses == "native" if self.responses else self.vendor == "openai"


@dataclass(frozen=True)
class RouteConfig:
    """A routing preference: a name, a description the router matches, target models."""

    name: str
    description: str
    models: tuple[str, ...]
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True)
class SessionCacheConfig:
    """Where session pins live (SPEC §6)."""

    type: str = "memory"
    url: str | None = field(default=None, repr=False)
    mode: str = "standalone"
    nodes: tuple[str, ...] = ()
    sentinels: tuple[str, ...] = ()
    master_name: str | None = None
    tls_ca_file: str | None = None
    timeout_ms: int = 200
    pool_size: int = 64
    failure_threshold: int = 3
    cooldown_seconds: float = 2.0
    key_prefix: str = "plano:affinity:"
    tenant_header: str | None = None


@dataclass(frozen=True)
class RoutingConfig:
    """Router choice and session-affinity settings."""

    model: str | None = None
    timeout_ms: int = 5000
    session_ttl_seconds: int = 600
    session_max_entries: int = 10000
    session_cache: SessionCacheConfig = SessionCacheConfig()


@dataclass(frozen=True)
class ServerConfig:
    """Limits and opt-in behaviour of the HTTP front."""

    max_body_bytes: int = 10 * 1024 * 1024
    body_read_timeout_seconds: float = 30.0
    max_upstream_body_bytes: int = 64 * 1024 * 1024
    max_stream_seconds: float = 900.0
    expose_worker_header: bool = False
    api_keys: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class TracingConfig:
    """OpenTelemetry export; no endpoint (here or in the environment) means no tracing."""

    random_sampling: float = 100.0
    otlp_endpoint: str | None = None


@dataclass(frozen=True)
class AdminConfig:
    """The admin API exists only when ``token`` is set."""

    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Config:
    """The whole validated configuration, plus lookups precomputed for the request path."""

    version: str
    listeners: tuple[ListenerConfig, ...]
    model_providers: tuple[ModelEndpoint, ...]
    model_aliases: Mapping[str, str]
    routing_preferences: tuple[RouteConfig, ...]
    routing: RoutingConfig
    server: ServerConfig
    tracing: TracingConfig
    admin: AdminConfig
    endpoints_by_name: Mapping[str, ModelEndpoint] = field(repr=False)
    routes_by_name: Mapping[str, RouteConfig] = field(repr=False)
    default_endpoint: ModelEndpoint = field(repr=False)

    @property
    def model_listener(self) -> ListenerConfig:
        """The first ``type: model`` listener (``bin/serve`` overrides its address/port)."""
        return next(listener for listener in self.listeners if listener.type == "model")

    def resolve_model(self, requested: str | None) -> ModelEndpoint | None:
        """Provider for a requested model name or alias; ``None`` when unknown."""
        if requested is None:
            return None
        target = self.model_aliases.get(requested, requested)
        endpoint = self.endpoints_by_name.get(target)
        if endpoint is None and "/" not in requested:
            # A bare model id (what Claude Code sends: ``claude-sonnet-4-6``) names the one
            # provider serving it; an id two providers share is ambiguous, so unknown.
            matches = [e for e in self.model_providers if e.model_id == requested]
            endpoint = matches[0] if len(matches) == 1 else None
        return endpoint
