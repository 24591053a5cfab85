"""Whether an upstream stream really ended (SPEC §18 "A failure is never an answer").

A stream is whole only when its interface's terminal event arrived and nothing in it says it
failed:

- Chat (``chat.completion.chunk``): a ``finish_reason`` other than ``error``, then
  ``[DONE]``; no in-band ``{"error": ...}`` object;
- Messages: ``message_stop``; no ``error`` event;
- Responses: ``response.completed`` or ``response.incomplete``; no ``response.failed`` or
  ``error`` event.

One checker per upstream interface sees each decoded event (name and data) and answers
``None`` or a :class:`StreamFailure`; :meth:`end` says whether the stream, having ended,
was whole. The stream shapers (:mod:`app.pipeline.passthrough`, :mod:`app.pipeline.plan`) turn a
failure into the client API's in-band error and the relay counts it
(``plano_upstream_stream_errors_total{model,reason}``). Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from app.conversation import Failure
from app.errors import UpstreamError, UpstreamStreamError
from app.providers.sse import SSEDecoder

#: Why a stream is not an answer (the ``reason`` label).
REASON_INCOMPLETE = "incomplete"          # ended without its terminal event
REASON_ERROR_EVENT = "error_event"        # carried an in-band error object or event
REASON_FINISH_ERROR = "finish_reason_error"  # a Chat choice finished with "error"
REASON_BROKEN = "broken"                  # the connection broke, or a read or size limit
REASONS = (REASON_INCOMPLETE, REASON_ERROR_EVENT, REASON_FINISH_ERROR, REASON_BROKEN)

CODE = UpstreamStreamError.code


@dataclass(frozen=True, slots=True)
class StreamFailure:
    """Why a stream is not an answer, and what the client is told."""

    reason: str
    message: str
    error_type: str = "upstream_error"
    code: str = CODE

    @classmethod
    def broken(cls, error: UpstreamError) -> StreamFailure:
        """A transport failure (connection lost, read timeout, size or time limit)."""
        return cls(REASON_BROKEN, error.message, error.error_type, error.code or CODE)

    def failure(self) -> Failure:
        """The client-side rendering input (:class:`app.conversation.Failure`)."""
        return Failure(self.message, self.error_type, self.code)

    def error(self) -> UpstreamError:
        """The gateway error for this failure (the answer's ``failure``)."""
        return UpstreamStreamError(self.message, self.reason)


def _incomplete(model_name: str, terminal: str) -> StreamFailure:
    return StreamFailure(REASON_INCOMPLETE, f"the stream from {model_name} ended before its "
                         f"{terminal}: the answer is incomplete")


def _error_event(model_name: str, error: object) -> StreamFailure:
    """The upstream's own in-band error, its message and kind passed on as they are."""
    message = code = None
    if isinstance(error, dict):
        message, code = error.get("message"), error.get("type") or error.get("code")
    return StreamFailure(REASON_ERROR_EVENT,
                         str(message)[:1000] if message else
                         f"the stream from {model_name} reported an error",
                         "upstream_error", str(code) if code else "upstream_error")


def _json(data: str) -> dict | None:
    try:
        parsed = json.loads(data)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


_FINISH_REASON = re.compile(r'"finish_reason"\s*:\s*"([^"\\]*)"')


class ChatStreamCheck:
    """Chat: a non-error ``finish_reason`` before ``[DONE]``, no ``{"error": ...}``."""

    __slots__ = ("_model", "finished", "done")

    def __init__(self, model_name: str):
        self._model = model_name
        self.finished = False
        self.done = False

    @staticmethod
    def needs_look(raw: bytes) -> bool:
        """Whether an upstream read may hold something this check must see decoded: a
        non-null ``finish_reason``, ``[DONE]`` or an ``"error"`` member. A plain content
        chunk (``"finish_reason":null``) answers ``False`` for two substring counts."""
        if b"[DONE]" in raw or b'"error"' in raw:
            return True
        count = raw.count(b'"finish_reason"')
        return count != 0 and count != raw.count(b'"finish_reason":null')

    def event(self, name: str | None, data: str | None) -> StreamFailure | None:
        """Check one decoded event."""
        if data is None:
            return None
        if data == "[DONE]":
            self.done = True
            return None if self.finished else _incomplete(self._model, "finish_reason")
        if '"error"' in data:
            chunk = _json(data)
            if chunk is not None and chunk.get("error") is not None:
                return _error_event(self._model, chunk["error"])
        if '"finish_reason"' in data:
            for reason in _FINISH_REASON.findall(data):
                if reason == "error":
                    return StreamFailure(REASON_FINISH_ERROR, f"the stream from {self._model} "
                                         "ended with finish_reason \"error\"")
                self.finished = True
        return None

    def end(self) -> StreamFailure | None:
        """The upstream stream ended: whole only after ``[DONE]``."""
        return None if self.done else _incomplete(self._model, "[DONE]")


class _TerminalCheck:
    """A stream whose end is one named terminal event (Messages, Responses)."""

    __slots__ = ("_model", "done")
    #: What the stream must end with (named in the failure's message).
    TERMINAL = ""

    def __init__(self, model_name: str):
        self._model = model_name
        self.done = False

    def end(self) -> StreamFailure | None:
        """The upstream stream ended: whole only after its terminal event."""
        return None if self.done else _incomplete(self._model, self.TERMINAL)


class MessagesStreamCheck(_TerminalCheck):
    """Messages: ``message_stop``; an ``error`` event is a failure."""

    __slots__ = ()
    TERMINAL = "message_stop"

    def event(self, name: str | None, data: str | None) -> StreamFailure | None:
        """Check one decoded event (the event name, else the payload's ``type``)."""
        if data is None:
            return None
        kind = name
        if kind is None or kind == "error":
            payload = _json(data) or {}
            kind = name or payload.get("type")
            if kind == "error":
                return _error_event(self._model, payload.get("error"))
        if kind == "message_stop":
            self.done = True
        return None


_RESPONSES_TERMINAL = frozenset({"response.completed", "response.incomplete"})


class ResponsesStreamCheck(_TerminalCheck):
    """Responses: ``response.completed`` or ``response.incomplete``; ``response.failed``
    and ``error`` are failures."""

    __slots__ = ()
    TERMINAL = "response.completed"

    def event(self, name: str | None, data: str | None) -> StreamFailure | None:
        """Check one decoded event (the event name, else the payload's ``type``)."""
        if data is None:
            return None
        kind = name
        payload = None
        if kind is None:
            payload = _json(data) or {}
            kind = payload.get("type")
        if kind in _RESPONSES_TERMINAL:
            self.done = True
        elif kind == "response.failed":
            self.done = True
            payload = payload if payload is not None else _json(data) or {}
            response = payload.get("response")
            error = response.get("error") if isinstance(response, dict) else None
            return _error_event(self._model, error)
        elif kind == "error":
            payload = payload if payload is not None else _json(data) or {}
            return _error_event(self._model, payload)
        return None



def check_for(upstream_path: str, model_name: str):
    """The checker for a stream from ``upstream_path`` (the interface's path)."""
    if upstream_path.endswith("/messages"):
        return MessagesStreamCheck(model_name)
    if upstream_path.endswith("/responses"):
        return ResponsesStreamCheck(model_name)
    return ChatStreamCheck(model_name)


class CheckedStream:
    """What every stream shaper shares: upstream SSE reads decoded, each event checked and
    shaped (:meth:`_shape`), and the end: a whole stream's own tail (:meth:`_whole_end`),
    or, once a check failed or the stream broke off, the client API's in-band error
    (:meth:`_render_failure`) and nothing after it.

    ``feed(raw)`` and ``finish()`` give the bytes to send, ``fail(StreamFailure)`` the
    in-band error for a stream that broke off; ``failure`` says why the stream is not an
    answer (``None`` while it is one).
    """

    __slots__ = ("_decoder", "_check", "failure")

    def __init__(self, check):
        self._decoder = SSEDecoder()
        self._check = check
        self.failure: StreamFailure | None = None

    def feed(self, raw: bytes) -> bytes:
        """The bytes to send for one upstream read."""
        if self.failure is not None:
            return b""
        return self._shape(self._decoder.feed(raw))

    def finish(self) -> bytes:
        """The bytes to send once the upstream stream has ended."""
        if self.failure is not None:
            return b""
        out = self._shape(self._decoder.flush())
        if self.failure is not None:
            return out
        failure = self._check.end()
        if failure is not None:
            return out + self.fail(failure)
        return out + self._whole_end()

    def fail(self, failure: StreamFailure) -> bytes:
        """The in-band error that ends the stream (once)."""
        if self.failure is not None:
            return b""
        self.failure = failure
        return self._render_failure(failure)

    def _shape(self, events) -> bytes:
        """Check and shape decoded upstream events (a failed check calls :meth:`fail`, or
        sets ``failure`` when the upstream's own error event was relayed as it is)."""
        raise NotImplementedError

    def _render_failure(self, failure: StreamFailure) -> bytes:
        raise NotImplementedError

    def _whole_end(self) -> bytes:
        """What a whole stream ends with after its last event (nothing, by default)."""
        return b""
