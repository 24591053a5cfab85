"""Upstream interface ``openai``: Chat Completions (``{base_url}/chat/completions``).

Builds a chat-completions body from a :class:`~app.conversation.Conversation` (for Messages
and Responses clients; Chat clients never come here, their bodies pass through as sent) and
parses the answer or its ``chat.completion.chunk`` stream back into the internal model.

Responses custom tools (free-form input, e.g. Codex's ``apply_patch``) become function tools
taking ``{"input": string}``; their calls are unwrapped again when the answer comes back.
"""

from __future__ import annotations

import json
from typing import Iterator

from app.conversation import (
    BlockStart,
    BlockStop,
    Conversation,
    Delta,
    Finish,
    Image,
    Message,
    Reasoning,
    Reply,
    Start,
    StreamEvent,
    Text,
    ToolCall,
    ToolResult,
    Usage,
    refuse,
)
from app.upstreams.custom_tools import (
    custom_tool_names,
    unwrap_custom_input,
    wrap_custom_input,
    wrapper_schema,
)

PATH = "/chat/completions"

FINISH_TO_STOP = {"stop": "stop", "length": "length", "tool_calls": "tool_use",
                  "function_call": "tool_use", "content_filter": "content_filter"}


def build_body(conversation: Conversation, model_id: str, *, vendor: str,
               dropped: list) -> dict:
    """The chat-completions body for ``conversation``; hints it cannot carry go to
    ``dropped``. ``vendor`` ``openai`` gets ``max_completion_tokens`` (its newer models
    refuse ``max_tokens``), every other OpenAI-compatible server ``max_tokens``."""
    messages: list = []
    if conversation.system:
        messages.append({"role": "system", "content": "\n\n".join(conversation.system)})
    custom = custom_tool_names(conversation.tools)
    for message in conversation.messages:
        messages.extend(_messages(message, custom, dropped))
    body: dict = {"model": model_id, "messages": messages}
    if conversation.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if conversation.max_tokens is not None:
        key = "max_completion_tokens" if vendor == "openai" else "max_tokens"
        body[key] = conversation.max_tokens
    for name in ("temperature", "top_p"):
        value = getattr(conversation, name)
        if value is not None:
            body[name] = value
    if conversation.top_k is not None:
        dropped.append("top_k")
    if conversation.stop:
        body["stop"] = list(conversation.stop)
    if conversation.tools:
        body["tools"] = [_tool(tool) for tool in conversation.tools]
    choice = conversation.tool_choice
    if choice is not None:
        if choice.mode == "tool":
            body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        else:
            body["tool_choice"] = choice.mode
        if choice.parallel is not None and conversation.tools:
            body["parallel_tool_calls"] = choice.parallel
    return body


def _tool(tool) -> dict:
    if tool.kind == "custom":
        return {"type": "function", "function": {
            "name": tool.name, "description": tool.description or "",
            "parameters": wrapper_schema()}}
    function = {"name": tool.name, "parameters": tool.parameters or {"type": "object",
                                                                     "properties": {}}}
    if tool.description:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def _messages(message: Message, custom: set, dropped: list) -> list[dict]:
    if message.role == "assistant":
        return [_assistant(message, dropped)]
    if message.role == "system":   # a system message at its place (SPEC §18)
        text = "\n".join(part.text for part in message.parts if isinstance(part, Text))
        return [{"role": "system", "content": text}]
    out = []
    content: list = []
    for part in message.parts:
        if isinstance(part, ToolResult):
            if any(isinstance(p, Image) for p in part.parts):
                raise refuse("an image inside a tool result",
                             "Chat Completions tool messages carry text only")
            text = part.text()
            out.append({"role": "tool", "tool_call_id": part.call_id,
                        "content": f"Error: {text}" if part.is_error and text else text})
        elif isinstance(part, Text):
            content.append({"type": "text", "text": part.text})
        elif isinstance(part, Image):
            content.append({"type": "image_url", "image_url": {"url": part.data_url()}})
    if content:
        if len(content) == 1 and content[0]["type"] == "text":
            out.append({"role": "user", "content": content[0]["text"]})
        else:
            out.append({"role": "user", "content": content})
    return out


def _assistant(message: Message, dropped: list) -> dict:
    texts, calls = [], []
    for part in message.parts:
        if isinstance(part, Text):
            texts.append(part.text)
        elif isinstance(part, ToolCall):
            arguments = (wrap_custom_input(part.arguments) if part.kind == "custom"
                         else part.arguments)
            calls.append({"id": part.id, "type": "function",
                          "function": {"name": part.name, "arguments": arguments}})
        elif isinstance(part, Reasoning):
            if "reasoning" not in dropped:
                dropped.append("reasoning")
        else:
            raise refuse(f"a {type(part).__name__} part in an assistant message",
                         "Chat Completions assistant messages carry text and tool calls")
    out: dict = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        out["tool_calls"] = calls
    return out


