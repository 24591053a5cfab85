"""Answer, stream and error translation (SPEC §12, §13): every byte split of an upstream
stream gives the same client stream, events go out as they arrive, usage and stop reasons
map, custom tools are unwrapped, errors take the client API's shape."""

from __future__ import annotations

import json
import re

import pytest

from app.pipeline.plan import Target, plan_call
from app.pipeline.stream_integrity import REASON_BROKEN, StreamFailure
from app.providers.sse import SSEDecoder

ANTHROPIC = Target("anthropic/claude-x", "claude-x", "anthropic", "anthropic")
OPENAI = Target("openai/gpt-x", "gpt-x", "openai", "openai", native_responses=True)
TOOLS_CHAT = [{"type": "function", "function": {"name": "weather"}}]
BODIES = {
    "chat": {"messages": [{"role": "user", "content": "hi"}], "stream": True,
             "stream_options": {"include_usage": True}},
    "messages": {"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
                 "stream": True},
    "responses": {"input": "hi", "stream": True,
                  "tools": [{"type": "custom", "name": "apply_patch"},
                            {"type": "function", "name": "weather"}]},
}


def sse(name: str | None, payload) -> bytes:
    head = f"event: {name}\n".encode() if name else b""
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return head + b"data: " + data.encode() + b"\n\n"


