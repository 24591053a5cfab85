"""Messages streaming: internal stream events in, Anthropic Messages SSE events out.

Blocks map one to one (renumbered from 0 in the order they open): text -> ``text``, tool
call -> ``tool_use`` with ``input_json_delta``, reasoning -> ``thinking`` with
``thinking_delta`` / ``signature_delta``. ``message_delta`` carries the stop reason and
usage, then ``message_stop``. A broken upstream ends the stream with one ``error`` event.
"""

from __future__ import annotations

from app.client_apis.common import named_event
from app.client_apis.messages import STOP_TO_ANTHROPIC, usage_json
from app.conversation import (
    BlockStart,
    BlockStop,
    Delta,
    Failure,
    Finish,
    Start,
    StreamEvent,
    Usage,
)


class MessagesStreamRenderer:
    """Internal stream events in, Messages SSE events out (``message_start`` ...
    ``message_stop``; an in-band ``error`` event when the upstream breaks off)."""

    def __init__(self, model_name: str):
        self._model = model_name
        self._kinds: dict[int, str] = {}
        self._indexes: dict[int, int] = {}
        self._input = Usage()

    def render(self, event: StreamEvent) -> bytes:
        """The bytes for one event (possibly none)."""
        if isinstance(event, Start):
            self._input = event.usage
            message = {"id": event.id or "msg_plano", "type": "message", "role": "assistant",
                       "model": self._model, "content": [], "stop_reason": None,
                       "stop_sequence": None, "usage": usage_json(event.usage)}
            return named_event("message_start", {"type": "message_start", "message": message})
        if isinstance(event, BlockStart):
            index = self._indexes[event.index] = len(self._indexes)
            self._kinds[event.index] = event.kind
            if event.kind == "tool_call":
                block = {"type": "tool_use", "id": event.call_id, "name": event.name,
                         "input": {}}
            elif event.kind == "reasoning":
                block = {"type": "thinking", "thinking": "", "signature": ""}
            else:
                block = {"type": "text", "text": ""}
            return named_event("content_block_start", {"type": "content_block_start",
                                                       "index": index,
                                                       "content_block": block})
        if isinstance(event, Delta):
            return self._delta(event)
        if isinstance(event, BlockStop):
            return named_event("content_block_stop", {
                "type": "content_block_stop", "index": self._indexes.get(event.index, 0)})
        if isinstance(event, Finish):
            usage = usage_json(event.usage)
            delta = {"type": "message_delta",
                     "delta": {"stop_reason": STOP_TO_ANTHROPIC.get(event.stop_reason,
                                                                    "end_turn"),
                               "stop_sequence": event.stop_sequence},
                     "usage": usage}
            return (named_event("message_delta", delta)
                    + named_event("message_stop", {"type": "message_stop"}))
        if isinstance(event, Failure):
            return render_stream_error(event)
        return b""

    def _delta(self, event: Delta) -> bytes:
        index = self._indexes.get(event.index, 0)
        kind = self._kinds.get(event.index, "text")
        if kind == "tool_call":
            delta = {"type": "input_json_delta", "partial_json": event.text}
        elif kind == "reasoning":
            if event.signature:
                delta = {"type": "signature_delta", "signature": event.signature}
            elif event.text:
                delta = {"type": "thinking_delta", "thinking": event.text}
            else:
                return b""
        elif event.text:
            delta = {"type": "text_delta", "text": event.text}
        else:
            return b""
        return named_event("content_block_delta", {"type": "content_block_delta",
                                                   "index": index, "delta": delta})


def render_stream_error(failure: Failure) -> bytes:
    """An in-band ``error`` event, as Anthropic sends mid-stream."""
    payload = {"type": "error", "error": {"type": "api_error", "message": failure.message,
                                          "code": failure.code}}
    return named_event("error", payload)

