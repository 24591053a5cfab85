"""Observability with real processes (SPEC §10).

* the provider (the real mock upstream) receives the W3C ``traceparent`` of our client span;
* real gunicorn workers export their spans over OTLP/HTTP to a receiver on loopback: a
  routed request has a ``routing`` span, a pinned one has none;
* one scrape of ``/metrics`` adds up the workers (prometheus_client multiprocess mode);
* ``/healthz`` answers 200 with Redis up and down;
* the JSON request log of a real gateway never holds a secret.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import threading
import time
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app import create_app
from app.config import config_from_dict
from app.observability.prometheus_metrics import MULTIPROC_ENV_VAR
from devkit import ROOT, VENV_BIN
from devkit.processes import wait_until
from tests.support.configs import DEEP_PROMPT, FAST_PROMPT, chat_body, gateway_config
from tests.support.servers import fresh_post

pytestmark = pytest.mark.integration

PROVIDER_KEY = "sk-test-secret-key"  # every provider's access_key in the base config
CLIENT_SECRET = "sk-client-secret"


class OTLPReceiver:
    """A minimal OTLP/HTTP traces endpoint: records every exported span with its resource."""

    def __init__(self):
        self.spans: list[dict] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                ok = self.path == "/v1/traces"
                if ok:
                    receiver._record(ExportTraceServiceRequest.FromString(body))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _record(self, request: ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    with self._lock:
                        self.spans.append({
                            "name": span.name, "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_id": span.parent_span_id.hex(), "resource": resource,
                            "scope": scope_spans.scope.name,
                            "attributes": {kv.key: _value(kv.value)
                                           for kv in span.attributes}})

    def trace(self, trace_id: str) -> list[dict]:
        with self._lock:
            return [span for span in self.spans if span["trace_id"] == trace_id]

    def start(self) -> "OTLPReceiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _value(any_value):
    return getattr(any_value, any_value.WhichOneof("value"))


@pytest.fixture
def otlp_receiver():
    receiver = OTLPReceiver().start()
    yield receiver
    receiver.stop()


def test_traceparent_reaches_the_mock_upstream(mock_llm):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(config_from_dict(gateway_config(mock_llm)), tracer_provider=provider)
    mock_llm.clear()
    response = app.test_client().post(
        "/v1/chat/completions", json=chat_body(FAST_PROMPT),
        headers={"Authorization": f"Bearer {CLIENT_SECRET}", "X-Model-Affinity": "tp-1"})
    response.close()
    assert response.status_code == 200
    (upstream,) = [span for span in exporter.get_finished_spans()
                   if span.name == "chat gpt-4o-mini"]
    (received,) = mock_llm.requests()
    trace_id, span_id = received["headers"]["traceparent"].split("-")[1:3]
    assert trace_id == format(upstream.context.trace_id, "032x")
    assert span_id == format(upstream.context.span_id, "016x")
    assert received["headers"]["authorization"] == f"Bearer {PROVIDER_KEY}"
    provider.shutdown()


def test_gunicorn_workers_export_spans_over_otlp(mock_llm, otlp_receiver, start_gateway):
    config = gateway_config(mock_llm, tracing={"random_sampling": 100,
                                               "otlp_endpoint": otlp_receiver.url})
    gateway = start_gateway(config, workers=2, env={"OTEL_BSP_SCHEDULE_DELAY": "100"})
    miss_trace, hit_trace = os.urandom(16).hex(), os.urandom(16).hex()
    session = f"otlp-{time.time_ns()}"
    # One connection for both, so the same worker serves the miss and then the hit.
    with requests.Session() as http:
        for trace_id, prompt in ((miss_trace, DEEP_PROMPT), (hit_trace, FAST_PROMPT)):
            answer = http.post(gateway.chat_url, json=chat_body(prompt), timeout=10, headers={
                "X-Model-Affinity": session, "traceparent": f"00-{trace_id}-{'1' * 16}-01"})
            assert answer.status_code == 200
    assert answer.headers["x-plano-pinned"] == "true"

    def names(trace_id: str, expected: int):
        spans = otlp_receiver.trace(trace_id)
        return spans if len(spans) >= expected else None

    miss = wait_until(lambda: names(miss_trace, 3), 15, "the routed request's spans")
    hit = wait_until(lambda: names(hit_trace, 2), 15, "the pinned request's spans")
    assert sorted(span["name"] for span in miss) == [
        "POST /v1/chat/completions", "chat gpt-5.2", "routing"]
    assert sorted(span["name"] for span in hit) == ["POST /v1/chat/completions",
                                                    "chat gpt-5.2"]
    server = next(span for span in hit if span["name"].startswith("POST"))
    assert server["scope"] == "opentelemetry.instrumentation.flask"
    assert server["resource"]["service.name"] == "plano"
    assert server["parent_id"] == "1" * 16
    assert server["attributes"]["plano.pinned"] is True
    assert server["attributes"]["plano.session_id"] == session
    assert server["attributes"]["llm.model"] == "openai/gpt-5.2"
    routing = next(span for span in miss if span["name"] == "routing")
    miss_server = next(span for span in miss if span["name"].startswith("POST"))
    assert routing["parent_id"] == miss_server["span_id"]
    assert miss_server["attributes"]["plano.pinned"] is False
    assert routing["attributes"]["routing.determination_ms"] >= 0
    received = [r for r in mock_llm.requests()
                if r["headers"].get("traceparent", "").split("-")[1:2] == [hit_trace]]
    assert len(received) == 1


def test_spans_still_queued_are_flushed_when_the_workers_stop(mock_llm, otlp_receiver,
                                                              start_gateway):
    config = gateway_config(mock_llm, tracing={"otlp_endpoint": otlp_receiver.url})
    gateway = start_gateway(config, workers=2, env={"OTEL_BSP_SCHEDULE_DELAY": "600000"})
    trace_id = os.urandom(16).hex()
    fresh_post(gateway.chat_url, chat_body(), traceparent=f"00-{trace_id}-{'2' * 16}-01")
    assert otlp_receiver.trace(trace_id) == []
    gateway.stop()
    assert {span["name"] for span in otlp_receiver.trace(trace_id)} == {
        "POST /v1/chat/completions", "routing", "chat gpt-4o-mini"}


def test_one_scrape_counts_the_hits_of_every_worker(mock_llm, start_gateway):
    config = gateway_config(mock_llm, server={"expose_worker_header": True})
    gateway = start_gateway(config, workers=2)
    session = f"metrics-{time.time_ns()}"
    affinity: Counter = Counter()
    hits_by_worker: Counter = Counter()
    with ThreadPoolExecutor(8) as pool:
        for _ in range(25):  # until both workers served hits; each batch is 16 requests
            for answer in pool.map(lambda _: fresh_post(gateway.chat_url, chat_body(),
                                                        session), range(16)):
                assert answer.status_code == 200
                affinity[answer.headers["x-plano-affinity"]] += 1
                if answer.headers["x-plano-affinity"] == "pinned":
                    hits_by_worker[answer.headers["x-plano-worker"]] += 1
            if len(hits_by_worker) == 2:
                break
    assert len(hits_by_worker) == 2, "the kernel gave every connection to one worker"

    scrape = requests.get(f"{gateway.url}/metrics", timeout=5).text
    events = {outcome: _sample(scrape, "plano_session_cache_events_total",
                               f'backend="memory",outcome="{outcome}"')
              for outcome in ("hit", "miss", "store")}
    assert events["hit"] == affinity["pinned"] == sum(hits_by_worker.values())
    assert events["hit"] > max(hits_by_worker.values())
    # The memory backend pins per worker: each worker's first request was a miss.
    assert events["miss"] == events["store"] == affinity["new"] == 2
    assert _sample(scrape, "plano_requests_total",
                   'endpoint="/v1/chat/completions",pinned="true",status="200"') == \
        affinity["pinned"]


def _sample(text: str, name: str, labels: str) -> float:
    prefix = f"{name}{{{labels}}} "
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, f"{prefix!r} not in the scrape"
    return float(lines[0][len(prefix):])


def test_healthz_answers_200_with_redis_up_and_down(mock_llm, redis_server, start_gateway):
    cache = {"type": "redis", "url": redis_server.url, "timeout_ms": 200,
             "cooldown_seconds": 0.2}
    gateway = start_gateway(gateway_config(mock_llm, cache=cache), workers=1)
    up = requests.get(f"{gateway.url}/healthz", timeout=5)
    assert (up.status_code, up.json()["status"], up.json()["session_cache"]) == (
        200, "ok", {"backend": "redis", "reachable": True})
    redis_server.stop()
    down = requests.get(f"{gateway.url}/healthz", timeout=5)
    assert (down.status_code, down.json()["status"], down.json()["session_cache"]) == (
        200, "degraded", {"backend": "redis", "reachable": False})


def test_gateway_log_is_json_lines_without_secrets(mock_llm, start_gateway):
    gateway = start_gateway(gateway_config(mock_llm), workers=2)
    request_id = f"log-{time.time_ns()}"
    answer = fresh_post(gateway.chat_url, chat_body(DEEP_PROMPT), "log-session",
                        Authorization=f"Bearer {CLIENT_SECRET}", **{"x-request-id": request_id})
    assert answer.headers["x-request-id"] == request_id

    def access_line():
        for line in gateway.log_tail(500).splitlines():
            if line.startswith("{") and request_id in line:
                return json.loads(line)
        return None

    line = wait_until(access_line, 10, "the request's log line")
    assert line["logger"] == "plano.access" and line["status"] == 200
    assert line["session_id"] == "log-session" and line["model"] == "openai/gpt-5.2"
    log = gateway.log_tail(10_000)
    assert CLIENT_SECRET not in log and PROVIDER_KEY not in log
    json_lines = [line for line in log.splitlines() if line.startswith("{")]
    assert any('"logger":"gunicorn.error"' in line for line in json_lines)
    assert all(json.loads(line) for line in json_lines)


def test_metrics_directory_lives_as_long_as_the_run(mock_llm, start_gateway, tmp_path):
    gateway = start_gateway(gateway_config(mock_llm), workers=2, env={"TMPDIR": str(tmp_path)})
    fresh_post(gateway.chat_url, chat_body())
    (directory,) = tmp_path.glob("plano-metrics-*")
    assert list(directory.glob("*.db"))
    gateway.stop()
    assert not directory.exists()


def test_directories_of_killed_runs_are_swept_and_a_bad_config_leaves_none(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"plano-metrics-{dead.pid}-abc123"
    stale.mkdir()
    (stale / "counter_1.db").write_bytes(b"\0" * 16)
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("model_providers: []\n")
    env = {**os.environ, "TMPDIR": str(tmp_path), "PLANO_CONFIG": str(bad_config)}
    env.pop(MULTIPROC_ENV_VAR, None)
    result = subprocess.run(
        [str(VENV_BIN / "gunicorn"), "-c", str(ROOT / "config" / "gunicorn.conf.py"),
         "app.wsgi:app"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "model_providers" in result.stderr
    assert list(tmp_path.glob("plano-metrics-*")) == []
    assert list(tmp_path.glob("plano-config-*")) == []  # nor a config snapshot directory


def test_operator_metrics_directory_is_emptied_at_start_and_kept(mock_llm, start_gateway,
                                                                  tmp_path):
    stale = tmp_path / "counter_999999.db"
    stale.write_bytes(b"\0" * 16)
    gateway = start_gateway(gateway_config(mock_llm), workers=1,
                            env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    assert not stale.exists()
    fresh_post(gateway.chat_url, chat_body())
    assert "plano_requests_total" in requests.get(f"{gateway.url}/metrics", timeout=5).text
    gateway.stop()
    assert tmp_path.is_dir() and list(tmp_path.glob("*.db"))
