"""Responses streaming: internal stream events in, Responses SSE events out.

Each internal block becomes one output item: text a ``message`` with one ``output_text``
part, a tool call a ``function_call`` (or ``custom_tool_call``), reasoning a ``reasoning``
item with one summary part. Events go out as the upstream's arrive; only each item's text
so far is kept, because the ``.done`` events and ``response.completed`` repeat it (as
OpenAI's own stream does). A broken upstream ends the stream with ``response.failed``.
"""

from __future__ import annotations

import time

from app.client_apis.common import named_event
from app.client_apis.responses import output_item, response_object
from app.conversation import (
    BlockStart,
    BlockStop,
    Delta,
    Failure,
    Finish,
    Reasoning,
    Start,
    StreamEvent,
    Text,
    ToolCall,
)


class _Item:
    __slots__ = ("kind", "id", "output_index", "call_id", "name", "tool_kind", "pieces")

    def __init__(self, kind, item_id, output_index, call_id=None, name=None,
                 tool_kind="function"):
        self.kind, self.id, self.output_index = kind, item_id, output_index
        self.call_id, self.name, self.tool_kind = call_id, name, tool_kind
        self.pieces: list[str] = []

    def part(self):
        text = "".join(self.pieces)
        if self.kind == "tool_call":
            return ToolCall(self.call_id or "", self.name or "", text, self.tool_kind)
        return Reasoning(text) if self.kind == "reasoning" else Text(text)


class ResponsesStreamRenderer:
    """Renders one answer's events; ``render(event)`` returns the bytes to send."""

    def __init__(self, model_name: str):
        self._model = model_name
        self._id = "resp_plano"
        self._created = int(time.time())
        self._sequence = 0
        self._items: dict[int, _Item] = {}
        self._done: list[dict] = []

    def _event(self, name: str, payload: dict) -> bytes:
        payload = {"type": name, "sequence_number": self._sequence, **payload}
        self._sequence += 1
        return named_event(name, payload)

    def _snapshot(self, status: str, usage=None, error=None, incomplete=None) -> dict:
        return response_object(self._id, self._model, status, list(self._done), usage,
                               self._created, error, incomplete)

    def render(self, event: StreamEvent) -> bytes:
        """The bytes for one event (possibly none)."""
        if isinstance(event, Start):
            if event.id:
                self._id = event.id if event.id.startswith("resp_") else f"resp_{event.id}"
            snapshot = self._snapshot("in_progress")
            return (self._event("response.created", {"response": snapshot})
                    + self._event("response.in_progress", {"response": snapshot}))
        if isinstance(event, BlockStart):
            return self._start(event)
        if isinstance(event, Delta):
            return self._delta(event)
        if isinstance(event, BlockStop):
            return self._stop(event.index)
        if isinstance(event, Finish):
            incomplete = event.stop_reason == "length"
            name = "response.incomplete" if incomplete else "response.completed"
            snapshot = self._snapshot("incomplete" if incomplete else "completed",
                                      event.usage,
                                      incomplete="max_output_tokens" if incomplete else None)
            return self._event(name, {"response": snapshot})
        if isinstance(event, Failure):
            return self.failed(event)
        return b""

    def failed(self, failure: Failure) -> bytes:
        """``response.failed``: the in-band end of a stream that broke off."""
        snapshot = self._snapshot("failed", error={"code": failure.code or "server_error",
                                                   "message": failure.message})
        return self._event("response.failed", {"response": snapshot})

    def _start(self, event: BlockStart) -> bytes:
        output_index = len(self._done) + len(self._items)
        prefix = {"text": "msg", "reasoning": "rs", "tool_call": "fc"}[event.kind]
        item = _Item(event.kind, f"{prefix}_{self._id[5:]}_{output_index}", output_index,
                     event.call_id, event.name, event.tool_kind)
        self._items[event.index] = item
        if event.kind == "text":
            added = {"type": "message", "id": item.id, "status": "in_progress",
                     "role": "assistant", "content": []}
            return (self._event("response.output_item.added",
                                {"output_index": output_index, "item": added})
                    + self._event("response.content_part.added", {
                        "item_id": item.id, "output_index": output_index,
                        "content_index": 0,
                        "part": {"type": "output_text", "text": "", "annotations": []}}))
        if event.kind == "reasoning":
            added = {"type": "reasoning", "id": item.id, "summary": []}
            return (self._event("response.output_item.added",
                                {"output_index": output_index, "item": added})
                    + self._event("response.reasoning_summary_part.added", {
                        "item_id": item.id, "output_index": output_index,
                        "summary_index": 0, "part": {"type": "summary_text", "text": ""}}))
        if event.tool_kind == "custom":
            added = {"type": "custom_tool_call", "id": item.id, "call_id": event.call_id,
                     "name": event.name, "input": ""}
        else:
            added = {"type": "function_call", "id": item.id, "call_id": event.call_id,
                     "name": event.name, "arguments": "", "status": "in_progress"}
        return self._event("response.output_item.added",
                           {"output_index": output_index, "item": added})

    def _delta(self, event: Delta) -> bytes:
        item = self._items.get(event.index)
        if item is None or not event.text:
            return b""
        item.pieces.append(event.text)
        where = {"item_id": item.id, "output_index": item.output_index}
        if item.kind == "text":
            return self._event("response.output_text.delta",
                               {**where, "content_index": 0, "delta": event.text,
                                "logprobs": []})
        if item.kind == "reasoning":
            return self._event("response.reasoning_summary_text.delta",
                               {**where, "summary_index": 0, "delta": event.text})
        name = ("response.custom_tool_call_input.delta" if item.tool_kind == "custom"
                else "response.function_call_arguments.delta")
        return self._event(name, {**where, "delta": event.text})

    def _stop(self, index: int) -> bytes:
        item = self._items.pop(index, None)
        if item is None:
            return b""
        text = "".join(item.pieces)
        where = {"item_id": item.id, "output_index": item.output_index}
        done = output_item(item.part(), item.id)
        out = b""
        if item.kind == "text":
            part = {"type": "output_text", "text": text, "annotations": []}
            out = (self._event("response.output_text.done",
                               {**where, "content_index": 0, "text": text, "logprobs": []})
                   + self._event("response.content_part.done",
                                 {**where, "content_index": 0, "part": part}))
        elif item.kind == "reasoning":
            part = {"type": "summary_text", "text": text}
            out = (self._event("response.reasoning_summary_text.done",
                               {**where, "summary_index": 0, "text": text})
                   + self._event("response.reasoning_summary_part.done",
                                 {**where, "summary_index": 0, "part": part}))
        elif item.tool_kind == "custom":
            out = self._event("response.custom_tool_call_input.done",
                              {**where, "input": text})
        else:
            out = self._event("response.function_call_arguments.done",
                              {**where, "name": item.name, "arguments": text})
        self._done.append(done)
        return out + self._event("response.output_item.done",
                                 {"output_index": item.output_index, "item": done})
