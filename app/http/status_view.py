"""What ``GET /status`` shows (SPEC §21), computed from plain values: no Flask, no I/O.

The numbers are those of ``/metrics`` (the Prometheus text, aggregated over the workers in
multiprocess mode), read back with prometheus_client's own parser, so the page and a
Prometheus scrape can never disagree. Series that do not exist (usage and cost before the
gateway records them) are reported as *not measured*, never as zeros. Health marks and
the process facts are the serving worker's own and are labelled so by the template.
"""

from __future__ import annotations

import datetime
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable

from prometheus_client.parser import text_string_to_metric_families

from app.config import Config
from app.pipeline.model_health import HealthMark
from app.session_cache.base import StoredPin

#: Label value of requests that matched no route (as in ``plano_router_decisions_total``).
NO_ROUTE = "other"
#: The token kinds of ``plano_tokens_total`` (SPEC §19), in the page's column order.
TOKEN_KINDS = ("input", "cache_read", "cache_write", "output")
#: Families whose absence means "not measured yet" (usage and cost, SPEC §19).
TOKENS, COST, PROMPT_CACHE = ("plano_tokens", "plano_cost_usd", "plano_prompt_cache_requests")


@dataclass
class MetricSums:
    """The samples of one exposition, summed over the labels the page does not show."""

    families: set[str] = field(default_factory=set)
    #: (sample name, labels, value) of every sample
    samples: list[tuple[str, dict, float]] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> MetricSums:
        """Every sample of a Prometheus text exposition."""
        sums = cls()
        for family in text_string_to_metric_families(text):
            sums.families.add(family.name)
            sums.samples.extend((s.name, s.labels, s.value) for s in family.samples)
        return sums

    def has(self, family: str) -> bool:
        """Whether the exposition names the family (its HELP/TYPE or a sample)."""
        return family in self.families

    def by(self, sample: str, *labels: str) -> dict[tuple, float]:
        """Values of ``sample`` summed by ``labels`` (a missing label is ``""``)."""
        totals: dict[tuple, float] = defaultdict(float)
        for name, sample_labels, value in self.samples:
            if name == sample:
                totals[tuple(sample_labels.get(label, "") for label in labels)] += value
        return dict(totals)


@dataclass(frozen=True)
class Share:
    """``part`` of ``whole``, shown as a percentage with its counts."""

    part: float
    whole: float

    @property
    def percent(self) -> str:
        return "–" if not self.whole else f"{100.0 * self.part / self.whole:.0f} %"

    def __str__(self) -> str:
        return f"{self.percent} ({_count(self.part)} of {_count(self.whole)})"


@dataclass(frozen=True)
class RouteModelRow:
    """One ranked model of a route (or a model seen without a route)."""

    rank: int | None
    model: str
    requests: int
    pinned: Share


@dataclass(frozen=True)
class RouteView:
    name: str
    description: str
    models: list[RouteModelRow]

    @property
    def requests(self) -> int:
        return sum(row.requests for row in self.models)

    @property
    def pinned(self) -> Share:
        return Share(sum(row.pinned.part for row in self.models), self.requests)


@dataclass(frozen=True)
class ModelView:
    """One configured model, over every route."""

    name: str
    health: HealthMark | None
    #: Wall-clock time (UTC) until which the model is skipped, when it is down.
    down_until: str | None
    requests: int
    failovers_from: int
    failovers_to: int
    upstream_calls: int
    upstream_mean_ms: float | None
    #: ``None``: not measured (the series do not exist).
    prompt_cache: Share | None
    tokens: dict[str, int] | None
    cost_usd: float | None


@dataclass(frozen=True)
class SessionsView:
    backend: str
    reachable: bool
    #: ``None``: the backend cannot list pins; else a bounded sample.
    pins: list[StoredPin] | None
    #: Why the sample is missing (the backend failed), else ``None``.
    pins_error: str | None
    limit: int


@dataclass(frozen=True)
class StatusView:
    """Everything the template renders."""

    routes: list[RouteView]
    models: list[ModelView]
    sessions: SessionsView
    #: Pin lookups of the session cache that found a pin (hit of hit + miss).
    session_hits: Share
    #: Requests a model was decided for (``/status``, ``/metrics`` and probes not counted).
    requests: int
    pinned: Share
    failovers: int
    metrics_enabled: bool
    #: Numbers from every worker (multiprocess) or this process only.
    aggregated: bool
    measured: dict[str, bool]
    config_source: str
    #: The validated copy the workers loaded, when it is not the source itself (gunicorn).
    config_copy: str | None
    config_digest: str | None
    config_version: str
    gateway_version: str
    worker: str
    generated_at: str
    refresh_seconds: int

    @property
    def unmeasured(self) -> list[str]:
        """The usage series this gateway does not export (yet), by their sample names."""
        return [f"{family}_total" for family, present in self.measured.items() if not present]


