"""Provider differences absorbed by the upstream adapters (SPEC §18), through real gunicorn
(gevent workers) and the bundled MOCK upstream, with the official SDKs: the mock imitates
each provider's quirk on request (``[mock:parallel]``, ``[mock:reasoning]``,
``[mock:context-length]``) and records what the gateway sent it.
"""

from __future__ import annotations

import base64
import re

import anthropic
import openai
import pytest
import requests

from devkit.configs import DEEP_MODEL, FAST_MODEL
from devkit.gateway import Gateway
from tests.support.configs import make_config_dict

pytestmark = pytest.mark.integration

GEMINI = "gemini/gemini-2.5-pro"
MISTRAL = "mistral/mistral-large-latest"
GROQ = "groq/llama-3.3-70b"
O3 = "openai/o3"
# an OpenAI reasoning model behind an OpenAI-compatible proxy the catalogue does not know
PROXY_O4 = "proxy/o4-mini"
AZURE = "azure_openai/my-deployment"
CLAUDE = "anthropic/claude-sonnet-4-6"
# Words no route matches: the requested model serves the request.
NEUTRAL = "plok qwx zzyv"
LONG = "mcp__github-enterprise.internal__create_or_update_file_contents_in_a_repository_branch"
SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}}}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nmock-image").decode()
NINE_ALNUM = re.compile(r"[A-Za-z0-9]{9}")


@pytest.fixture(scope="module")
def gateway(mock_llm):
    upstream = mock_llm.base_url
    raw = make_config_dict(model_providers=[
        {"model": FAST_MODEL, "base_url": upstream, "default": True},
        {"model": DEEP_MODEL, "base_url": upstream},
        {"model": GEMINI, "base_url": upstream},
        {"model": MISTRAL, "base_url": upstream},
        {"model": GROQ, "base_url": upstream},
        {"model": O3, "base_url": upstream},
        {"model": PROXY_O4, "base_url": upstream, "provider_interface": "openai"},
        # host only: the catalogue's /openai/deployments/<id> prefix is used
        {"model": AZURE, "base_url": mock_llm.url, "access_key": "azure-key"},
        {"model": CLAUDE, "base_url": upstream, "access_key": "sk-ant-upstream"},
    ])
    with Gateway(raw, workers=2) as running:
        yield running


@pytest.fixture(scope="module")
def claude(gateway):
    with anthropic.Anthropic(base_url=gateway.url, api_key="k", max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def oai(gateway):
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="k", max_retries=0) as client:
        yield client


def last_upstream(mock_llm) -> dict:
    return mock_llm.requests()[-1]


def read_tool(name: str = "read") -> dict:
    return {"name": name, "description": "read a file", "input_schema": SCHEMA}


def ask(claude, model: str, stream: bool, **kwargs):
    if stream:
        with claude.messages.stream(model=model, max_tokens=50, **kwargs) as events:
            return events.get_final_message()
    return claude.messages.create(model=model, max_tokens=50, **kwargs)


@pytest.mark.parametrize("stream", [False, True])
def test_gemini_parallel_calls_reach_a_messages_client_as_two_tool_uses(claude, stream):
    message = ask(claude, GEMINI, stream, tools=[read_tool()], messages=[
        {"role": "user", "content": f"{NEUTRAL} [mock:parallel]"}])
    calls = [block for block in message.content if block.type == "tool_use"]
    assert len(calls) == 2 and calls[0].id != calls[1].id
    assert all(call.name == "read" for call in calls)
    assert message.stop_reason == "tool_use"     # the mock said "stop"


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_ending_end_turn_reach_a_chat_client_as_tool_calls(oai, stream):
    body = dict(model=CLAUDE, messages=[{"role": "user", "content": f"{NEUTRAL} [mock:parallel]"}],
                tools=[{"type": "function", "function": {"name": "read",
                                                         "parameters": SCHEMA}}])
    if stream:
        finishes, ids = [], set()
        for chunk in oai.chat.completions.create(stream=True, **body):
            for choice in chunk.choices:
                finishes += [choice.finish_reason] if choice.finish_reason else []
                ids |= {call.id for call in choice.delta.tool_calls or [] if call.id}
        assert finishes == ["tool_calls"] and len(ids) == 2
    else:
        choice = oai.chat.completions.create(**body).choices[0]
        assert choice.finish_reason == "tool_calls" and len(choice.message.tool_calls) == 2


@pytest.mark.parametrize("stream", [False, True])
def test_long_tool_names_are_shortened_upstream_and_restored_for_the_client(
        claude, mock_llm, stream):
    message = ask(claude, GROQ, stream, tools=[read_tool(LONG)], messages=[
        {"role": "user", "content": f"{NEUTRAL} [mock:tool]"}])
    sent = last_upstream(mock_llm)["body"]["tools"][0]["function"]["name"]
    assert sent != LONG and len(sent) <= 64 and re.fullmatch(r"[A-Za-z0-9_-]+", sent)
    assert message.content[0].type == "tool_use" and message.content[0].name == LONG
    # the next turn replays the call: same short name upstream, the result quoted back
    follow = ask(claude, GROQ, stream, tools=[read_tool(LONG)], messages=[
        {"role": "user", "content": f"{NEUTRAL} [mock:tool]"},
        {"role": "assistant", "content": [message.content[0].model_dump()]},
        {"role": "user", "content": [{"type": "tool_result",
                                      "tool_use_id": message.content[0].id,
                                      "content": "file body"}]}])
    replay = last_upstream(mock_llm)["body"]["messages"][1]["tool_calls"][0]
    assert replay["function"]["name"] == sent
    assert "tool result: file body" in follow.content[0].text


