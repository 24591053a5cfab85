"""Provider differences absorbed by the upstream adapters (SPEC §18), where the gateway
translates: Gemini's parallel tool calls, the tool_use stop reason, long tool names,
Mistral's call ids, max_completion_tokens, images in tool results, unsigned thinking and
context-length errors. Same-shape pass-through stays byte for byte."""

from __future__ import annotations

import json
import re

import pytest

from app.client_apis.messages import parse as parse_messages
from app.pipeline.plan import Target, plan_call
from app.providers.sse import SSEDecoder
from app.upstreams.tool_mapping import ToolMapping, _unique, mistral_id, short_name

GEMINI = Target("gemini/gemini-2.5-pro", "gemini-2.5-pro", "openai", "gemini")
MISTRAL = Target("mistral/mistral-large-latest", "mistral-large-latest", "openai", "mistral")
OPENAI = Target("openai/gpt-4o", "gpt-4o", "openai", "openai")
ANTHROPIC = Target("anthropic/claude-x", "claude-x", "anthropic", "anthropic")
GROQ = Target("groq/llama", "llama", "openai", "groq")
PNG = "iVBORw0KGgo="
LONG = "mcp__github-enterprise.internal__create_or_update_file_contents_in_a_repository_branch"
SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}}}


def sse(payload) -> bytes:
    return b"data: " + (payload if isinstance(payload, bytes) else
                        json.dumps(payload).encode()) + b"\n\n"


def chunk(delta, finish=None) -> dict:
    return {"id": "chatcmpl-g", "model": "gemini-2.5-pro",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def events(raw: bytes) -> list:
    decoder = SSEDecoder()
    found = list(decoder.feed(raw)) + list(decoder.flush())
    return [(e.event, json.loads(e.data)) for e in found if e.data != "[DONE]"]


def stream_through(api: str, body: dict, target: Target, frames: list) -> list:
    translator = plan_call(api, body, target).stream_translator()
    raw = b"".join(translator.feed(frame) for frame in frames) + translator.finish()
    return events(raw)


def messages_body(**extra) -> dict:
    return {"model": "m", "max_tokens": 100, "stream": True,
            "messages": [{"role": "user", "content": "read two files"}],
            "tools": [{"name": "read", "input_schema": SCHEMA}], **extra}


def gemini_parallel_frames(index_of) -> list:
    """Two complete calls in two chunks, as Gemini's OpenAI endpoint sends them; the
    finish reason says ``stop``."""
    calls = [{"id": "function-call-1", "type": "function",
              "function": {"name": "read", "arguments": "{\"path\":\"a.py\"}"}},
             {"id": "function-call-2", "type": "function",
              "function": {"name": "read", "arguments": "{\"path\":\"b.py\"}"}}]
    frames = [sse(chunk({"role": "assistant"}))]
    for position, call in enumerate(calls):
        index = index_of(position)
        frames.append(sse(chunk({"tool_calls": [call if index is None
                                                else {**call, "index": index}]})))
    return frames + [sse(chunk({}, "stop")), sse(b"[DONE]")]


# --- 1 and 2: parallel calls split by id; tool_use whenever tools were called -------------

@pytest.mark.parametrize("index_of", [lambda _: 0, lambda _: None],
                         ids=["index reused", "index omitted"])
def test_parallel_tool_calls_without_distinct_indexes_are_split_by_call_id(index_of):
    out = stream_through("messages", messages_body(), GEMINI, gemini_parallel_frames(index_of))
    starts = [payload["content_block"] for name, payload in out
              if name == "content_block_start"]
    assert [(b["id"], b["name"]) for b in starts] == [("function-call-1", "read"),
                                                      ("function-call-2", "read")]
    json_by_index: dict = {}
    for name, payload in out:
        if name == "content_block_delta":
            json_by_index.setdefault(payload["index"], "")
            json_by_index[payload["index"]] += payload["delta"]["partial_json"]
    assert json_by_index == {0: "{\"path\":\"a.py\"}", 1: "{\"path\":\"b.py\"}"}
    stop = [p["delta"]["stop_reason"] for name, p in out if name == "message_delta"]
    assert stop == ["tool_use"]


def test_a_call_continued_without_id_stays_one_call_and_openai_indexes_still_work():
    frames = [sse(chunk({"tool_calls": [{"index": 0, "id": "call_a", "function": {
                  "name": "read", "arguments": "{\"pa"}}]})),
              sse(chunk({"tool_calls": [{"index": 0, "function": {"arguments": "th\":1}"}}]})),
              sse(chunk({"tool_calls": [{"index": 1, "id": "call_b", "function": {
                  "name": "read", "arguments": ""}}]})),
              sse(chunk({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]})),
              sse(chunk({}, "tool_calls")), sse(b"[DONE]")]
    out = stream_through("messages", messages_body(), GROQ, frames)
    starts = [p["content_block"]["id"] for n, p in out if n == "content_block_start"]
    assert starts == ["call_a", "call_b"]


