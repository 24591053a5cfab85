"""Prompt caching and what a session costs (SPEC §19), end to end: real gunicorn (2 gevent
workers), a real redis-server and the bundled mock, whose MOCK prompt cache bills a prefix
the same model saw recently as cache reads.

A Claude Code-like session (Messages, long system prompt, streamed), a Codex-like session
(Responses) and Chat sessions go through the gateway; their tokens, cache reads and cost
appear per session in ``GET /admin/sessions/<id>`` and per model in ``/metrics``; the
upstream bodies carry the cache hints (breakpoints, a stable ``prompt_cache_key``).
"""

from __future__ import annotations

import hashlib
import json
import time

import pytest
import requests

from devkit.gateway import Gateway
from devkit.processes import wait_until
from tests.support.configs import make_config_dict

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "usage-admin-token-0123456789"
GPT = "openai/gpt-4o-mini"                 # priced, takes prompt_cache_key, Responses native
CLAUDE = "anthropic/claude-sonnet-4-5"     # priced
LOCAL = "ollama/llama3"                    # no price: cost null
SYSTEM = "You are a careful coding agent. " * 40


@pytest.fixture(scope="module")
def gateway(mock_llm, shared_redis):
    raw = make_config_dict(
        model_providers=[
            {"model": GPT, "base_url": mock_llm.base_url, "default": True},
            {"model": CLAUDE, "base_url": mock_llm.base_url, "access_key": "sk-ant-upstream"},
            {"model": LOCAL, "base_url": mock_llm.base_url}],
        routing_preferences=[],
        admin={"token": ADMIN_TOKEN},
        prompt_caching={"enabled": True, "min_prefix_tokens": 50},
        routing={"session_ttl_seconds": 300,
                 "session_cache": {"type": "redis", "url": shared_redis.url}})
    with Gateway(raw, workers=2) as running:
        yield running


def unique(name: str) -> str:
    return f"{name}-{time.time_ns()}"


