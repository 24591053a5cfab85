"""Tracing (SPEC §10), asserted on finished spans in an in-memory exporter.

A routed request has a ``routing`` span, a pinned one has none; the request span carries
the decision; each provider call is a client span whose ``traceparent`` the provider gets;
without an endpoint nothing is traced at all.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import Span, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util.http import parse_excluded_urls

from app import create_app
from app.config import TracingConfig, config_from_dict
from app.errors import ConfigError
from app.observability.tracing import (
    DEFAULT_EXCLUDED_URLS,
    ROUTING_SPAN,
    Tracing,
    create_tracer_provider,
    excluded_urls,
    traces_endpoint,
)
from app.services import services_of
from tests.support.configs import DEEP_PROMPT, FAST_PROMPT, chat_body, make_config_dict
from tests.support.fake_provider import fake_providers

ROOT = Path(__file__).resolve().parents[2]
CHAT = "/v1/chat/completions"
ROUTING_ONLY = "/routing/v1/chat/completions"
SERVER_SPAN = f"POST {CHAT}"
INCOMING_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING_TRACEPARENT = f"00-{INCOMING_TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture
def span_exporter():
    """Finished spans of the app under test."""
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(span_exporter):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def providers(config):
    return fake_providers(config)


@pytest.fixture
def traced_client(config, providers, tracer_provider):
    return create_app(config, providers=providers, tracer_provider=tracer_provider).test_client()


def post(client, body, session=None, path=CHAT, **headers):
    if session is not None:
        headers["X-Model-Affinity"] = session
    response = client.post(path, json=body, headers=headers)
    response.close()
    return response


def spans_by_name(exporter) -> dict:
    spans = {}
    for span in exporter.get_finished_spans():
        spans.setdefault(span.name, []).append(span)
    return spans


def test_routed_request_has_a_routing_span_and_a_pinned_one_has_none(traced_client,
                                                                      span_exporter):
    assert post(traced_client, chat_body(DEEP_PROMPT), "s-1").status_code == 200
    first = spans_by_name(span_exporter)
    assert set(first) == {SERVER_SPAN, ROUTING_SPAN, "chat gpt-5.2"}
    routing = first[ROUTING_SPAN][0]
    server = first[SERVER_SPAN][0]
    assert routing.parent.span_id == server.context.span_id
    assert routing.attributes["plano.route.name"] == "deep_reasoning"
    assert routing.attributes["routing.determination_ms"] >= 0

    span_exporter.clear()
    assert post(traced_client, chat_body(FAST_PROMPT), "s-1").headers["x-plano-pinned"] == "true"
    assert set(spans_by_name(span_exporter)) == {SERVER_SPAN, "chat gpt-5.2"}


def test_request_span_carries_the_decision(traced_client, span_exporter):
    post(traced_client, chat_body(DEEP_PROMPT, model="fast-model"), "s-2")
    post(traced_client, chat_body(FAST_PROMPT), "s-2")
    miss, hit = spans_by_name(span_exporter)[SERVER_SPAN]
    assert miss.kind == SpanKind.SERVER
    assert miss.attributes["plano.session_id"] == "s-2"
    assert miss.attributes["plano.pinned"] is False
    assert miss.attributes["plano.affinity"] == "new"
    assert miss.attributes["plano.route.name"] == "deep_reasoning"
    assert miss.attributes["llm.model"] == "openai/gpt-5.2"
    assert miss.attributes["llm.model.requested"] == "fast-model"
    assert hit.attributes["plano.pinned"] is True
    assert hit.attributes["plano.affinity"] == "pinned"
    assert hit.attributes["plano.route.name"] == "deep_reasoning"
    assert "llm.model.requested" not in hit.attributes


def test_request_without_session_has_no_session_attribute(traced_client, span_exporter):
    post(traced_client, chat_body(FAST_PROMPT))
    server = spans_by_name(span_exporter)[SERVER_SPAN][0]
    assert "plano.session_id" not in server.attributes
    assert server.attributes["plano.pinned"] is False
    assert ROUTING_SPAN in spans_by_name(span_exporter)


def test_provider_gets_the_traceparent_of_its_client_span(traced_client, providers,
                                                          span_exporter):
    post(traced_client, chat_body(FAST_PROMPT), traceparent=INCOMING_TRACEPARENT)
    spans = spans_by_name(span_exporter)
    upstream = spans["chat gpt-4o-mini"][0]
    server = spans[SERVER_SPAN][0]
    assert upstream.kind == SpanKind.CLIENT
    assert upstream.parent.span_id == server.context.span_id
    assert format(server.context.trace_id, "032x") == INCOMING_TRACE_ID
    assert upstream.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert upstream.attributes["http.response.status_code"] == 200
    sent = providers["openai/gpt-4o-mini"].sent[-1]["headers"]
    assert sent["traceparent"].split("-")[1:3] == [
        INCOMING_TRACE_ID, format(upstream.context.span_id, "016x")]


def test_stream_client_span_ends_with_the_stream(traced_client, span_exporter):
    response = traced_client.post(CHAT, json=chat_body(FAST_PROMPT, stream=True))
    assert "chat gpt-4o-mini" not in spans_by_name(span_exporter)
    assert b"[DONE]" in response.get_data()
    response.close()
    upstream = spans_by_name(span_exporter)["chat gpt-4o-mini"][0]
    assert upstream.attributes["plano.stream"] is True
    assert upstream.status.status_code != StatusCode.ERROR


def test_provider_failure_marks_the_client_span(config, tracer_provider, span_exporter):
    providers = fake_providers(config, fail=True)
    client = create_app(config, providers=providers,
                        tracer_provider=tracer_provider).test_client()
    assert post(client, chat_body(FAST_PROMPT)).status_code == 502
    upstream = spans_by_name(span_exporter)["chat gpt-4o-mini"][0]
    assert upstream.status.status_code == StatusCode.ERROR
    assert upstream.attributes["error.type"] == "upstream_unreachable"


def llm_router_app(tracer_provider, **client_options):
    config = config_from_dict(make_config_dict(routing={"model": "openai/gpt-4o-mini"}))
    providers = fake_providers(config, **client_options)
    return create_app(config, providers=providers, tracer_provider=tracer_provider), providers


def test_llm_router_call_is_a_client_span_under_routing(tracer_provider, span_exporter):
    app, providers = llm_router_app(tracer_provider, route="deep_reasoning")
    answer = post(app.test_client(), chat_body(DEEP_PROMPT), "s-3", path=ROUTING_ONLY)
    assert answer.json["route"] == "deep_reasoning"
    spans = spans_by_name(span_exporter)
    routing = spans[ROUTING_SPAN][0]
    call = spans["chat gpt-4o-mini"][0]
    assert call.kind == SpanKind.CLIENT
    assert call.parent.span_id == routing.context.span_id
    sent = providers["openai/gpt-4o-mini"].sent[-1]["headers"]["traceparent"]
    assert sent.split("-")[2] == format(call.context.span_id, "016x")
    assert answer.json["trace_id"] == format(routing.context.trace_id, "032x")


def test_router_failure_marks_the_routing_span(tracer_provider, span_exporter):
    app, _ = llm_router_app(tracer_provider, fail=True)
    answer = post(app.test_client(), chat_body(DEEP_PROMPT), "s-4", path=ROUTING_ONLY)
    assert answer.headers["x-plano-affinity"] == "unavailable"
    routing = spans_by_name(span_exporter)[ROUTING_SPAN][0]
    assert routing.status.status_code == StatusCode.ERROR
    assert routing.attributes["routing.failed"] is True
    assert spans_by_name(span_exporter)["chat gpt-4o-mini"][0].status.status_code == \
        StatusCode.ERROR


def test_routing_only_answers_with_the_incoming_trace_id(traced_client):
    answer = post(traced_client, chat_body(), path=ROUTING_ONLY,
                  traceparent=INCOMING_TRACEPARENT)
    assert answer.json["trace_id"] == INCOMING_TRACE_ID


def test_health_and_metrics_are_not_traced(traced_client, span_exporter):
    assert traced_client.get("/healthz").status_code == 200
    assert traced_client.get("/metrics").status_code == 200
    assert span_exporter.get_finished_spans() == ()


def test_two_apps_trace_into_their_own_providers(config, span_exporter, traced_client):
    other_exporter = InMemorySpanExporter()
    other_provider = TracerProvider()
    other_provider.add_span_processor(SimpleSpanProcessor(other_exporter))
    other = create_app(config, providers=fake_providers(config),
                       tracer_provider=other_provider).test_client()
    post(other, chat_body())
    assert span_exporter.get_finished_spans() == ()
    assert SERVER_SPAN in spans_by_name(other_exporter)
    post(traced_client, chat_body())
    assert len(spans_by_name(other_exporter)[SERVER_SPAN]) == 1
    other_provider.shutdown()


class _SpanCounter:
    """Counts every span object constructed, recording or not."""

    def __init__(self, monkeypatch):
        self.created = 0
        for cls in (trace.NonRecordingSpan, Span):
            original = cls.__init__

            def counting(span, *args, _original=original, **kwargs):
                self.created += 1
                _original(span, *args, **kwargs)
            monkeypatch.setattr(cls, "__init__", counting)


def test_without_an_endpoint_nothing_is_traced(config, providers, monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    app = create_app(config, providers=providers)
    assert services_of(app).tracing is None
    assert not _has_server_spans(app)
    counter = _SpanCounter(monkeypatch)
    client = app.test_client()
    post(client, chat_body(DEEP_PROMPT), "s-5")
    post(client, chat_body(FAST_PROMPT), "s-5")
    post(client, chat_body(FAST_PROMPT, stream=True))
    assert counter.created == 0
    assert all("traceparent" not in call["headers"]
               for client_ in providers.values() for call in client_.sent)


def test_endpoint_from_config_wins_over_the_environment():
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4318"}
    assert traces_endpoint(TracingConfig(otlp_endpoint="http://jaeger:4318/"), env) == \
        "http://jaeger:4318/v1/traces"
    assert traces_endpoint(TracingConfig(), env) == "http://env:4318/v1/traces"
    assert traces_endpoint(TracingConfig(otlp_endpoint="http://c:4318/v1/traces"), {}) == \
        "http://c:4318/v1/traces"
    assert traces_endpoint(TracingConfig(), {}) is None
    assert traces_endpoint(TracingConfig(otlp_endpoint="http://c:4318"),
                           {"OTEL_SDK_DISABLED": "true"}) is None


def test_provider_from_config_samples_and_names_the_service():
    assert create_tracer_provider(TracingConfig(), service_version="1", environ={}) is None
    provider = create_tracer_provider(
        TracingConfig(random_sampling=25, otlp_endpoint="http://127.0.0.1:9"),
        service_version="1.2.3", environ={})
    try:
        assert provider.resource.attributes["service.name"] == "plano"
        assert provider.resource.attributes["service.version"] == "1.2.3"
        assert "TraceIdRatioBased{0.25}" in provider.sampler.get_description()
        assert provider.sampler.get_description().startswith("ParentBased")
    finally:
        provider.shutdown()


def test_unsampled_traces_still_propagate_context(config, providers, span_exporter):
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    client = create_app(config, providers=providers, tracer_provider=provider).test_client()
    post(client, chat_body(FAST_PROMPT))
    assert span_exporter.get_finished_spans() == ()
    traceparent = providers["openai/gpt-4o-mini"].sent[-1]["headers"]["traceparent"]
    assert int(traceparent.rsplit("-", 1)[1], 16) & 0x01 == 0  # not sampled
    provider.shutdown()


def _has_server_spans(app) -> bool:
    return getattr(app, "_is_instrumented_by_opentelemetry", False)


def test_incoming_traceparent_is_the_parent_of_the_server_span():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    config = config_from_dict(make_config_dict())
    app = create_app(config, providers=fake_providers(config), tracer_provider=provider)
    app.test_client().post(CHAT, json=chat_body(FAST_PROMPT), headers={
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    (server,) = [s for s in exporter.get_finished_spans() if s.name == SERVER_SPAN]
    assert format(server.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert format(server.parent.span_id, "016x") == "b7ad6b7169203331"
    assert server.attributes["http.status_code"] == 200
    assert server.attributes["http.route"] == CHAT


def test_tracing_wraps_no_app_it_was_not_asked_to(config, providers, tracer_provider):
    traced = create_app(config, providers=providers, tracer_provider=tracer_provider)
    plain = create_app(config, providers=providers, tracer_provider=None)
    assert _has_server_spans(traced)
    assert not _has_server_spans(plain)
    assert isinstance(services_of(traced).tracing, Tracing)


def test_endpoint_must_be_an_http_url():
    with pytest.raises(ConfigError) as error:
        config_from_dict(make_config_dict(tracing={"otlp_endpoint": "grpc://collector:4317"}))
    assert any(problem.startswith("tracing.otlp_endpoint:") for problem in error.value.problems)


@pytest.mark.parametrize("path, body", [
    ("/v1/messages", {"max_tokens": 5, "messages": [{"role": "user", "content": DEEP_PROMPT}]}),
    ("/v1/responses", {"input": DEEP_PROMPT}),
])
def test_messages_and_responses_are_traced_like_chat(traced_client, providers, span_exporter,
                                                     path, body):
    """SPEC §12: the same request span attributes, routing span and provider client span
    (whose traceparent goes upstream) on every client API."""
    response = post(traced_client, body, "s-api", path=path)
    assert response.status_code == 200, response.get_data()
    spans = spans_by_name(span_exporter)
    server = spans[f"POST {path}"][0]
    assert server.attributes["plano.session_id"] == "s-api"
    assert server.attributes["llm.model"] == "openai/gpt-5.2"
    assert ROUTING_SPAN in spans
    upstream = spans["chat gpt-5.2"][0]
    assert upstream.parent.span_id == server.context.span_id
    sent = providers["openai/gpt-5.2"].sent[-1]
    assert sent["headers"]["traceparent"].split("-")[2] == format(upstream.context.span_id,
                                                                  "016x")
    assert sent["path"] == ("/responses" if path == "/v1/responses" else "/chat/completions")


def test_unmatched_routes_get_a_fixed_span_name_not_the_raw_path(traced_client,
                                                                 span_exporter):
    assert traced_client.get("/wp-admin/setup-config.php?step=1").status_code == 404
    assert traced_client.post("/.env/x/../y", data=b"{}").status_code == 404
    assert traced_client.open("/cgi-bin/scan", method="PROPFIND").status_code == 404
    assert traced_client.get(CHAT).status_code == 405
    names = [span.name for span in span_exporter.get_finished_spans()]
    assert names == ["GET", "POST", "HTTP", "GET"]
    assert all(span.kind == SpanKind.SERVER for span in span_exporter.get_finished_spans())


def test_server_span_is_the_flask_instrumentations_with_its_http_attributes(
        traced_client, span_exporter):
    post(traced_client, chat_body(FAST_PROMPT), "s-6")
    server = spans_by_name(span_exporter)[SERVER_SPAN][0]
    assert server.instrumentation_scope.name == "opentelemetry.instrumentation.flask"
    assert server.attributes["http.method"] == "POST"
    assert server.attributes["http.route"] == CHAT
    assert server.attributes["http.status_code"] == 200
    assert server.attributes["plano.session_id"] == "s-6"


def test_flask_excluded_urls_environment_variable_is_honoured(config, providers,
                                                              tracer_provider, span_exporter,
                                                              monkeypatch):
    monkeypatch.setenv("OTEL_PYTHON_FLASK_EXCLUDED_URLS", "/routing/")
    client = create_app(config, providers=providers,
                        tracer_provider=tracer_provider).test_client()
    post(client, chat_body(), path=ROUTING_ONLY)
    assert [span.name for span in span_exporter.get_finished_spans()] == [ROUTING_SPAN]
    span_exporter.clear()
    assert client.get("/healthz?probe=1").status_code == 200
    assert [span.name for span in span_exporter.get_finished_spans()] == ["GET /healthz"]


def test_excluded_urls_default_to_health_and_metrics_with_or_without_a_query():
    assert excluded_urls({}) == DEFAULT_EXCLUDED_URLS
    assert excluded_urls({"OTEL_PYTHON_EXCLUDED_URLS": "a,b"}) == "a,b"
    assert excluded_urls({"OTEL_PYTHON_EXCLUDED_URLS": "a",
                          "OTEL_PYTHON_FLASK_EXCLUDED_URLS": "f"}) == "f"
    rules = parse_excluded_urls(DEFAULT_EXCLUDED_URLS)
    assert rules.url_disabled("http://h:1/healthz")
    assert rules.url_disabled("http://h:1/metrics?name=x")
    assert not rules.url_disabled("http://h:1/v1/chat/completions")
    assert not rules.url_disabled("http://h:1/healthz-and-more")


def test_unsampled_request_sets_no_attribute(config, providers, monkeypatch):
    provider = TracerProvider(sampler=ALWAYS_OFF)
    client = create_app(config, providers=providers, tracer_provider=provider).test_client()
    calls = []
    monkeypatch.setattr(trace.NonRecordingSpan, "set_attributes",
                        lambda span, attributes: calls.append(attributes))
    monkeypatch.setattr(trace.NonRecordingSpan, "update_name",
                        lambda span, name: calls.append(name))
    post(client, chat_body(FAST_PROMPT), "s-7")
    assert client.get("/no/such/path").status_code == 404
    assert calls == []
    provider.shutdown()


def test_tracing_off_imports_neither_the_sdk_nor_the_instrumentation():
    """In a fresh interpreter: an app without an endpoint, serving a request."""
    code = (
        "import sys\n"
        "from app import create_app\n"
        "from app.config import config_from_dict\n"
        "from tests.support.configs import make_config_dict, chat_body\n"
        "from tests.support.fake_provider import fake_providers\n"
        "config = config_from_dict(make_config_dict())\n"
        "app = create_app(config, providers=fake_providers(config))\n"
        "assert app.test_client().post('/v1/chat/completions', json=chat_body())"
        ".status_code == 200\n"
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk',"
        " 'opentelemetry.instrumentation'))))\n")
    env = {key: value for key, value in os.environ.items()
           if key != "OTEL_EXPORTER_OTLP_ENDPOINT"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