def test_calls_without_id_or_index_are_split_where_a_function_is_named():
    frames = [sse(chunk({"tool_calls": [{"function": {"name": "read", "arguments": "{\"p"}}]})),
              sse(chunk({"tool_calls": [{"function": {"arguments": "\":1}"}}]})),
              sse(chunk({"tool_calls": [{"function": {"name": "read", "arguments": "{}"}}]})),
              sse(chunk({}, "stop")), sse(b"[DONE]")]
    out = stream_through("messages", messages_body(), GEMINI, frames)
    starts = [p["content_block"] for n, p in out if n == "content_block_start"]
    assert len(starts) == 2 and starts[0]["id"] != starts[1]["id"]
    assert all(start["id"].startswith("call_") for start in starts)
    pieces = [(p["index"], p["delta"]["partial_json"]) for n, p in out
              if n == "content_block_delta"]
    assert pieces == [(0, "{\"p"), (0, "\":1}"), (1, "{}")]


def test_gemini_parallel_calls_reach_responses_clients_as_two_calls():
    body = {"input": "x", "stream": True, "tools": [{"type": "function", "name": "read"}]}
    out = stream_through("responses", body, GEMINI, gemini_parallel_frames(lambda _: 0))
    added = [p["item"]["call_id"] for n, p in out if n == "response.output_item.added"]
    assert added == ["function-call-1", "function-call-2"]


@pytest.mark.parametrize("api, field, expected", [
    ("messages", "stop_reason", "tool_use"), ("chat", "finish_reason", "tool_calls")])
def test_stop_reason_is_tool_use_whenever_tool_calls_came_back_in_json(api, field, expected):
    if api == "messages":
        call = plan_call(api, {**messages_body(), "stream": False}, GEMINI)
        upstream = {"id": "c", "model": "g", "choices": [{"index": 0, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": None, "tool_calls": [
                        {"id": "f1", "type": "function",
                         "function": {"name": "read", "arguments": "{}"}}]}}]}
        answer = json.loads(call.reply(json.dumps(upstream).encode(), False))
        assert answer[field] == expected
    else:
        call = plan_call(api, {"messages": [{"role": "user", "content": "x"}]}, ANTHROPIC)
        upstream = {"id": "m", "model": "c", "stop_reason": "end_turn", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {}}]}
        answer = json.loads(call.reply(json.dumps(upstream).encode(), False))
        assert answer["choices"][0][field] == expected


def test_anthropic_stream_ending_end_turn_after_a_tool_use_tells_chat_clients_tool_calls():
    def named(name, payload):
        return f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()
    frames = [named("message_start", {"type": "message_start", "message": {"id": "m"}}),
              named("content_block_start", {"type": "content_block_start", "index": 0,
                                            "content_block": {"type": "tool_use",
                                                              "id": "toolu_1",
                                                              "name": "read"}}),
              named("content_block_stop", {"type": "content_block_stop", "index": 0}),
              named("message_delta", {"type": "message_delta",
                                      "delta": {"stop_reason": "end_turn"}}),
              named("message_stop", {"type": "message_stop"})]
    out = stream_through("chat", {"messages": [{"role": "user", "content": "x"}],
                                  "stream": True}, ANTHROPIC, frames)
    finishes = [c["choices"][0]["finish_reason"] for _, c in out
                if c.get("choices") and c["choices"][0].get("finish_reason")]
    assert finishes == ["tool_calls"]


