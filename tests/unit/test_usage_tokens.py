"""Usage read from every upstream answer shape, JSON and streamed (SPEC §19)."""

from __future__ import annotations

import json

import pytest

from app.usage.tokens import (
    CHAT,
    MESSAGES,
    RESPONSES,
    StreamUsageReader,
    Usage,
    drop_usage_chunks,
    usage_from_answer,
    usage_from_bytes,
)

CHAT_ANSWER = {"id": "c1", "object": "chat.completion", "model": "gpt-4o",
               "choices": [{"index": 0, "message": {"role": "assistant",
                                                    "content": 'the "usage": {x} text'}}],
               "usage": {"prompt_tokens": 1200, "completion_tokens": 30, "total_tokens": 1230,
                         "prompt_tokens_details": {"cached_tokens": 1024}}}
RESPONSES_ANSWER = {"id": "r1", "object": "response", "output": [],
                    "usage": {"input_tokens": 900, "output_tokens": 12,
                              "input_tokens_details": {"cached_tokens": 512},
                              "output_tokens_details": {"reasoning_tokens": 4}}}
MESSAGES_ANSWER = {"id": "m1", "type": "message", "content": [],
                   "usage": {"input_tokens": 20, "output_tokens": 7,
                             "cache_read_input_tokens": 3000,
                             "cache_creation_input_tokens": 500}}


@pytest.mark.parametrize(("api", "answer", "expected"), [
    (CHAT, CHAT_ANSWER, Usage(176, 1024, 0, 30)),
    (RESPONSES, RESPONSES_ANSWER, Usage(388, 512, 0, 12)),
    (MESSAGES, MESSAGES_ANSWER, Usage(20, 3000, 500, 7)),
])
def test_json_answers_give_uncached_input_and_cache_tokens_by_provider(api, answer, expected):
    assert usage_from_answer(api, answer) == expected
    raw = json.dumps(answer).encode()
    assert usage_from_bytes(api, raw) == expected
    assert usage_from_bytes(api, json.dumps(answer, indent=2).encode()) == expected


def test_input_plus_cache_tokens_is_the_whole_prompt_for_every_provider():
    assert usage_from_answer(CHAT, CHAT_ANSWER).prompt == 1200
    assert usage_from_answer(RESPONSES, RESPONSES_ANSWER).prompt == 900
    assert usage_from_answer(MESSAGES, MESSAGES_ANSWER).prompt == 3520


def test_deepseek_cache_hit_tokens_count_as_cache_reads():
    answer = {"usage": {"prompt_tokens": 100, "completion_tokens": 5,
                        "prompt_cache_hit_tokens": 60, "prompt_cache_miss_tokens": 40}}
    assert usage_from_answer(CHAT, answer) == Usage(40, 60, 0, 5)


def test_an_answer_without_usage_reports_none():
    assert usage_from_answer(CHAT, {"choices": []}) is None
    assert usage_from_bytes(CHAT, b'{"choices": [], "usage": null}') is None
    assert usage_from_bytes(CHAT, b"not json") is None


def test_usage_inside_a_string_is_not_taken_for_the_answer_usage():
    raw = json.dumps({"choices": [{"message": {"content": '{"usage": {"prompt_tokens": 9}}'}}],
                      "usage": {"prompt_tokens": 3, "completion_tokens": 1}}).encode()
    assert usage_from_bytes(CHAT, raw) == Usage(3, 0, 0, 1)
    only_in_string = json.dumps({"choices": [{"message": {
        "content": '{"usage": {"prompt_tokens": 9}}'}}]}).encode()
    assert usage_from_bytes(CHAT, only_in_string) is None


def test_the_answer_usage_is_found_after_nested_usage_members_and_before_trailing_fields():
    # An Anthropic tool_use input is a JSON object, not a string: it may hold "usage".
    answer = {"id": "m1", "type": "message", "content": [
        {"type": "tool_use", "id": "t", "name": "report",
         "input": {"usage": {"input_tokens": 999999}, "text": "x" * 5000}}],
        "usage": {"input_tokens": 20, "output_tokens": 7, "cache_read_input_tokens": 30},
        "container": {"id": "c"}}
    assert usage_from_bytes(MESSAGES, json.dumps(answer).encode()) == Usage(20, 30, 0, 7)
    responses = {**RESPONSES_ANSWER, "user": None, "metadata": {"usage": "a string"}}
    assert usage_from_bytes(RESPONSES, json.dumps(responses).encode()) == \
        Usage(388, 512, 0, 12)


