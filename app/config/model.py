"""The validated configuration as immutable value objects (built by :mod:`app.config.schema`).

Everything the request path needs is precomputed here once (provider lookup by name, alias
resolution, the default model), so nothing is parsed per request.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from dataclasses import dataclass, field
from typing import Mapping

from app.config.catalogue import UNSUPPORTED_VENDORS, VENDORS

WILDCARD = "*"
#: Characters a model id that goes into a URL path may not hold (SPEC §8), the backslash
#: too (some servers read it as ``/``). Control characters and ``..`` are refused as well.
PATH_UNSAFE_CHARACTERS = frozenset("/?#%\\")
#: Prefixes that always name a vendor, never the first part of a bare model id.
KNOWN_PREFIXES = frozenset(VENDORS) | frozenset(UNSUPPORTED_VENDORS)


@dataclass(frozen=True)
class ListenerConfig:
    """An inbound listener; its ``timeout_seconds`` bounds every provider call.

    ``max_retries``: how often a failed call is retried on the same model before failing
    over (SPEC §15; Plano's listener key).
    """

    name: str
    type: str
    address: str
    port: int
    timeout_seconds: float
    max_retries: int = 0


@dataclass(frozen=True)
class ModelEndpoint:
    """One configured model (a ``model_providers`` entry) and where it is served.

    ``name`` is ``<vendor>/<model id>`` (``openai/gpt-5.2``), ``vendor`` the part before the
    slash (``openai``), ``model_id`` what goes upstream (``gpt-5.2``; ``*`` for a wildcard
    entry, which admits any model id of its vendor). ``base_url`` is the resolved prefix
    every API path is appended to (``https://api.openai.com/v1``, SPEC §13), ``interface``
    how the gateway speaks to it (``openai`` or ``anthropic``), ``auth`` how the key is sent
    (``bearer``, ``x-api-key``, ``api-key``), ``url_query`` a query every call carries
    (Azure's ``api-version``). With ``passthrough_auth`` the client's own key is forwarded
    instead of ``access_key``.
    """

    name: str
    vendor: str
    model_id: str
    base_url: str
    access_key: str | None = field(default=None, repr=False)
    default: bool = False
    interface: str = "openai"
    auth: str = "bearer"
    url_query: str = ""
    responses_native: bool = False
    passthrough_auth: bool = False
    #: ``max_tokens`` sent to an Anthropic-interface model when the client API did not
    #: require one (Chat, Responses); Anthropic does.
    max_tokens: int = 4096
    #: Extra headers sent with every call (Plano's ``headers``), as ``(name, value)`` pairs.
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    #: The vendor takes OpenAI's ``prompt_cache_key`` (catalogue flag, SPEC §19).
    prompt_cache_key: bool = False
    #: ``pricing:`` override, USD per million tokens, as ``(kind, price)`` pairs (kinds:
    #: input, cached_input, cache_write, output); empty: the genai-prices table (SPEC §19).
    pricing: tuple[tuple[str, float], ...] = ()

    @property
    def model_id_in_path(self) -> bool:
        """Whether a wildcard entry puts the model id in the URL path (Azure deployments:
        ``.../openai/deployments/*``)."""
        return f"/{WILDCARD}" in self.base_url

    @property
    def is_wildcard(self) -> bool:
        """Whether this entry admits every model id of its vendor (``openai/*``)."""
        return self.model_id == WILDCARD

    def url(self, path: str) -> str:
        """The full URL of an API path (``/chat/completions``) at this endpoint."""
        return f"{self.base_url}{path}?{self.url_query}" if self.url_query else \
            f"{self.base_url}{path}"

    def for_model_id(self, model_id: str) -> ModelEndpoint:
        """This wildcard entry serving one concrete model id (same key, URL, interface)."""
        base_url = self.base_url.replace(f"/{WILDCARD}", f"/{model_id}")  # Azure deployments
        return dataclasses.replace(self, name=f"{self.vendor}/{model_id}", model_id=model_id,
                                   base_url=base_url, default=False)


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
    #: ``None``: gunicorn's ``worker_connections`` (:func:`app.pools.worker_connections`).
    pool_size: int | None = None
    failure_threshold: int = 3
    cooldown_seconds: float = 2.0
    key_prefix: str = "plano:affinity:"
    tenant_header: str | None = None


@dataclass(frozen=True)
class FailoverConfig:
    """Failover inside a route (SPEC §15).

    ``max_attempts``: how many of a route's ranked models one request may try (``None``:
    every one; same-model retries from the listener's ``max_retries`` come on top).
    ``repin``: a success on another model moves the session's pin there.
    ``failure_threshold`` consecutive failures mark a model down in the worker for
    ``cooldown_seconds``; then one request probes it.
    """

    max_attempts: int | None = None
    repin: bool = False
    failure_threshold: int = 3
    cooldown_seconds: float = 10.0


#: The session headers coding agents send (SPEC §18): Claude Code's, then Codex's.
DEFAULT_AGENT_SESSION_HEADERS = ("X-Claude-Code-Session-Id", "session-id")


@dataclass(frozen=True)
class AgentSessionsConfig:
    """Adopt the session id a coding agent already sends (SPEC §18).

    Without ``X-Model-Affinity``, the first of ``headers`` present names the session,
    scoped by its lane (``<id>:<lane>``) and with a sliding TTL. ``enabled: false``:
    header-only affinity, as before.
    """

    enabled: bool = True
    headers: tuple[str, ...] = DEFAULT_AGENT_SESSION_HEADERS


@dataclass(frozen=True)
class RoutingBudgetConfig:
    """Plano's ``routing.routing_budget`` (SPEC §20).

    ``max_switch_spend_pct`` (0-100): a warm session may spend at most this share of what
    never switching would have cost on switching; ``replenish_on_rebind``: a session that
    went cold starts its totals afresh; ``cache_read_discount``: a model's cached input
    price as a share of its input price when its price has no cheaper cached rate;
    ``record_counterfactual``: a retained switch names the model it would have taken on
    the span.
    """

    max_switch_spend_pct: float
    replenish_on_rebind: bool = True
    cache_read_discount: float = 0.1
    record_counterfactual: bool = False


@dataclass(frozen=True)
class RoutingConfig:
    """Router choice and session-affinity settings."""

    model: str | None = None
    timeout_ms: int = 5000
    session_ttl_seconds: int = 600
    session_max_entries: int = 10000
    session_cache: SessionCacheConfig = SessionCacheConfig()
    #: Plano's turn-level routing (SPEC §16): route only when a request starts a user turn.
    route_on_user_only: bool = False
    #: ``fixed``: a pin lives ``session_ttl_seconds`` from pinning (the seed); ``sliding``:
    #: every hit renews it (SPEC §16).
    session_ttl_mode: str = "fixed"
    #: Pin sessions derived from the conversation (no ``X-Model-Affinity``) like explicit
    #: ones (SPEC §16).
    implicit_affinity: bool = False
    #: Failover inside a route (SPEC §15).
    failover: FailoverConfig = FailoverConfig()
    #: Sessions named by the headers coding agents send (SPEC §18).
    agent_sessions: AgentSessionsConfig = AgentSessionsConfig()
    #: Plano's routing budget (SPEC §20): switching a warm session's model under a spend
    #: cap. ``None``: not configured (a request header may still set a cap).
    routing_budget: RoutingBudgetConfig | None = None

    @property
    def turn_routing(self) -> bool:
        """Whether sessions are routed per user turn (SPEC §16): ``route_on_user_only``, or
        a configured ``routing_budget``, which is only meaningful where a session's user
        turns are routed (Plano's own ``routing_budget.yaml`` does not set the former)."""
        return self.route_on_user_only or self.routing_budget is not None

    @property
    def sliding_ttl(self) -> bool:
        """Whether a hit renews the session TTL."""
        return self.session_ttl_mode == "sliding"


@dataclass(frozen=True)
class PromptCachingConfig:
    """Plano's ``prompt_caching`` block (SPEC §19): cache hints sent upstream when enabled.

    ``inject_cache_control``: Anthropic breakpoints on prefixes of at least
    ``min_prefix_tokens``; ``prompt_cache_key``: OpenAI/Azure cache key from the session;
    ``warm_window_seconds``: how long a provider's cache is taken to stay warm.
    """

    enabled: bool = False
    inject_cache_control: bool = True
    min_prefix_tokens: int = 1024
    prompt_cache_key: bool = True
    warm_window_seconds: int = 300


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
class ModelDirectory:
    """Every configured model, looked up by full name, vendor wildcard or bare model id."""

    endpoints: tuple[ModelEndpoint, ...]

    def __post_init__(self) -> None:
        by_id: dict[str, ModelEndpoint | None] = {}
        for entry in self.endpoints:
            if not entry.is_wildcard:
                by_id[entry.model_id] = None if entry.model_id in by_id else entry
        object.__setattr__(self, "by_name", {e.name: e for e in self.endpoints})
        object.__setattr__(self, "wildcards", {e.vendor: e for e in self.endpoints
                                               if e.is_wildcard})
        object.__setattr__(self, "by_model_id", by_id)
        object.__setattr__(self, "vendors", {e.vendor for e in self.endpoints})

    def endpoint(self, name: str) -> ModelEndpoint | None:
        """The endpoint serving the full model name ``name`` (``openai/gpt-4o``): its
        concrete entry (which wins), else its vendor's wildcard entry; ``None`` when neither
        admits it."""
        found = self.by_name.get(name)
        if found is not None and not found.is_wildcard:
            return found
        vendor, _, model_id = name.partition("/")
        return _admitted(self.wildcards.get(vendor), model_id)

    def resolve(self, target: str) -> ModelEndpoint | None:
        """A full name, or a bare model id that exactly one entry has (or, failing that, the
        only wildcard entry's vendor serves); ``None`` when unknown or ambiguous."""
        found = self.endpoint(target) if "/" in target else None
        if found is not None:
            return found
        if target in self.by_model_id:
            return self.by_model_id[target]
        # A bare id with a slash (``meta-llama/Llama-3``) is not a full name of a vendor.
        vendor = target.partition("/")[0] if "/" in target else None
        if len(self.wildcards) == 1 and (vendor is None or (
                vendor not in self.vendors and vendor not in KNOWN_PREFIXES)):
            (wildcard,) = self.wildcards.values()
            return _admitted(wildcard, target)
        return None

    def is_ambiguous(self, target: str) -> bool:
        """Whether ``target`` is a bare model id that several entries have."""
        return target in self.by_model_id and self.by_model_id[target] is None


def path_safe_model_id(model_id: str) -> bool:
    """Whether ``model_id`` can go into a URL path segment as it is: no ``/ ? # % \\``, no
    ``..`` and no control character (so it can neither leave its segment nor be decoded
    into something that does)."""
    return ".." not in model_id and not any(
        char in PATH_UNSAFE_CHARACTERS or unicodedata.category(char) == "Cc"
        for char in model_id)


def _admitted(wildcard: ModelEndpoint | None, model_id: str) -> ModelEndpoint | None:
    """``wildcard`` serving ``model_id``; ``None`` without a wildcard, for an empty or ``*``
    id, and for an id that would change the URL of an entry that puts it in its path."""
    if wildcard is None or not model_id or model_id == WILDCARD:
        return None
    if wildcard.model_id_in_path and not path_safe_model_id(model_id):
        return None
    return wildcard.for_model_id(model_id)


@dataclass(frozen=True)
class Config:
    """The whole validated configuration, plus lookups precomputed for the request path.

    ``warnings`` are migrations applied to a Plano config (logged once, by whoever loaded
    it at start-up: the gunicorn master).
    """

    version: str
    listeners: tuple[ListenerConfig, ...]
    model_providers: tuple[ModelEndpoint, ...]
    model_aliases: Mapping[str, str]
    routing_preferences: tuple[RouteConfig, ...]
    routing: RoutingConfig
    server: ServerConfig
    tracing: TracingConfig
    admin: AdminConfig
    models: ModelDirectory = field(repr=False)
    routes_by_name: Mapping[str, RouteConfig] = field(repr=False)
    default_endpoint: ModelEndpoint = field(repr=False)
    prompt_caching: PromptCachingConfig = PromptCachingConfig()
    warnings: tuple[str, ...] = ()
    #: Where it was loaded from (a file path); ``None`` when built from a dict in code.
    source: str | None = None
    #: SHA-256 (hex) of the file's text as loaded, telling one edit from the next.
    digest: str | None = None

    @property
    def model_listener(self) -> ListenerConfig:
        """The first ``type: model`` listener (``bin/serve`` overrides its address/port)."""
        return next(listener for listener in self.listeners if listener.type == "model")

    @property
    def endpoints_by_name(self) -> Mapping[str, ModelEndpoint]:
        """The configured entries by full name (wildcard entries under ``vendor/*``)."""
        return self.models.by_name

    def endpoint(self, name: str) -> ModelEndpoint | None:
        """See :meth:`ModelDirectory.endpoint`."""
        return self.models.endpoint(name)

    def resolve_model(self, requested: str | None) -> ModelEndpoint | None:
        """The endpoint for a requested model (SPEC §12): an alias, a full name or a bare
        model id (:meth:`ModelDirectory.resolve`); ``None`` when unknown or ambiguous."""
        if requested is None:
            return None
        return self.models.resolve(self.model_aliases.get(requested, requested))