def build_status(config: Config, exposition: str | None, *, aggregated: bool,
                 health: Iterable[HealthMark], sessions: SessionsView, gateway_version: str,
                 worker: str, now: float, refresh_seconds: int = 10,
                 config_source: str | None = None) -> StatusView:
    """The page's content from the config, the ``/metrics`` text (``None``: metrics off),
    this worker's health marks and the session cache's facts; ``now``: wall-clock time;
    ``config_source``: the operator's file when the config was loaded from a copy of it."""
    sums = MetricSums.parse(exposition or "")
    by_route = sums.by("plano_model_requests_total", "route", "model", "pinned")
    routes = [_route_view(route.name, route.description, route.models, by_route)
              for route in config.routing_preferences]
    configured = {route.name for route in config.routing_preferences}
    for extra in sorted({route for route, _, _ in by_route} - configured):
        models = sorted({model for route, model, _ in by_route if route == extra})
        description = ("requests that matched no route" if extra == NO_ROUTE
                       else "routes given in request bodies")
        routes.append(_route_view(extra, description, models, by_route, ranked=False))
    decided = sum(by_route.values())
    pinned = sum(value for (_, _, is_pinned), value in by_route.items() if is_pinned == "true")
    marks = {mark.model: mark for mark in health}
    measured = {name: sums.has(name) for name in (TOKENS, COST, PROMPT_CACHE)}
    models = [_model_view(endpoint.name, marks.get(endpoint.name), sums, by_route, measured,
                          now) for endpoint in config.model_providers]
    failovers = sum(sums.by("plano_failovers_total").values())
    events = sums.by("plano_session_cache_events_total", "backend", "outcome")
    hits = events.get((sessions.backend, "hit"), 0.0)
    lookups = hits + events.get((sessions.backend, "miss"), 0.0)
    return StatusView(
        routes=routes, models=models, sessions=sessions, session_hits=Share(hits, lookups),
        requests=_count(decided), pinned=Share(pinned, decided), failovers=_count(failovers),
        metrics_enabled=exposition is not None, aggregated=aggregated, measured=measured,
        config_source=config_source or config.source or "built in code (no file)",
        config_copy=config.source if config_source and config.source != config_source
        else None, config_digest=config.digest,
        config_version=config.version, gateway_version=gateway_version, worker=worker,
        generated_at=_utc(now), refresh_seconds=refresh_seconds)


def _route_view(name: str, description: str, models: Iterable[str],
                by_route: dict[tuple, float], ranked: bool = True) -> RouteView:
    rows = []
    for rank, model in enumerate(models, start=1):
        served = by_route.get((name, model, "false"), 0.0)
        pinned = by_route.get((name, model, "true"), 0.0)
        rows.append(RouteModelRow(rank if ranked else None, model, _count(served + pinned),
                                  Share(pinned, served + pinned)))
    return RouteView(name, description, rows)


def _model_view(name: str, mark: HealthMark | None, sums: MetricSums,
                by_route: dict[tuple, float], measured: dict[str, bool],
                now: float) -> ModelView:
    requests = sum(value for (_, model, _), value in by_route.items() if model == name)
    failovers_from = sum(value for (model,), value
                         in sums.by("plano_failovers_total", "from_model").items()
                         if model == name)
    failovers_to = sum(value for (model,), value
                       in sums.by("plano_failovers_total", "to_model").items() if model == name)
    calls = sums.by("plano_upstream_duration_seconds_count", "model").get((name,), 0.0)
    seconds = sums.by("plano_upstream_duration_seconds_sum", "model").get((name,), 0.0)
    prompt_cache = None
    if measured[PROMPT_CACHE]:
        outcomes = sums.by("plano_prompt_cache_requests_total", "model", "outcome")
        hits = outcomes.get((name, "hit"), 0.0)
        prompt_cache = Share(hits, hits + outcomes.get((name, "miss"), 0.0))
    tokens = None
    if measured[TOKENS]:
        kinds = sums.by("plano_tokens_total", "model", "kind")
        tokens = {kind: _count(kinds.get((name, kind), 0.0)) for kind in TOKEN_KINDS}
    cost = None
    if measured[COST]:
        cost = sums.by("plano_cost_usd_total", "model").get((name,))
    down_for = mark.down_for_seconds if mark is not None else None
    return ModelView(name=name, health=mark,
                     down_until=None if down_for is None else _utc(now + down_for),
                     requests=_count(requests),
                     failovers_from=_count(failovers_from), failovers_to=_count(failovers_to),
                     upstream_calls=_count(calls),
                     upstream_mean_ms=1000.0 * seconds / calls if calls else None,
                     prompt_cache=prompt_cache, tokens=tokens, cost_usd=cost)


def _utc(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC")


def _count(value: float) -> int:
    """A counter's value as a whole number (counters of events are integral)."""
    return int(round(value))
