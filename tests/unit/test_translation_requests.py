"""Request translation between client APIs and upstream interfaces (SPEC §12, §13)."""

from __future__ import annotations

import json

import pytest

from app.conversation import UnsupportedParameterError, UntranslatableError
from app.errors import InvalidRequestError
from app.pipeline.plan import Target, plan_call

ANTHROPIC = Target("anthropic/claude-sonnet-4-6", "claude-sonnet-4-6", "anthropic",
                   "anthropic", default_max_tokens=1234)
OPENAI = Target("openai/gpt-5.2", "gpt-5.2", "openai", "openai", native_responses=True)
OPENAI_TRANSLATE = Target("openai/gpt-5.2", "gpt-5.2", "openai", "openai")
COMPAT = Target("groq/llama", "llama", "openai", "groq")

PNG = "iVBORw0KGgo="
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}


def body_of(call) -> dict:
    return json.loads(call.body)


def test_chat_to_anthropic_maps_roles_system_images_tools_and_results():
    chat = {"model": "x", "stream": True, "max_tokens": 50, "stop": "END", "temperature": 0.3,
            "seed": 7, "metadata": {"a": "b"}, "parallel_tool_calls": False,
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
            "tools": [{"type": "function", "function": {"name": "weather",
                                                        "description": "w",
                                                        "parameters": SCHEMA}}],
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "developer", "content": [{"type": "text", "text": "and kind"}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}}]},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {"role": "user", "content": "thanks"}]}
    call = plan_call("chat", chat, ANTHROPIC)
    body = body_of(call)
    assert call.path == "/messages" and not call.passthrough
    assert body["model"] == "claude-sonnet-4-6"
    assert body["system"] == "be brief\n\nand kind"
    assert body["max_tokens"] == 50 and body["stop_sequences"] == ["END"]
    assert body["stream"] is True and body["temperature"] == 0.3
    assert body["tools"] == [{"name": "weather", "input_schema": SCHEMA, "description": "w"}]
    assert body["tool_choice"] == {"type": "tool", "name": "weather",
                                   "disable_parallel_tool_use": True}
    user, assistant, result = body["messages"]
    assert user["content"][1] == {"type": "image", "source": {
        "type": "base64", "media_type": "image/png", "data": PNG}}
    assert user["content"][2]["source"] == {"type": "url", "url": "https://x.test/a.jpg"}
    assert assistant == {"role": "assistant", "content": [
        {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Oslo"}}]}
    assert result["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1",
         "content": [{"type": "text", "text": "sunny"}]},
        {"type": "text", "text": "thanks"}]
    assert sorted(call.dropped) == ["metadata", "seed"]
    assert call.headers == {"anthropic-version": "2023-06-01"}


def test_anthropic_gets_the_provider_max_tokens_default_when_the_client_sent_none():
    call = plan_call("responses", {"input": "hi"}, ANTHROPIC)
    assert body_of(call)["max_tokens"] == 1234


@pytest.mark.parametrize("choice, expected", [
    ("auto", {"type": "auto"}), ("required", {"type": "any"}), ("none", {"type": "none"})])
def test_chat_tool_choice_modes_map_to_anthropic(choice, expected):
    chat = {"messages": [{"role": "user", "content": "hi"}], "tool_choice": choice,
            "tools": [{"type": "function", "function": {"name": "t"}}]}
    assert body_of(plan_call("chat", chat, ANTHROPIC))["tool_choice"] == expected


@pytest.mark.parametrize("body, what", [
    ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "input_audio"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "'n'"),
    ({"messages": [{"role": "user", "content": "x"}],
      "tools": [{"type": "web_search"}]}, "web_search"),
])
def test_chat_content_that_cannot_be_translated_is_a_400_saying_what(body, what):
    with pytest.raises(UntranslatableError) as caught:
        plan_call("chat", body, ANTHROPIC)
    assert caught.value.status == 400 and what in caught.value.message


def test_invalid_tool_call_arguments_to_anthropic_are_refused():
    chat = {"messages": [{"role": "user", "content": "x"}, {
        "role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                             "function": {"name": "t", "arguments": "{no"}}]}]}
    with pytest.raises(UntranslatableError, match="not valid JSON"):
        plan_call("chat", chat, ANTHROPIC)


def messages_body(**extra) -> dict:
    return {"model": "m", "max_tokens": 100, "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "describe", "cache_control": {"type": "ephemeral"}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg",
                                         "data": PNG}}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": "calling"},
            {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"q": 1}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "found",
             "is_error": True}]}], **extra}


