"""OpenTelemetry set-up, and the span and attribute names of the gateway (SPEC §10).

Tracing is on only when an OTLP endpoint is configured (``tracing.otlp_endpoint``, else
``OTEL_EXPORTER_OTLP_ENDPOINT``). Then :func:`create_tracer_provider` builds, in each gunicorn
worker (``create_app`` runs after gevent patched the standard library, never at import
time), a ``TracerProvider`` for service ``plano`` that samples ``random_sampling`` percent of
new traces (``ParentBased(TraceIdRatioBased)``: an incoming ``traceparent`` keeps its own
decision) and exports over OTLP/HTTP from a ``BatchSpanProcessor``, off the request path.
Without an endpoint there is no provider, no :class:`Tracing`, no instrumentation: the
request path does not create a single span object, and neither the SDK nor the Flask
instrumentation is imported.

What a trace shows (the names are the constants below):

* the server span of opentelemetry-instrumentation-flask (``POST /v1/chat/completions``;
  ``create_app`` wires ``FlaskInstrumentor.instrument_app`` with
  :meth:`Tracing.flask_instrumentation_options`), with its standard HTTP attributes and ours:
  ``plano.session_id``, ``plano.pinned`` (bool), ``plano.affinity``, ``plano.route.name``,
  ``llm.model`` and ``llm.model.requested``. A request that matched no route (a 404 scan)
  is named by its method alone (:func:`name_unmatched_span`), never by its raw path, so
  span names stay a bounded set. ``OTEL_PYTHON_FLASK_EXCLUDED_URLS`` (else
  ``OTEL_PYTHON_EXCLUDED_URLS``) lists the URLs not traced; by default ``/healthz`` and
  ``/metrics`` (:data:`DEFAULT_EXCLUDED_URLS`);
* ``routing``, only when the router ran: a pinned request has none, which is how a Jaeger
  user sees the session cache working. It carries ``routing.determination_ms`` and, with the
  LLM router, the client span of the call to the routing model under it;
* ``chat <model id>``, a client span per provider call (for a stream it ends with the
  stream), whose W3C ``traceparent`` is sent to the provider.

What keeps the instrumentation cheap: it is applied to this app only, once per worker
(never ``flask.Flask`` globally); its HTTP metrics go to a no-op meter (Prometheus is ours)
and its SQL commenter is off, both per-request work for nothing here; everything static
(tracers, provider span names and attributes) is prepared once; every annotation checks
``is_recording()`` first, so an unsampled request (``random_sampling`` below 100) sets no
attribute at all; and the exporter reuses the encoded form of repeated attribute values
(:mod:`app.observability.trace_export`), the largest cost of a sampled span.

Outbound calls (urllib3's pool, :mod:`app.providers.openai_compat`) are not instrumented
with opentelemetry-instrumentation-urllib3 or -requests: they patch process-wide (the OTLP
exporter's own session included), so the two client spans above are made here and the trace
context is injected explicitly.
Redis commands get no spans of their own: a span per ``GET`` would add a third of the spans
of a pinned request for a sub-millisecond call. The cache outcome is on the request span
(``plano.affinity``, ``plano.pinned``) and in the metrics.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from app.config import Config, TracingConfig
from app.errors import UpstreamError

if TYPE_CHECKING:  # the SDK is imported only when tracing is configured
    from opentelemetry.sdk.trace import TracerProvider

SERVICE_NAME = "plano"
INSTRUMENTATION_NAME = "plano.gateway"
ENDPOINT_ENV_VAR = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACES_PATH = "/v1/traces"
#: Where the Flask instrumentation reads the URLs it must not trace (comma-separated
#: regular expressions searched in the full URL); the generic variable is its fallback.
EXCLUDED_URLS_ENV_VAR = "OTEL_PYTHON_FLASK_EXCLUDED_URLS"
GENERIC_EXCLUDED_URLS_ENV_VAR = "OTEL_PYTHON_EXCLUDED_URLS"
#: Operator endpoints that would only add noise to the traces (query string or not).
DEFAULT_EXCLUDED_URLS = r"/healthz(\?|$),/metrics(\?|$)"
#: The server span name of a request that matched no route (404 scans, 405): the HTTP
#: method alone, as the HTTP semantic conventions say when there is no low-cardinality route.
UNMATCHED_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"})
UNMATCHED_OTHER_METHOD = "HTTP"

ROUTING_SPAN = "routing"
ATTR_SESSION_ID = "plano.session_id"
ATTR_PINNED = "plano.pinned"
ATTR_AFFINITY = "plano.affinity"
ATTR_ROUTE = "plano.route.name"
ATTR_MODEL = "llm.model"
ATTR_MODEL_REQUESTED = "llm.model.requested"
ATTR_SESSION_IMPLICIT = "plano.session.implicit"
ATTR_SESSION_SOURCE = "plano.session.source"
ATTR_ROUTING_SKIPPED = "plano.routing.skipped"
#: Routing budget (SPEC §20), Plano's attribute names.
ATTR_SWITCH_DECISION = "plano.switch.decision"
ATTR_SWITCH_COST = "plano.switch.cost_in_usd"
ATTR_SWITCH_COUNTERFACTUAL = "plano.switch.counterfactual_route"
ATTR_CACHE_WARM = "plano.cache.warm"
ATTR_ROUTING_MS = "routing.determination_ms"
ATTR_ROUTING_FAILED = "routing.failed"
ATTR_STREAM = "plano.stream"


def traces_endpoint(config: TracingConfig,
                    environ: Mapping[str, str] | None = None) -> str | None:
    """The OTLP/HTTP traces URL, or ``None`` when tracing is off.

    ``tracing.otlp_endpoint`` wins over ``OTEL_EXPORTER_OTLP_ENDPOINT``; both are base URLs
    to which ``/v1/traces`` is appended (unless already there). ``OTEL_SDK_DISABLED=true``
    turns tracing off whatever is configured.
    """
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    base = (config.otlp_endpoint or env.get(ENDPOINT_ENV_VAR) or "").strip()
    if not base:
        return None
    base = base.rstrip("/")
    return base if base.endswith(TRACES_PATH) else base + TRACES_PATH


def excluded_urls(environ: Mapping[str, str] | None = None) -> str:
    """The URLs not traced: ``OTEL_PYTHON_FLASK_EXCLUDED_URLS``, else
    ``OTEL_PYTHON_EXCLUDED_URLS``, else :data:`DEFAULT_EXCLUDED_URLS`.

    Read when the app is built (not when the instrumentation module is first imported, as
    the instrumentation itself would), so each app sees the environment it was built in.
    """
    env = os.environ if environ is None else environ
    for name in (EXCLUDED_URLS_ENV_VAR, GENERIC_EXCLUDED_URLS_ENV_VAR):
        value = env.get(name, "").strip()
        if value:
            return value
    return DEFAULT_EXCLUDED_URLS


def name_unmatched_span(span: Any, method: str) -> None:
    """Rename the server span of a request that matched no route to its method alone.

    The instrumentation would name it ``<method> <raw path>``: one span name per path a
    scanner tries. An unknown method becomes ``HTTP``, so the set of names stays bounded.
    """
    if span.is_recording():
        span.update_name(method if method in UNMATCHED_METHODS else UNMATCHED_OTHER_METHOD)


def create_tracer_provider(config: TracingConfig, *, service_version: str,
                           environ: Mapping[str, str] | None = None) -> TracerProvider | None:
    """A provider exporting to :func:`traces_endpoint`, or ``None`` when there is none.

    Call it in the process that serves (a gunicorn worker, after the fork): the batch
    processor starts its export thread (a greenlet under gevent) right here.
    """
    endpoint = traces_endpoint(config, environ)
    if endpoint is None:
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    from app.observability.trace_export import CachingOTLPSpanExporter

    resource = Resource.create({"service.name": SERVICE_NAME,
                                "service.version": service_version,
                                "service.instance.id": f"{os.uname().nodename}:{os.getpid()}"})
    sampler = ParentBased(TraceIdRatioBased(config.random_sampling / 100.0))
    # shutdown_on_exit=False: the owner (gunicorn's worker_exit hook, or a test) calls
    # Tracing.shutdown(), which flushes what is still queued.
    provider = TracerProvider(resource=resource, sampler=sampler, shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(CachingOTLPSpanExporter(endpoint=endpoint)))
    return provider


class Tracing:
    """The gateway's spans, around one tracer provider; exists only when tracing is on.

    Everything that does not depend on the request (tracers, span names, static attributes)
    is prepared here once.
    """

    def __init__(self, provider: Any, *, service_version: str = ""):
        self.provider = provider
        self._tracer = provider.get_tracer(INSTRUMENTATION_NAME, service_version)
        self._propagator = TraceContextTextMapPropagator()

    def flask_instrumentation_options(self, environ: Mapping[str, str] | None = None
                                      ) -> dict[str, Any]:
        """Keyword arguments for ``FlaskInstrumentor.instrument_app`` (besides the hooks).

        Spans go to this provider (not the global one, so two apps in one process, as in
        the tests, keep their own); the instrumentation's HTTP metrics go to a no-op meter
        and its SQL commenter is off (both per-request work for nothing here).
        """
        from opentelemetry.metrics import NoOpMeterProvider

        return {"tracer_provider": self.provider,
                "excluded_urls": excluded_urls(environ),
                "enable_commenter": False,
                "meter_provider": NoOpMeterProvider()}

    def routing_span(self) -> RoutingSpan:
        """A context manager for one router run; the span is current inside it."""
        return RoutingSpan(self._tracer)

    def client_span(self, name: str, attributes: Mapping[str, Any],
                    headers: Mapping[str, str] | None = None) -> ClientSpan:
        """Start a client span under the current span; its ``headers`` carry its context."""
        return ClientSpan(self._tracer, self._propagator, name, attributes, headers)

    def traced_completion_client(self, client: Any, model_id: str, base_url: str) -> Any:
        """``client`` (with ``complete_json``) whose calls are client spans (routing LLM)."""
        return TracedCompletionClient(self, client, provider_attributes(model_id, base_url))

    @staticmethod
    def annotate_request(*, session_id: str | None, pinned: bool, affinity: str | None,
                         route: str | None, model: str, requested: str | None,
                         implicit_session: bool = False,
                         routing_skipped: bool | None = None,
                         session_source: str | None = None) -> None:
        """Set the decision attributes on the current server span.

        ``implicit_session``: ``session_id`` was derived from the conversation (SPEC §16);
        ``session_source``: where the request's session id came from (``header``,
        ``agent``, ``implicit``; SPEC §18), set whenever the answer names one;
        ``routing_skipped`` (``None``: turn-level routing is off): whether a continuation
        reused its turn's model instead of calling the router.
        """
        span = trace.get_current_span()
        if not span.is_recording():
            return
        attributes: dict[str, Any] = {ATTR_PINNED: pinned, ATTR_MODEL: model}
        if session_id is not None:
            attributes[ATTR_SESSION_ID] = session_id
        if affinity is not None:
            attributes[ATTR_AFFINITY] = affinity
        if route is not None:
            attributes[ATTR_ROUTE] = route
        if requested is not None:
            attributes[ATTR_MODEL_REQUESTED] = requested
        if implicit_session:
            attributes[ATTR_SESSION_IMPLICIT] = True
        if routing_skipped is not None:
            attributes[ATTR_ROUTING_SKIPPED] = routing_skipped
        if session_source is not None:
            attributes[ATTR_SESSION_SOURCE] = session_source
        span.set_attributes(attributes)

    @staticmethod
    def annotate_switch(verdict: Any) -> None:
        """Set the routing budget's judgement (an :class:`app.affinity.budget.Verdict`) on
        the current server span: warmth, and for a judged turn its decision, the switch
        cost when priced and, with ``record_counterfactual``, the model a retained switch
        would have taken."""
        span = trace.get_current_span()
        if not span.is_recording():
            return
        attributes: dict[str, Any] = {ATTR_CACHE_WARM: verdict.warm}
        if verdict.decision is not None:
            attributes[ATTR_SWITCH_DECISION] = verdict.decision
        if verdict.cost_usd is not None:
            attributes[ATTR_SWITCH_COST] = verdict.cost_usd
        if verdict.counterfactual is not None:
            attributes[ATTR_SWITCH_COUNTERFACTUAL] = verdict.counterfactual
        span.set_attributes(attributes)

    @staticmethod
    def current_trace_id() -> str | None:
        """The current trace id as 32 hex digits, or ``None`` outside a trace."""
        span_context = trace.get_current_span().get_span_context()
        return format(span_context.trace_id, "032x") if span_context.is_valid else None

    def shutdown(self) -> None:
        """Flush queued spans and stop the exporter (once, at worker exit)."""
        self.provider.shutdown()


def provider_attributes(model_id: str, base_url: str) -> dict[str, Any]:
    """Static attributes of a call to one provider (GenAI and HTTP semantic conventions)."""
    parts = urlsplit(base_url)
    attributes: dict[str, Any] = {"gen_ai.operation.name": "chat",
                                  "gen_ai.request.model": model_id,
                                  "http.request.method": "POST"}
    if parts.hostname:
        attributes["server.address"] = parts.hostname
        attributes["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
    return attributes


def provider_span_specs(config: Config) -> dict[str, tuple[str, dict[str, Any]]]:
    """Per configured provider name: its client span name and static attributes."""
    specs = {}
    for provider in config.model_providers:
        attributes = provider_attributes(provider.model_id, provider.base_url)
        attributes["gen_ai.provider.name"] = provider.vendor
        attributes[ATTR_MODEL] = provider.name
        specs[provider.name] = (f"chat {provider.model_id}", attributes)
    return specs


class RoutingSpan:
    """The ``routing`` span, current while the router runs; times the determination.

    ``__enter__`` returns this object so the caller can report the outcome
    (:meth:`outcome`); an exception leaving the block marks the span as an error.
    """

    __slots__ = ("_tracer", "_span", "_token", "_started")

    def __init__(self, tracer):
        self._tracer = tracer

    def __enter__(self) -> RoutingSpan:
        self._span = self._tracer.start_span(ROUTING_SPAN, kind=SpanKind.INTERNAL)
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        self._started = time.perf_counter()
        return self

    def outcome(self, route: str | None, error: Exception | None = None) -> None:
        """The route chosen (``None``: no match) or the error that made routing fail."""
        if route is not None:
            self._span.set_attribute(ATTR_ROUTE, route)
        if error is not None:
            self._span.set_attribute(ATTR_ROUTING_FAILED, True)
            self._span.set_status(Status(StatusCode.ERROR, type(error).__name__))

    def __exit__(self, exc_type, exc, tb) -> None:
        elapsed_ms = (time.perf_counter() - self._started) * 1000.0
        otel_context.detach(self._token)
        self._span.set_attribute(ATTR_ROUTING_MS, round(elapsed_ms, 3))
        if exc is not None:
            self._span.record_exception(exc)
            self._span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        self._span.end()


class ClientSpan:
    """One outbound HTTP call as a client span; ``headers`` are the ones to send.

    Started as a child of the current span; :meth:`end` is called exactly once, with the
    HTTP status received or the error that ended the call (for a stream: at its end).
    """

    __slots__ = ("_span", "headers", "_ended")

    def __init__(self, tracer, propagator, name: str, attributes: Mapping[str, Any],
                 headers: Mapping[str, str] | None):
        self._span = tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
        carrier = dict(headers) if headers else {}
        propagator.inject(carrier, context=trace.set_span_in_context(self._span))
        self.headers = carrier
        self._ended = False

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Add attributes before the span ends (usage, SPEC §19)."""
        if not self._ended:
            self._span.set_attributes(attributes)

    def end(self, status_code: int | None = None, error: Exception | None = None) -> None:
        """Finish the span: an HTTP status of 400 or more, or ``error``, marks a failure.

        Only the first call counts (a failure found after the answer arrived, such as a
        body that is not JSON, is reported by whoever sees it first).
        """
        if self._ended:
            return
        self._ended = True
        span = self._span
        if status_code is not None:
            span.set_attribute("http.response.status_code", status_code)
            if status_code >= 400:
                span.set_attribute("error.type", str(status_code))
                span.set_status(Status(StatusCode.ERROR))
        if error is not None:
            span.set_attribute("error.type", getattr(error, "code", None) or
                               type(error).__name__)
            span.set_status(Status(StatusCode.ERROR, str(error)[:200]))
        span.end()


class TracedCompletionClient:
    """Wraps the routing model's client: each ``complete_json`` call is a client span."""

    def __init__(self, tracing: Tracing, client: Any, attributes: Mapping[str, Any]):
        self._tracing = tracing
        self._client = client
        self._attributes = dict(attributes)
        self._name = f"chat {attributes['gen_ai.request.model']}"

    def complete_json(self, payload: dict, *, timeout: float,
                      headers: Mapping[str, str] | None = None) -> dict:
        """The wrapped call, with the span's ``traceparent`` added to ``headers``."""
        span = self._tracing.client_span(self._name, self._attributes, headers)
        error = None
        try:
            return self._client.complete_json(payload, timeout=timeout, headers=span.headers)
        except UpstreamError as failure:
            error = failure
            raise
        finally:
            span.end(error=error)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)
