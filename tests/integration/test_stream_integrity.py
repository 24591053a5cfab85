"""A failure is never an answer (SPEC §18), end to end: real gunicorn (gevent), a real
redis-server and the bundled mock, whose held ``end_after`` fault ends a stream cleanly
(the framing complete) after N events, without its terminal event.

Every client API to every kind of plan — the byte-level Chat pass-through, the same-shape
Messages and Responses pass-throughs, and translations both ways — gets its own API's
in-band error and never its normal end; the stream is counted in
``plano_upstream_stream_errors_total``; and a stream that ends before its first event
fails over to the next model of the route.
"""

from __future__ import annotations

import json

import pytest
import requests

from devkit.configs import DEEP_MODEL, FAST_MODEL
from devkit.gateway import Gateway
from devkit.stubs import Stub
from tests.support.configs import DEEP_PROMPT, FAST_PROMPT, make_config_dict

pytestmark = pytest.mark.integration

CLAUDE = "anthropic/claude-sonnet-4-6"
MODEL_IDS = {FAST_MODEL: "gpt-4o-mini", DEEP_MODEL: "gpt-5.2", CLAUDE: "claude-sonnet-4-6"}


@pytest.fixture(scope="module")
def mock():
    with Stub(name="integrity-mock") as stub:
        yield stub


@pytest.fixture(scope="module")
def gateway(mock, shared_redis):
    raw = make_config_dict(
        model_providers=[
            {"model": FAST_MODEL, "base_url": mock.base_url, "default": True},
            {"model": DEEP_MODEL, "base_url": mock.base_url},
            {"model": CLAUDE, "base_url": mock.base_url, "access_key": "sk-ant-upstream"}],
        routing_preferences=[
            {"name": "deep_reasoning", "description": "complex reasoning, mathematics with "
             "equations, detailed technical explanations", "models": [DEEP_MODEL, FAST_MODEL]}],
        routing={"session_ttl_seconds": 300,
                 "session_cache": {"type": "redis", "url": shared_redis.url,
                                   "key_prefix": "plano:integrity:"}})
    with Gateway(raw, workers=1) as running:
        yield running


@pytest.fixture(autouse=True)
def clean_mock(mock):
    requests.delete(f"{mock.url}/_mock/faults", timeout=5)
    yield
    requests.delete(f"{mock.url}/_mock/faults", timeout=5)


def hold_fault(mock, model: str, **fault) -> None:
    requests.post(f"{mock.url}/_mock/faults",
                  json={"model": MODEL_IDS[model], "count": 1, **fault},
                  timeout=5).raise_for_status()


def stream(gateway, api: str, model: str | None, prompt: str = FAST_PROMPT,
           headers: dict | None = None) -> requests.Response:
    body = {"chat": {"messages": [{"role": "user", "content": prompt}]},
            "messages": {"max_tokens": 64, "messages": [{"role": "user", "content": prompt}]},
            "responses": {"input": prompt}}[api]
    if model is not None:
        body["model"] = model
    path = {"chat": "/v1/chat/completions", "messages": "/v1/messages",
            "responses": "/v1/responses"}[api]
    return requests.post(f"{gateway.url}{path}", json={**body, "stream": True},
                         headers=headers or {}, timeout=15)


def events(raw: bytes) -> list[tuple[str | None, str]]:
    """(event name, data) of each SSE frame."""
    found = []
    for frame in raw.decode().split("\n\n"):
        name, data = None, []
        for line in frame.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            found.append((name, "\n".join(data)))
    return found


def stream_errors(gateway, model: str, reason: str) -> float:
    scrape = requests.get(f"{gateway.url}/metrics", timeout=5).text
    for line in scrape.splitlines():
        if (line.startswith("plano_upstream_stream_errors_total{")
                and f'model="{model}"' in line and f'reason="{reason}"' in line):
            return float(line.split()[-1])
    return 0.0


# (client API, model): the byte-level Chat pass-through, Chat translated to Anthropic,
# the Messages pass-through, Messages translated to Chat, the native Responses
# pass-through and Responses translated to Anthropic.
PLANS = [("chat", FAST_MODEL), ("chat", CLAUDE), ("messages", CLAUDE),
         ("messages", FAST_MODEL), ("responses", FAST_MODEL), ("responses", CLAUDE)]


@pytest.mark.parametrize("api, model", PLANS)
def test_a_stream_that_ends_without_its_terminal_event_reaches_the_client_as_an_error(
        gateway, mock, api, model):
    before = stream_errors(gateway, model, "incomplete")
    hold_fault(mock, model, end_after=3)
    answer = stream(gateway, api, model)
    assert answer.status_code == 200  # the head went out with the first event
    found = events(answer.content)
    names = [name for name, _ in found]
    datas = [data for _, data in found]
    if api == "chat":
        assert "[DONE]" not in datas
        last = json.loads(datas[-1])
        assert last["error"]["code"] == "upstream_stream_error"
        assert all(choice.get("finish_reason") != "stop" for data in datas[:-1]
                   for choice in json.loads(data).get("choices", []))
    elif api == "messages":
        assert names[-1] == "error" and "message_stop" not in names
        assert all('"end_turn"' not in data for data in datas)
    else:
        assert names[-1] == "response.failed" and "response.completed" not in names
        failed = json.loads(datas[-1])["response"]
        assert failed["status"] == "failed"
        assert failed["error"]["code"] == "upstream_stream_error"
    assert stream_errors(gateway, model, "incomplete") == before + 1


def test_a_native_responses_failure_keeps_the_upstream_ids(gateway, mock):
    hold_fault(mock, FAST_MODEL, end_after=4)
    found = events(stream(gateway, "responses", FAST_MODEL).content)
    payloads = [json.loads(data) for _, data in found]
    created = payloads[0]["response"]
    failed = payloads[-1]
    assert failed["type"] == "response.failed"
    assert failed["response"]["id"] == created["id"]
    assert failed["response"]["model"] == FAST_MODEL
    sequences = [payload["sequence_number"] for payload in payloads
                 if "sequence_number" in payload]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))


def test_a_whole_stream_is_relayed_with_its_normal_end(gateway):
    for api, model in PLANS:
        found = events(stream(gateway, api, model).content)
        names = [name for name, _ in found]
        if api == "chat":
            assert found[-1][1] == "[DONE]"
        elif api == "messages":
            assert names[-1] == "message_stop"
        else:
            assert names[-1] == "response.completed"


def test_a_stream_that_ends_before_its_first_event_fails_over(gateway, mock):
    session = f"integrity-{id(gateway)}"
    first = stream(gateway, "chat", None, DEEP_PROMPT, {"X-Model-Affinity": session})
    assert first.headers["x-plano-route"] == "deep_reasoning"
    hold_fault(mock, DEEP_MODEL, end_after=0)
    answer = stream(gateway, "chat", None, DEEP_PROMPT, {"X-Model-Affinity": session})
    assert answer.headers.get("x-plano-failover-from") == DEEP_MODEL, answer.text
    datas = [data for _, data in events(answer.content)]
    assert datas[-1] == "[DONE]"
    assert json.loads(datas[0])["model"] == FAST_MODEL
