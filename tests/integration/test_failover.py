"""Failover inside a route (SPEC §15), end to end: real gunicorn (gevent, one worker so the
health marks under test are the ones that answered), a real redis-server holding the pins,
and a mock upstream of this module's own whose faults are set per model: in the request
body (``mock_fault.models``, forwarded untouched to an OpenAI-interface model) or held by
the mock (``POST /_mock/faults``, for models that get a translated body).

Routes: ``deep_reasoning`` = gpt-5.2, gpt-4o-mini, claude-sonnet-4-6 (an Anthropic
interface); ``fast_responses`` = gpt-4o-mini, claude-sonnet-4-6.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from devkit.configs import DEEP_MODEL, FAST_MODEL
from devkit.gateway import Gateway
from devkit.processes import wait_until
from devkit.stubs import Stub
from tests.support.configs import DEEP_PROMPT, FAST_PROMPT, chat_body, make_config_dict

pytestmark = pytest.mark.integration

CLAUDE = "anthropic/claude-sonnet-4-6"
DEEP_ID, FAST_ID, CLAUDE_ID = "gpt-5.2", "gpt-4o-mini", "claude-sonnet-4-6"
KEY_PREFIX = "plano:failover:"
LISTENER_TIMEOUT_S = 2


@pytest.fixture(scope="module")
def mock():
    with Stub(name="failover-mock") as stub:
        yield stub


def _config(mock, redis, *, listener: dict | None = None, **failover) -> dict:
    return make_config_dict(
        model_providers=[
            {"model": FAST_MODEL, "base_url": mock.base_url, "default": True},
            {"model": DEEP_MODEL, "base_url": mock.base_url},
            {"model": CLAUDE, "base_url": mock.base_url, "access_key": "sk-ant-upstream"},
        ],
        routing_preferences=[
            {"name": "deep_reasoning", "description": "complex reasoning, mathematics with "
             "equations, detailed technical explanations",
             "models": [DEEP_MODEL, FAST_MODEL, CLAUDE]},
            {"name": "fast_responses", "description": "short answers, greetings, simple "
             "questions, quick creative snippets", "models": [FAST_MODEL, CLAUDE]}],
        listeners=[{"name": "model_listener", "type": "model", "address": "127.0.0.1",
                    "port": 12000, "timeout": f"{LISTENER_TIMEOUT_S}s", **(listener or {})}],
        routing={"session_ttl_seconds": 300, "failover": failover,
                 "session_cache": {"type": "redis", "url": redis.url,
                                   "key_prefix": KEY_PREFIX}})


@pytest.fixture(scope="module")
def gateway(mock, shared_redis):
    """Pins stay; a model is only marked down by a Retry-After (threshold out of reach)."""
    raw = _config(mock, shared_redis, failure_threshold=1000, cooldown_seconds=1)
    with Gateway(raw, workers=1) as running:
        yield running


@pytest.fixture(scope="module")
def marking_gateway(mock, shared_redis):
    """Three consecutive failures mark a model down for 3 s; one retry on the same model."""
    raw = _config(mock, shared_redis, listener={"max_retries": 1}, failure_threshold=3,
                  cooldown_seconds=3)
    with Gateway(raw, workers=1) as running:
        yield running


@pytest.fixture(scope="module")
def repinning_gateway(mock, shared_redis):
    raw = _config(mock, shared_redis, repin=True, failure_threshold=1000)
    with Gateway(raw, workers=1) as running:
        yield running


@pytest.fixture(autouse=True)
def clean_mock(mock):
    requests.delete(f"{mock.url}/_mock/faults", timeout=5)
    mock.clear()
    yield
    requests.delete(f"{mock.url}/_mock/faults", timeout=5)


# --------------------------------------------------------------------------- helpers


def hold_fault(mock, model_id: str, **fault) -> None:
    requests.post(f"{mock.url}/_mock/faults", json={"model": model_id, **fault},
                  timeout=5).raise_for_status()


def upstream_models(mock) -> list[str]:
    """The model ids the mock was asked for, in order."""
    return [r["body"]["model"] for r in mock.requests() if isinstance(r.get("body"), dict)]


def post(gateway, body: dict, session: str | None = None, path: str = "/v1/chat/completions",
         **kwargs) -> requests.Response:
    headers = {"X-Model-Affinity": session} if session else {}
    return requests.post(f"{gateway.url}{path}", json=body, headers=headers, timeout=10,
                         **kwargs)


def faulty(prompt: str = DEEP_PROMPT, **faults_by_model) -> dict:
    return chat_body(prompt, mock_fault={"models": faults_by_model})


def pinned_session(gateway, name: str, prompt: str = DEEP_PROMPT) -> str:
    session = f"{name}-{time.time_ns()}"
    first = post(gateway, chat_body(prompt), session)
    assert first.status_code == 200 and first.headers["x-plano-affinity"] == "new"
    return session


def stored_pin(redis, session: str) -> str:
    client = redis.client()
    try:
        return json.loads(client.get(f"{KEY_PREFIX}{session}"))["model_name"]
    finally:
        client.close()


def failovers(gateway, from_model: str, to_model: str, reason: str) -> float:
    scrape = requests.get(f"{gateway.url}/metrics", timeout=5).text
    labels = (f'from_model="{from_model}"', f'to_model="{to_model}"', f'reason="{reason}"')
    for line in scrape.splitlines():
        if line.startswith("plano_failovers_total{") and all(label in line for label in labels):
            return float(line.split()[-1])
    return 0.0


def back_on_model(gateway, session: str, model: str, timeout: float = 10.0) -> requests.Response:
    """Poll until the session's turn is answered by ``model`` itself (not a fallback)."""
    answers = []

    def served() -> bool:
        answers.append(post(gateway, chat_body(DEEP_PROMPT), session))
        return answers[-1].json().get("model") == model
    wait_until(served, timeout, f"session back on {model}", interval=0.1)
    return answers[-1]


