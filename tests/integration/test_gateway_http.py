"""The request path end to end: real gunicorn (2 gevent workers), real mock upstream, real HTTP.

Covers SPEC §4 (forwarding, model rewrite, streaming, provider errors, 502/504), §7 and §8
as a client sees them, including the official ``openai`` SDK as the client.
"""

from __future__ import annotations

import json
import socket
import time

import openai
import pytest
import requests

from devkit.ports import free_port
from tests.support.configs import DEEP_PROMPT, FAST_PROMPT, chat_body, gateway_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gateway(mock_llm):
    from devkit.gateway import Gateway
    raw = gateway_config(mock_llm, listeners=[{"name": "model_listener", "type": "model",
                                               "address": "127.0.0.1", "port": 12000,
                                               "timeout": "2s"}])
    raw["server"] = {"max_body_bytes": 4096}
    raw["routing"]["session_cache"]["tenant_header"] = "x-org-id"
    with Gateway(raw, workers=2) as running:
        yield running


def post(gateway, body, headers=None, **kwargs):
    return requests.post(gateway.chat_url, json=body, headers=headers or {}, timeout=10,
                         **kwargs)


def test_deep_prompt_is_routed_to_the_reasoning_model(gateway, mock_llm):
    response = post(gateway, chat_body(DEEP_PROMPT))
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "openai/gpt-5.2"
    assert body["mock"] is True and "[mock-llm]" in body["choices"][0]["message"]["content"]
    assert response.headers["x-plano-route"] == "deep_reasoning"
    assert "x-plano-pinned" not in response.headers
    assert "x-plano-affinity" not in response.headers  # no session id sent


def test_greeting_is_routed_to_the_fast_model(gateway):
    response = post(gateway, chat_body(FAST_PROMPT))
    assert response.json()["model"] == "openai/gpt-4o-mini"
    assert response.headers["x-plano-route"] == "fast_responses"


def test_upstream_receives_model_id_and_provider_key_never_the_client_key(gateway, mock_llm):
    mock_llm.clear()
    post(gateway, chat_body(DEEP_PROMPT, temperature=0.3, user="u1"),
         headers={"Authorization": "Bearer sk-client-secret"})
    (seen,) = [r for r in mock_llm.requests() if r["body"] and r["body"].get("user") == "u1"]
    assert seen["body"]["model"] == "gpt-5.2"
    assert seen["body"]["temperature"] == 0.3
    assert seen["headers"]["authorization"] == "Bearer sk-test-secret-key"


def test_alias_resolves_to_its_target_when_no_route_matches(gateway):
    response = post(gateway, chat_body("xyzzy plugh", model="fast-model"))
    assert response.json()["model"] == "openai/gpt-4o-mini"
    assert "x-plano-route" not in response.headers


def test_streaming_relays_chunks_as_they_arrive_with_model_rewritten(gateway):
    started = time.monotonic()
    arrivals, events = [], []
    with requests.post(gateway.chat_url, json=chat_body(DEEP_PROMPT, stream=True),
                       stream=True, timeout=10) as reply:
        assert reply.status_code == 200
        assert reply.headers["Content-Type"].startswith("text/event-stream")
        for line in reply.iter_lines():
            if line.startswith(b"data: "):
                events.append(line[6:].decode())
                arrivals.append(time.monotonic() - started)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert len(chunks) >= 4
    assert {chunk["model"] for chunk in chunks} == {"openai/gpt-5.2"}


def test_stream_events_are_not_buffered_until_the_end(mock_llm, start_gateway):
    from devkit.stubs import Stub
    slow = Stub("--chunk-delay-ms", "150").start()
    try:
        gateway = start_gateway(gateway_config(slow), workers=1)
        arrivals = []
        started = time.monotonic()
        with requests.post(gateway.chat_url, json=chat_body(FAST_PROMPT, stream=True),
                           stream=True, timeout=20) as reply:
            for line in reply.iter_lines():
                if line.startswith(b"data: "):
                    arrivals.append(time.monotonic() - started)
        # A buffered relay would deliver every event at once, after the last one.
        assert arrivals[-1] - arrivals[0] > 0.3
        assert sum(1 for t in arrivals if t < arrivals[-1] - 0.1) >= 2
    finally:
        slow.stop()


def test_openai_sdk_create_and_stream(gateway):
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="sk-client-secret",
                           max_retries=0)
    completion = client.chat.completions.create(
        model="openai/gpt-4o-mini", messages=[{"role": "user", "content": DEEP_PROMPT}])
    assert completion.model == "openai/gpt-5.2"
    assert completion.choices[0].message.content.startswith("[mock-llm]")
    pieces = []
    for chunk in client.chat.completions.create(
            messages=[{"role": "user", "content": FAST_PROMPT}], model="openai/gpt-4o-mini",
            stream=True):
        assert chunk.model == "openai/gpt-4o-mini"
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    assert "mock" in "".join(pieces)


def test_openai_sdk_sees_affinity_headers(gateway):
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "hello"}],
        extra_headers={"X-Model-Affinity": f"sdk-{time.time_ns()}"})
    assert raw.headers["x-plano-affinity"] == "new"


