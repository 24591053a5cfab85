"""Provider clients: pools per origin, timeouts, and what of a provider reaches a client."""

from __future__ import annotations

import json
import socket
import threading

import pytest
from urllib3.exceptions import (
    ConnectTimeoutError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from app import create_app
from app.config import config_from_dict
from app.errors import UpstreamConnectionError, UpstreamTimeoutError
from app.pipeline.relay import relayed_headers
from app.providers.openai_compat import (
    ProviderClient,
    UpstreamPool,
    origin_of,
    scrub_secrets,
    upstream_error_body,
)
from app.providers.registry import create_provider_clients
from tests.support.configs import chat_body, make_config_dict
from tests.support.fake_provider import FakeProviderClient, FakeResponse


class RecordingPool:
    """Stands in for the origin's urllib3 pool: records the timeout, answers a fixed body."""

    def __init__(self, body: dict):
        self.body = body
        self.timeouts: list = []

    def urlopen(self, method, url, *, timeout, **options):
        self.timeouts.append((timeout.connect_timeout, timeout.read_timeout))
        return _Raw(json.dumps(self.body).encode())


class _Raw:
    status = 200
    reason = "OK"
    headers = {"Content-Type": "application/json"}

    def __init__(self, data: bytes):
        self.data = data

    def stream(self, size, decode_content=True):
        yield self.data

    def close(self):
        pass


def test_routing_call_connect_timeout_is_bounded_by_its_budget(config):
    provider = config.endpoints_by_name["openai/gpt-4o-mini"]
    client = ProviderClient(provider, read_timeout_seconds=30.0, connect_timeout_seconds=5.0)
    pool = client.pool.connections = RecordingPool({"route": "x"})
    assert client.complete_json({"messages": []}, timeout=0.25) == {"route": "x"}
    assert pool.timeouts == [(0.25, 0.25)]
    client.post(b"{}")  # a chat call keeps the provider connect timeout
    assert pool.timeouts[-1] == (5.0, 30.0)


class _RaisingPool:
    def __init__(self, error: Exception):
        self.error = error

    def urlopen(self, *args, **kwargs):
        raise self.error


@pytest.mark.parametrize(("raised", "expected", "message"), [
    (NewConnectionError(None, "refused"), UpstreamConnectionError, "could not be reached"),
    (NameResolutionError("nowhere", None, "no such host"), UpstreamConnectionError,
     "could not be reached"),
    (ConnectTimeoutError(None, "slow connect"), UpstreamTimeoutError, "connect timed out"),
    (ReadTimeoutError(None, "/v1", "slow answer"), UpstreamTimeoutError, "timed out"),
    (ProtocolError("Connection aborted.", ConnectionResetError()), UpstreamConnectionError,
     "could not be reached"),
    (SSLError("certificate verify failed"), UpstreamConnectionError, "could not be reached"),
])
def test_transport_failures_become_gateway_errors(config, raised, expected, message):
    client = ProviderClient(config.endpoints_by_name["openai/gpt-4o-mini"], 30.0)
    client.pool.connections = _RaisingPool(raised)
    with pytest.raises(expected) as caught:
        client.post(b"{}")
    assert type(caught.value) is expected
    assert str(caught.value) == f"provider openai/gpt-4o-mini {message}"


def _one_shot_server(answer) -> tuple[int, list[bytes]]:
    """A loopback server: for each connection, ``answer(connection)``; returns its port and
    what it received."""
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve():
        with listener:
            listener.settimeout(5)
            for _ in range(4):
                try:
                    connection, _ = listener.accept()
                except OSError:
                    return
                with connection:
                    answer(connection, received)
    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1], received


def _client_for(port: int, config) -> ProviderClient:
    provider = config.endpoints_by_name["openai/gpt-4o-mini"]
    endpoint = type(provider)(provider.name, provider.vendor, provider.model_id,
                              f"http://127.0.0.1:{port}/v1")
    return ProviderClient(endpoint, read_timeout_seconds=0.3)


def test_a_pooled_call_sends_the_prepared_request_and_reads_the_answer(config):
    def answer(connection, received):
        for _ in range(2):  # two requests on one kept-alive connection
            data = b""
            while b"\r\n\r\n" not in data or not data.endswith(b"{}"):
                chunk = connection.recv(65536)
                if not chunk:  # the client hung up instead of reusing the connection
                    return
                data += chunk
            received.append(data)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                               b"X-Upstream: yes\r\nContent-Length: 12\r\n\r\n{\"ok\": true}")
    port, received = _one_shot_server(answer)
    client = _client_for(port, config)
    for _ in range(2):
        response = client.post(b"{}", headers={"traceparent": "00-abc"})
        assert response.status_code == 200
        assert response.headers["x-upstream"] == "yes"  # case-insensitive
        assert client.read_body(response, deadline=float("inf")) == b'{"ok": true}'
    client.close()
    request = received[0].decode()
    assert request.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
    assert "content-length: 2\r\n" in request.lower()
    assert "traceparent: 00-abc\r\n" in request
    assert len(received) == 2  # the second call reused the first connection


def _never_answers(connection, received):
    while data := connection.recv(65536):  # until the client gives up and closes
        received.append(data)


def _hangs_up(connection, received):
    received.append(connection.recv(65536))


