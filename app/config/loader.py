"""Loading a configuration: YAML -> ``${VAR}`` expansion -> the schema -> :class:`Config`.

Validation happens once at start-up; a bad file raises :class:`app.errors.ConfigError`
listing every problem as ``dotted.path: message``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from pathlib import Path
from typing import Any, Mapping

import yaml
from marshmallow import ValidationError

from app.config.model import Config
from app.config.plano import migrate
from app.config.schema import ConfigSchema
from app.errors import ConfigError

CONFIG_ENV_VAR = "PLANO_CONFIG"
#: Set by ``config/gunicorn.conf.py`` in each worker: the operator's file, of which the
#: worker loads a validated copy (``PLANO_CONFIG`` then names the copy). For ``GET /status``.
CONFIG_SOURCE_ENV_VAR = "PLANO_CONFIG_SOURCE"

#: ``${VAR}``, ``${VAR:-default}`` and, as Plano writes it, ``$VAR``.
_ENV_PATTERN = re.compile(
    r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def _expand(match: re.Match, env: Mapping[str, str]) -> str:
    name = match.group(1) or match.group(3)
    return env.get(name) or (match.group(2) or "")


def expand_env(value: Any, environ: Mapping[str, str] | None = None) -> Any:
    """Expand ``${VAR}``, ``${VAR:-default}`` and ``$VAR`` in every string of a YAML tree.

    An unset variable without a default expands to the empty string (an empty optional
    value, such as ``access_key``, then counts as absent). A value that is exactly one
    reference and expands to a number-looking string is left as a string; the schema
    converts it.
    """
    env = os.environ if environ is None else environ
    if isinstance(value, str):
        return _ENV_PATTERN.sub(lambda match: _expand(match, env), value)
    if isinstance(value, dict):
        return {key: expand_env(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [expand_env(item, env) for item in value]
    return value


def flatten_errors(messages: Any, prefix: str = "") -> list[str]:
    """``{"a": {"0": {"b": ["bad"]}}}`` -> ``["a.0.b: bad"]`` (marshmallow's error tree)."""
    if isinstance(messages, dict):
        problems = []
        for key, value in messages.items():
            path = f"{prefix}.{key}" if prefix and key != "_schema" else (prefix or str(key))
            if key == "_schema" and not prefix:
                path = "(top level)"
            problems.extend(flatten_errors(value, path))
        return problems
    if isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        return [f"{prefix}: {message}" for message in messages]
    if isinstance(messages, list):
        return [p for item in messages for p in flatten_errors(item, prefix)]
    return [f"{prefix}: {messages}"]


def config_from_dict(raw: Any, *, environ: Mapping[str, str] | None = None,
                     source: str | None = None) -> Config:
    """Validate a parsed YAML tree into a :class:`Config`: ``$VAR`` expansion, then the
    Plano migrations (:mod:`app.config.plano`), then the schema; every problem of both
    steps is reported at once."""
    if not isinstance(raw, dict):
        raise ConfigError(["(top level): must be a mapping"], source)
    migrated, problems, warnings = migrate(expand_env(raw, environ))
    try:
        config = ConfigSchema().load(migrated)
    except ValidationError as error:
        problems = problems + flatten_errors(error.messages)
    if problems:
        raise ConfigError(sorted(problems), source)
    return dataclasses.replace(config, warnings=tuple(warnings), source=source)


def load_config(path: str | os.PathLike | None = None, *,
                environ: Mapping[str, str] | None = None) -> Config:
    """Load the YAML file at ``path``, else ``$PLANO_CONFIG``, else ``config/config.yaml``."""
    env = os.environ if environ is None else environ
    chosen = Path(path or env.get(CONFIG_ENV_VAR) or
                  Path(__file__).resolve().parents[2] / "config" / "config.yaml")
    try:
        text = chosen.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([f"(file): cannot read: {error.strerror}"], str(chosen)) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([f"(yaml): not valid YAML{where}"], str(chosen)) from None
    config = config_from_dict(raw, environ=env, source=str(chosen))
    return dataclasses.replace(config, digest=hashlib.sha256(text.encode("utf-8")).hexdigest())
