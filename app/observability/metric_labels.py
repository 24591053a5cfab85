"""Metric label values taken from the configuration, never from a client (SPEC §8, §10).

A Prometheus series exists per label set, for ever (and, under gunicorn, as entries in every
worker's multiprocess file), so a label value a client can choose is a way to grow every
scrape without bound. Every label that names a model or a route goes through one of these:

* :func:`served_model_label`: a configured model is labelled by its own name; a model that
  a wildcard entry admitted (``openai/gpt-made-up`` under ``openai/*``) by that wildcard
  entry (``openai/*``); anything else by ``other``.
* :func:`route_label`: a configured route by its name; no route (no match) ``other``; a
  route a request brought in its body (``routing_preferences``) ``request``.

Both are two dictionary lookups on the already-built :class:`~app.config.Config`: cheap
enough to call per event.
"""

from __future__ import annotations

from app.config import Config

#: A model or route the configuration does not name (and no route matched).
OTHER_LABEL = "other"
#: The ``route`` label of every route that came in a request body.
REQUEST_ROUTE_LABEL = "request"


def served_model_label(config: Config, model_name: str | None) -> str:
    """The label value of a served model: its configured entry's name (``openai/*`` for a
    wildcard-admitted model), else ``other``."""
    if model_name is None:
        return OTHER_LABEL
    entry = config.endpoints_by_name.get(model_name)
    if entry is not None:
        return entry.name
    wildcard = config.models.wildcards.get(model_name.partition("/")[0])
    return wildcard.name if wildcard is not None else OTHER_LABEL


def route_label(config: Config, route_name: str | None) -> str:
    """The label value of a route: a configured route's name, ``other`` for no route,
    ``request`` for a route from a request body."""
    if route_name is None:
        return OTHER_LABEL
    return route_name if route_name in config.routes_by_name else REQUEST_ROUTE_LABEL