# --------------------------------------------------------------------------- the chain


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 529])
def test_pinned_session_fails_over_on_status_and_keeps_its_pin(gateway, mock, shared_redis,
                                                               status):
    session = pinned_session(gateway, f"status-{status}")
    answer = post(gateway, faulty(**{DEEP_ID: {"status": status}}), session)

    assert answer.status_code == 200
    assert answer.json()["model"] == FAST_MODEL
    assert answer.headers["x-plano-affinity"] == "failover"
    assert answer.headers["x-plano-failover-from"] == DEEP_MODEL
    assert answer.headers["x-plano-route"] == "deep_reasoning"
    assert stored_pin(shared_redis, session) == DEEP_MODEL
    # The next turn (the model answers again) is back on the pinned model.
    after = post(gateway, chat_body(DEEP_PROMPT), session)
    assert after.json()["model"] == DEEP_MODEL
    assert after.headers["x-plano-affinity"] == "pinned"
    assert "x-plano-failover-from" not in after.headers
    assert failovers(gateway, DEEP_MODEL, FAST_MODEL, f"http_{status}") >= 1


@pytest.mark.parametrize("status", [400, 404, 422])
def test_other_4xx_is_relayed_at_once(gateway, mock, status):
    session = pinned_session(gateway, f"client-error-{status}")
    mock.clear()
    answer = post(gateway, faulty(**{DEEP_ID: {"status": status}}), session)

    assert answer.status_code == status
    assert answer.json()["error"]["code"] == f"mock_{status}"
    assert answer.headers["x-plano-affinity"] == "pinned"
    assert "x-plano-failover-from" not in answer.headers
    assert upstream_models(mock) == [DEEP_ID]


def test_dropped_connection_fails_over(gateway, mock):
    answer = post(gateway, faulty(**{DEEP_ID: {"drop": 1}}))

    assert answer.status_code == 200
    assert answer.json()["model"] == FAST_MODEL
    assert answer.headers["x-plano-failover-from"] == DEEP_MODEL
    # No session: nothing to say about affinity.
    assert "x-plano-affinity" not in answer.headers
    assert failovers(gateway, DEEP_MODEL, FAST_MODEL, "connection") >= 1


def test_slow_head_uses_up_the_listener_timeout_and_nothing_else_is_tried(gateway, mock):
    slow = (LISTENER_TIMEOUT_S + 2) * 1000
    answer = post(gateway, faulty(**{DEEP_ID: {"latency_ms": slow}}))

    assert answer.status_code == 504
    # The whole chain is bounded by the listener timeout: no budget left for a fallback.
    assert upstream_models(mock) == [DEEP_ID]


