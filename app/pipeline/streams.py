"""Stream shapers of the same-shape pass-throughs and the translations (SPEC §12, §18).

Each is a :class:`~app.pipeline.stream_integrity.CheckedStream`: upstream SSE bytes in,
the client's bytes out, event by event (never buffered), each event checked before it is
shaped. :class:`PassthroughStream` relays a Messages or Responses stream with ``model``
rewritten; :class:`StreamTranslator` turns an upstream interface's events into the client
API's through :mod:`app.conversation`. (The byte-level Chat pass-through's shaper is
:class:`app.pipeline.passthrough.ChatPassthroughStream`.) Made by the plans of
:mod:`app.pipeline.plan`.
"""

from __future__ import annotations

import json
import re

from app.client_apis import chat_completions, messages_stream, responses_stream
from app.client_apis.common import dumps
from app.conversation import Failure
from app.pipeline.stream_integrity import (
    REASON_ERROR_EVENT,
    CheckedStream,
    StreamFailure,
    check_for,
)
from app.providers.sse import ServerSentEvent, encode_event

#: Answer events whose JSON carries the model one level down (pass-through rewrite).
_NESTED_MODEL = {"message_start": "message", "response.created": "response",
                 "response.in_progress": "response", "response.completed": "response",
                 "response.incomplete": "response", "response.failed": "response",
                 "response.queued": "response"}


def json_object(raw: bytes) -> dict | None:
    """``raw`` parsed when it is a JSON object, else ``None``."""
    try:
        parsed = json.loads(raw)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None



class PassthroughStream(CheckedStream):
    """A same-shape Messages or Responses stream: events pass as they are, except the few
    that carry the model (``message_start``, ``response.*`` snapshots), whose ``model``
    is rewritten to the configured name.

    Checked event by event (SPEC §18): the upstream's own in-band error (``error``,
    ``response.failed``) is relayed as it is, and ends the stream; a stream that ends
    without its terminal event gets the client API's in-band error, for Responses a
    ``response.failed`` that keeps the upstream's response id, model and sequence numbers.
    """

    __slots__ = ("_model", "_api", "_response", "_sequence")

    def __init__(self, model_name: str, api: str):
        super().__init__(check_for(f"/{api}", model_name))
        self._model = model_name
        self._api = api
        self._response: dict | None = None   # the last response snapshot (Responses)
        self._sequence = -1

    def _event(self, event: ServerSentEvent) -> bytes:
        holder = _NESTED_MODEL.get(event.event or "")
        if holder is None or event.data is None:
            if self._api == "responses" and event.data is not None:
                self._note_sequence(event.data)
            return encode_event(event)
        payload = json_object(event.data.encode("utf-8"))
        inner = payload.get(holder) if payload is not None else None
        if not isinstance(inner, dict):
            return encode_event(event)
        inner["model"] = self._model
        if self._api == "responses":
            self._response = inner
            sequence = payload.get("sequence_number")
            if isinstance(sequence, int):
                self._sequence = sequence
        event.data = dumps(payload).decode("utf-8")
        return encode_event(event)

    def _note_sequence(self, data: str) -> None:
        match = _SEQUENCE_NUMBER.search(data)
        if match is not None:
            self._sequence = int(match.group(1))

    def _shape(self, events) -> bytes:
        out = []
        for event in events:
            failure = self._check.event(event.event, event.data)
            out.append(self._event(event))
            if failure is not None:  # the upstream's own in-band error: relayed, the end
                self.failure = failure
                break
        return b"".join(out)

    def _render_failure(self, failure: StreamFailure) -> bytes:
        if self._api == "responses" and self._response is not None:
            return _native_response_failed(self._response, self._sequence + 1, failure)
        return render_failure(self._api, failure.failure())


_SEQUENCE_NUMBER = re.compile(r'"sequence_number"\s*:\s*(\d+)')


def _native_response_failed(snapshot: dict, sequence: int, failure: StreamFailure) -> bytes:
    """``response.failed`` for a native Responses stream, continuing the upstream's own
    response (id, model, creation time) and sequence numbers."""
    response = {**snapshot, "status": "failed",
                "error": {"code": failure.code, "message": failure.message}}
    payload = {"type": "response.failed", "sequence_number": sequence, "response": response}
    return encode_event(ServerSentEvent(event="response.failed",
                                        data=dumps(payload).decode("utf-8")))


def render_failure(api: str, failure: Failure) -> bytes:
    """A broken stream's in-band end in client API ``api``'s own form."""
    if api == "messages":
        return messages_stream.render_stream_error(failure)
    if api == "responses":
        return responses_stream.ResponsesStreamRenderer("").failed(failure)
    return chat_completions.render_stream_error(failure)


class ChatFeed:
    """Adapts :class:`~app.upstreams.openai_chat.ChatStreamParser` to SSE events."""

    def __init__(self, parser):
        self.parser = parser

    def feed(self, event: ServerSentEvent):
        return self.parser.feed(event.data) if event.data is not None else ()

    def finish(self):
        return self.parser.finish()


class AnthropicFeed:
    """Adapts :class:`~app.upstreams.anthropic_messages.MessagesStreamParser`."""

    def __init__(self, parser):
        self.parser = parser

    def feed(self, event: ServerSentEvent):
        return self.parser.feed(event.event, event.data) if event.data is not None else ()

    def finish(self):
        return self.parser.finish()


class StreamTranslator(CheckedStream):
    """Upstream SSE bytes in, client SSE bytes out, event by event (never buffered); each
    upstream event is checked (:mod:`app.pipeline.stream_integrity`) before it is
    translated."""

    __slots__ = ("_parser", "_renderer")

    def __init__(self, parser, renderer, check):
        super().__init__(check)
        self._parser = parser
        self._renderer = renderer

    def _render(self, events) -> bytes:
        out = []
        for event in events:
            if isinstance(event, Failure):
                self.failure = StreamFailure(REASON_ERROR_EVENT, event.message,
                                             event.error_type, event.code)
            out.append(self._renderer.render(event))
        return b"".join(out)

    def _shape(self, events) -> bytes:
        out = []
        for event in events:
            if self.failure is not None:
                break
            failure = self._check.event(event.event, event.data)
            if failure is not None:
                out.append(self.fail(failure))
                break
            out.append(self._render(self._parser.feed(event)))
        return b"".join(out)

    def _render_failure(self, failure: StreamFailure) -> bytes:
        return self._renderer.render(failure.failure())

    def _whole_end(self) -> bytes:
        return self._render(self._parser.finish())
