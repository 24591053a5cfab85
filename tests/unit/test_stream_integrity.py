"""A failure is never an answer (SPEC §18): the integrity checks and every stream shaper.

Each shaper (the byte-level Chat pass-through, the Messages and Responses pass-throughs,
the translators) is fed a whole upstream stream, one cut short, one with an in-band error
and (Chat) one whose finish_reason is ``error``; only the whole one ends normally.
"""

from __future__ import annotations

import json

import pytest

from app.pipeline.passthrough import ChatPassthroughStream
from app.pipeline.plan import Target, plan_call
from app.pipeline.stream_integrity import (
    REASON_ERROR_EVENT,
    REASON_FINISH_ERROR,
    REASON_INCOMPLETE,
    ChatStreamCheck,
)

OPENAI = Target("openai/gpt-x", "gpt-x")
OPENAI_NATIVE = Target("openai/gpt-x", "gpt-x", native_responses=True)
ANTHROPIC = Target("anthropic/claude-x", "claude-x", "anthropic", "anthropic")


def chunk(delta: dict, finish: str | None = None) -> bytes:
    return b"data: " + json.dumps({"id": "c1", "object": "chat.completion.chunk",
                                   "created": 1, "model": "gpt-x",
                                   "choices": [{"index": 0, "delta": delta,
                                                "finish_reason": finish}]},
                                  separators=(",", ":")).encode() + b"\n\n"


def sse(name: str, payload: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()


CHAT_WHOLE = [chunk({"role": "assistant", "content": ""}), chunk({"content": "hi"}),
              chunk({}, "stop"), b"data: [DONE]\n\n"]
CHAT_CUT = CHAT_WHOLE[:2]
CHAT_ERROR_OBJECT = CHAT_WHOLE[:2] + [b'data: {"error":{"message":"overloaded"}}\n\n']
CHAT_FINISH_ERROR = CHAT_WHOLE[:2] + [chunk({}, "error"), b"data: [DONE]\n\n"]
CHAT_DONE_WITHOUT_FINISH = CHAT_WHOLE[:2] + [b"data: [DONE]\n\n"]

MESSAGES_WHOLE = [
    sse("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [], "usage": {"input_tokens": 3, "output_tokens": 0}}}),
    sse("content_block_start", {"type": "content_block_start", "index": 0,
                                "content_block": {"type": "text", "text": ""}}),
    sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                "delta": {"type": "text_delta", "text": "hi"}}),
    sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
    sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                          "usage": {"output_tokens": 1}}),
    sse("message_stop", {"type": "message_stop"})]
MESSAGES_CUT = MESSAGES_WHOLE[:3]

RESPONSES_WHOLE = [
    sse("response.created", {"type": "response.created", "sequence_number": 0,
                             "response": {"id": "resp_9", "model": "gpt-x",
                                          "status": "in_progress", "output": []}}),
    sse("response.output_text.delta", {"type": "response.output_text.delta",
                                       "sequence_number": 1, "delta": "hi"}),
    sse("response.completed", {"type": "response.completed", "sequence_number": 2,
                               "response": {"id": "resp_9", "model": "gpt-x",
                                            "status": "completed", "output": []}})]
RESPONSES_CUT = RESPONSES_WHOLE[:2]


def run(shaper, reads: list[bytes]) -> bytes:
    return b"".join(shaper.feed(raw) for raw in reads) + shaper.finish()


def frames(raw: bytes) -> list[tuple[str | None, str]]:
    found = []
    for frame in raw.decode().split("\n\n"):
        name = data = None
        for line in frame.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        if data is not None:
            found.append((name, data))
    return found


# --------------------------------------------------------------- the Chat pass-through


def test_a_whole_chat_stream_passes_with_only_the_model_rewritten():
    shaper = ChatPassthroughStream("openai/gpt-x")
    out = run(shaper, CHAT_WHOLE)
    assert shaper.failure is None
    assert out == b"".join(CHAT_WHOLE).replace(b'"gpt-x"', b'"openai/gpt-x"')


@pytest.mark.parametrize("reads, reason", [
    (CHAT_CUT, REASON_INCOMPLETE), (CHAT_ERROR_OBJECT, REASON_ERROR_EVENT),
    (CHAT_FINISH_ERROR, REASON_FINISH_ERROR), (CHAT_DONE_WITHOUT_FINISH, REASON_INCOMPLETE)])