def test_a_call_cut_off_by_the_token_limit_keeps_max_tokens():
    call = plan_call("messages", {**messages_body(), "stream": False}, GROQ)
    upstream = {"choices": [{"finish_reason": "length", "message": {"tool_calls": [
        {"id": "c1", "function": {"name": "read", "arguments": "{\"pa"}}]}}]}
    assert json.loads(call.reply(json.dumps(upstream).encode(), False))[
        "stop_reason"] == "max_tokens"


# --- 3: long tool names --------------------------------------------------------------------

def test_short_names_are_deterministic_valid_and_keep_a_readable_prefix():
    short = short_name(LONG)
    assert short == short_name(LONG) and len(short) <= 64
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", short)
    assert short.startswith("mcp__github-enterprise_internal__create")
    assert short_name("read_file") == "read_file"
    assert short_name("a.b") != short_name("a_b") and short_name("a.b").startswith("a_b_")


def test_short_names_are_unique_within_a_request_even_when_stand_ins_clash():
    conversation = parse_messages({"max_tokens": 5, "messages": [
        {"role": "user", "content": "x"}], "tools": [
        {"name": LONG + "_one"}, {"name": LONG + "_two"}, {"name": "ok"}]})
    mapping = ToolMapping.for_conversation(conversation)
    names = [LONG + "_one", LONG + "_two", "ok"]
    shorts = [mapping.upstream_name(name) for name in names]
    assert len(set(shorts)) == 3 and shorts[2] == "ok"
    assert [mapping.client_name(short) for short in shorts] == names
    # a stand-in equal to a name kept as it is, or to another stand-in, takes the next try
    clashing = _unique(["taken", "a", "b"], lambda name, attempt: (
        name if name == "taken" else "taken" if attempt == 0 else f"s{attempt}"))
    assert clashing == {"a": "s1", "b": "s2"}


def test_long_tool_names_are_shortened_for_openai_and_restored_in_the_answer():
    body = {"model": "m", "max_tokens": 50, "tools": [
                {"name": LONG, "input_schema": SCHEMA}, {"name": "read", "input_schema": SCHEMA}],
            "tool_choice": {"type": "tool", "name": LONG},
            "messages": [
                {"role": "user", "content": "go"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": LONG, "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "done"}]}]}
    call = plan_call("messages", body, OPENAI)
    sent = json.loads(call.body)
    short = short_name(LONG)
    assert [t["function"]["name"] for t in sent["tools"]] == [short, "read"]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": short}}
    assert sent["messages"][1]["tool_calls"][0]["function"]["name"] == short
    upstream = {"choices": [{"finish_reason": "tool_calls", "message": {"tool_calls": [
        {"id": "call_9", "function": {"name": short, "arguments": "{}"}}]}}]}
    answer = json.loads(call.reply(json.dumps(upstream).encode(), False))
    assert answer["content"][0]["name"] == LONG
    frames = [sse(chunk({"tool_calls": [{"index": 0, "id": "call_9", "function": {
                  "name": short, "arguments": "{}"}}]})),
              sse(chunk({}, "tool_calls")), sse(b"[DONE]")]
    out = stream_through("messages", {**body, "stream": True}, OPENAI, frames)
    assert [p["content_block"]["name"] for n, p in out if n == "content_block_start"] == [LONG]


def test_long_custom_tool_names_are_restored_and_unwrapped_for_responses_clients():
    name = "apply_patch." + "x" * 70
    body = {"input": "x", "tools": [{"type": "custom", "name": name}]}
    call = plan_call("responses", body, GROQ)
    short = json.loads(call.body)["tools"][0]["function"]["name"]
    assert short == short_name(name)
    upstream = {"choices": [{"finish_reason": "tool_calls", "message": {"tool_calls": [
        {"id": "c1", "function": {"name": short, "arguments": "{\"input\":\"PATCH\"}"}}]}}]}
    item = json.loads(call.reply(json.dumps(upstream).encode(), False))["output"][0]
    assert item["type"] == "custom_tool_call" and item["name"] == name
    assert item["input"] == "PATCH"


