"""A streamed answer always releases its upstream: connection closed, span ended, timed."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app import create_app
from tests.support.configs import chat_body
from tests.support.fake_provider import FakeProviderClient


class RecordingProvider(FakeProviderClient):
    """Remembers every upstream response it handed out."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.responses = []

    def post(self, body, **kwargs):
        response = super().post(body, **kwargs)
        self.responses.append(response)
        return response


@pytest.fixture
def span_exporter():
    return InMemorySpanExporter()


@pytest.fixture
def traced_app(config, span_exporter):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    providers = {p.name: RecordingProvider(p.model_id) for p in config.model_providers}
    app = create_app(config, providers=providers, tracer_provider=provider)
    yield app, providers["openai/gpt-4o-mini"]
    provider.shutdown()


def test_stream_discarded_before_iteration_still_releases_its_upstream(traced_app,
                                                                       span_exporter):
    app, upstream = traced_app

    @app.after_request
    def explode(response):  # runs before the gateway's own hook; Flask answers 500
        raise RuntimeError("hook failed")

    response = app.test_client().post("/v1/chat/completions",
                                      json=chat_body(stream=True))
    assert response.status_code == 500
    assert upstream.responses and upstream.responses[0].closed
    assert "chat gpt-4o-mini" in {span.name for span in span_exporter.get_finished_spans()}


def test_stream_closed_by_the_server_releases_once(traced_app, span_exporter):
    app, upstream = traced_app
    response = app.test_client().post("/v1/chat/completions",
                                      json=chat_body(stream=True), buffered=False)
    assert response.status_code == 200
    assert not upstream.responses[0].closed  # still streaming: nothing released early
    next(response.response)
    response.close()  # the client went away mid-stream
    assert upstream.responses[0].closed
    spans = [s for s in span_exporter.get_finished_spans() if s.name == "chat gpt-4o-mini"]
    assert len(spans) == 1
