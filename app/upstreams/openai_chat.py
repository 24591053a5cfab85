"""Upstream interface ``openai``: Chat Completions (``{base_url}/chat/completions``).

Builds a chat-completions body from a :class:`~app.conversation.Conversation` (for Messages
and Responses clients; Chat clients never come here, their bodies pass through as sent) and
parses the answer or its ``chat.completion.chunk`` stream back into the internal model.

Responses custom tools (free-form input, e.g. Codex's ``apply_patch``) become function tools
taking ``{"input": string}``; their calls are unwrapped again when the answer comes back.

Provider differences absorbed here (SPEC §18), for translated requests only:

- tool names beyond OpenAI's rule and, for Mistral, tool-call ids other than 9
  alphanumerics get stand-ins (:class:`~app.upstreams.tool_mapping.ToolMapping`), restored
  in answers and streams;
- ``max_completion_tokens`` instead of ``max_tokens`` for vendors that want it (OpenAI,
  Azure OpenAI) and for OpenAI reasoning model ids (``o1``, ``o3``, ``o4-mini``, ``gpt-5*``)
  wherever they are served;
- images inside tool results (tool messages carry text only) go in a user message right
  after the tool messages, the tool message saying that an image follows;
- parallel tool calls whose stream deltas omit or reuse ``index`` (Gemini) are told apart
  by call ``id``; a call without an id gets one;
- the stop reason is ``tool_use`` whenever tool calls came back, whatever the provider said.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Iterator

from app.config.catalogue import VENDORS
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
    stop_with_tools,
)
from app.upstreams.custom_tools import unwrap_custom_input, wrap_custom_input, wrapper_schema
from app.upstreams.tool_mapping import ToolMapping

PATH = "/chat/completions"

FINISH_TO_STOP = {"stop": "stop", "length": "length", "tool_calls": "tool_use",
                  "function_call": "tool_use", "content_filter": "content_filter"}
#: OpenAI reasoning model ids (the last path segment: ``o3``, ``o4-mini``, ``gpt-5.2``,
#: ``openai/o3-mini`` behind a proxy), which refuse ``max_tokens``.
_REASONING_MODEL = re.compile(r"(?:^|/)(?:o\d+(?:-[^/]*)?|gpt-5[^/]*)$")
#: What a tool message says when its images follow in a user message.
IMAGE_FOLLOWS = "[the tool returned {count} image(s): they follow in the next user message]"


def tool_mapping(conversation: Conversation, vendor: str) -> ToolMapping:
    """The request's tool names and call ids as ``vendor`` can take them (build it once per
    request: :func:`build_body` maps with it, :func:`parse_reply` and
    :class:`ChatStreamParser` restore with it)."""
    known = VENDORS.get(vendor)
    return ToolMapping.for_conversation(
        conversation, mistral_ids=known is not None and known.nine_char_call_ids)


def max_tokens_key(vendor: str, model_id: str) -> str:
    """``max_completion_tokens`` for vendors that want it (OpenAI, Azure OpenAI) and for
    OpenAI reasoning model ids wherever they are served; ``max_tokens`` for every other
    OpenAI-compatible server (many do not know the newer name)."""
    known = VENDORS.get(vendor)
    if (known is not None and known.max_completion_tokens) or _REASONING_MODEL.search(
            model_id.lower()):
        return "max_completion_tokens"
    return "max_tokens"


def build_body(conversation: Conversation, model_id: str, *, vendor: str,
               dropped: list, tools: ToolMapping | None = None) -> dict:
    """The chat-completions body for ``conversation``; hints it cannot carry go to
    ``dropped``; ``tools`` (default: :func:`tool_mapping`) maps tool names and call ids.
    The output limit goes as :func:`max_tokens_key` says."""
    tools = tools if tools is not None else tool_mapping(conversation, vendor)
    messages: list = []
    if conversation.system:
        messages.append({"role": "system", "content": "\n\n".join(conversation.system)})
    for message in conversation.messages:
        messages.extend(_messages(message, tools, dropped))
    body: dict = {"model": model_id, "messages": messages}
    if conversation.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if conversation.max_tokens is not None:
        body[max_tokens_key(vendor, model_id)] = conversation.max_tokens
    for name in ("temperature", "top_p"):
        value = getattr(conversation, name)
        if value is not None:
            body[name] = value
    if conversation.top_k is not None:
        dropped.append("top_k")
    if conversation.stop:
        body["stop"] = list(conversation.stop)
    if conversation.tools:
        body["tools"] = [_tool(tool, tools) for tool in conversation.tools]
    choice = conversation.tool_choice
    if choice is not None:
        if choice.mode == "tool":
            body["tool_choice"] = {"type": "function",
                                   "function": {"name": tools.upstream_name(choice.name)}}
        else:
            body["tool_choice"] = choice.mode
        if choice.parallel is not None and conversation.tools:
            body["parallel_tool_calls"] = choice.parallel
    return body


def _tool(tool, tools: ToolMapping) -> dict:
    name = tools.upstream_name(tool.name)
    if tool.kind == "custom":
        return {"type": "function", "function": {
            "name": name, "description": tool.description or "",
            "parameters": wrapper_schema()}}
    function = {"name": name, "parameters": tool.parameters or {"type": "object",
                                                                "properties": {}}}
    if tool.description:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def _messages(message: Message, tools: ToolMapping, dropped: list) -> list[dict]:
    if message.role == "assistant":
        return [_assistant(message, tools, dropped)]
    if message.role == "system":   # a system message at its place (SPEC §18)
        text = "\n".join(part.text for part in message.parts if isinstance(part, Text))
        return [{"role": "system", "content": text}]
    out = []
    follow: list = []    # images of tool results: a user message right after the tool ones
    content: list = []
    for part in message.parts:
        if isinstance(part, ToolResult):
            out.append(_tool_message(part, tools, follow))
        elif isinstance(part, Text):
            content.append({"type": "text", "text": part.text})
        elif isinstance(part, Image):
            content.append({"type": "image_url", "image_url": {"url": part.data_url()}})
    content = follow + content
    if content:
        if len(content) == 1 and content[0]["type"] == "text":
            out.append({"role": "user", "content": content[0]["text"]})
        else:
            out.append({"role": "user", "content": content})
    return out


def _tool_message(result: ToolResult, tools: ToolMapping, follow: list) -> dict:
    """A tool message for ``result``; its images (tool messages carry text only) are added
    to ``follow``, introduced by the call id, and the tool message says they follow."""
    call_id = tools.upstream_id(result.call_id)
    text = result.text()
    if result.is_error and text:
        text = f"Error: {text}"
    images = [part for part in result.parts if isinstance(part, Image)]
    if images:
        note = IMAGE_FOLLOWS.format(count=len(images))
        text = f"{text}\n{note}" if text else note
        follow.append({"type": "text", "text": f"Image(s) returned by tool call {call_id}:"})
        follow.extend({"type": "image_url", "image_url": {"url": image.data_url()}}
                      for image in images)
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _assistant(message: Message, tools: ToolMapping, dropped: list) -> dict:
    texts, calls = [], []
    for part in message.parts:
        if isinstance(part, Text):
            texts.append(part.text)
        elif isinstance(part, ToolCall):
            arguments = (wrap_custom_input(part.arguments) if part.kind == "custom"
                         else part.arguments)
            calls.append({"id": tools.upstream_id(part.id), "type": "function",
                          "function": {"name": tools.upstream_name(part.name),
                                       "arguments": arguments}})
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


def _new_call_id() -> str:
    """An id for a tool call the provider sent without one (clients need one to answer)."""
    return f"call_{uuid.uuid4().hex[:24]}"


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


def parse_reply(answer: dict, tools: ToolMapping) -> Reply:
    """A chat completion as an internal :class:`Reply` (names and ids restored)."""
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
    called = False
    for call in message.get("tool_calls") or []:
        if not isinstance(call, dict):
            continue
        called = True
        function = call.get("function") or {}
        name = tools.client_name(function.get("name") or "")
        arguments = function.get("arguments") or ""
        call_id = tools.client_id(call.get("id") or "") or _new_call_id()
        if name in tools.custom:
            parts.append(ToolCall(call_id, name, unwrap_custom_input(arguments), "custom"))
        else:
            parts.append(ToolCall(call_id, name, arguments))
    stop = stop_with_tools(FINISH_TO_STOP.get(choice.get("finish_reason"), "stop"), called)
    if message.get("refusal"):
        stop = "content_filter"
    return Reply(id=str(answer.get("id") or ""), model=str(answer.get("model") or ""),
                 parts=parts, stop_reason=stop, usage=parse_usage(answer.get("usage")))


class ChatStreamParser:
    """``chat.completion.chunk`` payloads in, internal stream events out, one at a time.

    Chat streams have no blocks: a block opens when the kind of delta changes (reasoning,
    text, a new tool call) and the previous one closes. A tool-call delta belongs to the
    call with its ``id`` when it has one (a new id is a new call, whatever its ``index``:
    Gemini sends parallel calls all at index 0 or without an index), else to the call last
    seen at its ``index`` (OpenAI names the id only in a call's first delta); a delta with
    neither id nor index is a new call when it names a function. ``Finish``
    waits for the usage chunk that follows ``finish_reason``
    (``stream_options.include_usage``) and is sent at ``[DONE]`` or at the end of the
    stream. Custom-tool calls are held until their block closes: their ``{"input": ...}``
    wrapper must be complete to unwrap. Tool names and call ids are restored with
    ``tools``.
    """

    def __init__(self, tools: ToolMapping):
        self._tools = tools
        self._started = False
        self._block = -1
        self._open: tuple | None = None    # ("text"|"reasoning"|"tool", block index)
        self._by_id: dict[str, int] = {}   # upstream call id -> block index
        self._by_index: dict = {}          # chat tool_calls index -> block index
        self._held: dict[int, list] = {}   # block index -> custom tool argument pieces
        self._called = False
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
            if isinstance(call, dict):
                yield from self._tool_delta(call)
        if choice.get("finish_reason"):
            yield from self._close()
            self._stop = FINISH_TO_STOP.get(choice["finish_reason"], "stop")

    def _call_block(self, call_id: str | None, index, name) -> int | None:
        """The block of an ongoing call this delta continues, ``None`` for a new call
        (a delta with neither id nor index starts one when it names a function)."""
        if call_id:
            return self._by_id.get(call_id)
        if index is None and name:
            return None
        if index in self._by_index:
            return self._by_index[index]
        if index is None and self._open is not None and self._open[0] == "tool":
            return self._open[1]
        return None

    def _tool_delta(self, call: dict) -> Iterator[StreamEvent]:
        call_id = call.get("id") if isinstance(call.get("id"), str) else None
        index = call.get("index")
        function = call.get("function") or {}
        block = self._call_block(call_id, index, function.get("name"))
        if block is None:
            yield from self._close()
            self._block += 1
            block = self._block
            self._called = True
            if call_id:
                self._by_id[call_id] = block
            self._by_index[index] = block
            self._open = ("tool", block)
            name = self._tools.client_name(function.get("name") or "")
            kind = "custom" if name in self._tools.custom else "function"
            if kind == "custom":
                self._held[block] = []
            yield BlockStart(block, "tool_call",
                             call_id=self._tools.client_id(call_id or "") or _new_call_id(),
                             name=name, tool_kind=kind)
        else:
            self._by_index[index] = block
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
        yield Finish(stop_with_tools(self._stop, self._called), self._usage)