# --- 4: Mistral tool-call ids --------------------------------------------------------------

def test_mistral_ids_are_nine_alphanumerics_deterministic_and_valid_ones_kept():
    assert re.fullmatch(r"[A-Za-z0-9]{9}", mistral_id("toolu_01ABCdef"))
    assert mistral_id("toolu_01ABCdef") == mistral_id("toolu_01ABCdef")
    assert mistral_id("toolu_01ABCdef") != mistral_id("toolu_01ABCdeg")
    assert mistral_id("aB3dE6gH9") == "aB3dE6gH9"


def history_body(**extra) -> dict:
    return {"model": "m", "max_tokens": 50, "tools": [{"name": "read", "input_schema": SCHEMA}],
            "messages": [
                {"role": "user", "content": "go"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_01XyZ", "name": "read", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01XyZ", "content": "ok"}]}],
            **extra}


def test_mistral_gets_mapped_call_ids_the_same_in_every_replay_and_answers_restore_them():
    first, again = plan_call("messages", history_body(), MISTRAL), plan_call(
        "messages", history_body(), MISTRAL)
    sent = json.loads(first.body)["messages"]
    mapped = sent[1]["tool_calls"][0]["id"]
    assert re.fullmatch(r"[A-Za-z0-9]{9}", mapped) and sent[2]["tool_call_id"] == mapped
    assert first.body == again.body
    upstream = {"choices": [{"finish_reason": "tool_calls", "message": {"tool_calls": [
        {"id": mapped, "function": {"name": "read", "arguments": "{}"}},
        {"id": "Q1w2E3r4T", "function": {"name": "read", "arguments": "{}"}}]}}]}
    answer = json.loads(first.reply(json.dumps(upstream).encode(), False))
    assert [b["id"] for b in answer["content"]] == ["toolu_01XyZ", "Q1w2E3r4T"]
    frames = [sse(chunk({"tool_calls": [{"index": 0, "id": mapped, "function": {
                  "name": "read", "arguments": "{}"}}]})),
              sse(chunk({}, "tool_calls")), sse(b"[DONE]")]
    out = stream_through("messages", {**history_body(), "stream": True}, MISTRAL, frames)
    assert [p["content_block"]["id"] for n, p in out
            if n == "content_block_start"] == ["toolu_01XyZ"]


def test_other_vendors_keep_the_clients_call_ids():
    sent = json.loads(plan_call("messages", history_body(), GROQ).body)["messages"]
    assert sent[1]["tool_calls"][0]["id"] == "toolu_01XyZ"


# --- 5: max_completion_tokens --------------------------------------------------------------

@pytest.mark.parametrize("target, key", [
    (Target("openai/o3", "o3", "openai", "openai"), "max_completion_tokens"),
    (Target("openai/gpt-4o", "gpt-4o", "openai", "openai"), "max_completion_tokens"),
    (Target("azure_openai/my-deploy", "my-deploy", "openai", "azure_openai"),
     "max_completion_tokens"),
    (Target("proxy/o4-mini", "o4-mini", "openai", "proxy"), "max_completion_tokens"),
    (Target("proxy/gpt-5.2-codex", "gpt-5.2-codex", "openai", "proxy"),
     "max_completion_tokens"),
    (Target("proxy/openai/o1-preview", "openai/o1-preview", "openai", "proxy"),
     "max_completion_tokens"),
    (Target("groq/llama-3.3", "llama-3.3", "openai", "groq"), "max_tokens"),
    (Target("ollama/olmo2", "olmo2", "openai", "ollama"), "max_tokens"),
    (Target("mistral/mistral-large", "mistral-large", "openai", "mistral"), "max_tokens"),
])
def test_reasoning_models_and_azure_get_max_completion_tokens(target, key):
    sent = json.loads(plan_call("messages", {"max_tokens": 77, "messages": [
        {"role": "user", "content": "x"}]}, target).body)
    assert sent[key] == 77
    other = "max_tokens" if key == "max_completion_tokens" else "max_completion_tokens"
    assert other not in sent