def test_every_candidate_failing_relays_the_last_failure(gateway, mock):
    hold_fault(mock, DEEP_ID, status=503)
    hold_fault(mock, FAST_ID, status=502)
    hold_fault(mock, CLAUDE_ID, status=500)
    session = f"all-fail-{time.time_ns()}"
    answer = post(gateway, chat_body(DEEP_PROMPT), session)

    assert answer.status_code == 500
    assert answer.json()["error"]["message"]
    assert answer.headers["x-plano-failover-from"] == DEEP_MODEL
    assert answer.headers["x-plano-affinity"] == "new"  # nobody answered: no "failover"
    assert upstream_models(mock) == [DEEP_ID, FAST_ID, CLAUDE_ID]


def test_openai_model_fails_over_to_an_anthropic_one_translated(gateway, mock):
    hold_fault(mock, DEEP_ID, status=503)
    hold_fault(mock, FAST_ID, drop=1)
    answer = post(gateway, chat_body(DEEP_PROMPT))

    assert answer.status_code == 200
    body = answer.json()
    assert body["object"] == "chat.completion" and body["model"] == CLAUDE
    assert body["choices"][0]["message"]["content"]
    assert answer.headers["x-plano-failover-from"] == DEEP_MODEL
    assert [r["path"] for r in mock.requests()][-1] == "/v1/messages"


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/responses"])
def test_messages_and_responses_fail_over(gateway, mock, path):
    hold_fault(mock, DEEP_ID, status=529)
    if path == "/v1/messages":
        body = {"model": DEEP_MODEL, "max_tokens": 64,
                "messages": [{"role": "user", "content": DEEP_PROMPT}]}
    else:
        body = {"model": DEEP_MODEL, "input": DEEP_PROMPT}
    session = f"api-{path.rsplit('/', 1)[-1]}-{time.time_ns()}"
    answer = post(gateway, body, session, path=path)

    assert answer.status_code == 200
    assert answer.json()["model"] == FAST_MODEL
    assert answer.headers["x-plano-affinity"] == "failover"
    assert answer.headers["x-plano-failover-from"] == DEEP_MODEL
    assert answer.json()["type" if path == "/v1/messages" else "object"] in (
        "message", "response")


# --------------------------------------------------------------------------- streams


@pytest.mark.parametrize("fault", [{"status": 503}, {"drop": 1}, {"break_after": 0}],
                         ids=["status", "no-head", "head-then-cut"])
def test_stream_failing_before_its_first_byte_fails_over(gateway, mock, fault):
    session = pinned_session(gateway, "stream-before")
    body = faulty(**{DEEP_ID: fault}) | {"stream": True}
    with post(gateway, body, session, stream=True) as answer:
        text = answer.text
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert answer.headers["x-plano-affinity"] == "failover"
    assert answer.headers["x-plano-failover-from"] == DEEP_MODEL
    chunks = [json.loads(line[6:]) for line in text.splitlines()
              if line.startswith("data: {")]
    assert chunks and {chunk["model"] for chunk in chunks} == {FAST_MODEL}
    assert text.rstrip().endswith("data: [DONE]")


def test_stream_that_started_is_never_retried(gateway, mock):
    session = pinned_session(gateway, "stream-after")
    mock.clear()
    body = faulty(**{DEEP_ID: {"break_after": 2}}) | {"stream": True}
    with post(gateway, body, session, stream=True) as answer:
        text = answer.text
    assert answer.status_code == 200
    assert answer.headers["x-plano-affinity"] == "pinned"
    assert "x-plano-failover-from" not in answer.headers
    models = {json.loads(line[6:]).get("model") for line in text.splitlines()
              if line.startswith("data: {") and '"model"' in line}
    assert models == {DEEP_MODEL}
    assert '"error"' in text  # told in-band that the stream broke off
    assert upstream_models(mock) == [DEEP_ID]


# --------------------------------------------------------------------------- routing API


def test_routing_api_lists_the_ranked_candidates(gateway):
    routed = post(gateway, chat_body(DEEP_PROMPT), path="/routing/v1/chat/completions")
    assert routed.json()["models"] == [DEEP_MODEL, FAST_MODEL, CLAUDE]

    session = pinned_session(gateway, "routing-hit", prompt=FAST_PROMPT)
    hit = post(gateway, chat_body(DEEP_PROMPT), session, path="/routing/v1/chat/completions")
    assert hit.json()["pinned"] is True
    assert hit.json()["models"] == [FAST_MODEL, CLAUDE]


# --------------------------------------------------------------------------- health marks