def test_mistral_gets_nine_character_call_ids_the_same_way_every_time(claude, mock_llm):
    history = [{"role": "user", "content": f"{NEUTRAL} read it"},
               {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01AbCdEf",
                                                  "name": "read", "input": {"path": "a"}}]},
               {"role": "user", "content": [{"type": "tool_result",
                                             "tool_use_id": "toolu_01AbCdEf",
                                             "content": "file body"}]}]
    sent_ids = []
    for _ in range(2):
        answer = claude.messages.create(model=MISTRAL, max_tokens=50, tools=[read_tool()],
                                        messages=history)
        assert "tool result: file body" in answer.content[0].text
        sent = last_upstream(mock_llm)["body"]["messages"]
        call_id = sent[1]["tool_calls"][0]["id"]
        assert NINE_ALNUM.fullmatch(call_id) and sent[2]["tool_call_id"] == call_id
        sent_ids.append(call_id)
    assert sent_ids[0] == sent_ids[1]


@pytest.mark.parametrize("model, key", [(O3, "max_completion_tokens"),
                                        (PROXY_O4, "max_completion_tokens"),
                                        (AZURE, "max_completion_tokens"),
                                        (GROQ, "max_tokens")])
def test_reasoning_models_and_azure_get_max_completion_tokens(claude, mock_llm, model, key):
    claude.messages.create(model=model, max_tokens=42,
                           messages=[{"role": "user", "content": NEUTRAL}])
    upstream = last_upstream(mock_llm)
    assert upstream["body"][key] == 42
    other = "max_tokens" if key == "max_completion_tokens" else "max_completion_tokens"
    assert other not in upstream["body"]
    if model == AZURE:
        assert upstream["path"] == "/openai/deployments/my-deployment/chat/completions"


def test_images_in_tool_results_reach_a_chat_upstream_after_the_tool_messages(claude,
                                                                             mock_llm):
    answer = claude.messages.create(model=GROQ, max_tokens=50, tools=[read_tool("shot")],
                                    messages=[
        {"role": "user", "content": f"{NEUTRAL} take a screenshot"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_s",
                                           "name": "shot", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_s",
                                      "content": [
            {"type": "text", "text": "the screen"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PNG}}]}]}])
    assert "[images: 1]" in answer.content[0].text
    sent = last_upstream(mock_llm)["body"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "user"]
    assert sent[2]["content"].startswith("the screen") and "follow" in sent[2]["content"]
    assert sent[3]["content"][1]["image_url"]["url"] == f"data:image/png;base64,{PNG}"


def test_thinking_from_another_vendor_is_dropped_and_listed_when_it_reaches_anthropic(
        gateway, mock_llm):
    url = f"{gateway.url}/v1/messages"
    first = [{"role": "user", "content": f"{NEUTRAL} [mock:reasoning]"}]
    answer = requests.post(url, timeout=10, json={"model": GROQ, "max_tokens": 50,
                                                  "messages": first})
    content = answer.json()["content"]
    assert content[0]["type"] == "thinking" and content[0]["signature"] == ""
    history = first + [{"role": "assistant", "content": content},
                       {"role": "user", "content": f"{NEUTRAL} again"}]
    moved = requests.post(url, timeout=10, json={"model": CLAUDE, "max_tokens": 50,
                                                 "messages": history})
    assert moved.status_code == 200 and moved.headers["x-plano-dropped"] == "thinking"
    sent = last_upstream(mock_llm)
    assert sent["path"] == "/v1/messages"
    assert [b["type"] for b in sent["body"]["messages"][1]["content"]] == ["text"]


def test_context_length_errors_reach_each_client_api_as_its_agents_expect(claude, oai):
    too_long = f"{NEUTRAL} [mock:context-length]"
    with pytest.raises(anthropic.BadRequestError) as raised:
        claude.messages.create(model=GROQ, max_tokens=50,
                               messages=[{"role": "user", "content": too_long}])
    assert raised.value.body["error"]["type"] == "invalid_request_error"
    assert raised.value.body["error"]["message"] == (
        "prompt is too long: 131072 tokens > 128000 maximum")
    with pytest.raises(openai.BadRequestError) as chat_error:
        oai.chat.completions.create(model=CLAUDE,
                                    messages=[{"role": "user", "content": too_long}])
    assert chat_error.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as responses_error:
        oai.responses.create(model=CLAUDE, input=too_long)
    assert responses_error.value.code == "context_length_exceeded"