def parse_usage(usage) -> Usage:
    """Chat ``usage`` (prompt/completion tokens and their details) as internal usage."""
    if not isinstance(usage, dict):
        return Usage()
    prompt = usage.get("prompt_tokens_details") or {}
    completion = usage.get("completion_tokens_details") or {}
    return Usage(input_tokens=usage.get("prompt_tokens") or 0,
                 output_tokens=usage.get("completion_tokens") or 0,
                 cached_tokens=prompt.get("cached_tokens") or 0,
                 reasoning_tokens=completion.get("reasoning_tokens") or 0)


def parse_reply(answer: dict, custom: set) -> Reply:
    """A chat completion as an internal :class:`Reply`."""
    choices = answer.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    parts: list = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        parts.append(Reasoning(reasoning))
    if isinstance(message.get("content"), str) and message["content"]:
        parts.append(Text(message["content"]))
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        parts.append(Text(message["refusal"]))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        name = function.get("name") or ""
        arguments = function.get("arguments") or ""
        if name in custom:
            parts.append(ToolCall(call.get("id") or "", name, unwrap_custom_input(arguments),
                                  "custom"))
        else:
            parts.append(ToolCall(call.get("id") or "", name, arguments))
    stop = FINISH_TO_STOP.get(choice.get("finish_reason"), "stop")
    if message.get("refusal"):
        stop = "content_filter"
    return Reply(id=str(answer.get("id") or ""), model=str(answer.get("model") or ""),
                 parts=parts, stop_reason=stop, usage=parse_usage(answer.get("usage")))


class ChatStreamParser:
    """``chat.completion.chunk`` payloads in, internal stream events out, one at a time.

    Chat streams have no blocks: a block opens when the kind of delta changes (reasoning,
    text, a new tool call index) and the previous one closes. ``Finish`` waits for the
    usage chunk that follows ``finish_reason`` (``stream_options.include_usage``) and is
    sent at ``[DONE]`` or at the end of the stream. Custom-tool calls are held until their
    block closes: their ``{"input": ...}`` wrapper must be complete to unwrap.
    """

    def __init__(self, custom: set):
        self._custom = custom
        self._started = False
        self._block = -1
        self._open: tuple | None = None    # ("text"|"reasoning"|"tool", tool index)
        self._tools: dict[int, int] = {}   # chat tool_calls index -> block index
        self._held: dict[int, list] = {}   # block index -> custom tool argument pieces
        self._stop = None
        self._usage = Usage()
        self._finished = False

    def feed(self, data: str) -> Iterator[StreamEvent]:
        """Events for one SSE ``data`` payload (``[DONE]`` included)."""
        if data == "[DONE]":
            yield from self.finish()
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            return
        if not isinstance(chunk, dict):
            return
        if not self._started:
            self._started = True
            yield Start(str(chunk.get("id") or ""), str(chunk.get("model") or ""))
        if isinstance(chunk.get("usage"), dict):
            self._usage = parse_usage(chunk["usage"])
        for choice in chunk.get("choices") or []:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                yield from self._choice(choice)

    def _choice(self, choice: dict) -> Iterator[StreamEvent]:
        delta = choice.get("delta") or {}
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            yield from self._switch(("reasoning", None))
            yield Delta(self._block, reasoning)
        for key in ("content", "refusal"):
            if isinstance(delta.get(key), str) and delta[key]:
                yield from self._switch(("text", None))
                yield Delta(self._block, delta[key])
        for call in delta.get("tool_calls") or []:
            yield from self._tool_delta(call)
        if choice.get("finish_reason"):
            yield from self._close()
            self._stop = FINISH_TO_STOP.get(choice["finish_reason"], "stop")

    def _tool_delta(self, call: dict) -> Iterator[StreamEvent]:
        index = call.get("index", 0)
        function = call.get("function") or {}
        if index not in self._tools:
            yield from self._close()
            self._block += 1
            self._tools[index] = self._block
            self._open = ("tool", index)
            name = function.get("name") or ""
            kind = "custom" if name in self._custom else "function"
            if kind == "custom":
                self._held[self._block] = []
            yield BlockStart(self._block, "tool_call", call_id=call.get("id") or "",
                             name=name, tool_kind=kind)
        block = self._tools[index]
        piece = function.get("arguments")
        if isinstance(piece, str) and piece:
            if block in self._held:
                self._held[block].append(piece)
            else:
                yield Delta(block, piece)

    def _switch(self, kind: tuple) -> Iterator[StreamEvent]:
        if self._open == kind:
            return
        yield from self._close()
        self._block += 1
        self._open = kind
        yield BlockStart(self._block, kind[0])

    def _close(self) -> Iterator[StreamEvent]:
        if self._open is None:
            return
        self._open = None
        held = self._held.pop(self._block, None)
        if held is not None:
            yield Delta(self._block, unwrap_custom_input("".join(held)))
        yield BlockStop(self._block)

    def finish(self) -> Iterator[StreamEvent]:
        """End of the upstream stream: close what is open and tell why it ended."""
        if self._finished:
            return
        self._finished = True
        if not self._started:
            self._started = True
            yield Start("", "")
        yield from self._close()
        yield Finish(self._stop, self._usage)
