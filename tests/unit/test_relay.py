"""Answer shaping: model rewrite in JSON bodies and stream chunks (SPEC §4 step 6)."""

from __future__ import annotations

import json

import pytest

from app.pipeline.passthrough import rewrite_chunk, rewrite_completion
from app.providers.sse import ServerSentEvent


def test_completion_model_is_rewritten_and_pinned_marker_added():
    body = json.dumps({"id": "x", "model": "gpt-5.2", "choices": []}).encode()
    rewritten = json.loads(rewrite_completion(body, "openai/gpt-5.2", pinned=True))
    assert rewritten["model"] == "openai/gpt-5.2" and rewritten["x_plano_pinned"] is True
    assert "x_plano_pinned" not in json.loads(rewrite_completion(body, "m", pinned=False))


def test_completion_is_rewritten_in_bytes_keeping_the_providers_formatting():
    body = b'{\n  "id": "x",\n  "model": "gpt-5.2",\n  "usage": {"total_tokens": 3}\n}\n'
    assert rewrite_completion(body, "openai/gpt-5.2", pinned=True) == (
        b'{\n  "id": "x",\n  "model":"openai/gpt-5.2",\n  "usage": {"total_tokens": 3}\n'
        b',"x_plano_pinned":true}')
    assert rewrite_completion(body, "m", pinned=False) == (
        b'{\n  "id": "x",\n  "model":"m",\n  "usage": {"total_tokens": 3}\n}')


@pytest.mark.parametrize("body", [
    b'{"choices":[{"model":"inner"}],"model":"outer"}',  # first member nested
    b'{"model":"a","x_plano_pinned":false}',            # marker already there
    b'{"id":"x","choices":[]}',                          # no model at all
])
def test_completions_the_byte_rewrite_cannot_prove_are_parsed(body):
    rewritten = json.loads(rewrite_completion(body, "m", pinned=True))
    assert rewritten == {**json.loads(body), "model": "m", "x_plano_pinned": True}


def test_non_object_completion_is_refused():
    assert rewrite_completion(b"[1]", "m", False) is None
    assert rewrite_completion(b"not json", "m", False) is None
    assert rewrite_completion(b'{"model":"a"', "m", False) is None  # cut short


def test_chunk_model_is_rewritten_and_other_events_pass_unchanged():
    chunk = rewrite_chunk(ServerSentEvent(data='{"model":"gpt-x","choices":[]}'), "openai/x")
    assert chunk == b'data: {"model":"openai/x","choices":[]}\n\n'
    assert rewrite_chunk(ServerSentEvent(data="[DONE]"), "m") == b"data: [DONE]\n\n"
    assert rewrite_chunk(ServerSentEvent(comments=["ping"]), "m") == b": ping\n\n"


def test_lone_surrogates_survive_as_escapes_and_unicode_stays_utf8():
    body = b'{"model":"a","choices":[{"text":"\\ud800 caf\\u00e9"}]}'
    rewritten = rewrite_completion(body, "m", False)
    assert b"\\ud800" in rewritten
    assert json.loads(rewritten)["choices"][0]["text"] == "\ud800 caf\u00e9"
    plain = rewrite_completion('{"model":"a","t":"café"}'.encode(), "m", False)
    assert "café".encode() in plain


def test_top_level_model_is_rewritten_without_parsing():
    from app.pipeline.passthrough import set_top_level_model
    text = '{"id":"c1","object":"chunk","model": "gpt-5.2","choices":[{"delta":{"content":"x"}}]}'
    assert set_top_level_model(text, '"openai/gpt-5.2"') == (
        '{"id":"c1","object":"chunk","model":"openai/gpt-5.2","choices":[{"delta":'
        '{"content":"x"}}]}')


def test_nested_or_quoted_model_members_fall_back_to_parsing():
    from app.pipeline.passthrough import set_top_level_model
    nested = '{"choices":[{"model":"inner"}],"model":"outer"}'
    assert set_top_level_model(nested, '"m"') is None
    in_string = '{"note":"{\\"model\\":\\"x\\"}","model":"outer"}'
    assert set_top_level_model(in_string, '"m"') == '{"note":"{\\"model\\":\\"x\\"}","model":"m"}'
    assert set_top_level_model('{"model":null}', '"m"') is None
    assert set_top_level_model('{"k\\"model":"v","model":"w"}', '"m"') is None
    assert set_top_level_model('["model"]', '"m"') is None
    chunk = rewrite_chunk(ServerSentEvent(data=nested), "openai/x")
    assert json.loads(chunk[6:]) == {"choices": [{"model": "inner"}], "model": "openai/x"}