def test_messages_to_openai_chat_maps_blocks_and_lists_dropped_hints():
    call = plan_call("messages", messages_body(
        system=[{"type": "text", "text": "sys"}], stop_sequences=["##"], top_k=5,
        thinking={"type": "enabled", "budget_tokens": 1024}, metadata={"user_id": "u"},
        tools=[{"name": "look", "description": "d", "input_schema": SCHEMA}],
        tool_choice={"type": "any"}, stream=True), OPENAI)
    body = body_of(call)
    assert call.path == "/chat/completions"
    assert body["max_completion_tokens"] == 100 and "max_tokens" not in body
    assert body["stream_options"] == {"include_usage": True}
    assert body["stop"] == ["##"] and body["tool_choice"] == "required"
    assert body["tools"] == [{"type": "function", "function": {
        "name": "look", "parameters": SCHEMA, "description": "d"}}]
    system, user, assistant, tool = body["messages"]
    assert system == {"role": "system", "content": "sys"}
    assert user["content"][1] == {"type": "image_url",
                                  "image_url": {"url": f"data:image/jpeg;base64,{PNG}"}}
    assert assistant == {"role": "assistant", "content": "calling", "tool_calls": [
        {"id": "toolu_1", "type": "function",
         "function": {"name": "look", "arguments": "{\"q\": 1}"}}]}
    assert tool == {"role": "tool", "tool_call_id": "toolu_1", "content": "Error: found"}
    assert sorted(call.dropped) == ["cache_control", "metadata", "reasoning", "thinking",
                                    "top_k"]


def test_non_openai_chat_providers_get_max_tokens():
    assert body_of(plan_call("messages", messages_body(), COMPAT))["max_tokens"] == 100


def test_messages_server_tools_are_refused_for_other_vendors():
    with pytest.raises(UntranslatableError, match="web_search_20250305"):
        plan_call("messages", messages_body(tools=[{"type": "web_search_20250305",
                                                   "name": "web_search"}]), OPENAI)


def test_messages_to_anthropic_is_a_pass_through_forwarding_version_and_beta():
    body = messages_body(thinking={"type": "enabled", "budget_tokens": 1024})
    call = plan_call("messages", body, ANTHROPIC, client_headers={
        "anthropic-version": "2023-01-01", "anthropic-beta": "tools-2024"})
    assert call.passthrough and call.dropped == []
    assert body_of(call) == {**body, "model": "claude-sonnet-4-6"}
    assert call.headers == {"anthropic-version": "2023-01-01", "anthropic-beta": "tools-2024"}


