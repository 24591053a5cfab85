"""The three client APIs through real gunicorn + the mock upstream, with the official SDKs
(SPEC §12, §13): create and stream, tools, images and errors for every client API x
upstream interface pair; pins shared across APIs through Redis; routers fed from all three
shapes. One gateway (2 gevent workers, Redis session cache) serves the whole module.
"""

from __future__ import annotations

import base64
import json
import time

import anthropic
import openai
import pytest
import requests

from devkit.gateway import Gateway
from tests.support.configs import DEEP_PROMPT, make_config_dict

pytestmark = pytest.mark.integration

CLIENT_KEY = "client-key-for-tests"
CLAUDE = "anthropic/claude-sonnet-4-6"
NATIVE = "openai/gpt-4o-mini"          # vendor openai: Responses go natively
TRANSLATED = "openai/gpt-5.2"          # responses: translate (through /chat/completions)
# A prompt no route matches: the requested model serves it.
NEUTRAL = "plok qwx zzyv"
CODE_PROMPT = "Refactor and debug this Python source code, programming task"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nmock-image").decode()
LISTENER_TIMEOUT_S = 3
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


@pytest.fixture(scope="module")
def gateway(mock_llm, shared_redis):
    raw = make_config_dict(
        model_providers=[
            {"model": NATIVE, "base_url": mock_llm.base_url, "default": True},
            {"model": TRANSLATED, "base_url": mock_llm.base_url, "responses": "translate"},
            {"model": CLAUDE, "base_url": mock_llm.base_url, "access_key": "sk-ant-upstream",
             "max_tokens": 321},
            {"model": "anthropic/claude-down", "base_url": "http://127.0.0.1:9/v1"},
        ],
        routing_preferences=[
            {"name": "deep_reasoning", "description": "complex reasoning, mathematics with "
             "equations, detailed technical explanations", "models": [TRANSLATED]},
            {"name": "code_generation", "description": "writing, reviewing, refactoring "
             "and debugging source code, programming tasks", "models": [CLAUDE]}],
        listeners=[{"name": "model_listener", "type": "model", "address": "127.0.0.1",
                    "port": 12000, "timeout": f"{LISTENER_TIMEOUT_S}s"}],
        server={"api_keys": [CLIENT_KEY]},
        routing={"session_ttl_seconds": 300,
                 "session_cache": {"type": "redis", "url": shared_redis.url}})
    with Gateway(raw, workers=2) as running:
        yield running


@pytest.fixture(scope="module")
def claude(gateway):
    with anthropic.Anthropic(base_url=gateway.url, api_key=CLIENT_KEY,
                             max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def oai(gateway):
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY,
                       max_retries=0) as client:
        yield client


UPSTREAMS = [NATIVE, TRANSLATED, CLAUDE]


def last_upstream(mock_llm) -> dict:
    return mock_llm.requests()[-1]


# --- Messages ------------------------------------------------------------------------------