def test_an_answer_whose_tail_is_not_utf8_reports_no_usage_and_raises_nothing():
    raw = json.dumps(CHAT_ANSWER).encode()[:-1] + b', "x": "\xff"}'
    assert usage_from_bytes(CHAT, raw) is None


def _sse(*events) -> bytes:
    out = b""
    for name, payload in events:
        if name:
            out += b"event: " + name.encode() + b"\n"
        out += b"data: " + (payload if isinstance(payload, bytes)
                            else json.dumps(payload).encode()) + b"\n\n"
    return out


def _read(api: str, stream: bytes, step: int) -> Usage | None:
    reader = StreamUsageReader(api)
    for start in range(0, len(stream), step):
        reader.feed(stream[start:start + step])
    return reader.result()


CHAT_STREAM = _sse(
    (None, {"id": "c", "choices": [{"delta": {"content": "hi"}}], "usage": None}),
    (None, {"id": "c", "choices": [{"delta": {}, "finish_reason": "stop"}], "usage": None}),
    (None, {"id": "c", "choices": [], "usage": {"prompt_tokens": 50, "completion_tokens": 2,
                                                 "prompt_tokens_details": {"cached_tokens": 32}}}),
    (None, b"[DONE]"))
MESSAGES_STREAM = _sse(
    ("message_start", {"type": "message_start", "message": {"id": "m", "usage": {
        "input_tokens": 10, "output_tokens": 1, "cache_read_input_tokens": 2048,
        "cache_creation_input_tokens": 100}}}),
    ("content_block_delta", {"type": "content_block_delta", "delta": {"text": "usage"}}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                       "usage": {"output_tokens": 42}}),
    ("message_stop", {"type": "message_stop"}))
RESPONSES_STREAM = _sse(
    ("response.created", {"type": "response.created", "response": {"usage": None}}),
    ("response.output_text.delta", {"type": "response.output_text.delta", "delta": "x"}),
    ("response.completed", {"type": "response.completed", "response": {"usage": {
        "input_tokens": 70, "output_tokens": 9, "input_tokens_details": {"cached_tokens": 64}}}}))


@pytest.mark.parametrize("step", [1, 7, 64, 100000])
@pytest.mark.parametrize(("api", "stream", "expected"), [
    (CHAT, CHAT_STREAM, Usage(18, 32, 0, 2)),
    (MESSAGES, MESSAGES_STREAM, Usage(10, 2048, 100, 42)),
    (RESPONSES, RESPONSES_STREAM, Usage(6, 64, 0, 9)),
])
def test_streams_give_their_usage_however_the_reads_are_cut(api, stream, expected, step):
    assert _read(api, stream, step) == expected


def test_a_stream_without_usage_reports_none():
    stream = _sse((None, {"choices": [{"delta": {"content": "x"}}], "usage": None}),
                  (None, b"[DONE]"))
    assert _read(CHAT, stream, 5) is None


def test_anthropic_message_delta_with_cumulative_input_updates_the_start():
    stream = MESSAGES_STREAM.replace(b'"usage": {"output_tokens": 42}',
                                     b'"usage": {"output_tokens": 42, "input_tokens": 12}')
    assert _read(MESSAGES, stream, 50) == Usage(12, 2048, 100, 42)


def test_the_usage_only_chunk_is_dropped_and_everything_else_kept_byte_for_byte():
    out = drop_usage_chunks(CHAT_STREAM)
    assert b'"choices": []' not in out
    assert out == CHAT_STREAM.replace(_sse(CHAT_STREAM and (None, {
        "id": "c", "choices": [], "usage": {"prompt_tokens": 50, "completion_tokens": 2,
                                            "prompt_tokens_details": {"cached_tokens": 32}}})),
        b"")
    ordinary = _sse((None, {"id": "c", "choices": [{"delta": {"content": "x"}}]}))
    assert drop_usage_chunks(ordinary) is ordinary


def test_a_usage_chunk_in_an_unterminated_tail_is_still_read_and_dropped():
    from app.config import config_from_dict
    from app.observability.metrics import Metrics
    from app.session_cache.memory import MemorySessionCache
    from app.usage.meter import UsageMeter
    from app.usage.recorder import UsageRecorder

    config = config_from_dict({"model_providers": [{"model": "openai/gpt-4o",
                                                    "access_key": "k"}]})
    meter = UsageMeter(UsageRecorder(config, Metrics(), MemorySessionCache(10)),
                       "openai/gpt-4o", CHAT, strip_usage_chunk=True)
    tail = b'data: {"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":1}}'
    meter.feed(tail)
    assert meter.outgoing(tail + b"\n\n") == b""
    assert meter.finish().usage == Usage(4, 0, 0, 1)