def anthropic_stream() -> bytes:
    frames = [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "model": "claude-x", "usage": {
                "input_tokens": 5, "cache_read_input_tokens": 7, "output_tokens": 1}}}),
        ("ping", {"type": "ping"}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "thinking", "thinking": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "thinking_delta", "thinking": "let me"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "signature_delta", "signature": "sig"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("content_block_start", {"type": "content_block_start", "index": 1,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "text_delta", "text": "Olá "}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "text_delta", "text": "wörld"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ("content_block_start", {"type": "content_block_start", "index": 2, "content_block": {
            "type": "tool_use", "id": "toolu_1", "name": "apply_patch", "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 2, "delta": {
            "type": "input_json_delta", "partial_json": "{\"input\": \"*** Be"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 2, "delta": {
            "type": "input_json_delta", "partial_json": "gin\"}"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 2}),
        ("content_block_start", {"type": "content_block_start", "index": 3, "content_block": {
            "type": "tool_use", "id": "toolu_2", "name": "weather", "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 3, "delta": {
            "type": "input_json_delta", "partial_json": "{\"city\":"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 3, "delta": {
            "type": "input_json_delta", "partial_json": "\"Oslo\"}"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 3}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                           "usage": {"output_tokens": 9}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return b"".join(sse(name, payload) for name, payload in frames)


def chat_stream() -> bytes:
    def chunk(delta, finish=None):
        return {"id": "chatcmpl-1", "model": "gpt-x",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    chunks = [chunk({"role": "assistant", "content": ""}),
              chunk({"reasoning_content": "let me"}),
              chunk({"content": "Olá "}), chunk({"content": "wörld"}),
              chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                     "function": {"name": "apply_patch", "arguments": ""}}]}),
              chunk({"tool_calls": [{"index": 0, "function": {
                  "arguments": "{\"input\": \"*** Be"}}]}),
              chunk({"tool_calls": [{"index": 0, "function": {"arguments": "gin\"}"}}]}),
              chunk({"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
                                     "function": {"name": "weather",
                                                  "arguments": "{\"city\":"}}]}),
              chunk({"tool_calls": [{"index": 1, "function": {"arguments": "\"Oslo\"}"}}]}),
              chunk({}, "tool_calls"),
              {"id": "chatcmpl-1", "model": "gpt-x", "choices": [], "usage": {
                  "prompt_tokens": 12, "completion_tokens": 9,
                  "prompt_tokens_details": {"cached_tokens": 7}}}]
    return b"".join(sse(None, c) for c in chunks) + b"data: [DONE]\n\n"


UPSTREAMS = {"anthropic": (ANTHROPIC, anthropic_stream),
             "openai": (Target("groq/x", "x", "openai", "groq"), chat_stream)}


_CLOCK = re.compile(rb'"(created|created_at)":\d+')


def translate(api: str, upstream: str, pieces) -> bytes:
    """The client stream for upstream ``pieces`` (timestamps zeroed: runs may straddle a
    second)."""
    target, _ = UPSTREAMS[upstream]
    translator = plan_call(api, BODIES[api], target).stream_translator()
    out = b"".join(translator.feed(piece) for piece in pieces) + translator.finish()
    return _CLOCK.sub(rb'"\1":0', out)


def events(raw: bytes) -> list:
    decoder = SSEDecoder()
    found = list(decoder.feed(raw)) + list(decoder.flush())
    return [(e.event, json.loads(e.data) if e.data != "[DONE]" else "[DONE]") for e in found]


PAIRS = [(api, upstream) for api in ("chat", "messages", "responses")
         for upstream in ("anthropic", "openai")
         if not (api == "chat" and upstream == "openai")
         and not (api == "messages" and upstream == "anthropic")]


@pytest.mark.parametrize("api, upstream", PAIRS)
def test_stream_translation_is_the_same_at_every_byte_split(api, upstream):
    raw = UPSTREAMS[upstream][1]()
    whole = translate(api, upstream, [raw])
    for cut in range(1, len(raw)):
        assert translate(api, upstream, [raw[:cut], raw[cut:]]) == whole, cut
    assert translate(api, upstream, [raw[i:i + 1] for i in range(len(raw))]) == whole


@pytest.mark.parametrize("upstream", ["anthropic"])
def test_events_go_out_as_they_arrive_not_at_the_end(upstream):
    translator = plan_call("chat", BODIES["chat"], ANTHROPIC).stream_translator()
    frames = anthropic_stream().split(b"\n\n")
    out = [translator.feed(frame + b"\n\n") for frame in frames[:8]]
    assert b"Ol\xc3\xa1 " in b"".join(out)   # the first text delta, before the stream ended


def test_anthropic_stream_as_chat_chunks():
    found = events(translate("chat", "anthropic", [anthropic_stream()]))
    assert found[-1] == (None, "[DONE]")
    chunks = [payload for _, payload in found[:-1]]
    assert all(c["model"] == "anthropic/claude-x" for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("content", "") for d in deltas) == "Olá wörld"
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "let me"
    calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert calls[0] == {"index": 0, "id": "toolu_1", "type": "function",
                        "function": {"name": "apply_patch", "arguments": ""}}
    weather = "".join(tc["function"].get("arguments", "") for tc in calls if tc["index"] == 1)
    assert json.loads(weather) == {"city": "Oslo"}
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finish[-1] == "tool_calls"
    assert chunks[-1]["usage"]["prompt_tokens"] == 12
    assert chunks[-1]["usage"]["prompt_tokens_details"] == {"cached_tokens": 7}


def test_chat_stream_as_messages_events():
    found = events(translate("messages", "openai", [chat_stream()]))
    names = [name for name, _ in found]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert found[0][1]["message"]["model"] == "groq/x"
    starts = [p["content_block"] for n, p in found if n == "content_block_start"]
    assert [b["type"] for b in starts] == ["thinking", "text", "tool_use", "tool_use"]
    assert [p["index"] for n, p in found if n == "content_block_start"] == [0, 1, 2, 3]
    text = "".join(p["delta"].get("text", "") for n, p in found if n == "content_block_delta")
    assert text == "Olá wörld"
    patch = [p["delta"]["partial_json"] for n, p in found
             if n == "content_block_delta" and p["index"] == 2]
    assert json.loads("".join(patch)) == {"input": "*** Begin"}   # function tool stays JSON
    delta = found[-2][1]
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"] == {"input_tokens": 5, "output_tokens": 9,
                              "cache_read_input_tokens": 7, "cache_creation_input_tokens": 0}


@pytest.mark.parametrize("upstream", ["anthropic", "openai"])
def test_stream_as_responses_events_with_custom_tool_unwrapped(upstream):
    found = events(translate("responses", upstream, [chat_stream() if upstream == "openai"
                                                     else anthropic_stream()]))
    names = [name for name, _ in found]
    assert names[:2] == ["response.created", "response.in_progress"]
    assert names[-1] == "response.completed"
    assert [p["sequence_number"] for _, p in found] == list(range(len(found)))
    assert "response.custom_tool_call_input.delta" in names
    assert "response.function_call_arguments.delta" in names
    text = "".join(p["delta"] for n, p in found if n == "response.output_text.delta")
    assert text == "Olá wörld"
    final = found[-1][1]["response"]
    assert final["model"] == UPSTREAMS[upstream][0].model_name
    kinds = [item["type"] for item in final["output"]]
    assert kinds == ["reasoning", "message", "custom_tool_call", "function_call"]
    assert final["output"][2]["input"] == "*** Begin"
    assert json.loads(final["output"][3]["arguments"]) == {"city": "Oslo"}
    assert final["usage"]["input_tokens"] == 12
    assert final["usage"]["input_tokens_details"] == {"cached_tokens": 7}
    added = [p["output_index"] for n, p in found if n == "response.output_item.added"]
    assert added == [0, 1, 2, 3]


@pytest.mark.parametrize("api", ["messages", "responses"])
def test_pass_through_streams_rewrite_only_the_model(api):
    if api == "messages":
        raw, target = anthropic_stream(), ANTHROPIC
    else:
        raw, target = (sse("response.created", {"type": "response.created", "response": {
            "id": "resp_1", "model": "gpt-x", "output": []}})
            + sse("response.output_text.delta", {"type": "response.output_text.delta",
                                                 "delta": "hi"})
            + sse("response.completed", {"type": "response.completed", "response": {
                "id": "resp_1", "model": "gpt-x", "status": "completed", "output": []}})), OPENAI
    call = plan_call(api, BODIES[api], target)
    assert call.passthrough
    whole = b""
    for cut in range(0, len(raw), 7):
        translator = call.stream_translator()
        out = translator.feed(raw[:cut]) + translator.feed(raw[cut:]) + translator.finish()
        whole = whole or out
        assert out == whole
    found = events(whole)
    first = found[0][1]
    holder = first["message"] if api == "messages" else first["response"]
    assert holder["model"] == target.model_name
    last = found[-1][1]
    holder = last.get("message") if api == "messages" else last["response"]
    if holder is not None:  # a snapshot that carries the model has it rewritten too
        assert holder["model"] == target.model_name
        holder["model"] = events(raw)[-1][1]["response"]["model"]
    assert [payload for _, payload in found[1:]] == [payload for _, payload in events(raw)[1:]]


ANTHROPIC_REPLY = {"id": "msg_1", "type": "message", "model": "claude-x",
                   "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                               {"type": "text", "text": "hello"},
                               {"type": "tool_use", "id": "toolu_1", "name": "weather",
                                "input": {"city": "Oslo"}}],
                   "stop_reason": "tool_use", "stop_sequence": None,
                   "usage": {"input_tokens": 3, "output_tokens": 4,
                             "cache_read_input_tokens": 10}}