def codex_body(**extra) -> dict:
    """A Responses body the way Codex sends one: instructions, custom apply_patch tool,
    a custom tool call and its output in the history."""
    return {"model": "gpt-5.2", "instructions": "You are Codex.", "store": False,
            "include": ["reasoning.encrypted_content"], "prompt_cache_key": "k",
            "reasoning": {"effort": "medium"}, "parallel_tool_calls": False,
            "tools": [{"type": "function", "name": "shell", "parameters": SCHEMA},
                      {"type": "custom", "name": "apply_patch", "description": "patch",
                       "format": {"type": "grammar", "syntax": "lark", "definition": "x"}}],
            "input": [
                {"type": "message", "role": "developer",
                 "content": [{"type": "input_text", "text": "env ctx"}]},
                {"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "fix it"},
                    {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"}]},
                {"type": "reasoning", "id": "rs_1", "summary": [],
                 "encrypted_content": "opaque"},
                {"type": "function_call", "call_id": "call_a", "name": "shell",
                 "arguments": "{\"cmd\":\"ls\"}"},
                {"type": "function_call_output", "call_id": "call_a", "output": "a.py"},
                {"type": "custom_tool_call", "call_id": "call_b", "name": "apply_patch",
                 "input": "*** Begin Patch"},
                {"type": "custom_tool_call_output", "call_id": "call_b", "output": "Done!"},
            ], **extra}


def test_codex_responses_body_to_anthropic():
    call = plan_call("responses", codex_body(), ANTHROPIC)
    body = body_of(call)
    assert body["system"] == "You are Codex.\n\nenv ctx"
    assert body["tools"][1] == {"name": "apply_patch", "description": "patch",
                                "input_schema": {"type": "object",
                                                 "properties": {"input": {"type": "string"}},
                                                 "required": ["input"]}}
    user, call_a, result_a, call_b, result_b = body["messages"]
    assert user["content"][1]["source"]["data"] == PNG
    assert call_a["content"] == [
        {"type": "tool_use", "id": "call_a", "name": "shell", "input": {"cmd": "ls"}}]
    assert call_b["content"] == [{"type": "tool_use", "id": "call_b", "name": "apply_patch",
                                  "input": {"input": "*** Begin Patch"}}]
    assert result_a["content"][0]["tool_use_id"] == "call_a"
    assert result_b["content"] == [{"type": "tool_result", "tool_use_id": "call_b",
                                    "content": [{"type": "text", "text": "Done!"}]}]
    assert sorted(call.dropped) == ["include", "prompt_cache_key", "reasoning", "store"]


def test_codex_responses_body_to_openai_chat_when_translating():
    call = plan_call("responses", codex_body(), OPENAI_TRANSLATE)
    body = body_of(call)
    assert call.path == "/chat/completions"
    assert body["parallel_tool_calls"] is False
    tools = {t["function"]["name"]: t["function"] for t in body["tools"]}
    assert tools["apply_patch"]["parameters"]["required"] == ["input"]
    assert [m["role"] for m in body["messages"]] == [
        "system", "user", "assistant", "tool", "assistant", "tool"]
    assert body["messages"][4]["tool_calls"][0]["function"] == {
        "name": "apply_patch", "arguments": json.dumps({"input": "*** Begin Patch"})}
    assert body["messages"][5] == {"role": "tool", "tool_call_id": "call_b",
                                   "content": "Done!"}


def test_responses_to_a_native_openai_provider_is_a_pass_through():
    body = codex_body(previous_response_id="resp_1")
    call = plan_call("responses", body, OPENAI)
    assert call.path == "/responses" and call.passthrough
    assert body_of(call) == {**body, "model": "gpt-5.2"}


def test_previous_response_id_is_refused_unless_native():
    with pytest.raises(UnsupportedParameterError) as caught:
        plan_call("responses", {"input": "x", "previous_response_id": "resp_1"}, ANTHROPIC)
    assert caught.value.code == "unsupported_parameter" and caught.value.status == 400
    assert "natively" in caught.value.message


@pytest.mark.parametrize("tool", [{"type": "web_search"}, {"type": "file_search"},
                                  {"type": "local_shell"}])
def test_responses_built_in_tools_are_refused_for_translation(tool):
    with pytest.raises(UntranslatableError) as caught:
        plan_call("responses", {"input": "x", "tools": [tool]}, ANTHROPIC)
    assert tool["type"] in caught.value.message


def test_responses_unknown_items_are_refused():
    with pytest.raises(UntranslatableError, match="item_reference"):
        plan_call("responses", {"input": [{"type": "item_reference", "id": "x"}]}, ANTHROPIC)


def test_wrong_types_are_plain_invalid_requests():
    with pytest.raises(InvalidRequestError, match="temperature"):
        plan_call("messages", messages_body(temperature="hot"), OPENAI)


def test_a_tool_choice_without_tools_is_not_sent_to_anthropic():
    chat = {"messages": [{"role": "user", "content": "hi"}], "tool_choice": "none"}
    assert "tool_choice" not in body_of(plan_call("chat", chat, ANTHROPIC))
