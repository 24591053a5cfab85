"""Limits a hostile client or upstream could otherwise use to hold a worker (SPEC §8).

Real gunicorn (gevent workers), real mock upstream, raw sockets where the client misbehaves.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests

from devkit.stubs import Stub
from tests.support.configs import chat_body, gateway_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def limited(mock_llm):
    from devkit.gateway import Gateway
    raw = gateway_config(mock_llm)
    raw["server"] = {"body_read_timeout": "1s", "max_upstream_body_bytes": 4096,
                     "api_keys": "sk-client-key-1"}
    with Gateway(raw, workers=1) as gateway:
        yield gateway


CLIENT = {"Authorization": "Bearer sk-client-key-1"}


def test_slow_body_is_cut_at_the_read_deadline_with_408(limited):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", limited.port), timeout=10) as conn:
        conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer sk-client-key-1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"mess")
        reply = b""
        while chunk := conn.recv(4096):  # the gateway hangs up after answering
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 408")
    assert b'"code":"request_timeout"' in reply.replace(b" ", b"")
    assert time.monotonic() - started < 5


def test_oversized_upstream_answer_is_a_502(limited):
    answer = requests.post(limited.chat_url, headers=CLIENT, timeout=10,
                           json=chat_body(mock_fault={"content": "x" * 8000}))
    assert answer.status_code == 502
    assert "more than 4096 bytes" in answer.json()["error"]["message"]


def test_client_key_is_required_and_never_forwarded(limited, mock_llm):
    assert requests.post(limited.chat_url, json=chat_body(), timeout=10).status_code == 401
    mock_llm.clear()
    answer = requests.post(limited.chat_url, json=chat_body(user="keyed"), headers=CLIENT,
                           timeout=10)
    assert answer.status_code == 200
    (seen,) = [r for r in mock_llm.requests() if (r["body"] or {}).get("user") == "keyed"]
    assert seen["headers"]["authorization"] == "Bearer sk-test-secret-key"
    assert "sk-client-key-1" not in json.dumps(seen)


def test_endless_stream_is_cut_after_max_stream_duration(start_gateway):
    slow = Stub("--chunk-delay-ms", "300").start()
    try:
        raw = gateway_config(slow)
        raw["server"] = {"max_stream_duration": "1s"}
        gateway = start_gateway(raw, workers=1)
        started = time.monotonic()
        with requests.post(gateway.chat_url, stream=True, timeout=10,
                           json=chat_body("hi " * 30, stream=True)) as reply:
            events = [line[6:] for line in reply.iter_lines() if line.startswith(b"data: ")]
        assert time.monotonic() - started < 4
        assert b"[DONE]" not in events
        assert json.loads(events[-1])["error"]["code"] == "upstream_timeout"
    finally:
        slow.stop()