def test_anthropic_reply_as_chat_completion():
    call = plan_call("chat", {"messages": [{"role": "user", "content": "x"}]}, ANTHROPIC)
    answer = json.loads(call.reply(json.dumps(ANTHROPIC_REPLY).encode(), True))
    message = answer["choices"][0]["message"]
    assert answer["model"] == "anthropic/claude-x" and answer["x_plano_pinned"] is True
    assert message["content"] == "hello" and message["reasoning_content"] == "hm"
    assert message["tool_calls"][0]["function"] == {"name": "weather",
                                                    "arguments": "{\"city\": \"Oslo\"}"}
    assert answer["choices"][0]["finish_reason"] == "tool_calls"
    assert answer["usage"]["prompt_tokens"] == 13
    assert answer["usage"]["prompt_tokens_details"]["cached_tokens"] == 10


@pytest.mark.parametrize("stop, finish", [("end_turn", "stop"), ("max_tokens", "length"),
                                          ("stop_sequence", "stop"),
                                          ("refusal", "content_filter")])
def test_anthropic_stop_reasons_as_finish_reasons(stop, finish):
    call = plan_call("chat", {"messages": [{"role": "user", "content": "x"}]}, ANTHROPIC)
    text_only = [block for block in ANTHROPIC_REPLY["content"] if block["type"] != "tool_use"]
    answer = json.loads(call.reply(json.dumps({**ANTHROPIC_REPLY, "stop_reason": stop,
                                               "content": text_only}).encode(), False))
    assert answer["choices"][0]["finish_reason"] == finish
    assert "x_plano_pinned" not in answer


def test_anthropic_reply_as_response_object():
    call = plan_call("responses", {"input": "x"}, ANTHROPIC)
    answer = json.loads(call.reply(json.dumps({**ANTHROPIC_REPLY, "stop_reason":
                                               "max_tokens"}).encode(), False))
    assert answer["object"] == "response" and answer["status"] == "incomplete"
    assert answer["incomplete_details"] == {"reason": "max_output_tokens"}
    assert [i["type"] for i in answer["output"]] == ["reasoning", "message", "function_call"]
    assert answer["output"][1]["content"][0]["text"] == "hello"
    assert answer["usage"]["input_tokens_details"]["cached_tokens"] == 10


