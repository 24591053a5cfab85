"""``bin/serve --check``: validate a configuration and show what it resolves to, like ``nginx -t``.

Prints every model with its interface, the URL the gateway will call and where its key comes
from (an environment variable, the file itself, the client with ``passthrough_auth``, or
none) — never the key; then the aliases, routes, router and session cache. Exit status 0 when
the file is usable, 1 with every problem listed when it is not.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Mapping, TextIO

import yaml

from app.config.loader import CONFIG_ENV_VAR, load_config
from app.config.model import Config, ModelEndpoint
from app.errors import ConfigError

_API_PATHS = {"openai": "/chat/completions", "anthropic": "/messages"}
_SINGLE_REFERENCE = re.compile(r"^\$\{?([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}?$")


def key_sources(path: str, environ: Mapping[str, str]) -> list[str]:
    """Where each provider's key comes from, in file order, read from the unexpanded YAML."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return []
    providers = raw.get("model_providers", raw.get("llm_providers")) or []
    sources = []
    for provider in providers:
        key = provider.get("access_key") if isinstance(provider, dict) else None
        if not key:
            sources.append("none")
            continue
        match = _SINGLE_REFERENCE.match(str(key).strip())
        if match:
            state = "set" if environ.get(match.group(1)) else "NOT SET"
            sources.append(f"env {match.group(1)} ({state})")
        else:
            sources.append("written in the file")
    return sources


def describe(config: Config, sources: list[str]) -> list[str]:
    """The human-readable summary of a valid configuration."""
    lines = ["models:"]
    for index, endpoint in enumerate(config.model_providers):
        source = sources[index] if index < len(sources) else "?"
        if endpoint.passthrough_auth:
            source = "the client's own key (passthrough_auth)"
        default = " (default)" if endpoint is config.default_endpoint else ""
        lines.append(f"  {endpoint.name}{default}")
        lines.append(f"    interface {endpoint.interface}, POST {_url(endpoint)}")
        lines.append(f"    key: {source}, sent as {endpoint.auth}")
    for alias, target in config.model_aliases.items():
        lines.append(f"alias {alias} -> {target}")
    for route in config.routing_preferences:
        lines.append(f"route {route.name!r} -> {', '.join(route.models)}")
    routing = config.routing
    router = (f"LLM router {routing.model}" if routing.model else "embedded router") \
        if config.routing_preferences else "none (no routes)"
    lines.append(f"router: {router}")
    cache = routing.session_cache
    where = "" if cache.type == "memory" else f" ({cache.mode})"
    lines.append(f"session cache: {cache.type}{where}, ttl {routing.session_ttl_seconds}s")
    listener = config.model_listener
    lines.append(f"listener: {listener.address}:{listener.port}, timeout "
                 f"{listener.timeout_seconds:g}s")
    lines.extend(f"warning: {warning}" for warning in config.warnings)
    return lines


def _url(endpoint: ModelEndpoint) -> str:
    if endpoint.is_wildcard:
        return endpoint.url(_API_PATHS[endpoint.interface]).replace("/*/", "/<model id>/") + \
            "  (any model id)"
    return endpoint.url(_API_PATHS[endpoint.interface])


def main(argv: list[str] | None = None, out: TextIO = sys.stdout,
         environ: Mapping[str, str] | None = None) -> int:
    """Check the config at ``--config`` (else ``$PLANO_CONFIG``, else the default)."""
    parser = argparse.ArgumentParser(prog="bin/serve --check")
    parser.add_argument("--config")
    args = parser.parse_args(argv)
    env = os.environ if environ is None else environ
    try:
        config = load_config(args.config, environ=env)
    except ConfigError as error:
        out.write(f"{error}\n")
        return 1
    path = args.config or env.get(CONFIG_ENV_VAR) or "config/config.yaml"
    out.write(f"configuration {path} is valid\n")
    out.write("\n".join(describe(config, key_sources(path, env))) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
