"""The byte-level pass-through plan: Chat in, an OpenAI-interface model out (SPEC §4, §11).

The pinned path's speed lives here. A completion has its ``model`` set to the configured
name (and ``x_plano_pinned`` when pinned) in bytes where the member is provably top-level,
else parsed; a stream's events are rewritten read by read, the common read (whole one-line
data events) in bytes without the SSE decoder. Every other field of an event (``id``,
``retry``, ``event``, comments) is kept. :class:`ChatPassthroughStream` is this plan's
stream shaper for :class:`app.pipeline.relay.Relay`, with the stream's integrity check (SPEC §18):
a Chat stream is whole only when a ``finish_reason`` (not ``error``) came before
``[DONE]``, and carries no in-band error object.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import replace

from app.client_apis.chat_completions import render_stream_error
from app.client_apis.common import dumps
from app.pipeline.stream_integrity import ChatStreamCheck, CheckedStream, StreamFailure
from app.providers.sse import (
    ServerSentEvent,
    encode_data,
    encode_event,
    simple_data_events,
)


def rewrite_completion(body: bytes, model_name: str, pinned: bool) -> bytes | None:
    """The completion JSON with ``model`` set to ``model_name`` (and the pinned marker).

    ``None`` when ``body`` is not a JSON object (the caller reports a bad upstream answer).
    A body that ends with ``}`` and has its ``model`` member where
    :func:`set_top_level_model_bytes` proves it to be is rewritten in bytes, the marker
    appended before the closing brace: no decode and encode of the whole answer, and the
    provider's own bytes (formatting, escapes) are kept. Anything else is parsed.
    """
    trimmed = body.rstrip()
    if trimmed.endswith(b"}") and b'"x_plano_pinned"' not in trimmed:
        rewritten = set_top_level_model_bytes(trimmed, model_json_bytes(model_name))
        if rewritten is not None:
            return rewritten[:-1] + b',"x_plano_pinned":true}' if pinned else rewritten
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    if not isinstance(parsed, dict):
        return None
    parsed["model"] = model_name
    if pinned:
        parsed["x_plano_pinned"] = True
    return dumps(parsed)


@functools.lru_cache(maxsize=1024)
def model_json_bytes(model_name: str) -> bytes:
    """``model_name`` as a JSON string, UTF-8 (one per configured model, kept)."""
    return dumps(model_name)


_MODEL_MEMBER = re.compile(r'"model"\s*:\s*"(?:[^"\\]|\\.)*"')
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def set_top_level_model(text: str, model_json: str) -> str | None:
    """``text`` (a JSON object) with its top-level ``"model"`` string set, at the text level.

    ``model_json`` is the new value already JSON-encoded. The first ``"model": "..."`` member
    is used only if it sits at depth 1 (strings removed, the opening brackets before it
    outnumber the closing ones by exactly one); otherwise ``None`` and the caller parses.
    A stream has one such chunk per token, so this saves a JSON decode and encode each.
    """
    match = _MODEL_MEMBER.search(text)
    if match is None or not text.startswith("{"):
        return None
    prefix = _JSON_STRING.sub("", text[:match.start()])
    if '"' in prefix:  # the match began inside a string (after an escaped quote)
        return None
    depth = prefix.count("{") + prefix.count("[") - prefix.count("}") - prefix.count("]")
    if depth != 1:
        return None
    return f'{text[:match.start()]}"model":{model_json}{text[match.end():]}'


_MODEL_MEMBER_BYTES = re.compile(rb'"model"\s*:\s*"(?:[^"\\]|\\.)*"')
_JSON_STRING_BYTES = re.compile(rb'"(?:[^"\\]|\\.)*"')


def set_top_level_model_bytes(data: bytes, model_json: bytes) -> bytes | None:
    """:func:`set_top_level_model` on UTF-8 bytes, for the stream fast path."""
    rewritten, _ = _set_model_bytes(data, model_json)
    return rewritten


def _set_model_bytes(data: bytes, model_json: bytes) -> tuple[bytes | None, int]:
    """The rewritten data, and the length of its *head* (up to the model value's closing
    quote) when that head alone proves where the member is, else 0.

    Compact chunks (``{"id":"...","object":"chat.completion.chunk","created":1,"model":...``)
    take a shortcut: when the text before ``"model":"`` has no backslash, no bracket and no
    brace but the opening one, and an even number of quotes, the member is at depth 1 and
    outside any string, and its value ends at the next quote. Anything else uses the regexes.
    """
    start = data.find(b'"model":"')
    if start > 0 and data[0] == 0x7B:  # "{"
        prefix = data[:start]
        if (prefix.count(b"{") == 1 and prefix.count(b'"') % 2 == 0 and b"\\" not in prefix
                and b"[" not in prefix and b"}" not in prefix and b"]" not in prefix):
            end = data.find(b'"', start + 9)
            if end > 0 and data[end - 1] != 0x5C:  # not an escaped quote: the value ends
                return b"".join((prefix, b'"model":', model_json, data[end + 1:])), end + 1
    match = _MODEL_MEMBER_BYTES.search(data)
    if match is None or not data.startswith(b"{"):
        return None, 0
    start = match.start()
    prefix = _JSON_STRING_BYTES.sub(b"", data[:start])
    if b'"' in prefix:
        return None, 0
    depth = prefix.count(b"{") + prefix.count(b"[") - prefix.count(b"}") - prefix.count(b"]")
    if depth != 1:
        return None, 0
    return b"".join((data[:start], b'"model":', model_json, data[match.end():])), 0


class ChunkRewriter:
    """Rewrites ``model`` in the reads of one stream that hold only one-line data events,
    in bytes, without the decoder (:meth:`rewrite` answers ``None`` for anything else).

    The chunks of one stream repeat the same head (``{"id":"chatcmpl-1","object":...,
    "created":...,"model":"gpt-4o-mini"``); once one head has been checked, a chunk that
    starts with exactly those bytes has its member in the same place, so it is rewritten by
    swapping the head, with no search at all.
    """

    __slots__ = ("_model_json", "_head", "_new_head")

    def __init__(self, model_json: bytes):
        self._model_json = model_json
        self._head = b"\0"  # matches no chunk (data starts with "{")
        self._new_head = b""

    def rewrite(self, chunk: bytes) -> bytes | None:
        """``chunk`` with every event's model rewritten, or ``None``: use the decoder."""
        if not chunk.startswith(b"data: ") or not chunk.endswith(b"\n\n") or b"\r" in chunk:
            return None
        if chunk.find(b"\n", 6) == len(chunk) - 2:  # one event: the usual read
            data = self._data(chunk[6:-2])
            return None if data is None else b"data: " + data + b"\n\n"
        datas = simple_data_events(chunk)
        if datas is None:
            return None
        out = []
        for data in datas:
            data = self._data(data)
            if data is None:
                return None
            out.append(b"data: " + data + b"\n\n")
        return b"".join(out)

    def _data(self, data: bytes) -> bytes | None:
        head = self._head
        if data.startswith(head):
            return self._new_head + data[len(head):]
        if data == b"[DONE]":
            return data
        rewritten, head_length = _set_model_bytes(data, self._model_json)
        if head_length:
            self._head = data[:head_length]
            self._new_head = rewritten[:len(rewritten) - (len(data) - head_length)]
        return rewritten


def rewrite_simple_events(chunk: bytes, model_json: bytes) -> bytes | None:
    """``chunk`` rewritten without decoding it, when it is only one-line data events whose
    ``model`` sits where :func:`set_top_level_model_bytes` finds it (or ``[DONE]``);
    ``None``: use the decoder. Same output as decoding and :func:`rewrite_chunk`."""
    return ChunkRewriter(model_json).rewrite(chunk)


def rewrite_chunk(event: ServerSentEvent, model_name: str,
                  model_json: str | None = None) -> bytes:
    """One SSE event re-encoded with its JSON ``model`` rewritten.

    Named events (``event:``), comments and ``[DONE]`` pass as they are; ``id`` and
    ``retry`` are kept alongside the rewritten data.
    """
    data = event.data
    if data is None or event.is_done or event.event is not None or event.comments:
        return encode_event(event)
    rewritten = _rewrite_data(data, model_name, model_json)
    if event.id is None and event.retry is None:
        return encode_data(rewritten)
    return encode_event(replace(event, data=rewritten))


def _rewrite_data(data: str, model_name: str, model_json: str | None) -> str:
    """A chunk's data with its top-level ``model`` set (unchanged when it has none)."""
    fast = set_top_level_model(data, model_json or json.dumps(model_name))
    if fast is not None:
        return fast
    try:
        chunk = json.loads(data)
    except ValueError:
        return data
    if isinstance(chunk, dict) and "model" in chunk:
        chunk["model"] = model_name
        return dumps(chunk).decode("utf-8")
    return data


class ChatPassthroughStream(CheckedStream):
    """The stream shaper of the pass-through plan: upstream Chat SSE bytes in, the same
    events out with ``model`` rewritten, checked for integrity on the way.

    Everything one upstream read completed goes out in one write: no event waits for a
    later one, and a burst costs one send, not one per token. The common read (whole
    one-line content chunks) is rewritten in bytes; a read that may end the stream or
    carry an error (``[DONE]``, a non-null ``finish_reason``, an ``"error"`` member) is
    decoded and checked event by event. Once :attr:`failure` is set, the client has been
    sent the §8 envelope as one ``data`` event, no ``[DONE]``, and nothing more.
    """

    __slots__ = ("_model_name", "_model_json", "_fast")

    def __init__(self, model_name: str):
        super().__init__(ChatStreamCheck(model_name))
        self._model_name = model_name
        self._model_json = json.dumps(model_name)
        self._fast = ChunkRewriter(self._model_json.encode())

    def feed(self, raw: bytes) -> bytes:
        """The bytes to send for one upstream read."""
        if (self.failure is None and self._decoder.idle
                and not self._check.needs_look(raw)):
            out = self._fast.rewrite(raw)
            if out is not None:
                return out
        return super().feed(raw)

    def _render_failure(self, failure: StreamFailure) -> bytes:
        return render_stream_error(failure.failure())  # as OpenAI sends it

    def _shape(self, events) -> bytes:
        out = []
        check = self._check
        for event in events:
            failure = check.event(event.event, event.data)
            if failure is not None:
                out.append(self.fail(failure))
                break
            out.append(rewrite_chunk(event, self._model_name, self._model_json))
        return b"".join(out)
