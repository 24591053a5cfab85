"""Upstream interface ``anthropic``: Messages (``{base_url}/messages``).

Builds a Messages body from a :class:`~app.conversation.Conversation` (Chat and Responses
clients; a Messages client's own body passes through as sent), and parses the answer or
its event stream (``message_start`` ... ``message_stop``) back into the internal model.
Anthropic requires ``max_tokens``: when the client API did not send one, the provider's
``max_tokens`` default is used. Headers: ``x-api-key`` and ``anthropic-version``.

Provider differences absorbed here (SPEC §18): the stop reason is ``tool_use`` whenever
tool calls came back; ``thinking`` blocks without a signature (what translation from another
vendor's model produced: Anthropic refuses them) are dropped and listed, on the Messages
pass-through too (:func:`drop_unsigned_thinking`).
"""

from __future__ import annotations

import json
from typing import Iterator

from app.conversation import (
    BlockStart,
    BlockStop,
    Conversation,
    Delta,
    Failure,
    Finish,
    Image,
    Reasoning,
    Reply,
    Start,
    StreamEvent,
    Text,
    ToolCall,
    ToolResult,
    Usage,
    refuse,
    stop_with_tools,
)
from app.upstreams.custom_tools import custom_tool_names, unwrap_custom_input, wrapper_schema

PATH = "/messages"
ANTHROPIC_VERSION = "2023-06-01"

STOP_FROM_ANTHROPIC = {"end_turn": "stop", "max_tokens": "length", "tool_use": "tool_use",
                       "stop_sequence": "stop_sequence", "refusal": "content_filter",
                       "pause_turn": "stop", "model_context_window_exceeded": "length"}


def headers(access_key: str | None, client_headers: dict | None = None) -> dict:
    """Upstream headers: the provider key as ``x-api-key``; ``anthropic-version`` (and
    ``anthropic-beta``) as a Messages client sent them, else ``2023-06-01``."""
    out = {"anthropic-version": ANTHROPIC_VERSION}
    if client_headers:
        out.update({k: v for k, v in client_headers.items()
                    if k in ("anthropic-version", "anthropic-beta")})
    if access_key:
        out["x-api-key"] = access_key
    return out


