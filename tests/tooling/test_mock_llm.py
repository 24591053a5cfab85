"""Integration tests of bin/mock_llm.py, the bundled MOCK upstream LLM (real process, loopback)."""
from __future__ import annotations

import http.client
import json
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MOCK = ROOT / "bin" / "mock_llm.py"
BANNER = re.compile(r"^mock_llm listening on http://127\.0\.0\.1:(\d+) \(MOCK upstream: ")


def start_mock(*args: str) -> tuple[subprocess.Popen, int]:
    """Start the mock on a free port; return the process and the port from its banner line."""
    proc = subprocess.Popen([sys.executable, str(MOCK), "--port", "0", "--quiet", *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout=10)
    line = proc.stdout.readline() if ready else ""
    match = BANNER.match(line)
    if not match:
        stop_mock(proc)
        pytest.fail(f"mock_llm did not start; first line: {line!r}")
    return proc, int(match.group(1))


def stop_mock(proc: subprocess.Popen) -> int:
    """SIGTERM the mock by its pid and return its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proc.stdout.close()
    return proc.returncode


@pytest.fixture(scope="module")
def mock_url():
    """Base URL of one mock process with no artificial delays."""
    proc, port = start_mock()
    yield f"http://127.0.0.1:{port}"
    stop_mock(proc)


@pytest.fixture(scope="module")
def slow_port():
    """Port of a mock process that waits 50 ms between streamed events."""
    proc, port = start_mock("--chunk-delay-ms", "50")
    yield port
    stop_mock(proc)


@pytest.fixture()
def session():
    """A keep-alive HTTP session."""
    with requests.Session() as s:
        yield s


def chat_body(model="gpt-5.2", text="What is the capital of France? Please answer briefly.",
              **extra):
    """A chat-completions request body."""
    return {"model": model, "messages": [{"role": "system", "content": "be brief"},
                                         {"role": "user", "content": text}], **extra}


def sse_events(raw: bytes) -> list[str]:
    """The `data:` payloads of an SSE body."""
    return [e[len("data: "):] for e in raw.decode().split("\n\n") if e.startswith("data: ")]


def test_health(mock_url, session):
    r = session.get(f"{mock_url}/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "mock": True}
    assert r.headers["x-mock-llm"] == "true"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/chat/completions"])
def test_non_streaming_answer_shape(mock_url, session, path):
    text = "Explain, in detail, why the sky is blue and why sunsets are red and orange at dusk."
    r = session.post(mock_url + path, json=chat_body("openai-gpt-5.2-Exact", text))
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-mock-llm"] == "true"
    data = r.json()
    assert data["id"].startswith("chatcmpl-mock-")
    assert data["object"] == "chat.completion"
    assert isinstance(data["created"], int)
    assert data["model"] == "openai-gpt-5.2-Exact"
    assert data["mock"] is True
    (choice,) = data["choices"]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == (
        f"[mock-llm] canned answer from model openai-gpt-5.2-Exact to: {text[:60]}")
    usage = data["usage"]
    assert all(isinstance(usage[k], int) and usage[k] > 0
               for k in ("prompt_tokens", "completion_tokens", "total_tokens"))
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_streaming_events_and_done(mock_url, session):
    r = session.post(f"{mock_url}/v1/chat/completions", json=chat_body(stream=True), stream=True)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["transfer-encoding"] == "chunked"
    assert r.headers["x-mock-llm"] == "true"
    events = sse_events(r.raw.read())
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["model"] for c in chunks} == {"gpt-5.2"}
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-mock-")
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    deltas = [c["choices"][0]["delta"].get("content") for c in chunks[1:-1]]
    assert len(deltas) >= 3 and all(deltas)
    assert "".join(deltas) == ("[mock-llm] canned answer from model gpt-5.2 to: "
                               "What is the capital of France? Please answer briefly.")
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}


def test_streaming_events_arrive_separately(slow_port):
    conn = http.client.HTTPConnection("127.0.0.1", slow_port, timeout=5)
    conn.request("POST", "/v1/chat/completions", json.dumps(chat_body(text="hi", stream=True)),
                 {"content-type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    buf, arrivals = b"", []
    while chunk := resp.read1():      # one HTTP chunk (at most) per read
        buf += chunk
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            arrivals.append((time.monotonic(), event))
    conn.close()
    assert arrivals[-1][1] == b"data: [DONE]"
    assert len(arrivals) >= 6
    gaps = [b[0] - a[0] for a, b in zip(arrivals, arrivals[1:], strict=False)]
    # 50 ms apart, not one burst (a busy CI host may merge an odd pair on the client side)
    assert sum(gap > 0.02 for gap in gaps) >= len(gaps) / 2, gaps
    assert arrivals[-1][0] - arrivals[0][0] >= 0.03 * len(gaps), gaps


@pytest.mark.parametrize("status", [429, 500, 503])
def test_fault_status_has_openai_error_envelope(mock_url, session, status):
    r = session.post(f"{mock_url}/v1/chat/completions", json=chat_body(),
                     headers={"x-mock-status": str(status)})
    assert r.status_code == status
    assert r.headers["x-mock-llm"] == "true"
    assert r.json() == {"error": {"message": f"mock error {status}", "type": "mock_error",
                                  "param": None, "code": f"mock_{status}"}}


def test_fault_raw_status_is_plain_text(mock_url, session):
    r = session.post(f"{mock_url}/v1/chat/completions", json=chat_body(),
                     headers={"x-mock-raw-status": "500"})
    assert r.status_code == 500
    assert r.text == "mock plain failure"
    with pytest.raises(ValueError):
        json.loads(r.text)


def test_route_and_content_headers(mock_url, session):
    url = f"{mock_url}/v1/chat/completions"
    r = session.post(url, json=chat_body(), headers={"x-mock-route": "deep_reasoning"})
    assert r.json()["choices"][0]["message"]["content"] == '{"route": "deep_reasoning"}'
    r = session.post(url, json=chat_body(), headers={"x-mock-content": "exactly this"})
    assert r.json()["choices"][0]["message"]["content"] == "exactly this"
    r = session.post(url, json=chat_body(stream=True), headers={"x-mock-route": "fast"})
    chunks = [json.loads(e) for e in sse_events(r.content)[:-1]]
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert streamed == '{"route": "fast"}'


def test_latency_header(mock_url, session):
    started = time.monotonic()
    r = session.post(f"{mock_url}/v1/chat/completions", json=chat_body(),
                     headers={"x-mock-latency-ms": "200"})
    assert r.status_code == 200
    assert time.monotonic() - started >= 0.2


def test_request_recording(mock_url, session):
    base = f"{mock_url}/_mock/requests"
    assert session.delete(base).status_code == 200
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    session.post(f"{mock_url}/v1/chat/completions", json=chat_body(),
                 headers={"traceparent": traceparent, "Authorization": "Bearer sk-mock-test"})
    (record,) = session.get(base).json()
    assert record["path"] == "/v1/chat/completions"
    assert record["headers"]["traceparent"] == traceparent
    assert record["headers"]["authorization"] == "Bearer sk-mock-test"
    assert record["body"] == chat_body()
    for i in range(105):
        session.post(f"{mock_url}/chat/completions", json=chat_body(text=str(i)))
    records = session.get(base).json()
    assert len(records) == 100
    assert records[-1]["body"]["messages"][-1]["content"] == "104"


def test_unknown_path_and_bad_json(mock_url, session):
    r = session.get(f"{mock_url}/v1/nothing-here")
    assert r.status_code == 404
    assert "error" in r.json()
    r = session.post(f"{mock_url}/v1/chat/completions", data=b"{not json",
                     headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_pipelined_requests_answered_in_order(mock_url):
    port = int(mock_url.rsplit(":", 1)[1])
    one = json.dumps(chat_body(model="first")).encode()
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-mock-latency-ms: 30\r\n"
           b"content-length: %d\r\n\r\n%s" % (len(one), one))
    two = b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(req + two)
        raw = b""
        while data := sock.recv(65536):
            raw += data
    assert raw.count(b"HTTP/1.1 200 OK") == 2
    assert raw.index(b'"model": "first"') < raw.index(b'{"status":"ok","mock":true}')


def test_sigterm_exits_cleanly():
    proc, port = start_mock()
    assert requests.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
    assert stop_mock(proc) == 0


def test_faults_can_be_asked_for_in_the_body(mock_url, session):
    """A gateway forwards unknown body fields, not client headers: faults ride in the body."""
    answer = session.post(f"{mock_url}/v1/chat/completions", timeout=5,
                          json=chat_body(mock_fault={"status": 429}))
    assert answer.status_code == 429 and answer.json()["error"]["code"] == "mock_429"


def _sse_events(text: str) -> list[tuple[str | None, dict]]:
    events = []
    for frame in text.strip().split("\n\n"):
        name = None
        for line in frame.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[len("data: "):])))
    return events


def test_messages_and_responses_are_answered_as_a_labelled_mock(mock_url):
    """SPEC §13: the mock speaks Anthropic Messages and OpenAI Responses too (JSON and SSE,
    tool calls on request), and still says it is a mock."""
    url = f"{mock_url}/v1"
    message = requests.post(f"{url}/messages", timeout=5, json={
        "model": "claude-x", "max_tokens": 5,
        "messages": [{"role": "user", "content": "hello"}]})
    assert message.headers["x-mock-llm"] == "true" and message.json()["mock"] is True
    assert message.json()["content"][0]["text"].startswith("[mock-llm]")
    streamed = requests.post(f"{url}/messages", timeout=5, json={
        "model": "claude-x", "max_tokens": 5, "stream": True, "tools": [
            {"name": "weather", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "weather [mock:tool]"}]})
    names = [name for name, _ in _sse_events(streamed.text)]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert _sse_events(streamed.text)[0][1]["message"]["mock"] is True
    tool = [p for n, p in _sse_events(streamed.text) if n == "content_block_start"][0]
    assert tool["content_block"]["type"] == "tool_use"
    response = requests.post(f"{url}/responses", timeout=5, json={
        "model": "gpt-x", "input": "patch [mock:tool]",
        "tools": [{"type": "custom", "name": "apply_patch"}]})
    assert response.json()["mock"] is True
    assert response.json()["output"][0] == {
        "type": "custom_tool_call", "id": response.json()["output"][0]["id"],
        "call_id": response.json()["output"][0]["call_id"], "name": "apply_patch",
        "input": "*** mock patch ***", "status": "completed"}
    events = _sse_events(requests.post(f"{url}/responses", timeout=5, json={
        "model": "gpt-x", "input": "hi", "stream": True}).text)
    assert events[0][0] == "response.created" and events[-1][0] == "response.completed"
    assert "[mock-llm]" in events[-1][1]["response"]["output"][0]["content"][0]["text"]


def _chat(url: str, model: str, **extra) -> requests.Response:
    return requests.post(f"{url}/v1/chat/completions", timeout=5, json={
        "model": model, "messages": [{"role": "user", "content": "one two three"}], **extra})


def test_faults_per_model_in_the_body(mock_url):
    """SPEC §15 tests: one body, different faults per model id (what a gateway sends each
    candidate), with Retry-After."""
    faults = {"mock_fault": {"models": {"m-down": {"status": 503, "retry_after": 7}}}}
    down = _chat(mock_url, "m-down", **faults)
    assert down.status_code == 503 and down.headers["retry-after"] == "7"
    assert _chat(mock_url, "m-up", **faults).status_code == 200


def test_held_faults_count_and_lift(mock_url):
    held = requests.post(f"{mock_url}/_mock/faults", timeout=5,
                         json={"model": "m-held", "status": 429, "count": 2})
    assert held.status_code == 200
    assert [_chat(mock_url, "m-held").status_code for _ in range(3)] == [429, 429, 200]
    requests.post(f"{mock_url}/_mock/faults", timeout=5, json={"model": "m-held", "status": 500})
    assert _chat(mock_url, "m-held").status_code == 500
    assert _chat(mock_url, "m-other").status_code == 200
    requests.delete(f"{mock_url}/_mock/faults", timeout=5)
    assert _chat(mock_url, "m-held").status_code == 200


def test_dropped_connection_and_cut_stream(mock_url):
    with pytest.raises(requests.ConnectionError):
        _chat(mock_url, "m", mock_fault={"drop": 1})
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        with requests.post(f"{mock_url}/v1/chat/completions", timeout=5, stream=True, json={
                "model": "m", "stream": True, "messages": [{"role": "user", "content": "a b c"}],
                "mock_fault": {"break_after": 1}}) as cut:
            assert cut.status_code == 200
            b"".join(cut.iter_content(None))


def test_provider_quirks_are_imitated_on_request_and_labelled(mock_url):
    """SPEC §18: the mock imitates Gemini's parallel calls (one index, ``stop``),
    reasoning_content and context-length errors, so the gateway's adapters can be tested."""
    tools = [{"type": "function", "function": {"name": "read", "parameters": {
        "type": "object", "properties": {"path": {"type": "string"}}}}}]
    ask = [{"role": "user", "content": "two files [mock:parallel]"}]
    answer = requests.post(f"{mock_url}/v1/chat/completions", timeout=5, json={
        "model": "gemini-x", "messages": ask, "tools": tools}).json()
    assert answer["mock"] is True and answer["choices"][0]["finish_reason"] == "stop"
    calls = answer["choices"][0]["message"]["tool_calls"]
    assert len(calls) == 2 and calls[0]["id"] != calls[1]["id"]
    streamed = requests.post(f"{mock_url}/v1/chat/completions", timeout=5, json={
        "model": "gemini-x", "messages": ask, "tools": tools, "stream": True}).text
    deltas = [json.loads(line[6:]) for line in streamed.splitlines()
              if line.startswith("data: {")]
    indexes = [call["index"] for d in deltas for c in d["choices"]
               for call in c["delta"].get("tool_calls") or []]
    assert indexes == [0, 0]
    thought = requests.post(f"{mock_url}/v1/chat/completions", timeout=5, json={
        "model": "x", "messages": [{"role": "user", "content": "[mock:reasoning] hi"}]}).json()
    assert thought["choices"][0]["message"]["reasoning_content"].startswith("[mock-llm]")
    too_long = requests.post(f"{mock_url}/v1/chat/completions", timeout=5, json={
        "model": "x", "messages": [{"role": "user", "content": "[mock:context-length]"}]})
    assert too_long.status_code == 400
    assert too_long.json()["error"]["code"] == "context_length_exceeded"
    anthropic_too_long = requests.post(f"{mock_url}/v1/messages", timeout=5, json={
        "model": "c", "max_tokens": 5,
        "messages": [{"role": "user", "content": "[mock:context-length]"}]})
    assert anthropic_too_long.status_code == 400
    assert anthropic_too_long.json()["error"]["message"].startswith("prompt is too long: ")
