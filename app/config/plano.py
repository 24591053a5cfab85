"""Plano configs as their users wrote them (SPEC §14): migrations applied before the schema.

Every shape Plano's CLI accepts (``v0.1`` listener maps, ``v0.3.0``, ``v0.4.0``) is turned into
this gateway's shape in memory, the way Plano's CLI does it:

* ``llm_providers`` is the older name of ``model_providers`` (both at once: an error);
* a ``listeners`` map (``egress_traffic``) becomes a list with one model listener;
* ``v0.3.0`` per-provider ``routing_preferences: [{name, description}]`` become top-level
  routes, a route named by several providers getting them all in declaration order (one
  warning);
* ``overrides.llm_routing_model`` and ``routing.llm_provider`` name the routing model;
* keys that are only cosmetic here (a provider's ``name``, ``tracing.trace_arch_internal``,
  a listener map's ``message_format``) are dropped.

``model_metrics_sources: [{type: cost, ...}]`` is accepted and served from the bundled price
table (SPEC §19; one warning says so); other source types are refused.

Keys that configure Plano features this gateway does not have (prompt targets, agents,
filters, endpoints, guards, rate limits, state storage, cost-based routing, ...) are problems
``dotted.path: not supported by this gateway``: never silently ignored.
"""

from __future__ import annotations

import copy
from typing import Any

NOT_SUPPORTED = "not supported by this gateway"

#: Top-level keys of Plano features outside this gateway.
_UNSUPPORTED_TOP_LEVEL = ("agents", "filters", "endpoints", "prompt_targets", "prompt_guards",
                          "ratelimits", "state_storage", "system_prompt", "mode",
                          "functions", "error_target")
_UNSUPPORTED_LISTENER_KEYS = ("router", "agents", "input_filters", "output_filters")
_UNSUPPORTED_TRACING_KEYS = ("opentracing_grpc_endpoint", "span_attributes", "exporters")
_UNSUPPORTED_PROVIDER_KEYS = ("http_host",)
_SUPPORTED_OVERRIDES = ("llm_routing_model",)


def migrate(raw: dict) -> tuple[dict, list[str], list[str]]:
    """``raw`` (env-expanded YAML) in this gateway's shape; also ``problems`` (``path:
    message``) and ``warnings`` (migrations worth telling the operator about)."""
    config = copy.deepcopy(raw)
    problems: list[str] = []
    warnings: list[str] = []
    for key in _UNSUPPORTED_TOP_LEVEL:
        if key in config:
            problems.append(f"{key}: {NOT_SUPPORTED}")
            del config[key]
    _accept_metrics_sources(config, problems, warnings)
    _rename_llm_providers(config, problems)
    _convert_listener_map(config, problems)
    _check_listeners(config, problems)
    _migrate_provider_routes(config, warnings)
    _drop_provider_keys(config, problems)
    _apply_overrides(config, problems)
    _check_section(config, "tracing", _UNSUPPORTED_TRACING_KEYS, problems)
    tracing = config.get("tracing")
    if isinstance(tracing, dict):
        tracing.pop("trace_arch_internal", None)  # Plano's own internal spans: cosmetic here
    return config, problems, warnings


def _accept_metrics_sources(config: dict, problems: list[str], warnings: list[str]) -> None:
    """``model_metrics_sources``: ``type: cost`` sources are served from the bundled
    genai-prices table (their ``provider`` and ``refresh_interval`` are not used: nothing
    is fetched at run time); any other type is not supported."""
    if "model_metrics_sources" not in config:
        return
    sources = config.pop("model_metrics_sources")
    if not isinstance(sources, list):
        problems.append("model_metrics_sources: must be a list")
        return
    cost = 0
    for index, source in enumerate(sources):
        kind = source.get("type") if isinstance(source, dict) else None
        if kind == "cost":
            cost += 1
        else:
            problems.append(f"model_metrics_sources.{index}.type: {kind!r} {NOT_SUPPORTED} "
                            "(only 'cost')")
    if cost:
        warnings.append("model_metrics_sources: model costs are served from the bundled "
                        "genai-prices table (app/usage/price_table.json) and the providers' "
                        "pricing: overrides; nothing is fetched at run time")


def _rename_llm_providers(config: dict, problems: list[str]) -> None:
    if "llm_providers" not in config:
        return
    if "model_providers" in config:
        problems.append("llm_providers: give either llm_providers (the older name) or "
                        "model_providers, not both")
        del config["llm_providers"]
        return
    config["model_providers"] = config.pop("llm_providers")