# --- 6: images inside tool results ---------------------------------------------------------

def test_tool_result_images_reach_chat_as_a_user_message_after_the_tool_messages():
    body = {"model": "m", "max_tokens": 50, "messages": [
        {"role": "user", "content": "shoot"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_a", "name": "screenshot", "input": {}},
            {"type": "tool_use", "id": "toolu_b", "name": "read", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_a", "content": [
                {"type": "text", "text": "the screen"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": PNG}}]},
            {"type": "tool_result", "tool_use_id": "toolu_b", "content": "file text"},
            {"type": "text", "text": "what do you see?"}]}]}
    messages = json.loads(plan_call("messages", body, GROQ).body)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool", "user"]
    assert messages[2]["content"].startswith("the screen\n")
    assert "image" in messages[2]["content"] and "follow" in messages[2]["content"]
    assert messages[3] == {"role": "tool", "tool_call_id": "toolu_b", "content": "file text"}
    follow = messages[4]["content"]
    assert follow[0] == {"type": "text", "text": "Image(s) returned by tool call toolu_a:"}
    assert follow[1] == {"type": "image_url",
                         "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    assert follow[2] == {"type": "text", "text": "what do you see?"}


def test_an_image_only_tool_result_says_the_image_follows():
    body = {"input": [
        {"type": "function_call", "call_id": "c1", "name": "shot", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": [
            {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"}]}],
        "tools": [{"type": "function", "name": "shot"}]}
    messages = json.loads(plan_call("responses", body, GROQ).body)["messages"]
    tool, user = messages[-2], messages[-1]
    assert tool["role"] == "tool" and "follow" in tool["content"]
    assert user["role"] == "user" and user["content"][1]["type"] == "image_url"


# --- 7: unsigned thinking ------------------------------------------------------------------

def test_chat_model_reasoning_reaches_messages_clients_as_unsigned_thinking():
    call = plan_call("messages", {**messages_body(), "stream": False}, GROQ)
    upstream = {"choices": [{"finish_reason": "stop", "message": {
        "reasoning_content": "hm", "content": "hi"}}]}
    answer = json.loads(call.reply(json.dumps(upstream).encode(), False))
    assert answer["content"][0] == {"type": "thinking", "thinking": "hm", "signature": ""}


def claude_code_history(thinking: dict) -> dict:
    return {"model": "claude-x", "max_tokens": 50, "messages": [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": [thinking, {"type": "text", "text": "answer"}]},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": [{**thinking, "thinking": "only thoughts"}]},
        {"role": "user", "content": "three"}]}


def test_unsigned_thinking_is_dropped_and_listed_when_the_conversation_reaches_anthropic():
    body = claude_code_history({"type": "thinking", "thinking": "hm", "signature": ""})
    call = plan_call("messages", body, ANTHROPIC)
    sent = json.loads(call.body)
    assert call.passthrough and call.dropped == ["thinking"]
    assert sent["messages"][1]["content"] == [{"type": "text", "text": "answer"}]
    assert [m["content"] for m in sent["messages"][2:]] == ["two", "three"]
    assert "thinking" not in call.body.decode()


def test_signed_thinking_passes_through_byte_for_byte():
    body = claude_code_history({"type": "thinking", "thinking": "hm", "signature": "EuY="})
    call = plan_call("messages", body, ANTHROPIC)
    assert call.dropped == []
    assert json.loads(call.body) == {**body, "model": "claude-x"}


# --- 8: context-length errors --------------------------------------------------------------

OPENAI_TOO_LONG = json.dumps({"error": {
    "message": "This model's maximum context length is 128000 tokens. However, your messages "
               "resulted in 131234 tokens. Please reduce the length of the messages.",
    "type": "invalid_request_error", "param": "messages",
    "code": "context_length_exceeded"}}).encode()
ANTHROPIC_TOO_LONG = json.dumps({"type": "error", "error": {
    "type": "invalid_request_error",
    "message": "prompt is too long: 210345 tokens > 200000 maximum"}}).encode()
GEMINI_TOO_LONG = json.dumps([{"error": {"code": 400, "status": "INVALID_ARGUMENT",
    "message": "The input token count (1200000) exceeds the maximum number of tokens "
               "allowed (1048576)."}}]).encode()
GEMINI_TOO_LONG_OBJECT = json.dumps({"error": {"code": 400, "status": "INVALID_ARGUMENT",
    "message": "The input token count (1200000) exceeds the maximum number of tokens "
               "allowed (1048576)."}}).encode()
GROQ_TOO_LONG = json.dumps({"error": {"message": "Please reduce the length of the messages "
                                      "or completion.", "type": "invalid_request_error",
                                      "code": "context_length_exceeded"}}).encode()
XAI_TOO_LONG = json.dumps({"code": "Client specified an invalid argument", "error":
                           "This model's maximum prompt length is 131072 but the request "
                           "contains 150000 tokens."}).encode()


@pytest.mark.parametrize("target, raw, wording", [
    (GROQ, OPENAI_TOO_LONG, "prompt is too long: 131234 tokens > 128000 maximum"),
    (GEMINI, GEMINI_TOO_LONG_OBJECT, "prompt is too long: 1200000 tokens > 1048576 maximum"),
    (ANTHROPIC, ANTHROPIC_TOO_LONG, "prompt is too long: 210345 tokens > 200000 maximum"),
    (GROQ, GROQ_TOO_LONG, "prompt is too long: Please reduce the length of the messages or "
                          "completion."),
    (GROQ, XAI_TOO_LONG, "prompt is too long: 150000 tokens > 131072 maximum"),
])
def test_context_length_errors_reach_messages_clients_in_anthropics_words(target, raw,
                                                                         wording):
    call = plan_call("messages", {"max_tokens": 5, "messages": [
        {"role": "user", "content": "x"}]}, target)
    answer = json.loads(call.error(400, raw))
    assert answer == {"type": "error", "error": {"type": "invalid_request_error",
                                                 "message": wording,
                                                 "code": "context_length_exceeded"}}


@pytest.mark.parametrize("api", ["chat", "responses"])
@pytest.mark.parametrize("raw", [ANTHROPIC_TOO_LONG, OPENAI_TOO_LONG, GEMINI_TOO_LONG])
def test_context_length_errors_reach_chat_and_responses_clients_with_openais_code(api, raw):
    body = ({"messages": [{"role": "user", "content": "x"}]} if api == "chat"
            else {"input": "x"})
    answer = json.loads(plan_call(api, body, ANTHROPIC).error(400, raw))["error"]
    assert answer["code"] == "context_length_exceeded"
    assert answer["type"] == "invalid_request_error"
    assert "token" in answer["message"]


@pytest.mark.parametrize("status, raw", [
    (429, OPENAI_TOO_LONG),
    (400, json.dumps({"type": "error", "error": {
        "type": "invalid_request_error", "message": "input length and `max_tokens` exceed "
        "context limit: 188240 + 21333 > 200000, decrease input length or `max_tokens` and "
        "try again"}}).encode()),
    (400, json.dumps({"error": {"message": "bad tool schema", "type": "invalid_request_error",
                                "code": "invalid_value"}}).encode()),
])
def test_other_errors_are_not_taken_for_context_length(status, raw):
    call = plan_call("messages", {"max_tokens": 5, "messages": [
        {"role": "user", "content": "x"}]}, ANTHROPIC)
    answer = json.loads(call.error(status, raw))["error"]
    assert answer["message"] == json.loads(raw)["error"]["message"]   # told as it came
    assert answer["type"] == ("rate_limit_error" if status == 429 else "invalid_request_error")
