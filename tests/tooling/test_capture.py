"""devkit.capture, the logging proxy the agent tests put between a CLI and the gateway: it must
be transparent (answers and streams relayed as they are, a cut stream cut for the client too)
and record each request with its answer's status and headers. Real mock, real loopback HTTP."""
from __future__ import annotations

import json

import pytest
import requests

from devkit.capture import CaptureServer
from devkit.stubs import Stub

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mock():
    with Stub() as stub:
        yield stub


@pytest.fixture
def proxy(mock, tmp_path):
    with open(tmp_path / "capture.jsonl", "w", encoding="utf-8") as out:
        with CaptureServer(("127.0.0.1", 0), mock.url, out) as server:
            yield server


def test_a_request_is_relayed_and_recorded_with_its_answer_headers(proxy, tmp_path):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    answer = requests.post(f"{proxy.url}/v1/chat/completions?x=1", json=body, timeout=5,
                           headers={"X-Claude-Code-Session-Id": "s-1"})
    assert answer.status_code == 200 and answer.json()["mock"] is True
    (record,) = proxy.records
    assert (record["method"], record["path"], record["body"]) == (
        "POST", "/v1/chat/completions?x=1", body)
    assert record["headers"]["X-Claude-Code-Session-Id"] == "s-1"
    assert record["status"] == 200 and record["response_headers"]["x-mock-llm"] == "true"
    logged = [json.loads(line) for line in (tmp_path / "capture.jsonl").read_text().splitlines()]
    assert logged == [record]


def test_a_stream_is_relayed_whole_and_a_cut_stream_is_cut(proxy):
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "a b c d"}]}
    whole = requests.post(f"{proxy.url}/v1/chat/completions", json=body, timeout=5)
    assert whole.text.rstrip().endswith("data: [DONE]")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.post(f"{proxy.url}/v1/chat/completions", timeout=5,
                      json={**body, "mock_fault": {"break_after": 2}})


def test_an_unreachable_upstream_is_a_502_and_still_recorded(tmp_path):
    with CaptureServer(("127.0.0.1", 0), "http://127.0.0.1:9") as server:
        answer = requests.get(f"{server.url}/health", timeout=5)
    assert answer.status_code == 502
    assert [(r["path"], r["status"]) for r in server.records] == [("/health", 502)]