def post(gateway: Gateway, path: str, body: dict, session: str | None,
         **headers) -> requests.Response:
    if session is not None:
        headers["X-Model-Affinity"] = session
    answer = requests.post(f"{gateway.url}{path}", json=body, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer


def totals(gateway: Gateway, session: str) -> dict:
    """The session's usage totals from the admin API, once the last write has landed (it
    happens after the answer's last byte, so a moment after the client has it)."""
    def read():
        answer = requests.get(f"{gateway.url}/admin/sessions/{session}", timeout=5,
                              headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        return answer.json().get("usage") if answer.status_code == 200 else None
    return read()


def settled(gateway: Gateway, session: str, requests_expected: int) -> dict:
    wait_until(lambda: (totals(gateway, session) or {}).get("requests") == requests_expected,
               10, f"{requests_expected} requests recorded for {session}")
    return totals(gateway, session)


def upstream_bodies(mock_llm, path_suffix: str, marker: str) -> list[dict]:
    return [r["body"] for r in mock_llm.requests()
            if r["path"].endswith(path_suffix) and marker in json.dumps(r["body"])]


def sse_data(answer: requests.Response) -> list[dict]:
    return [json.loads(line[5:]) for line in answer.text.splitlines()
            if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]")]


@pytest.mark.parametrize("stream", [True, False])
def test_claude_code_like_session_shows_tokens_cache_reads_writes_and_cost(gateway, mock_llm,
                                                                           stream):
    session, marker = unique("claude-code"), unique("task")
    first = {"role": "user", "content": f"Fix the failing test {marker}"}
    body = {"model": CLAUDE, "max_tokens": 200, "stream": stream,
            "system": [{"type": "text", "text": SYSTEM}], "messages": [first]}
    post(gateway, "/v1/messages", body, session, **{"anthropic-version": "2023-06-01"})
    body["messages"] = [first, {"role": "assistant", "content": "Reading the test."},
                        {"role": "user", "content": "Go on."}]
    post(gateway, "/v1/messages", body, session, **{"anthropic-version": "2023-06-01"})

    sent = upstream_bodies(mock_llm, "/messages", marker)
    assert sent[0]["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert sent[1]["messages"][1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    usage = settled(gateway, session, 2)
    assert usage["cache_write_tokens"] > 0 and usage["cache_read_tokens"] > 0
    assert usage["cache_hits"] >= 1 and usage["output_tokens"] > 0
    assert usage["cost_usd"] > 0 and usage["unpriced_requests"] == 0


def test_codex_like_responses_session_carries_a_stable_prompt_cache_key(gateway, mock_llm):
    session, marker = unique("codex"), unique("task")
    turn = [{"role": "user", "content": f"Add a flag {marker}"}]
    body = {"model": GPT, "instructions": SYSTEM, "input": turn}
    post(gateway, "/v1/responses", body, session)
    body["input"] = turn + [{"role": "assistant", "content": "Done."},
                            {"role": "user", "content": "Now the docs."}]
    body["stream"] = True
    post(gateway, "/v1/responses", body, session)

    expected = hashlib.sha256(session.encode()).hexdigest()[:32]
    keys = [b.get("prompt_cache_key") for b in upstream_bodies(mock_llm, "/responses", marker)]
    assert keys == [expected, expected]
    usage = settled(gateway, session, 2)
    assert usage["cache_read_tokens"] > 0 and usage["cache_hits"] >= 1
    assert usage["input_tokens"] > 0 and usage["cost_usd"] > 0


@pytest.mark.parametrize("stream", [False, True])
def test_chat_sessions_count_cache_reads_and_cost(gateway, mock_llm, stream):
    session, marker = unique("chat"), unique("q")
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"Explain {marker}"}]
    post(gateway, "/v1/chat/completions", {"model": GPT, "messages": messages,
                                           "stream": stream}, session)
    messages += [{"role": "assistant", "content": "Sure."}, {"role": "user", "content": "More"}]
    post(gateway, "/v1/chat/completions", {"model": GPT, "messages": messages,
                                           "stream": stream}, session)
    usage = settled(gateway, session, 2)
    assert usage["cache_read_tokens"] > 0 and usage["cache_hits"] >= 1
    assert usage["cost_usd"] > 0
    sent = upstream_bodies(mock_llm, "/chat/completions", marker)
    assert {b["prompt_cache_key"] for b in sent} == {
        hashlib.sha256(session.encode()).hexdigest()[:32]}


def test_a_chat_stream_asks_for_usage_and_hides_the_chunk_the_client_did_not_ask_for(
        gateway, mock_llm):
    marker = unique("stream")
    body = {"model": GPT, "stream": True,
            "messages": [{"role": "user", "content": f"hello {marker}"}]}
    chunks = sse_data(post(gateway, "/v1/chat/completions", body, None))
    assert not [c for c in chunks if c.get("choices") == []]
    assert upstream_bodies(mock_llm, "/chat/completions", marker)[-1]["stream_options"] == {
        "include_usage": True}
    body["stream_options"] = {"include_usage": True}
    chunks = sse_data(post(gateway, "/v1/chat/completions", body, None))
    usage_chunks = [c for c in chunks if c.get("choices") == []]
    assert len(usage_chunks) == 1 and usage_chunks[0]["usage"]["prompt_tokens"] > 0


def test_an_unpriced_model_costs_null_not_zero(gateway):
    session = unique("local")
    post(gateway, "/v1/chat/completions",
         {"model": LOCAL, "messages": [{"role": "user", "content": "hi"}]}, session)
    usage = settled(gateway, session, 1)
    assert usage["cost_usd"] is None and usage["unpriced_requests"] == 1


def test_x_plano_cache_off_sends_no_hints(gateway, mock_llm):
    session, marker = unique("off"), unique("off")
    post(gateway, "/v1/chat/completions",
         {"model": GPT, "messages": [{"role": "user", "content": marker}]}, session,
         **{"X-Plano-Cache": "off"})
    post(gateway, "/v1/messages",
         {"model": CLAUDE, "max_tokens": 10, "system": SYSTEM,
          "messages": [{"role": "user", "content": "a"}, {"role": "assistant",
                                                          "content": "b"},
                       {"role": "user", "content": marker}]},
         unique("off-messages"), **{"X-Plano-Cache": "off", "anthropic-version": "2023-06-01"})
    assert "prompt_cache_key" not in upstream_bodies(mock_llm, "/chat/completions", marker)[-1]
    assert "cache_control" not in json.dumps(upstream_bodies(mock_llm, "/messages", marker)[-1])


def test_metrics_show_tokens_cost_and_cache_outcomes_per_model(gateway):
    session = unique("metrics")
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": unique("m")}]
    post(gateway, "/v1/chat/completions", {"model": GPT, "messages": messages}, session)
    post(gateway, "/v1/chat/completions", {"model": GPT, "messages": messages + [
        {"role": "assistant", "content": "ok"}, {"role": "user", "content": "again"}]},
        session)

    def value(text: str, series: str) -> float:
        line = next((line for line in text.splitlines() if line.startswith(series + " ")),
                    None)
        return float(line.split()[-1]) if line else 0.0

    def counted() -> bool:
        # Each worker adds its answers' usage to the counters within a second (SPEC §19).
        text = requests.get(f"{gateway.url}/metrics", timeout=5).text
        return (value(text, f'plano_tokens_total{{kind="cache_read",model="{GPT}"}}') > 0
                and value(text, f'plano_tokens_total{{kind="output",model="{GPT}"}}') > 0
                and value(text, f'plano_cost_usd_total{{model="{GPT}"}}') > 0
                and value(text, f'plano_prompt_cache_requests_total{{model="{GPT}",'
                                'outcome="hit"}') >= 1
                and value(text, f'plano_prompt_cache_requests_total{{model="{GPT}",'
                                'outcome="miss"}') >= 1)

    wait_until(counted, 5, "tokens, cost and cache outcomes counted")


@pytest.mark.parametrize(("path", "model", "stream"), [
    ("/v1/chat/completions", CLAUDE, True), ("/v1/chat/completions", CLAUDE, False),
    ("/v1/messages", GPT, True), ("/v1/responses", CLAUDE, False)])
def test_translated_answers_are_counted_from_what_the_upstream_reported(gateway, path, model,
                                                                       stream):
    session = unique("translated")
    if path == "/v1/messages":
        body = {"model": model, "max_tokens": 50, "messages": [{"role": "user",
                                                                "content": "hi"}]}
    elif path == "/v1/responses":
        body = {"model": model, "input": "hi"}
    else:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    body["stream"] = stream
    post(gateway, path, body, session, **{"anthropic-version": "2023-06-01"})
    usage = settled(gateway, session, 1)
    assert usage["input_tokens"] + usage["cache_read_tokens"] + usage["cache_write_tokens"] > 0
    assert usage["output_tokens"] > 0 and usage["cost_usd"] > 0
