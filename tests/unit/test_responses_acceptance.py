"""Accept what real clients send, the Responses and Chat side (SPEC §18): item, part and tool
types and roles newer than this contract are dropped and listed when translated; what only
OpenAI can carry is still refused."""

from __future__ import annotations

import json

import pytest

from app.client_apis import responses as responses_api
from app.conversation import UntranslatableError
from app.pipeline.plan import Target, plan_call
from tests.support.agent_requests import captured

ANTHROPIC = Target("anthropic/claude-sonnet-4-5", "claude-sonnet-4-5", "anthropic",
                   "anthropic")
OPENAI_NATIVE = Target("openai/gpt-5.2", "gpt-5.2", "openai", "openai", native_responses=True)


def body_of(call) -> dict:
    return json.loads(call.body)


def test_codex_on_an_anthropic_model_is_translated_without_its_namespace_tool():
    body = captured("codex_anthropic_model_custom_header")[0]["body"]
    responses_api.validate(body)
    assert "namespace" in {tool["type"] for tool in body["tools"]}
    call = plan_call("responses", body, ANTHROPIC)
    sent = body_of(call)
    assert [tool["name"] for tool in sent["tools"]] == [
        tool["name"] for tool in body["tools"] if tool["type"] == "function"]
    assert {"tool:namespace", "client_metadata", "prompt_cache_key"} <= set(call.dropped)
    assert sent["messages"][-1]["content"][-1]["text"] == body["input"][-1]["content"][-1][
        "text"]


def test_a_native_responses_upstream_gets_newer_types_unchanged():
    body = {"model": "x", "input": [{"type": "hologram", "data": 1},
                                    {"role": "critic", "content": "no"}],
            "tools": [{"type": "namespace", "name": "multi_agent_v1", "tools": []}],
            "speculative": True}
    call = plan_call("responses", body, OPENAI_NATIVE)
    assert call.passthrough and body_of(call) == {**body, "model": "gpt-5.2"}


def test_newer_items_roles_and_parts_are_dropped_and_listed():
    body = {"input": [
        {"type": "hologram", "data": 1},
        {"type": "message", "role": "critic", "content": "no"},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "fix it"}, {"type": "input_smell", "x": 1}]}]}
    call = plan_call("responses", body, ANTHROPIC)
    assert call.dropped == ["hologram", "role:critic", "input_smell"]
    assert body_of(call)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "fix it"}]}]


@pytest.mark.parametrize("body, what", [
    ({"input": [{"type": "web_search_call", "id": "ws_1"}, {"role": "user", "content": "x"}]},
     "web_search_call"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "item_reference"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
     "input_file"),
    ({"input": "x", "tools": [{"type": "web_search"}]}, "web_search"),
])
def test_what_only_openai_can_carry_is_still_refused(body, what):
    with pytest.raises(UntranslatableError, match=what):
        plan_call("responses", body, ANTHROPIC)


def test_a_newer_chat_role_is_dropped_and_listed_on_the_way_to_anthropic():
    body = {"messages": [{"role": "user", "content": "hi"},
                         {"role": "critic", "content": "no"}]}
    call = plan_call("chat", body, ANTHROPIC)
    assert call.dropped == ["role:critic"]
    assert body_of(call)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]}]