def test_sse_id_and_retry_fields_survive_the_relay():
    from app.providers.sse import SSEDecoder
    wire = b'id: 7\nretry: 100\ndata: {"model":"gpt-x","choices":[]}\n\n'
    (event,) = SSEDecoder().feed(wire)
    assert rewrite_chunk(event, "openai/x") == (
        b'id: 7\nretry: 100\ndata: {"model":"openai/x","choices":[]}\n\n')
    only_id = ServerSentEvent(data='{"choices":[]}', id="8")
    assert rewrite_chunk(only_id, "m") == b'id: 8\ndata: {"choices":[]}\n\n'


def _slow_path(chunk: bytes, model: str) -> bytes:
    from app.providers.sse import SSEDecoder
    return b"".join(rewrite_chunk(event, model, json.dumps(model))
                    for event in SSEDecoder().feed(chunk))


@pytest.mark.parametrize("chunk", [
    b'data: {"id":"c","model":"gpt-x","choices":[{"delta":{"content":"hi"}}]}\n\n',
    b'data: {"model":"a"}\n\ndata: {"model":"b","x":"\\"model\\":1"}\n\ndata: [DONE]\n\n',
    b'data: {"id":"c","choices":[],"usage":{"total_tokens":3},"model":"gpt-x"}\n\n',
    "data: {\"model\":\"a\",\"t\":\"caf\u00e9 \U0001f600\"}\n\n".encode(),
])
def test_stream_fast_path_matches_the_decoder(chunk):
    from app.pipeline.passthrough import rewrite_simple_events
    fast = rewrite_simple_events(chunk, b'"openai/x"')
    assert fast is not None
    assert fast == _slow_path(chunk, "openai/x")


@pytest.mark.parametrize("chunk", [
    b'id: 7\ndata: {"model":"a"}\n\n', b'data: {"model":"a"}\r\n\r\n',
    b'data: {"model":"a"}\n\ndata: {"mo', b': ping\n\n', b'data: {"choices":[]}\n\n',
    b'data:{"model":"a"}\n\n', b'data: {"a":1}\ndata: {"model":"b"}\n\n',
    b'data: {"choices":[{"model":"inner"}],"model":"outer"}\n\n',
])
def test_anything_else_takes_the_decoder(chunk):
    from app.pipeline.passthrough import rewrite_simple_events
    assert rewrite_simple_events(chunk, b'"m"') is None


@pytest.mark.parametrize("text", [
    '{"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-x","choices":[]}',
    '{"model":"a\\"b","x":1}', '{"model":"a\\\\","x":1}', '{"n":"{","model":"m"}',
    '{"n":"a\\"model\\":\\"x","model":"m"}', '{"a":{"model":"in"},"model":"out"}',
    '{"a":[1],"model":"out"}', '{"model": "spaced"}', '{"x":"}","model":"m"}',
    '["model":"x"]', '{"model":null}', '{"id":"\u00e9","model":"m\u00e9"}',
])
def test_bytes_model_rewrite_agrees_with_the_text_one(text):
    from app.pipeline.passthrough import set_top_level_model, set_top_level_model_bytes
    expected = set_top_level_model(text, '"new"')
    got = set_top_level_model_bytes(text.encode(), b'"new"')
    assert got == (None if expected is None else expected.encode())


def test_one_rewriter_over_a_whole_stream_matches_the_decoder():
    """The head cache: chunks sharing the first chunk's head, and chunks that do not."""
    from app.pipeline.passthrough import ChunkRewriter
    chunks = [
        b'data: {"id":"c1","object":"chunk","created":1,"model":"gpt-x","choices":[]}\n\n',
        b'data: {"id":"c1","object":"chunk","created":1,"model":"gpt-x","choices":[1]}\n\n',
        b'data: {"id":"c1","object":"chunk","created":1,"model":"gpt-x-2","c":[]}\n\n',
        b'data: {"id":"c2","model":"gpt-x","choices":[{"model":"keep"}]}\n\n',
        b'data: {"id":"c1","object":"chunk","created":1,"model":"gpt-x"}\n\n'
        b'data: {"id":"c1","object":"chunk","created":1,"model":"gpt-x","u":{}}\n\n',
        b'data: {"a":[1],"model":"nested-prefix"}\n\n',
        b'data: [DONE]\n\n',
    ]
    rewriter = ChunkRewriter(b'"openai/x"')
    for chunk in chunks:
        assert rewriter.rewrite(chunk) == _slow_path(chunk, "openai/x"), chunk
