"""What the gateway reports about itself: the :class:`Metrics` seam and its no-op default.

The request path calls these methods; :mod:`app.observability.prometheus_metrics`
implements them with prometheus_client. Tests and embedders that do not want metrics get
:class:`Metrics`, whose methods do nothing.
"""

from __future__ import annotations


class Metrics:
    """Recorder of gateway events; every method is a no-op here."""

    def session_cache_event(self, backend: str, outcome: str) -> None:
        """One session-cache outcome: hit, miss, store, conflict, error, store_error,
        invalid or skipped."""

    def router_decision(self, route: str | None, model: str, fallback: bool,
                        seconds: float) -> None:
        """One router run: the route chosen (``None``: no match), the model it gave, whether
        the fallback model was used because routing failed, and how long it took."""

    def router_skip(self, route: str | None, model: str) -> None:
        """One request served without calling the router: turn-level routing reused the
        model (and route) recorded for the session's current turn."""

    def agent_session_ignored(self, header: str, reason: str) -> None:
        """An agent session header (``routing.agent_sessions.headers``) whose value could
        not name a session was ignored (SPEC §18); ``reason``: empty, too_long,
        not_printable or reserved_prefix."""

    def switch_decision(self, decision: str, reason: str) -> None:
        """One routing-budget judgement of a warm session's user turn (SPEC §20):
        ``allowed`` / ``retained`` and why (``same_anchor``, ``free``, ``within_cap``,
        ``over_cap``, ``no_pricing``)."""

    def request_finished(self, endpoint: str, status: int, pinned: bool) -> None:
        """One answered request."""

    def model_request(self, route: str | None, model: str, pinned: bool) -> None:
        """One answered request that a model was decided for: its route (``None``: no
        match), the model that served it (the fallback's name after a failover) and whether
        the session's pin chose it. What the status page and the dashboard show per route."""

    def upstream_finished(self, model: str, seconds: float) -> None:
        """One provider call, from sending to the last byte received."""

    def upstream_stream_error(self, model: str, reason: str) -> None:
        """One upstream stream that did not end as an answer (SPEC §18): ``reason`` is
        incomplete, error_event, finish_reason_error or broken."""

    def admin_request(self, action: str, status: int) -> None:
        """One admin API call."""

    def failover(self, from_model: str, to_model: str, reason: str) -> None:
        """A request moved from ``from_model`` (failed or skipped as down) to ``to_model``
        of its route (SPEC §15); ``reason``: connection, timeout, stream, http_<status>,
        retry_after or down."""

    def usage(self, model: str, tokens: tuple[int, int, int, int], cost_usd: float,
              cache_hits: int, cache_misses: int) -> None:
        """Answers' usage (SPEC §19), added up: ``tokens`` = (input, cache_read,
        cache_write, output), the USD cost of those with a price (0: none had one), and how
        many answers read from the provider's prompt cache (hits) and how many did not."""

    def exposition(self) -> tuple[bytes, str] | None:
        """The ``/metrics`` body and its content type; ``None``: nothing to expose."""
        return None