def drop_unsigned_thinking(body: dict) -> tuple[dict, list]:
    """A Messages client's ``body`` without the ``thinking`` blocks that carry no signature,
    and ``["thinking"]`` when there were any (for ``x-plano-dropped``).

    The gateway renders another vendor's reasoning to a Messages client as a ``thinking``
    block with an empty signature; when the conversation later reaches an Anthropic model,
    Anthropic refuses such a block, so it is dropped (an assistant turn left empty goes too).
    A body without one is returned as it is (the pass-through stays byte for byte)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not any(
            _has_unsigned_thinking(message) for message in messages):
        return body, []
    kept = []
    for message in messages:
        if _has_unsigned_thinking(message):
            blocks = [block for block in message["content"] if not _unsigned_thinking(block)]
            if not blocks:
                continue
            message = {**message, "content": blocks}
        kept.append(message)
    return {**body, "messages": kept}, ["thinking"]


def _unsigned_thinking(block) -> bool:
    return (isinstance(block, dict) and block.get("type") == "thinking"
            and not block.get("signature"))


def _has_unsigned_thinking(message) -> bool:
    return (isinstance(message, dict) and message.get("role") == "assistant"
            and isinstance(message.get("content"), list)
            and any(_unsigned_thinking(block) for block in message["content"]))


def build_body(conversation: Conversation, model_id: str, *, default_max_tokens: int,
               dropped: list) -> dict:
    """The Messages body for ``conversation``; hints it cannot carry go to ``dropped``."""
    custom = custom_tool_names(conversation.tools)
    messages: list = []
    for message in conversation.messages:
        blocks = [block for part in message.parts
                  if (block := _block(part, custom, dropped)) is not None]
        if not blocks:
            continue
        if messages and messages[-1]["role"] == message.role:
            messages[-1]["content"].extend(blocks)   # Anthropic wants alternating roles
        else:
            messages.append({"role": message.role, "content": blocks})
    body: dict = {"model": model_id, "messages": messages,
                  "max_tokens": conversation.max_tokens or default_max_tokens}
    if conversation.system:
        body["system"] = "\n\n".join(conversation.system)
    for name in ("temperature", "top_p", "top_k"):
        value = getattr(conversation, name)
        if value is not None:
            body[name] = value
    if conversation.stop:
        body["stop_sequences"] = list(conversation.stop)
    if conversation.tools:
        body["tools"] = [_tool(tool) for tool in conversation.tools]
    choice = conversation.tool_choice
    if choice is not None and conversation.tools:   # Anthropic refuses a choice without tools
        mapped = {"auto": {"type": "auto"}, "none": {"type": "none"},
                  "required": {"type": "any"},
                  "tool": {"type": "tool", "name": choice.name}}[choice.mode]
        if choice.parallel is False and choice.mode != "none":
            mapped["disable_parallel_tool_use"] = True
        body["tool_choice"] = mapped
    if conversation.stream:
        body["stream"] = True
    return body


def _tool(tool) -> dict:
    schema = wrapper_schema() if tool.kind == "custom" else (
        tool.parameters or {"type": "object", "properties": {}})
    out = {"name": tool.name, "input_schema": schema}
    if tool.description:
        out["description"] = tool.description
    return out


def _image(part: Image) -> dict:
    if part.data is not None:
        return {"type": "image", "source": {"type": "base64",
                                            "media_type": part.media_type or "image/png",
                                            "data": part.data}}
    return {"type": "image", "source": {"type": "url", "url": part.url}}


def _block(part, custom: set, dropped: list) -> dict | None:
    if isinstance(part, Text):
        return {"type": "text", "text": part.text} if part.text else None
    if isinstance(part, Image):
        return _image(part)
    if isinstance(part, ToolCall):
        if part.kind == "custom":
            tool_input = {"input": part.arguments}
        else:
            try:
                tool_input = json.loads(part.arguments) if part.arguments.strip() else {}
            except ValueError:
                raise refuse(f"tool call {part.id!r}", "its arguments are not valid JSON "
                             "(Anthropic tool_use input must be an object)") from None
            if not isinstance(tool_input, dict):
                raise refuse(f"tool call {part.id!r}",
                             "its arguments are not a JSON object")
        return {"type": "tool_use", "id": part.id, "name": part.name, "input": tool_input}
    if isinstance(part, ToolResult):
        content = [{"type": "text", "text": p.text} if isinstance(p, Text) else _image(p)
                   for p in part.parts if isinstance(p, (Text, Image))
                   and not (isinstance(p, Text) and not p.text)]
        block = {"type": "tool_result", "tool_use_id": part.call_id, "content": content}
        if part.is_error:
            block["is_error"] = True
        return block
    if isinstance(part, Reasoning):
        if part.signature:
            return {"type": "thinking", "thinking": part.text, "signature": part.signature}
        if "reasoning" not in dropped:
            dropped.append("reasoning")   # unsigned reasoning from another vendor
        return None
    raise refuse(f"a {type(part).__name__} part", "Anthropic has no equivalent")


def parse_usage(usage) -> Usage:
    """Anthropic usage (input excludes cache reads/writes) as internal usage."""
    if not isinstance(usage, dict):
        return Usage()
    cached = usage.get("cache_read_input_tokens") or 0
    written = usage.get("cache_creation_input_tokens") or 0
    return Usage(input_tokens=(usage.get("input_tokens") or 0) + cached + written,
                 output_tokens=usage.get("output_tokens") or 0, cached_tokens=cached)


def parse_reply(answer: dict, custom: set) -> Reply:
    """A Messages answer as an internal :class:`Reply`."""
    parts: list = []
    for block in answer.get("content") or []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append(Text(block.get("text") or ""))
        elif kind == "thinking":
            parts.append(Reasoning(block.get("thinking") or "", block.get("signature")))
        elif kind == "tool_use":
            name = block.get("name") or ""
            tool_input = block.get("input")
            if name in custom:
                parts.append(ToolCall(block.get("id") or "", name,
                                      unwrap_custom_input(tool_input), "custom"))
            else:
                parts.append(ToolCall(block.get("id") or "", name,
                                      json.dumps(tool_input if tool_input is not None
                                                 else {}, ensure_ascii=False)))
    called = any(isinstance(part, ToolCall) for part in parts)
    return Reply(id=str(answer.get("id") or ""), model=str(answer.get("model") or ""),
                 parts=parts,
                 stop_reason=stop_with_tools(
                     STOP_FROM_ANTHROPIC.get(answer.get("stop_reason"), "stop"), called),
                 usage=parse_usage(answer.get("usage")),
                 stop_sequence=answer.get("stop_sequence"))


class MessagesStreamParser:
    """Messages SSE events (name and data) in, internal stream events out, one at a time.

    Blocks map one to one; only a custom tool's ``{"input": ...}`` wrapper is held until
    its block stops, to be unwrapped whole. ``ping`` is ignored.
    """

    def __init__(self, custom: set):
        self._custom = custom
        self._held: dict[int, list] = {}
        self._input = Usage()
        self._stop = None
        self._stop_sequence = None
        self._output = 0
        self._called = False
        self._finished = False

    def feed(self, event: str | None, data: str) -> Iterator[StreamEvent]:
        """Events for one upstream SSE event."""
        try:
            payload = json.loads(data)
        except ValueError:
            return
        if not isinstance(payload, dict):
            return
        kind = payload.get("type") or event
        if kind == "message_start":
            message = payload.get("message") or {}
            self._input = parse_usage(message.get("usage"))
            yield Start(str(message.get("id") or ""), str(message.get("model") or ""),
                        self._input)
        elif kind == "content_block_start":
            yield from self._block_start(payload.get("index", 0),
                                         payload.get("content_block") or {})
        elif kind == "content_block_delta":
            yield from self._delta(payload.get("index", 0), payload.get("delta") or {})
        elif kind == "content_block_stop":
            index = payload.get("index", 0)
            held = self._held.pop(index, None)
            if held is not None:
                yield Delta(index, unwrap_custom_input("".join(held)))
            yield BlockStop(index)
        elif kind == "message_delta":
            delta = payload.get("delta") or {}
            self._stop = STOP_FROM_ANTHROPIC.get(delta.get("stop_reason"), self._stop)
            self._stop_sequence = delta.get("stop_sequence")
            usage = payload.get("usage") or {}
            self._output = usage.get("output_tokens") or self._output
        elif kind == "message_stop":
            yield from self.finish()
        elif kind == "error":
            error = payload.get("error") or {}
            self._finished = True
            yield Failure(str(error.get("message") or "upstream stream error"),
                          "upstream_error", str(error.get("type") or "upstream_error"))

    def _block_start(self, index: int, block: dict) -> Iterator[StreamEvent]:
        kind = block.get("type")
        if kind == "tool_use":
            self._called = True
            name = block.get("name") or ""
            custom = name in self._custom
            if custom:
                self._held[index] = []
            yield BlockStart(index, "tool_call", call_id=block.get("id") or "", name=name,
                             tool_kind="custom" if custom else "function")
        elif kind in ("thinking", "redacted_thinking"):
            yield BlockStart(index, "reasoning")
        else:
            yield BlockStart(index, "text")
            if block.get("text"):
                yield Delta(index, block["text"])

    def _delta(self, index: int, delta: dict) -> Iterator[StreamEvent]:
        kind = delta.get("type")
        if kind == "text_delta":
            yield Delta(index, delta.get("text") or "")
        elif kind == "input_json_delta":
            piece = delta.get("partial_json") or ""
            if index in self._held:
                self._held[index].append(piece)
            elif piece:
                yield Delta(index, piece)
        elif kind == "thinking_delta":
            yield Delta(index, delta.get("thinking") or "")
        elif kind == "signature_delta":
            yield Delta(index, "", signature=delta.get("signature"))

    def finish(self) -> Iterator[StreamEvent]:
        """End of the answer (``message_stop`` or the end of the stream)."""
        if self._finished:
            return
        self._finished = True
        usage = Usage(self._input.input_tokens, self._output, self._input.cached_tokens)
        yield Finish(stop_with_tools(self._stop, self._called), usage, self._stop_sequence)
