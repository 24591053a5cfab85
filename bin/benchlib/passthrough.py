"""The bare reference for ``bin/bench``: Flask + gunicorn + gevent + a pooled requests.Session.

It forwards each chat-completions body unchanged to the mock (``BENCH_UPSTREAM``) and returns
the answer: no validation, routing, sessions or rewriting. Run under gunicorn with the
gateway's worker class and count, it is the least this stack can cost per request, the
ceiling the gateway is compared with (issue 6). Bench-only; never part of the product.
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


@app.post("/v1/chat/completions")
def chat_completions():
    """Forward the body, return the upstream's status, type and body (streamed through as
    it arrives when the compact JSON body asks for a stream)."""
    data = request.get_data()
    streaming = b'"stream":true' in data
    upstream = session.post(UPSTREAM, data=data, timeout=TIMEOUT, stream=streaming,
                            headers={"Content-Type": "application/json"})
    content_type = upstream.headers.get("Content-Type", "application/json")
    if streaming:
        response = Response(upstream.iter_content(None), status=upstream.status_code,
                            content_type=content_type)
        response.call_on_close(upstream.close)
        return response
    return Response(upstream.content, status=upstream.status_code, content_type=content_type)


@app.get("/healthz")
def healthz():
    """Readiness for the bench."""
    return {"status": "ok"}


def _instrument_like_the_gateway(flask_app: Flask) -> None:
    """With ``BENCH_OTLP_ENDPOINT``: the gateway's tracing set-up, nothing more (issue 16).

    The same tracer provider (``BENCH_SAMPLING`` percent, batch export over OTLP/HTTP) and
    the same ``FlaskInstrumentor`` options, so the traced gateway is compared with the
    least that tracing costs on this stack. Runs in the worker (gunicorn does not preload).
    """
    endpoint = os.environ.get("BENCH_OTLP_ENDPOINT")
    if not endpoint:
        return
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    from app.config import TracingConfig
    from app.tracing import Tracing, create_tracer_provider

    config = TracingConfig(random_sampling=float(os.environ.get("BENCH_SAMPLING", "100")),
                           otlp_endpoint=endpoint)
    tracing = Tracing(create_tracer_provider(config, service_version="bench"))
    FlaskInstrumentor.instrument_app(flask_app, **tracing.flask_instrumentation_options())


_instrument_like_the_gateway(app)