def test_a_chat_stream_that_is_not_an_answer_ends_with_an_error_and_no_done(reads, reason):
    for split in (reads, [b"".join(reads)]):  # read by read, and all in one read
        shaper = ChatPassthroughStream("openai/gpt-x")
        found = frames(run(shaper, split))
        assert shaper.failure is not None and shaper.failure.reason == reason
        assert "[DONE]" not in [data for _, data in found]
        assert "error" in json.loads(found[-1][1])
        assert all(json.loads(data).get("choices", [{}])[0].get("finish_reason") != "error"
                   for _, data in found[:-1])


def test_plain_content_chunks_take_the_byte_level_path():
    assert not ChatStreamCheck.needs_look(CHAT_WHOLE[1])
    assert ChatStreamCheck.needs_look(CHAT_WHOLE[2])   # a finish_reason
    assert ChatStreamCheck.needs_look(CHAT_WHOLE[3])   # [DONE]
    assert ChatStreamCheck.needs_look(CHAT_ERROR_OBJECT[2])


# ------------------------------------------------------ translations and pass-throughs


BODIES = {"chat": {"messages": [{"role": "user", "content": "x"}], "stream": True},
          "messages": {"max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
                       "stream": True},
          "responses": {"input": "x", "stream": True}}
NORMAL_END = {"chat": "[DONE]", "messages": "message_stop", "responses": "response.completed"}
IN_BAND_ERROR = {"messages": "error", "responses": "response.failed"}


def shaper_for(api: str, target: Target):
    return plan_call(api, BODIES[api], target).stream_translator()


def last_is_normal_end(api: str, found) -> bool:
    name, data = found[-1]
    return data == "[DONE]" if api == "chat" else name == NORMAL_END[api]


# (client API, target, whole upstream stream, the same cut short)
CASES = [
    ("chat", ANTHROPIC, MESSAGES_WHOLE, MESSAGES_CUT),
    ("messages", ANTHROPIC, MESSAGES_WHOLE, MESSAGES_CUT),
    ("messages", OPENAI, CHAT_WHOLE, CHAT_CUT),
    ("responses", OPENAI_NATIVE, RESPONSES_WHOLE, RESPONSES_CUT),
    ("responses", OPENAI, CHAT_WHOLE, CHAT_CUT),
    ("responses", ANTHROPIC, MESSAGES_WHOLE, MESSAGES_CUT),
]


@pytest.mark.parametrize("api, target, whole, cut", CASES)
def test_every_plan_ends_a_whole_stream_normally_and_a_cut_one_with_an_error(
        api, target, whole, cut):
    shaper = shaper_for(api, target)
    assert last_is_normal_end(api, frames(run(shaper, whole)))
    assert shaper.failure is None
    shaper = shaper_for(api, target)
    found = frames(run(shaper, cut))
    assert shaper.failure is not None and shaper.failure.reason == REASON_INCOMPLETE
    assert not last_is_normal_end(api, found)
    assert all('"end_turn"' not in data and '"response.completed"' not in data
               for _, data in found)
    if api == "chat":
        assert "error" in json.loads(found[-1][1])
    else:
        assert found[-1][0] == IN_BAND_ERROR[api]


def test_a_translated_chat_stream_with_finish_reason_error_never_ends_as_end_turn():
    shaper = shaper_for("messages", OPENAI)
    found = frames(run(shaper, CHAT_FINISH_ERROR))
    assert shaper.failure.reason == REASON_FINISH_ERROR
    assert found[-1][0] == "error"
    assert all(name != "message_stop" for name, _ in found)


def test_an_upstream_response_failed_is_relayed_as_it_is_and_counted():
    failed = sse("response.failed", {"type": "response.failed", "sequence_number": 2,
                                     "response": {"id": "resp_9", "model": "gpt-x",
                                                  "status": "failed",
                                                  "error": {"code": "server_error",
                                                            "message": "boom"}}})
    shaper = shaper_for("responses", OPENAI_NATIVE)
    found = frames(run(shaper, RESPONSES_CUT + [failed]))
    assert shaper.failure.reason == REASON_ERROR_EVENT
    (name, data), = found[-1:]
    payload = json.loads(data)
    assert name == "response.failed" and payload["response"]["id"] == "resp_9"
    assert payload["response"]["error"]["message"] == "boom"
    assert sum(1 for name, _ in found if name == "response.failed") == 1


def test_a_native_responses_stream_cut_short_fails_with_the_upstream_ids():
    shaper = shaper_for("responses", OPENAI_NATIVE)
    found = frames(run(shaper, RESPONSES_CUT))
    name, data = found[-1]
    payload = json.loads(data)
    assert name == "response.failed"
    assert payload["sequence_number"] == 2
    assert payload["response"]["id"] == "resp_9"
    assert payload["response"]["model"] == "openai/gpt-x"
    assert payload["response"]["status"] == "failed"