@pytest.mark.parametrize("status", [429, 500, 503])
def test_provider_error_envelopes_are_relayed_with_their_status(gateway, status):
    response = post(gateway, chat_body(mock_fault={"status": status}))
    assert response.status_code == status
    assert response.json()["error"]["code"] == f"mock_{status}"
    assert response.headers["x-plano-route"] == "fast_responses"


def test_non_json_provider_error_is_wrapped(gateway):
    response = post(gateway, chat_body(mock_fault={"raw_status": 500}))
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "upstream_error"
    assert "mock plain failure" in error["message"]


def test_slow_provider_gives_504_with_decision_headers(gateway):
    response = post(gateway, chat_body(mock_fault={"latency_ms": 3000}),
                    headers={"X-Model-Affinity": f"slow-{time.time_ns()}"})
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "upstream_error"
    assert response.headers["x-plano-route"] == "fast_responses"
    assert response.headers["x-plano-affinity"] == "new"


def test_unreachable_provider_gives_502(mock_llm, start_gateway):
    raw = gateway_config(mock_llm)
    closed = f"http://127.0.0.1:{free_port()}/v1"
    for provider in raw["model_providers"]:
        provider["base_url"] = closed
    gateway = start_gateway(raw, workers=1)
    response = post(gateway, chat_body())
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unreachable"
    assert "sk-test-secret-key" not in response.text


def test_routing_api_decides_without_calling_the_provider(gateway, mock_llm):
    mock_llm.clear()
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    response = requests.post(f"{gateway.url}/routing/v1/chat/completions",
                             json=chat_body(DEEP_PROMPT), timeout=5,
                             headers={"traceparent": traceparent})
    assert response.json() == {"models": ["openai/gpt-5.2"], "route": "deep_reasoning",
                               "trace_id": "0af7651916cd43dd8448eb211c80319c",
                               "pinned": False}
    assert mock_llm.requests() == []
    no_match = requests.post(f"{gateway.url}/routing/v1/chat/completions",
                             json=chat_body("xyzzy plugh"), timeout=5).json()
    assert no_match["route"] is None and no_match["models"] == ["openai/gpt-4o-mini"]
    assert len(no_match["trace_id"]) == 32


@pytest.mark.parametrize("data, headers, status, code", [
    ("{bad json", {}, 400, "invalid_json"),
    ('{"messages": []}', {}, 400, "invalid_messages"),
    ('{"messages": [{"role": "user"}], "model": "nope/x"}', {}, 400, "model_not_found"),
    ('{"messages": [{"role": "user"}]}', {"X-Model-Affinity": "x" * 257}, 400,
     "invalid_affinity_id"),
    ('{"messages": [{"role": "user"}]}', {"x-org-id": "a:b"}, 400, "invalid_affinity_id"),
    ('{"messages": [{"role": "user", "content": "' + "x" * 5000 + '"}]}', {}, 413,
     "request_too_large"),
])
def test_bad_input_gets_status_and_envelope(gateway, data, headers, status, code):
    response = requests.post(gateway.chat_url, data=data, timeout=5,
                             headers={"Content-Type": "application/json", **headers})
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and set(error) == {"message", "type", "param", "code"}
    assert "Traceback" not in response.text


def test_wrong_method_and_unknown_path(gateway):
    wrong = requests.get(gateway.chat_url, timeout=5)
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
    missing = requests.post(f"{gateway.url}/v2/nothing", json={}, timeout=5)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_oversized_request_line_is_refused_by_gunicorn(gateway):
    # gunicorn's own answer (414 in gunicorn 27) before the app sees the request.
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as conn:
        conn.sendall(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.recv(100).startswith(b"HTTP/1.1 414")


def test_control_bytes_in_a_header_are_refused_by_gunicorn(gateway):
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as conn:
        conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"X-Model-Affinity: a\x01b\r\nContent-Length: 0\r\n\r\n")
        assert conn.recv(100).startswith(b"HTTP/1.1 400")


def test_graceful_shutdown_on_sigterm(mock_llm, start_gateway):
    gateway = start_gateway(gateway_config(mock_llm), workers=1)
    assert gateway.stop() == 0  # SIGTERM, then the exit status


def test_client_disconnect_mid_stream_closes_the_upstream(start_gateway):
    from devkit.stubs import Stub
    slow = Stub("--chunk-delay-ms", "200").start()
    try:
        gateway = start_gateway(gateway_config(slow), workers=1)
        with requests.post(gateway.chat_url, json=chat_body(DEEP_PROMPT, stream=True),
                           stream=True, timeout=10) as reply:
            next(reply.iter_lines())  # the stream has begun; now hang up
        streams_url = f"http://127.0.0.1:{slow.port}/_mock/streams"
        from devkit.processes import wait_until
        wait_until(lambda: requests.get(streams_url, timeout=5).json()["aborted"] == 1,
                   timeout=10, what="the upstream stream to be closed")
        assert requests.get(streams_url, timeout=5).json()["completed"] == 0
    finally:
        slow.stop()