# With tool calls in the answer the stop reason is tool_use whatever the provider said
# (SPEC §18), except a token limit, which may have cut a call's arguments short.
@pytest.mark.parametrize("finish, stop", [("stop", "tool_use"), ("length", "max_tokens"),
                                          ("tool_calls", "tool_use"),
                                          ("content_filter", "tool_use")])
def test_chat_reply_as_anthropic_message(finish, stop):
    chat = {"id": "chatcmpl-1", "model": "gpt-x", "choices": [{"index": 0, "finish_reason":
            finish, "message": {"role": "assistant", "content": "yo", "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "t", "arguments": "{\"a\":1}"}}]}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 2,
                      "prompt_tokens_details": {"cached_tokens": 15}}}
    call = plan_call("messages", {"max_tokens": 5, "messages": [
        {"role": "user", "content": "x"}]}, OPENAI)
    answer = json.loads(call.reply(json.dumps(chat).encode(), False))
    assert answer["type"] == "message" and answer["model"] == "openai/gpt-x"
    assert answer["content"] == [{"type": "text", "text": "yo"},
                                 {"type": "tool_use", "id": "call_1", "name": "t",
                                  "input": {"a": 1}}]
    assert answer["stop_reason"] == stop
    assert answer["usage"]["input_tokens"] == 5
    assert answer["usage"]["cache_read_input_tokens"] == 15


def test_a_reply_that_is_not_a_json_object_is_reported():
    call = plan_call("messages", {"max_tokens": 5, "messages": [
        {"role": "user", "content": "x"}]}, OPENAI)
    assert call.reply(b"[1]", False) is None and call.reply(b"nope", False) is None


@pytest.mark.parametrize("api, upstream_body, expected", [
    ("messages", b'{"error":{"message":"slow down","type":"rate_limit","code":"rl"}}',
     {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down",
                                 "code": "rl"}}),
    ("chat", b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}',
     {"error": {"message": "slow down", "type": "invalid_request_error", "param": None,
                "code": "upstream_429"}}),
    ("responses", b"plain failure",
     {"error": {"message": "upstream answered HTTP 429: plain failure",
                "type": "upstream_error", "param": None, "code": "upstream_429"}}),
])
def test_upstream_errors_take_the_client_api_shape(api, upstream_body, expected):
    target = OPENAI if api == "messages" else ANTHROPIC
    body = {"chat": {"messages": [{"role": "user", "content": "x"}]},
            "messages": {"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
            "responses": {"input": "x"}}[api]
    assert json.loads(plan_call(api, body, target).error(429, upstream_body)) == expected


@pytest.mark.parametrize("api, name", [("messages", "error"),
                                       ("responses", "response.failed"), ("chat", None)])
def test_a_broken_stream_ends_with_one_in_band_error_of_the_api_kind(api, name):
    target = OPENAI if api == "messages" else ANTHROPIC
    translator = plan_call(api, {**BODIES[api], "tools": None}, target).stream_translator()
    translator.feed(b"")
    out = translator.fail(StreamFailure(REASON_BROKEN, "provider timed out", "upstream_error",
                                        "upstream_timeout"))
    (event, payload), = events(out)
    assert event == name
    if api == "messages":
        assert payload["error"]["type"] == "api_error"
    elif api == "responses":
        assert payload["response"]["status"] == "failed"
        assert payload["response"]["error"]["code"] == "upstream_timeout"
    else:
        assert payload["error"]["code"] == "upstream_timeout"
    assert translator.fail(StreamFailure(REASON_BROKEN, "again")) == b""


def test_an_anthropic_error_event_mid_stream_becomes_the_client_kind():
    raw = anthropic_stream().split(b"event: content_block_start")[0] + sse(
        "error", {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
    found = events(translate("responses", "anthropic", [raw]))
    assert found[-1][0] == "response.failed"
    assert found[-1][1]["response"]["error"]["message"] == "busy"


def test_upstream_error_messages_are_scrubbed_of_keys():
    body = {"messages": [{"role": "user", "content": "x"}]}
    raw = (b'{"type":"error","error":{"type":"authentication_error",'
           b'"message":"invalid x-api-key sk-ant-api03-abcdef123456789XYZ"}}')
    key = "sk-ant-api03-abcdef123456789XYZ"
    out = json.loads(plan_call("chat", body, ANTHROPIC).error(401, raw, (key,)))
    assert "abcdef123456789" not in out["error"]["message"]