def test_retry_after_marks_the_model_down_without_waiting_or_retrying(marking_gateway, mock):
    session = pinned_session(marking_gateway, "retry-after")
    mock.clear()
    # max_retries is 1 here, yet a 503 with Retry-After is not retried on the same model.
    first = post(marking_gateway, faulty(**{DEEP_ID: {"status": 503, "retry_after": 30}}),
                 session)
    assert first.json()["model"] == FAST_MODEL
    assert upstream_models(mock) == [DEEP_ID, FAST_ID]
    # Down in this worker for min(Retry-After, cooldown) = 3 s: skipped at once, not called.
    mock.clear()
    skipped = post(marking_gateway, chat_body(DEEP_PROMPT), session)
    assert skipped.json()["model"] == FAST_MODEL
    assert skipped.headers["x-plano-affinity"] == "failover"
    assert skipped.headers["x-plano-failover-from"] == DEEP_MODEL
    assert upstream_models(mock) == [FAST_ID]
    assert failovers(marking_gateway, DEEP_MODEL, FAST_MODEL, "down") >= 1
    back = back_on_model(marking_gateway, session, DEEP_MODEL)
    assert back.headers["x-plano-affinity"] == "pinned"


def test_max_retries_retries_the_same_model_first(marking_gateway, mock):
    session = pinned_session(marking_gateway, "max-retries")
    mock.clear()
    hold_fault(mock, DEEP_ID, status=502, count=1)
    answer = post(marking_gateway, chat_body(DEEP_PROMPT), session)

    assert answer.json()["model"] == DEEP_MODEL
    assert answer.headers["x-plano-affinity"] == "pinned"
    assert "x-plano-failover-from" not in answer.headers
    assert upstream_models(mock) == [DEEP_ID, DEEP_ID]


def test_down_model_is_skipped_then_probed_and_the_session_returns(marking_gateway, mock,
                                                                   shared_redis):
    session = pinned_session(marking_gateway, "health")
    hold_fault(mock, DEEP_ID, status=500)
    # Two tries per request (max_retries 1): the second request's first failure is the
    # third in a row, which marks the model down.
    mock.clear()
    for _ in range(2):
        answer = post(marking_gateway, chat_body(DEEP_PROMPT), session)
        assert answer.json()["model"] == FAST_MODEL
        assert answer.headers["x-plano-affinity"] == "failover"
    assert upstream_models(mock) == [DEEP_ID, DEEP_ID, FAST_ID, DEEP_ID, FAST_ID]
    mock.clear()
    skipped = post(marking_gateway, chat_body(DEEP_PROMPT), session)
    assert skipped.json()["model"] == FAST_MODEL
    assert skipped.headers["x-plano-affinity"] == "failover"
    assert skipped.headers["x-plano-failover-from"] == DEEP_MODEL
    assert upstream_models(mock) == [FAST_ID]   # not after a timeout: not called at all

    requests.delete(f"{mock.url}/_mock/faults", timeout=5)   # the model recovers
    back = back_on_model(marking_gateway, session, DEEP_MODEL)
    assert back.headers["x-plano-affinity"] == "pinned"
    assert stored_pin(shared_redis, session) == DEEP_MODEL


# --------------------------------------------------------------------------- repin


def test_repin_moves_the_pin_to_the_model_that_answered(repinning_gateway, shared_redis):
    session = pinned_session(repinning_gateway, "repin")
    answer = post(repinning_gateway, faulty(**{DEEP_ID: {"status": 503}}), session)
    assert answer.json()["model"] == FAST_MODEL
    assert answer.headers["x-plano-affinity"] == "failover"
    assert stored_pin(shared_redis, session) == FAST_MODEL

    after = post(repinning_gateway, chat_body(DEEP_PROMPT), session)
    assert after.json()["model"] == FAST_MODEL
    assert after.headers["x-plano-affinity"] == "pinned"


def test_messages_stream_cut_before_its_first_event_fails_over(gateway, mock):
    hold_fault(mock, DEEP_ID, break_after=0)
    body = {"model": DEEP_MODEL, "max_tokens": 64, "stream": True,
            "messages": [{"role": "user", "content": DEEP_PROMPT}]}
    with post(gateway, body, f"messages-stream-{time.time_ns()}", path="/v1/messages",
              stream=True) as answer:
        text = answer.text
    assert answer.status_code == 200
    assert answer.headers["x-plano-affinity"] == "failover"
    assert answer.headers["x-plano-failover-from"] == DEEP_MODEL
    assert "event: message_start" in text and "event: message_stop" in text
    assert f'"model":"{FAST_MODEL}"' in text.replace(" ", "")
    assert "event: error" not in text
