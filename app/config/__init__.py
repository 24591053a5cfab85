"""The gateway's configuration (SPEC §3): load a YAML file into immutable value objects.

The file shape follows Plano v0.4. Unknown keys are errors, so a typo never silently falls
back to a default; every problem is reported at once (:class:`app.errors.ConfigError`).

* :mod:`app.config.model`: the frozen dataclasses the request path reads (with lookups
  precomputed: models by name, alias resolution, the default model);
* :mod:`app.config.schema`: marshmallow schemas and cross-field rules;
* :mod:`app.config.loader`: YAML reading and ``${VAR}`` expansion.
"""

from app.config.loader import CONFIG_ENV_VAR, config_from_dict, expand_env, load_config
from app.config.model import (
                              AdminConfig,
                              AgentSessionsConfig,
                              Config,
                              FailoverConfig,
                              ListenerConfig,
                              ModelEndpoint,
                              PromptCachingConfig,
                              RouteConfig,
                              RoutingBudgetConfig,
                              RoutingConfig,
                              ServerConfig,
                              SessionCacheConfig,
                              TracingConfig,
)

__all__ = ["CONFIG_ENV_VAR", "AdminConfig", "AgentSessionsConfig", "Config", "FailoverConfig",
           "ListenerConfig", "ModelEndpoint", "PromptCachingConfig", "RouteConfig",
           "RoutingBudgetConfig", "RoutingConfig", "ServerConfig", "SessionCacheConfig",
           "TracingConfig", "config_from_dict", "expand_env", "load_config"]
