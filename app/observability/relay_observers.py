"""Listeners on the relay's events: each concern of a provider call in one place.

The relay (:class:`app.pipeline.relay.Relay`) tells its observers, per provider call (a
:class:`Call`): :meth:`RelayObserver.started` (before the request is sent: an observer may
add headers, as tracing adds ``traceparent``), :meth:`~RelayObserver.head` (the status and
headers arrived), :meth:`~RelayObserver.stream_failed` (a stream is not an answer, SPEC
§18), :meth:`~RelayObserver.ended` (the upstream was released: the whole answer read, the
stream's last event relayed, or the call failed; exactly once per call). Metrics and the
provider's client span are observers here; the access line reads what the call left on the
:class:`app.pipeline.relay.Answer`.

Cheap by construction: the observers are a tuple fixed when the relay is built, and a call
with tracing off meets only :class:`MetricsObserver`.
"""

from __future__ import annotations

from typing import Mapping

from app.observability.metrics import Metrics
from app.observability.tracing import ATTR_STREAM, ClientSpan, Tracing


class Call:
    """One provider call, as its observers see it."""

    __slots__ = ("model_name", "stream", "headers", "started", "status", "seconds", "error",
                 "span", "meter")

    def __init__(self, model_name: str, stream: bool, headers: dict, started: float):
        self.model_name = model_name
        self.stream = stream
        #: What goes upstream; observers may add to it in :meth:`RelayObserver.started`.
        self.headers = headers
        self.started = started
        #: The HTTP status, once the head arrived.
        self.status: int | None = None
        #: From sending to the upstream's release, once ended.
        self.seconds: float | None = None
        #: What ended the call as a failure (transport, bad body, a stream cut), if any.
        self.error: Exception | None = None
        #: The provider's client span (tracing on).
        self.span: ClientSpan | None = None
        #: The call's own usage meter (:class:`app.usage.meter.UsageMeter`), if any.
        self.meter = None


class RelayObserver:
    """The events of a provider call; every method is a no-op here."""

    def started(self, call: Call) -> None:
        """Before the request is sent (``call.headers`` may still change)."""

    def head(self, call: Call) -> None:
        """The answer's status (``call.status``) and headers arrived."""

    def stream_failed(self, call: Call, reason: str) -> None:
        """A stream did not end as an answer (``reason``: see
        :mod:`app.pipeline.stream_integrity`)."""

    def ended(self, call: Call) -> None:
        """The upstream was released (``call.seconds`` set; ``call.error`` on failure)."""


class MetricsObserver(RelayObserver):
    """Provider call durations and stream failures, in
    :class:`app.observability.metrics.Metrics`."""

    __slots__ = ("_metrics",)

    def __init__(self, metrics: Metrics):
        self._metrics = metrics

    def stream_failed(self, call: Call, reason: str) -> None:
        self._metrics.upstream_stream_error(call.model_name, reason)

    def ended(self, call: Call) -> None:
        if call.status is not None:  # a call that never got an answer is not timed
            self._metrics.upstream_finished(call.model_name, call.seconds)


class TracingObserver(RelayObserver):
    """Each provider call is a ``chat <model id>`` client span (ended with the stream for a
    stream) whose W3C ``traceparent`` goes to the provider."""

    def __init__(self, tracing: Tracing,
                 span_specs: Mapping[str, tuple[str, dict]] | None = None):
        self._tracing = tracing
        # Span name and static attributes per provider and streaming flag, computed once.
        self._span_specs = {(provider, stream): (name, {**attributes, ATTR_STREAM: stream})
                            for provider, (name, attributes) in (span_specs or {}).items()
                            for stream in (False, True)}

    def started(self, call: Call) -> None:
        name, attributes = (self._span_specs.get((call.model_name, call.stream)) or
                            (f"chat {call.model_name}", {ATTR_STREAM: call.stream}))
        call.span = self._tracing.client_span(name, attributes, call.headers)
        call.headers = call.span.headers

    def ended(self, call: Call) -> None:
        if call.span is not None:
            call.span.end(call.status, call.error)


def create_relay_observers(metrics: Metrics, tracing: Tracing | None = None,
                           span_specs: Mapping[str, tuple[str, dict]] | None = None,
                           ) -> tuple[RelayObserver, ...]:
    """The observers of a worker's relay: metrics always, the client span with tracing."""
    observers: list[RelayObserver] = [MetricsObserver(metrics)]
    if tracing is not None:
        observers.append(TracingObserver(tracing, span_specs))
    return tuple(observers)