@pytest.mark.parametrize(("upstream", "expected", "message"), [
    (_never_answers, UpstreamTimeoutError, "timed out"),
    (_hangs_up, UpstreamConnectionError, "could not be reached"),
])
def test_an_upstream_that_fails_the_call_gives_the_gateway_error(config, upstream, expected,
                                                                 message):
    port, _ = _one_shot_server(upstream)
    client = _client_for(port, config)
    with pytest.raises(expected, match=message):
        client.post(b"{}")
    client.close()


def test_one_pool_per_origin_sized_from_worker_connections(monkeypatch):
    monkeypatch.setenv("PLANO_WORKER_CONNECTIONS", "321")
    raw = make_config_dict()
    raw.update(model_aliases={}, routing_preferences=[], model_providers=[
        {"model": "openai/a", "base_url": "http://127.0.0.1:9/v1", "default": True},
        {"model": "openai/b", "base_url": "http://127.0.0.1:9/other/v1"},
        {"model": "openai/c", "base_url": "http://localhost:9/v1"},
        {"model": "openai/d", "base_url": "https://127.0.0.1/v1"},
    ])
    clients = create_provider_clients(config_from_dict(raw))
    pools = {name: client.pool for name, client in clients.items()}
    assert pools["openai/a"] is pools["openai/b"]
    assert len({id(pool) for pool in pools.values()}) == 3
    assert pools["openai/d"].origin == "https://127.0.0.1:443"
    assert all(pool.size == 321 for pool in pools.values())
    assert pools["openai/a"].connections.pool.maxsize == 321
    for client in clients.values():
        client.close()


def test_origin_makes_default_ports_explicit():
    assert origin_of("http://h/v1/chat/completions") == "http://h:80"
    assert origin_of("https://h:8443/x") == "https://h:8443"
    assert UpstreamPool("http://h:80", size=3).size == 3


def test_only_reviewed_upstream_headers_reach_the_client():
    upstream = {"openai-organization": "org-secret", "OpenAI-Project": "proj_secret",
                "openai-processing-ms": "12", "openai-version": "2020-10-01",
                "Set-Cookie": "__cf_bm=abc", "x-ratelimit-remaining-requests": "9",
                "Retry-After": "3", "x-request-id": "req-1", "x-ratelimit-foo": "1"}
    assert relayed_headers(upstream) == {"x-ratelimit-remaining-requests": "9",
                                         "Retry-After": "3", "x-upstream-request-id": "req-1"}


KEY = "sk-proj-Abc123Def456Ghi789Jkl012Mno345Pqr"


@pytest.mark.parametrize("message", [
    f"Incorrect API key provided: {KEY}.",
    "Incorrect API key provided: sk-proj-********************************Pqr.",
    "Incorrect API key provided: sk-proj-Abc1**********Mno345Pqr.",
    "Incorrect API key provided: Abc123De*****5Pqr.",
    "Bearer Zq8xk2mPw9Rt4vLn7bYc3dHj6sFg1aEu was rejected",
], ids=["whole", "openai-masked", "prefix-suffix", "fragments", "long-token"])
def test_key_fragments_are_scrubbed_from_provider_messages(message):
    scrubbed = scrub_secrets(message, [KEY])
    assert "[redacted]" in scrubbed
    for fragment in ("Abc123", "Mno345", "5Pqr", "sk-proj", "Zq8xk2", "Abc1**"):
        assert fragment not in scrubbed
    assert scrubbed.startswith(("Incorrect API key provided: ", "Bearer "))


def test_ordinary_error_text_is_left_alone():
    text = "Rate limit reached for gpt-4o-mini in organization on requests per min (RPM)."
    assert scrub_secrets(text, [KEY]) == text


def test_provider_error_envelopes_are_relayed_scrubbed():
    body = json.dumps({"error": {"message": f"Incorrect API key provided: {KEY[:12]}***",
                                 "type": "invalid_request_error", "param": None,
                                 "code": "invalid_api_key", "internal": "org-secret"}})
    envelope = upstream_error_body(401, body.encode(), [KEY])
    assert envelope == {"error": {"message": "Incorrect API key provided: [redacted]",
                                  "type": "invalid_request_error", "param": None,
                                  "code": "invalid_api_key"}}
    plain = upstream_error_body(500, f"upstream exploded for key {KEY}".encode(), [KEY])
    assert KEY[:10] not in plain["error"]["message"]


class LeakyProvider(FakeProviderClient):
    """Answers 401 quoting its key, with its account headers."""

    secrets = (KEY,)

    def post(self, body, *, headers=None, read_timeout_seconds=None, path=None):
        envelope = {"error": {"message": f"Incorrect API key provided: {KEY[:14]}****",
                              "type": "invalid_request_error", "param": None,
                              "code": "invalid_api_key"}}
        return FakeResponse(401, json.dumps(envelope).encode(), "application/json",
                            {"openai-organization": "org-secret", "openai-project": "p1",
                             "x-request-id": "req-9"})


def test_a_provider_401_reaches_the_client_without_identity_or_key(config):
    providers = {p.name: LeakyProvider(p.model_id) for p in config.model_providers}
    client = create_app(config, providers=providers).test_client()
    response = client.post("/v1/chat/completions", json=chat_body())
    assert response.status_code == 401
    assert response.headers["x-upstream-request-id"] == "req-9"
    assert "openai-organization" not in response.headers
    assert "openai-project" not in response.headers
    assert KEY[:14] not in response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "invalid_api_key"
