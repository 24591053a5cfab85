"""The bare reference for ``bin/bench``: Flask + gunicorn + gevent + a pooled requests.Session.

It forwards each chat-completions body unchanged to the mock (``BENCH_UPSTREAM``) and returns
the answer: no validation, routing, sessions or rewriting. Run under gunicorn with the
gateway's worker class and count, it is the least this stack can cost per request, the
ceiling the gateway is compared with. Bench-only; never part of the product.
"""

import os

import requests
from flask import Flask, Response, request
from requests.adapters import HTTPAdapter

UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:18080/v1/chat/completions")
TIMEOUT = (5.0, 30.0)

app = Flask(__name__)
# The same pooling as the gateway's provider client: one host, one kept connection per
# concurrent request of the worker (worker_connections).
session = requests.Session()
session.trust_env = False
session.mount("http://", HTTPAdapter(
    pool_connections=1, pool_maxsize=int(os.environ.get("PLANO_WORKER_CONNECTIONS", "1000")),
    max_retries=0))


#: With tracing: the client span of the upstream call, as the gateway makes for its
#: provider call (name, attributes, W3C context sent upstream); ``None`` without tracing.
_tracing = None
#: The bench body's model, as the gateway's provider span names it (see below).
_UPSTREAM_MODEL = ("openai", "gpt-4o-mini")
_UPSTREAM_SPAN: tuple = ()


@app.post("/v1/chat/completions")
def chat_completions():
    """Forward the body, return the upstream's status, type and body (streamed through as
    it arrives when the compact JSON body asks for a stream)."""
    data = request.get_data()
    streaming = b'"stream":true' in data
    headers = {"Content-Type": "application/json"}
    span = None
    if _tracing is not None:
        span = _tracing.client_span(*_UPSTREAM_SPAN, headers)
        headers = span.headers
    upstream = session.post(UPSTREAM, data=data, timeout=TIMEOUT, stream=streaming,
                            headers=headers)
    content_type = upstream.headers.get("Content-Type", "application/json")
    if streaming:
        response = Response(upstream.iter_content(None), status=upstream.status_code,
                            content_type=content_type)
        response.call_on_close(upstream.close)
        if span is not None:
            response.call_on_close(lambda: span.end(upstream.status_code))
        return response
    body = upstream.content
    if span is not None:
        span.end(upstream.status_code)
    return Response(body, status=upstream.status_code, content_type=content_type)


@app.get("/healthz")
def healthz():
    """Readiness for the bench."""
    return {"status": "ok"}


def _instrument_like_the_gateway(flask_app: Flask) -> None:
    """With ``BENCH_OTLP_ENDPOINT``: the gateway's tracing set-up, nothing more.

    The same tracer provider (``BENCH_SAMPLING`` percent, batch export over OTLP/HTTP), the
    same ``FlaskInstrumentor`` options and, like the gateway's provider call, a client span
    around the upstream call whose context goes upstream: the same spans per request, so
    the traced gateway is compared with the least that this tracing costs on this stack.
    The client span carries the semantic-convention attributes the gateway's does.
    Runs in the worker (gunicorn does not preload).
    """
    global _tracing, _UPSTREAM_SPAN
    endpoint = os.environ.get("BENCH_OTLP_ENDPOINT")
    if not endpoint:
        return
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    from app.config import TracingConfig
    from app.observability.tracing import Tracing, create_tracer_provider, provider_attributes

    config = TracingConfig(random_sampling=float(os.environ.get("BENCH_SAMPLING", "100")),
                           otlp_endpoint=endpoint)
    tracing = Tracing(create_tracer_provider(config, service_version="bench"))
    FlaskInstrumentor.instrument_app(flask_app, **tracing.flask_instrumentation_options())
    # The semantic-convention attributes of the gateway's provider span (GenAI and HTTP
    # client: operation, provider, requested model, server address and port, method), from
    # the same function; the gateway adds its own (llm.model, plano.stream) on top.
    vendor, model_id = _UPSTREAM_MODEL
    attributes = provider_attributes(model_id, UPSTREAM)
    attributes["gen_ai.provider.name"] = vendor
    _UPSTREAM_SPAN = (f"chat {model_id}", attributes)
    _tracing = tracing


_instrument_like_the_gateway(app)