@pytest.mark.parametrize("model", [NATIVE, CLAUDE])
def test_messages_create_and_stream(claude, mock_llm, model):
    message = claude.messages.create(model=model, max_tokens=50, system="be brief",
                                     messages=[{"role": "user", "content": NEUTRAL}])
    assert message.model == model and message.stop_reason == "end_turn"
    assert message.content[0].text.startswith("[mock-llm]") and NEUTRAL in message.content[0].text
    assert message.usage.input_tokens >= 1 and message.usage.output_tokens >= 1
    upstream = last_upstream(mock_llm)
    if model == CLAUDE:
        assert upstream["path"] == "/v1/messages"
        assert upstream["headers"]["x-api-key"] == "sk-ant-upstream"
        # the SDK's own anthropic-version, forwarded as sent
        assert upstream["headers"]["anthropic-version"] == claude.default_headers[
            "anthropic-version"]
        assert CLIENT_KEY not in json.dumps(upstream["headers"])
    else:
        assert upstream["path"] == "/v1/chat/completions"
        assert upstream["body"]["messages"][0] == {"role": "system", "content": "be brief"}
    with claude.messages.stream(model=model, max_tokens=50,
                                messages=[{"role": "user", "content": NEUTRAL}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert NEUTRAL in text and final.model == model and final.stop_reason == "end_turn"
    assert final.usage.output_tokens >= 1


@pytest.mark.parametrize("model", [NATIVE, CLAUDE])
@pytest.mark.parametrize("stream", [False, True])
def test_messages_tools_and_tool_results(claude, model, stream):
    tools = [{"name": "weather", "description": "the weather", "input_schema": WEATHER}]
    asked = [{"role": "user", "content": f"weather in Oslo? {TOOL}"}]
    if stream:
        with claude.messages.stream(model=model, max_tokens=50, tools=tools,
                                    messages=asked) as events:
            message = events.get_final_message()
    else:
        message = claude.messages.create(model=model, max_tokens=50, tools=tools,
                                         messages=asked)
    assert message.stop_reason == "tool_use"
    call = message.content[-1]
    assert call.type == "tool_use" and call.name == "weather" and call.input["mock"] is True
    answer = claude.messages.create(model=model, max_tokens=50, tools=tools, messages=asked + [
        {"role": "assistant", "content": [c.model_dump() for c in message.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                      "content": "sunny"}]}])
    assert "tool result: sunny" in answer.content[0].text


@pytest.mark.parametrize("model", [NATIVE, CLAUDE])
def test_messages_images(claude, model):
    message = claude.messages.create(model=model, max_tokens=50, messages=[{
        "role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PNG}}]}])
    assert "[images: 1]" in message.content[0].text


def test_messages_errors_raise_the_matching_anthropic_exceptions(gateway, claude):
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.create(model="no-such-model", max_tokens=5,
                               messages=[{"role": "user", "content": "x"}])
    assert caught.value.body["error"]["code"] == "model_not_found"
    with pytest.raises(anthropic.BadRequestError, match="web_search"):
        claude.messages.create(model=NATIVE, max_tokens=5, tools=[
            {"type": "web_search_20250305", "name": "web_search"}],
            messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.InternalServerError):   # 502: api_error
        claude.messages.create(model="anthropic/claude-down", max_tokens=5,
                               messages=[{"role": "user", "content": "x"}])
    with anthropic.Anthropic(base_url=gateway.url, api_key="wrong", max_retries=0) as wrong:
        with pytest.raises(anthropic.AuthenticationError):
            wrong.messages.create(model=CLAUDE, max_tokens=5,
                                  messages=[{"role": "user", "content": "x"}])
    with anthropic.Anthropic(base_url=gateway.url, auth_token=CLIENT_KEY,
                             max_retries=0) as bearer:
        assert bearer.messages.create(model=CLAUDE, max_tokens=5, messages=[
            {"role": "user", "content": NEUTRAL}]).model == CLAUDE


def test_messages_pass_through_forwards_anthropic_beta_and_lists_no_drops(gateway, mock_llm):
    response = requests.post(f"{gateway.url}/v1/messages", json={
        "model": CLAUDE, "max_tokens": 5, "metadata": {"user_id": "u"},
        "messages": [{"role": "user", "content": NEUTRAL}]},
        headers={"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01",
                 "anthropic-beta": "fine-grained-tool-streaming-2025-05-14"}, timeout=10)
    assert response.status_code == 200 and "x-plano-dropped" not in response.headers
    upstream = last_upstream(mock_llm)
    assert upstream["headers"]["anthropic-beta"] == "fine-grained-tool-streaming-2025-05-14"
    assert upstream["body"]["metadata"] == {"user_id": "u"}
    translated = requests.post(f"{gateway.url}/v1/messages", json={
        "model": NATIVE, "max_tokens": 5, "metadata": {"user_id": "u"},
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": NEUTRAL}]},
        headers={"x-api-key": CLIENT_KEY}, timeout=10)
    assert translated.headers["x-plano-dropped"] == "metadata,thinking"


# --- Responses -----------------------------------------------------------------------------

@pytest.mark.parametrize("model", UPSTREAMS)
def test_responses_create_and_stream(oai, mock_llm, model):
    response = oai.responses.create(model=model, instructions="be brief", input=NEUTRAL)
    assert response.model == model and response.status == "completed"
    assert NEUTRAL in response.output_text and response.usage.output_tokens >= 1
    path = last_upstream(mock_llm)["path"]
    assert path == {NATIVE: "/v1/responses", TRANSLATED: "/v1/chat/completions",
                    CLAUDE: "/v1/messages"}[model]
    with oai.responses.stream(model=model, input=NEUTRAL) as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert NEUTRAL in "".join(deltas) and final.model == model
    assert NEUTRAL in final.output_text


@pytest.mark.parametrize("model", UPSTREAMS)
@pytest.mark.parametrize("stream", [False, True])
def test_responses_function_and_custom_tools_as_codex_sends_them(oai, model, stream):
    tools = [{"type": "custom", "name": "apply_patch", "description": "apply a patch"},
             {"type": "function", "name": "shell", "parameters": WEATHER}]
    asked = [{"type": "message", "role": "user",
              "content": [{"type": "input_text", "text": f"patch it {TOOL}"}]}]
    if stream:
        with oai.responses.stream(model=model, input=asked, tools=tools) as events:
            response = events.get_final_response()
    else:
        response = oai.responses.create(model=model, input=asked, tools=tools)
    call = response.output[-1]
    assert call.type == "custom_tool_call" and call.name == "apply_patch"
    assert call.input == "*** mock patch ***"
    follow = oai.responses.create(model=model, tools=tools, input=asked + [
        {"type": "custom_tool_call", "call_id": call.call_id, "name": "apply_patch",
         "input": call.input},
        {"type": "custom_tool_call_output", "call_id": call.call_id, "output": "Done!"}])
    assert "tool result: Done!" in follow.output_text


@pytest.mark.parametrize("model", UPSTREAMS)
def test_responses_images(oai, model):
    response = oai.responses.create(model=model, input=[{"role": "user", "content": [
        {"type": "input_text", "text": "what is this"},
        {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"}]}])
    assert "[images: 1]" in response.output_text


def test_responses_errors_and_dropped_hints(gateway, oai):
    with pytest.raises(openai.BadRequestError) as caught:
        oai.responses.create(model=CLAUDE, input="x", previous_response_id="resp_1")
    assert caught.value.code == "unsupported_parameter"
    with pytest.raises(openai.BadRequestError, match="web_search"):
        oai.responses.create(model=CLAUDE, input="x", tools=[{"type": "web_search"}])
    with pytest.raises(openai.InternalServerError):
        oai.responses.create(model="anthropic/claude-down", input="x")
    raw = oai.responses.with_raw_response.create(model=CLAUDE, input=NEUTRAL, store=False,
                                                 metadata={"k": "v"})
    assert raw.headers["x-plano-dropped"] == "store,metadata"
    native = oai.responses.with_raw_response.create(model=NATIVE, input=NEUTRAL, store=False)
    assert "x-plano-dropped" not in native.headers


@pytest.mark.parametrize("path, shape", [("messages", "anthropic"), ("responses", "openai")])
def test_a_stream_whose_upstream_is_down_is_a_plain_error_in_the_api_shape(gateway, path,
                                                                            shape):
    body = ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
            if path == "messages" else {"input": "x"})
    answer = requests.post(f"{gateway.url}/v1/{path}", timeout=20,
                           headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                           json={**body, "model": "anthropic/claude-down", "stream": True})
    assert answer.status_code == 502   # nothing streamed yet: an ordinary error answer
    error = answer.json()["error"]
    assert error["code"] == "upstream_unreachable"
    assert error["type"] == ("api_error" if shape == "anthropic" else "upstream_error")


def test_a_stream_that_breaks_off_ends_with_one_in_band_error_of_the_api_kind(claude, oai):
    """SPEC §12: the mock pauses between events longer than the listener timeout, so the
    gateway gives up mid-stream: Messages clients get an ``error`` event (the SDK raises),
    Responses clients ``response.failed``."""
    slow = {"mock_fault": {"chunk_delay_ms": (LISTENER_TIMEOUT_S + 1) * 1000}}
    with pytest.raises(anthropic.APIError, match="timed out"):
        with claude.messages.stream(model=CLAUDE, max_tokens=5, extra_body=slow,
                                    messages=[{"role": "user", "content": NEUTRAL}]) as events:
            for _ in events:
                pass
    events = list(oai.responses.create(model=NATIVE, input=NEUTRAL, stream=True,
                                       extra_body=slow))
    assert events[0].type == "response.created"
    assert events[-1].type == "response.failed"
    assert events[-1].response.error.code == "upstream_timeout"


# --- Chat to Anthropic ---------------------------------------------------------------------

def test_chat_to_anthropic_create_stream_tools_images(oai, mock_llm):
    completion = oai.chat.completions.create(model=CLAUDE, messages=[
        {"role": "system", "content": "be brief"}, {"role": "user", "content": NEUTRAL}])
    assert completion.model == CLAUDE and NEUTRAL in completion.choices[0].message.content
    upstream = last_upstream(mock_llm)
    assert upstream["path"] == "/v1/messages" and upstream["body"]["max_tokens"] == 321
    assert upstream["headers"]["anthropic-version"] == "2023-06-01"   # translated: pinned
    assert upstream["body"]["system"] == "be brief"
    chunks = list(oai.chat.completions.create(
        model=CLAUDE, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": NEUTRAL}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert NEUTRAL in text and chunks[-1].usage.completion_tokens >= 1
    tools = [{"type": "function", "function": {"name": "weather", "parameters": WEATHER}}]
    called = oai.chat.completions.create(model=CLAUDE, tools=tools, messages=[
        {"role": "user", "content": f"weather? {TOOL}"}])
    call = called.choices[0].message.tool_calls[0]
    assert called.choices[0].finish_reason == "tool_calls" and call.function.name == "weather"
    answered = oai.chat.completions.create(model=CLAUDE, tools=tools, messages=[
        {"role": "user", "content": f"weather? {TOOL}"},
        called.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    assert "tool result: sunny" in answered.choices[0].message.content
    image = oai.chat.completions.create(model=CLAUDE, messages=[{"role": "user", "content": [
        {"type": "text", "text": "what"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}])
    assert "[images: 1]" in image.choices[0].message.content
    with pytest.raises(openai.BadRequestError, match="web_search"):
        oai.chat.completions.create(model=CLAUDE, messages=[{"role": "user", "content": "x"}],
                                    tools=[{"type": "web_search"}])


def test_chat_to_openai_stays_a_pass_through(oai, mock_llm):
    oai.chat.completions.create(model=NATIVE, messages=[{"role": "user", "content": NEUTRAL}],
                                extra_body={"mock_fault": {"latency_ms": 0}, "seed": 3})
    upstream = last_upstream(mock_llm)
    assert upstream["path"] == "/v1/chat/completions"
    assert upstream["body"]["seed"] == 3 and "mock_fault" in upstream["body"]


# --- one decision path ---------------------------------------------------------------------

def test_a_session_pinned_through_one_api_stays_pinned_through_the_others(
        gateway, claude, oai, shared_redis):
    session = f"cross-api-{time.time_ns()}"
    headers = {"X-Model-Affinity": session}
    first = claude.messages.with_raw_response.create(
        max_tokens=20, messages=[{"role": "user", "content": CODE_PROMPT}],
        model=NATIVE, extra_headers=headers)
    assert first.headers["x-plano-affinity"] == "new"
    assert first.headers["x-plano-route"] == "code_generation"
    assert first.parse().model == CLAUDE
    stored = shared_redis.client().get(f"plano:affinity:{session}")
    assert json.loads(stored) == {"model_name": CLAUDE, "route_name": "code_generation"}
    for call in (
            lambda: oai.responses.with_raw_response.create(input=DEEP_PROMPT,
                                                           extra_headers=headers),
            lambda: oai.chat.completions.with_raw_response.create(
                model=NATIVE, messages=[{"role": "user", "content": DEEP_PROMPT}],
                extra_headers=headers),
            lambda: claude.messages.with_raw_response.create(
                model=NATIVE, max_tokens=20, extra_headers=headers,
                messages=[{"role": "user", "content": DEEP_PROMPT}])):
        raw = call()
        assert raw.headers["x-plano-pinned"] == "true"
        assert raw.headers["x-plano-affinity"] == "pinned"
        assert raw.headers["x-plano-route"] == "code_generation"
        body = json.loads(raw.http_response.content)
        assert body["model"] == CLAUDE and body["x_plano_pinned"] is True


SHAPES = {
    "chat/completions": lambda text: {"messages": [{"role": "system", "content": "sys"},
                                                   {"role": "user", "content": text}]},
    "messages": lambda text: {"max_tokens": 5, "system": [{"type": "text", "text": "sys"}],
                              "messages": [{"role": "user", "content": [
                                  {"type": "text", "text": text}]}]},
    "responses": lambda text: {"instructions": "sys", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": text}]}]},
}


@pytest.mark.parametrize("path", SHAPES)
@pytest.mark.parametrize("prompt, route, model", [(DEEP_PROMPT, "deep_reasoning", TRANSLATED),
                                                  (CODE_PROMPT, "code_generation", CLAUDE)])
def test_routers_read_the_conversation_from_every_shape(gateway, path, prompt, route, model):
    session = f"route-{path.replace('/', '-')}-{route}-{time.time_ns()}"
    answer = requests.post(f"{gateway.url}/routing/v1/{path}", json=SHAPES[path](prompt),
                           headers={"Authorization": f"Bearer {CLIENT_KEY}",
                                    "X-Model-Affinity": session}, timeout=10)
    assert answer.status_code == 200, answer.text
    payload = answer.json()
    assert payload["route"] == route and payload["models"] == [model]
    assert payload["session_id"] == session and payload["pinned"] is False
    again = requests.post(f"{gateway.url}/routing/v1/{path}", json=SHAPES[path]("hi"),
                          headers={"Authorization": f"Bearer {CLIENT_KEY}",
                                   "X-Model-Affinity": session}, timeout=10)
    assert again.json()["pinned"] is True and again.json()["models"] == [model]


def test_routing_only_messages_errors_are_anthropic_shaped(gateway):
    answer = requests.post(f"{gateway.url}/routing/v1/messages", json={"messages": []},
                           headers={"x-api-key": CLIENT_KEY}, timeout=10)
    assert answer.status_code == 400
    assert answer.json()["type"] == "error"
    assert answer.json()["error"]["type"] == "invalid_request_error"


def test_metrics_count_each_api_under_its_endpoint(gateway, claude, oai):
    claude.messages.create(model=CLAUDE, max_tokens=5, messages=[
        {"role": "user", "content": NEUTRAL}])
    oai.responses.create(model=NATIVE, input=NEUTRAL)
    text = requests.get(f"{gateway.url}/metrics", timeout=10).text
    assert 'endpoint="/v1/messages"' in text and 'endpoint="/v1/responses"' in text


TOOL = "[mock:tool]"
