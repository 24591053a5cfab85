"""marshmallow schemas: a parsed, env-expanded YAML tree -> :class:`app.config.model.Config`.

Unknown keys are errors (a typo never silently falls back to a default); cross-field rules
(redis needs a url, routes name configured models, at most one default provider) live here
too, and run even when other fields failed, so every problem is reported at once.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from app.config.catalogue import (
    DEFAULT_AZURE_API_VERSION,
    INTERFACES,
    PROVIDER_INTERFACES,
    UNSUPPORTED_VENDORS,
    VENDORS,
    custom_vendor,
    resolve_prefix_url,
)
from app.config.model import (
    DEFAULT_AGENT_SESSION_HEADERS,
    WILDCARD,
    AdminConfig,
    AgentSessionsConfig,
    Config,
    FailoverConfig,
    ListenerConfig,
    ModelDirectory,
    ModelEndpoint,
    PromptCachingConfig,
    RouteConfig,
    RoutingBudgetConfig,
    RoutingConfig,
    ServerConfig,
    SessionCacheConfig,
    TracingConfig,
)

_DURATION_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Seconds from ``30s``, ``500ms``, ``2m``, ``1h`` or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError("not a duration")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION_PATTERN.match(str(value))
        if not match:
            raise ValueError("not a duration (use e.g. 30s, 500ms, 2m)")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError("must be greater than 0")
    return seconds


def _none_if_blank(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


class Duration(fields.Field):
    """A positive duration in seconds (accepts ``30s``, ``500ms``, numbers)."""

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            return parse_duration(value)
        except ValueError as error:
            raise ValidationError(str(error)) from None


class OptionalString(fields.String):
    """A string where blank (e.g. an unset ``${VAR}``) means absent."""

    def deserialize(self, value, attr=None, data=None, **kwargs):
        return super().deserialize(_none_if_blank(value), attr, data, **kwargs)


class _Strict(Schema):
    """Base schema: unknown keys are errors (marshmallow's RAISE, stated for the reader)."""

    class Meta:
        unknown = "raise"


class ListenerSchema(_Strict):
    name = fields.String(load_default="model_listener")
    type = fields.String(load_default="model", validate=validate.OneOf(["model"]))
    address = fields.String(load_default="0.0.0.0")
    port = fields.Integer(load_default=12000, validate=validate.Range(1, 65535))
    timeout = Duration(load_default=30.0)
    max_retries = fields.Integer(load_default=0, validate=validate.Range(0, 10))

    @post_load
    def build(self, data, **kwargs):
        return ListenerConfig(name=data["name"], type=data["type"], address=data["address"],
                              port=data["port"], timeout_seconds=data["timeout"],
                              max_retries=data["max_retries"])


class PricingSchema(_Strict):
    """A provider entry's ``pricing:`` override, USD per million tokens (SPEC §19)."""

    input = fields.Float(required=True, validate=validate.Range(min=0))
    output = fields.Float(required=True, validate=validate.Range(min=0))
    cached_input = fields.Float(load_default=None, allow_none=True,
                                validate=validate.Range(min=0))
    cache_write = fields.Float(load_default=None, allow_none=True,
                               validate=validate.Range(min=0))


class ProviderSchema(_Strict):
    """One ``model_providers`` entry; the vendor prefix is looked up in the catalogue."""

    model = fields.String(required=True, validate=validate.Regexp(
        r"^[A-Za-z0-9_.-]+/\S+$", error="must be '<provider>/<model id>' or '<provider>/*'"))
    access_key = OptionalString(load_default=None, allow_none=True)
    base_url = OptionalString(load_default=None, allow_none=True)
    default = fields.Boolean(load_default=False)
    provider_interface = OptionalString(load_default=None, allow_none=True)
    passthrough_auth = fields.Boolean(load_default=False)
    headers = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    api_version = OptionalString(load_default=None, allow_none=True)
    #: Plano's instance name; this gateway names every model by ``model`` (accepted, unused).
    name = OptionalString(load_default=None, allow_none=True)
    #: Responses clients: ``native`` ({base_url}/responses) or ``translate`` (through the
    #: interface's chat path); default from the catalogue (native for openai).
    responses = OptionalString(load_default=None, allow_none=True,
                               validate=validate.OneOf(["native", "translate"]))
    max_tokens = fields.Integer(load_default=4096, validate=validate.Range(1, 10_000_000))
    pricing = fields.Nested(PricingSchema, load_default=None, allow_none=True)

    @validates_schema
    def check_vendor(self, data, **kwargs):
        vendor, _, model_id = data["model"].partition("/")
        interface = data.get("provider_interface")
        if vendor in UNSUPPORTED_VENDORS:
            raise ValidationError(f"provider '{vendor}' is not supported by this gateway: "
                                  f"{UNSUPPORTED_VENDORS[vendor]}", "model")
        if vendor in VENDORS and interface is not None:
            raise ValidationError(f"only for providers outside the catalogue; '{vendor}' is "
                                  "known (its interface is fixed)", "provider_interface")
        if vendor not in VENDORS:
            if interface is None:
                raise ValidationError(
                    f"required for provider '{vendor}', which is not in the catalogue "
                    "(openai or anthropic, with a base_url)", "provider_interface")
            if interface not in PROVIDER_INTERFACES:
                raise ValidationError(f"must be one of: {', '.join(INTERFACES)}",
                                      "provider_interface")
        base_url = data.get("base_url")
        if base_url is None and _vendor(vendor, interface).default_host is None:
            raise ValidationError(f"required for provider '{vendor}'", "base_url")
        if base_url is not None and (urlsplit(base_url).scheme not in ("http", "https")
                                     or not urlsplit(base_url).hostname):
            raise ValidationError("must be an http:// or https:// URL", "base_url")
        if model_id == WILDCARD and data.get("default"):
            raise ValidationError("a wildcard entry cannot be the default", "default")
        if data.get("api_version") and not VENDORS.get(vendor, custom_vendor("openai")).azure:
            raise ValidationError("only for azure_openai", "api_version")

    @post_load
    def build(self, data, **kwargs):
        vendor_name, model_id = data["model"].split("/", 1)
        vendor = _vendor(vendor_name, data["provider_interface"])
        query = ""
        if vendor.azure:
            query = f"api-version={data['api_version'] or DEFAULT_AZURE_API_VERSION}"
        return ModelEndpoint(
            name=data["model"], vendor=vendor_name, model_id=model_id,
            base_url=resolve_prefix_url(vendor, data["base_url"], model_id),
            access_key=data["access_key"], default=data["default"],
            interface=vendor.interface, auth=vendor.auth, url_query=query,
            responses_native=_responses_native(vendor, data["responses"]),
            passthrough_auth=data["passthrough_auth"], max_tokens=data["max_tokens"],
            headers=tuple(data["headers"].items()), prompt_cache_key=vendor.prompt_cache_key,
            pricing=tuple((kind, price) for kind, price in (data["pricing"] or {}).items()
                          if price is not None))


def _responses_native(vendor, setting: str | None) -> bool:
    """``responses: native | translate`` overrides the catalogue; only an OpenAI-interface
    provider can take the Responses API natively."""
    if vendor.interface != "openai":
        return False
    return setting == "native" if setting is not None else vendor.responses_native


def _vendor(name: str, provider_interface: str | None):
    """The catalogue entry for ``name``, or a custom one for ``provider_interface``."""
    if name in VENDORS:
        return VENDORS[name]
    return custom_vendor(PROVIDER_INTERFACES.get(provider_interface or "", "openai"))


class AliasSchema(_Strict):
    target = fields.String(required=True)


class RouteSchema(_Strict):
    name = fields.String(required=True, validate=[
        validate.Length(min=1, max=128),
        validate.NoneOf(["other"], error="'other' is reserved for 'no match'")])
    description = fields.String(required=True, validate=validate.Length(min=1))
    models = fields.List(fields.String(), required=True, validate=validate.Length(min=1))
    keywords = fields.List(fields.String(), load_default=list)

    @post_load
    def build(self, data, **kwargs):
        return RouteConfig(name=data["name"], description=data["description"],
                           models=tuple(data["models"]), keywords=tuple(data["keywords"]))


class SessionCacheSchema(_Strict):
    type = fields.String(load_default="memory", validate=validate.OneOf(["memory", "redis"]))
    url = OptionalString(load_default=None, allow_none=True)
    mode = fields.String(load_default="standalone",
                         validate=validate.OneOf(["standalone", "cluster", "sentinel"]))
    nodes = fields.List(fields.String(), load_default=list)
    sentinels = fields.List(fields.String(), load_default=list)
    master_name = OptionalString(load_default=None, allow_none=True)
    tls_ca_file = OptionalString(load_default=None, allow_none=True)
    timeout_ms = fields.Integer(load_default=200, validate=validate.Range(1, 60000))
    # null: one connection per concurrent request of a worker (worker_connections)
    pool_size = fields.Integer(load_default=None, allow_none=True,
                               validate=validate.Range(1, 100000))
    failure_threshold = fields.Integer(load_default=3, validate=validate.Range(1, 1000))
    cooldown_seconds = fields.Float(load_default=2.0, validate=validate.Range(0, 3600))
    key_prefix = fields.String(load_default="plano:affinity:")
    tenant_header = OptionalString(load_default=None, allow_none=True)

    @validates_schema
    def check_backend(self, data, **kwargs):
        if data["type"] != "redis":
            return
        mode, url = data["mode"], data.get("url")
        if mode == "sentinel":
            if not data["sentinels"]:
                raise ValidationError("required when mode is sentinel", "sentinels")
            if not data.get("master_name"):
                raise ValidationError("required when mode is sentinel", "master_name")
            for index, address in enumerate(data["sentinels"]):
                host, _, port = address.rpartition(":")
                if not host or not port.isdigit():
                    raise ValidationError({str(index): ["must be 'host:port'"]}, "sentinels")
        elif not url:
            raise ValidationError("required when type is redis", "url")
        for name, value in (("url", url), *((f"nodes.{i}", n) for i, n in
                                            enumerate(data["nodes"]))):
            if value and urlsplit(value).scheme not in ("redis", "rediss", "unix"):
                raise ValidationError("must start with redis://, rediss:// or unix://", name)
        if mode == "cluster" and url and urlsplit(url).scheme == "unix":
            raise ValidationError("cluster mode needs redis:// or rediss:// nodes", "url")
        ca_file = data.get("tls_ca_file")
        if ca_file and not Path(ca_file).is_file():
            raise ValidationError(f"no such file: {ca_file}", "tls_ca_file")

    @post_load
    def build(self, data, **kwargs):
        data["nodes"] = tuple(data["nodes"])
        data["sentinels"] = tuple(data["sentinels"])
        return SessionCacheConfig(**data)


class FailoverSchema(_Strict):
    max_attempts = fields.Integer(load_default=None, allow_none=True,
                                  validate=validate.Range(min=1, max=100))
    repin = fields.Boolean(load_default=False)
    failure_threshold = fields.Integer(load_default=3, validate=validate.Range(1, 1000))
    cooldown_seconds = fields.Float(load_default=10.0, validate=validate.Range(0, 3600))

    @post_load
    def build(self, data, **kwargs):
        return FailoverConfig(**data)


class AgentSessionsSchema(_Strict):
    enabled = fields.Boolean(load_default=True)
    headers = fields.List(fields.String(validate=validate.Regexp(
        r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", error="must be an HTTP header name")),
        load_default=lambda: list(DEFAULT_AGENT_SESSION_HEADERS),
        validate=validate.Length(min=1, max=16))

    @post_load
    def build(self, data, **kwargs):
        return AgentSessionsConfig(data["enabled"], tuple(data["headers"]))


class RoutingBudgetSchema(_Strict):
    """Plano's ``routing.routing_budget`` (SPEC §20), with Plano's keys and bounds."""

    max_switch_spend_pct = fields.Float(required=True, validate=validate.Range(0, 100))
    replenish_on_rebind = fields.Boolean(load_default=True)
    cache_read_discount = fields.Float(load_default=0.1, validate=validate.Range(0, 1))
    record_counterfactual = fields.Boolean(load_default=False)

    @post_load
    def build(self, data, **kwargs):
        return RoutingBudgetConfig(**data)


class RoutingSchema(_Strict):
    model = OptionalString(load_default=None, allow_none=True)
    timeout_ms = fields.Integer(load_default=5000, validate=validate.Range(1, 600000))
    session_ttl_seconds = fields.Integer(load_default=600, validate=validate.Range(min=1))
    session_max_entries = fields.Integer(load_default=10000, validate=validate.Range(min=1))
    session_cache = fields.Nested(SessionCacheSchema, load_default=SessionCacheConfig)
    route_on_user_only = fields.Boolean(load_default=False)
    session_ttl_mode = fields.String(load_default="fixed",
                                     validate=validate.OneOf(("fixed", "sliding")))
    implicit_affinity = fields.Boolean(load_default=False)
    failover = fields.Nested(FailoverSchema, load_default=FailoverConfig)
    agent_sessions = fields.Nested(AgentSessionsSchema, load_default=AgentSessionsConfig)
    routing_budget = fields.Nested(RoutingBudgetSchema, load_default=None, allow_none=True)

    @post_load
    def build(self, data, **kwargs):
        return RoutingConfig(**data)


class KeyList(fields.Field):
    """Secrets as a YAML list or one comma-separated string (how ``${VAR}`` delivers them)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if value is None:
            return ()
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
            raise ValidationError("must be a list of strings or a comma-separated string")
        return tuple(item.strip() for item in items if item.strip())


class ServerSchema(_Strict):
    max_body_bytes = fields.Integer(load_default=10 * 1024 * 1024,
                                    validate=validate.Range(min=1024))
    body_read_timeout = Duration(load_default=30.0)
    max_upstream_body_bytes = fields.Integer(load_default=64 * 1024 * 1024,
                                             validate=validate.Range(min=1024))
    max_stream_duration = Duration(load_default=900.0)
    expose_worker_header = fields.Boolean(load_default=False)
    api_keys = KeyList(load_default=tuple, allow_none=True)

    @post_load
    def build(self, data, **kwargs):
        return ServerConfig(max_body_bytes=data["max_body_bytes"],
                            body_read_timeout_seconds=data["body_read_timeout"],
                            max_upstream_body_bytes=data["max_upstream_body_bytes"],
                            max_stream_seconds=data["max_stream_duration"],
                            expose_worker_header=data["expose_worker_header"],
                            api_keys=data["api_keys"] or ())


class TracingSchema(_Strict):
    random_sampling = fields.Float(load_default=100.0, validate=validate.Range(0, 100))
    otlp_endpoint = OptionalString(load_default=None, allow_none=True)

    @validates_schema
    def check_endpoint(self, data, **kwargs):
        endpoint = data.get("otlp_endpoint")
        if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
            raise ValidationError("must be an http:// or https:// URL (OTLP/HTTP)",
                                  "otlp_endpoint")

    @post_load
    def build(self, data, **kwargs):
        return TracingConfig(**data)


class AdminSchema(_Strict):
    token = OptionalString(load_default=None, allow_none=True,
                           validate=validate.Length(min=16, error="must be at least 16 "
                                                                  "characters"))

    @post_load
    def build(self, data, **kwargs):
        return AdminConfig(**data)


class PromptCachingSchema(_Strict):
    """Plano's top-level ``prompt_caching`` block (SPEC §19)."""

    enabled = fields.Boolean(load_default=False)
    inject_cache_control = fields.Boolean(load_default=True)
    min_prefix_tokens = fields.Integer(load_default=1024, validate=validate.Range(0, 10_000_000))
    prompt_cache_key = fields.Boolean(load_default=True)
    warm_window_seconds = fields.Integer(load_default=300, validate=validate.Range(1, 86400))

    @post_load
    def build(self, data, **kwargs):
        return PromptCachingConfig(**data)


class ConfigSchema(_Strict):
    version = fields.String(load_default="v0.4.0")
    listeners = fields.List(fields.Nested(ListenerSchema), load_default=lambda: [
        ListenerConfig("model_listener", "model", "0.0.0.0", 12000, 30.0)])
    model_providers = fields.List(fields.Nested(ProviderSchema), required=True,
                                  validate=validate.Length(min=1))
    model_aliases = fields.Dict(keys=fields.String(), values=fields.Nested(AliasSchema),
                                load_default=dict)
    routing_preferences = fields.List(fields.Nested(RouteSchema), load_default=list)
    routing = fields.Nested(RoutingSchema, load_default=RoutingConfig)
    server = fields.Nested(ServerSchema, load_default=ServerConfig)
    tracing = fields.Nested(TracingSchema, load_default=TracingConfig)
    admin = fields.Nested(AdminSchema, load_default=AdminConfig)
    prompt_caching = fields.Nested(PromptCachingSchema, load_default=PromptCachingConfig)

    @validates_schema(skip_on_field_errors=False)
    def check_references(self, data, **kwargs):
        # Runs even when some fields failed, so every problem is listed at once; references
        # are only checked against a provider list that itself validated.
        providers = data.get("model_providers")
        if not providers or not all(isinstance(p, ModelEndpoint) for p in providers):
            return
        errors = _reference_errors(data, ModelDirectory(tuple(providers)))
        if errors:
            raise ValidationError(errors)

    @post_load
    def build(self, data, **kwargs):
        providers = tuple(data["model_providers"])
        models = ModelDirectory(providers)
        routes = tuple(RouteConfig(r.name, r.description,
                                   tuple(models.resolve(m).name for m in r.models),
                                   r.keywords)
                       for r in data["routing_preferences"])
        concrete = [p for p in providers if not p.is_wildcard]
        default = next((p for p in providers if p.default), concrete[0])
        routing = data["routing"]
        if routing.model is not None:
            routing = dataclasses.replace(routing, model=models.resolve(routing.model).name)
        return Config(
            version=data["version"],
            listeners=tuple(data["listeners"]),
            model_providers=providers,
            model_aliases=MappingProxyType(
                {alias: models.resolve(spec["target"]).name
                 for alias, spec in data["model_aliases"].items()}),
            routing_preferences=routes,
            routing=routing,
            server=data["server"],
            tracing=data["tracing"],
            admin=data["admin"],
            models=models,
            routes_by_name=MappingProxyType({r.name: r for r in routes}),
            default_endpoint=default,
            prompt_caching=data["prompt_caching"],
        )


def _reference_errors(data: dict, models: ModelDirectory) -> dict[str, list[str]]:
    """Every broken cross-reference: duplicates, defaults, alias targets, route models, the
    routing model, listeners. Model references may be full names (admitted by a concrete or
    wildcard entry) or bare model ids that exactly one entry has."""
    errors: dict[str, list[str]] = {}

    def check(path: str, target: str, unknown: str = "unknown model '{}'") -> None:
        if models.is_ambiguous(target):
            owners = [e.name for e in models.endpoints if e.model_id == target]
            errors[path] = [f"ambiguous model '{target}': {', '.join(owners)}"]
        elif models.resolve(target) is None:
            errors[path] = [unknown.format(target)]

    providers = models.endpoints
    names = [provider.name for provider in providers]
    for index, name in enumerate(names):
        if names.index(name) != index:
            errors[f"model_providers.{index}.model"] = [f"duplicate model '{name}'"]
    if sum(provider.default for provider in providers) > 1:
        errors["model_providers"] = ["at most one provider may be the default"]
    elif all(provider.is_wildcard for provider in providers):
        errors["model_providers"] = ["at least one concrete model (not '<provider>/*') is "
                                     "needed as the default"]
    for alias, spec in (data.get("model_aliases") or {}).items():
        check(f"model_aliases.{alias}.target", spec["target"])
    routes = [r for r in data.get("routing_preferences") or [] if isinstance(r, RouteConfig)]
    route_names = [route.name for route in routes]
    for index, route in enumerate(routes):
        if route_names.index(route.name) != index:
            errors[f"routing_preferences.{index}.name"] = [f"duplicate route '{route.name}'"]
        for model_index, model in enumerate(route.models):
            check(f"routing_preferences.{index}.models.{model_index}", model)
    routing = data.get("routing")
    if isinstance(routing, RoutingConfig) and routing.model:
        check("routing.model", routing.model,
              "routing model '{}' names no configured model (add it to model_providers)")
    listeners = data.get("listeners")
    if listeners is not None and not any(
            getattr(listener, "type", None) == "model" for listener in listeners):
        errors["listeners"] = ["at least one listener of type 'model' is required"]
    return errors
