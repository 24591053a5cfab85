"""app/observability/trace_export.py: the caching encoder makes exactly the SDK encoder's bytes."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from app.observability.trace_export import AttributeEncoder, CachingOTLPSpanExporter


def finished_spans() -> list:
    """Spans of two scopes with every attribute type, events, links, status and parents."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "plano"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    server_tracer = provider.get_tracer("opentelemetry.instrumentation.flask", "0.66b1")
    own_tracer = provider.get_tracer("plano.gateway", "0.1.0")
    for index in range(3):
        with server_tracer.start_as_current_span(
                "POST /v1/chat/completions", kind=SpanKind.SERVER,
                attributes={"http.method": "POST", "net.host.port": 12000,
                            "net.peer.port": 40000 + index, "plano.pinned": index == 1,
                            "weight": 1.0, "flag": 1, "same": True,
                            "tags": ("a", "b"), "plano.session_id": f"s-{index}"}) as server:
            server.add_event("retry", {"attempt": index})
            link = Link(server.get_span_context(), {"why": "test"})
            with own_tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT,
                                                  links=[link]) as client:
                client.set_attribute("http.response.status_code", 200 + index)
                client.set_status(Status(StatusCode.ERROR, "boom") if index == 2
                                  else Status(StatusCode.OK))
    spans = list(exporter.get_finished_spans())
    provider.shutdown()
    return spans


def test_caching_encoder_produces_the_sdk_encoders_bytes_batch_after_batch():
    spans = finished_spans()
    encoder = AttributeEncoder()
    expected = encode_spans(spans).SerializeToString(deterministic=True)
    for _ in range(3):  # the second and third batches come from the cache
        assert encoder.encode_spans(spans).SerializeToString(deterministic=True) == expected


def test_equal_values_of_different_types_are_not_confused():
    encoder = AttributeEncoder()
    encoded = [encoder.encode({"x": value})[0].value for value in (True, 1, 1.0, "1")]
    assert [value.WhichOneof("value") for value in encoded] == [
        "bool_value", "int_value", "double_value", "string_value"]


def test_cache_is_bounded_and_unhashable_values_are_encoded_afresh():
    encoder = AttributeEncoder(max_entries=8)
    for index in range(100):
        encoder.encode({"plano.session_id": f"s-{index}"})
    assert len(encoder._encoded) <= 8
    (pair,) = encoder.encode({"tags": ["a", "b"]})
    assert [v.string_value for v in pair.value.array_value.values] == ["a", "b"]


def test_exporter_sends_the_encoded_batch(monkeypatch):
    exporter = CachingOTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces")
    sent = []

    class Result:
        success, error, status_code = True, None, 200

    monkeypatch.setattr(exporter._client, "export", lambda data: sent.append(data) or Result)
    spans = finished_spans()
    assert exporter.export(spans).name == "SUCCESS"
    assert sent == [encode_spans(spans).SerializePartialToString()]
    exporter.shutdown()
    assert exporter.export(spans).name == "FAILURE"
