"""The router contract (SPEC §5): pick a route for a conversation.

A router only names a route; the gateway turns the route into a model (the route's first
model) or, on no match, into the fallback model. Routers never raise anything but
:class:`RouterError`; the gateway treats that as "serve the fallback, do not pin".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Mapping, Sequence

from app.config import RouteConfig


class RouterError(Exception):
    """The router could not decide (timeout, HTTP error, unparseable answer)."""


class Router(ABC):
    """Chooses one of the configured routes for a conversation, or none."""

    #: Short name for logs and metrics (``embedded``, ``llm``).
    kind: str = "unknown"

    @abstractmethod
    def select_route(self, messages: Sequence[Mapping],
                     headers: Mapping[str, str] | None = None) -> RouteConfig | None:
        """The matching route, or ``None`` for "no match"; raises :class:`RouterError`.

        ``messages`` are the request's chat messages as parsed from JSON (dicts with at
        least a string ``role``; ``content`` may be a string, a list of parts or absent).
        ``headers`` are extra headers for an outbound call (trace context), if any.
        """