def _convert_listener_map(config: dict, problems: list[str]) -> None:
    """``listeners: {egress_traffic: {...}}`` (v0.1) -> one model listener."""
    listeners = config.get("listeners")
    if not isinstance(listeners, dict):
        return
    converted = []
    for name, spec in listeners.items():
        if name == "ingress_traffic":
            problems.append(f"listeners.ingress_traffic: {NOT_SUPPORTED} (prompt gateway)")
        elif name == "egress_traffic" and isinstance(spec, dict):
            listener = {key: value for key, value in spec.items() if key != "message_format"}
            converted.append({"name": "egress_traffic", "type": "model", **listener})
        else:
            problems.append(f"listeners.{name}: unknown listener (expected egress_traffic)")
    config["listeners"] = converted or [{"name": "model_listener", "type": "model"}]


def _check_listeners(config: dict, problems: list[str]) -> None:
    listeners = config.get("listeners")
    if not isinstance(listeners, list):
        return
    for index, listener in enumerate(listeners):
        if not isinstance(listener, dict):
            continue
        if listener.get("type") in ("prompt", "agent"):
            problems.append(f"listeners.{index}.type: '{listener['type']}' listeners are "
                            f"{NOT_SUPPORTED}")
            listener["type"] = "model"
        _refuse_keys(listener, _UNSUPPORTED_LISTENER_KEYS, f"listeners.{index}", problems)


def _migrate_provider_routes(config: dict, warnings: list[str]) -> None:
    """v0.3.0 per-provider ``routing_preferences`` -> top-level routes (Plano's CLI rule)."""
    providers = config.get("model_providers")
    if not isinstance(providers, list):
        return
    routes: list[dict] = []
    by_name: dict[Any, dict] = {}
    for provider in providers:
        if not isinstance(provider, dict) or "routing_preferences" not in provider:
            continue
        for preference in provider.pop("routing_preferences") or []:
            if not isinstance(preference, dict):
                continue
            name = preference.get("name")
            route = by_name.get(name)
            if route is None:
                route = {"name": name, "description": preference.get("description"),
                         "models": []}
                by_name[name] = route
                routes.append(route)
            route["models"].append(provider.get("model"))
    if not routes:
        return
    existing = config.get("routing_preferences")
    config["routing_preferences"] = (existing if isinstance(existing, list) else []) + routes
    warnings.append(
        f"model_providers[].routing_preferences (v0.3.0) migrated to {len(routes)} top-level "
        f"routing_preferences ({', '.join(repr(r['name']) for r in routes)}); declare them at "
        "the top level with models: [...] to silence this warning")


def _drop_provider_keys(config: dict, problems: list[str]) -> None:
    providers = config.get("model_providers")
    if not isinstance(providers, list):
        return
    for index, provider in enumerate(providers):
        if not isinstance(provider, dict):
            continue
        _refuse_keys(provider, _UNSUPPORTED_PROVIDER_KEYS, f"model_providers.{index}",
                     problems)


def _apply_overrides(config: dict, problems: list[str]) -> None:
    """``overrides.llm_routing_model`` and ``routing.llm_provider`` -> ``routing.model``."""
    routing = config.get("routing")
    overrides = config.pop("overrides", None)
    names = []
    if isinstance(overrides, dict):
        for key in overrides:
            if key not in _SUPPORTED_OVERRIDES:
                problems.append(f"overrides.{key}: {NOT_SUPPORTED}")
        if overrides.get("llm_routing_model"):
            names.append(overrides["llm_routing_model"])
    elif overrides is not None:
        problems.append("overrides: must be a mapping")
    if isinstance(routing, dict) and routing.get("llm_provider"):
        names.append(routing.pop("llm_provider"))
    if not names:
        return
    if not isinstance(routing, dict):
        routing = config["routing"] = {}
    routing.setdefault("model", names[0])


def _check_section(config: dict, section: str, keys: tuple[str, ...],
                   problems: list[str]) -> None:
    block = config.get(section)
    if isinstance(block, dict):
        _refuse_keys(block, keys, section, problems)


def _refuse_keys(block: dict, keys: tuple[str, ...], path: str,
                 problems: list[str]) -> None:
    """Each of ``keys`` present in ``block`` is a ``path.key: not supported`` problem and is
    removed, so the schema reports only what is left."""
    for key in keys:
        if key in block:
            problems.append(f"{path}.{key}: {NOT_SUPPORTED}")
            del block[key]
