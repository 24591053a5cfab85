"""Client API: OpenAI Chat Completions (``POST /v1/chat/completions``, SPEC §4, §12).

To an ``openai``-interface provider the body passes through untouched (``app.pipeline.relay``);
this adapter is used when it goes elsewhere (an Anthropic model): :func:`parse` turns the
body into a :class:`~app.conversation.Conversation`, :func:`render_reply` and
:class:`ChatStreamRenderer` turn the internal answer back into a chat completion or
``chat.completion.chunk`` events. Errors keep the §8 envelope.
"""

from __future__ import annotations

import time

from app.client_apis.common import dumps, parse_data_url
from app.conversation import (
    BlockStart,
    Conversation,
    Delta,
    Failure,
    Finish,
    Image,
    Message,
    Reasoning,
    Reply,
    Start,
    StreamEvent,
    Text,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
    Usage,
    drop_hints,
    listed_name,
    note_dropped,
    optional_int,
    optional_number,
    parse_model,
    parse_stream_flag,
    refuse,
    require,
)

NAME = "chat"
STOP_TO_FINISH = {"stop": "stop", "length": "length", "tool_use": "tool_calls",
                  "stop_sequence": "stop", "content_filter": "content_filter", None: "stop"}
HINTS = ("metadata", "store", "reasoning_effort", "prompt_cache_key", "user", "seed",
         "logprobs", "top_logprobs", "frequency_penalty", "presence_penalty", "logit_bias",
         "response_format", "service_tier", "modalities", "prediction", "verbosity",
         "web_search_options", "safety_identifier")


def parse(body: dict) -> Conversation:
    """A chat-completions body (already validated by ``app.pipeline.parse``) as a
    Conversation; content another interface could not express is a 400."""
    conversation = Conversation(messages=[], model=parse_model(body),
                                stream=parse_stream_flag(body))
    for index, message in enumerate(body.get("messages") or []):
        _message(conversation, message, index)
    conversation.max_tokens = (optional_int(body, "max_completion_tokens")
                               or optional_int(body, "max_tokens"))
    conversation.temperature = optional_number(body, "temperature")
    conversation.top_p = optional_number(body, "top_p")
    stop = body.get("stop")
    if isinstance(stop, str):
        conversation.stop = [stop]
    elif isinstance(stop, list):
        require(all(isinstance(s, str) for s in stop), "'stop' must be strings", "stop")
        conversation.stop = list(stop)
    if body.get("n") not in (None, 1):
        raise refuse("'n' other than 1", "only one choice can be translated", "n")
    conversation.tools = [_tool(tool, i) for i, tool in enumerate(body.get("tools") or [])]
    conversation.tool_choice = _tool_choice(body.get("tool_choice"),
                                            body.get("parallel_tool_calls"))
    drop_hints(body, HINTS, conversation.hints)
    return conversation


def _text_of(content, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    require(isinstance(content, list), f"{where}.content must be a string or an array", where)
    texts = []
    for part in content:
        require(isinstance(part, dict), f"{where}.content parts must be objects", where)
        if part.get("type") in ("text", "refusal"):
            texts.append(str(part.get("text") or part.get("refusal") or ""))
        else:
            raise refuse(f"a {part.get('type')!r} part in {where}", "only text is allowed here")
    return "".join(texts)


def _message(conversation: Conversation, message: dict, index: int) -> None:
    role, where = message["role"], f"messages.{index}"
    messages = conversation.messages
    if role in ("system", "developer"):
        conversation.system.append(_text_of(message.get("content"), where))
    elif role == "user":
        parts = _user_parts(message.get("content"), where)
        if messages and messages[-1].role == "user":
            messages[-1] = Message("user", messages[-1].parts + tuple(parts))
        else:
            messages.append(Message("user", tuple(parts)))
    elif role == "tool":
        result = ToolResult(str(message.get("tool_call_id") or ""),
                            (Text(_text_of(message.get("content"), where)),))
        if messages and messages[-1].role == "user":
            messages[-1] = Message("user", messages[-1].parts + (result,))
        else:
            messages.append(Message("user", (result,)))
    elif role == "assistant":
        parts: list = []
        reasoning = message.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            parts.append(Reasoning(reasoning))
        text = _text_of(message.get("content"), where)
        if text:
            parts.append(Text(text))
        for call in message.get("tool_calls") or []:
            require(isinstance(call, dict) and call.get("type", "function") == "function",
                    f"{where}.tool_calls entries must be function calls", where)
            function = call.get("function") or {}
            parts.append(ToolCall(str(call.get("id") or ""), str(function.get("name") or ""),
                                  str(function.get("arguments") or "")))
        messages.append(Message("assistant", tuple(parts)))
    else:   # a role newer than this contract: no equivalent known (SPEC §18)
        note_dropped(conversation.hints, "role:" + listed_name(role))


def _user_parts(content, where: str) -> list:
    if isinstance(content, str):
        return [Text(content)]
    require(isinstance(content, list), f"{where}.content must be a string or an array", where)
    parts = []
    for part in content:
        require(isinstance(part, dict), f"{where}.content parts must be objects", where)
        kind = part.get("type")
        if kind == "text":
            parts.append(Text(str(part.get("text") or "")))
        elif kind == "image_url":
            url = (part.get("image_url") or {}).get("url")
            require(isinstance(url, str), f"{where}: image_url.url must be a string", where)
            parts.append(image_from_url(url))
        else:
            raise refuse(f"a {kind!r} content part", "only text and images translate", where)
    return parts


def image_from_url(url: str) -> Image:
    """An image from a URL, inline data when it is a ``data:`` URL."""
    inline = parse_data_url(url)
    if inline is not None:
        return Image(data=inline[1], media_type=inline[0])
    return Image(url=url)


def _tool(tool, index: int) -> Tool:
    require(isinstance(tool, dict), "tools entries must be objects", f"tools.{index}")
    if tool.get("type") != "function":
        raise refuse(f"tool type {tool.get('type')!r}", "only function tools translate",
                     f"tools.{index}")
    function = tool.get("function") or {}
    require(isinstance(function.get("name"), str), "tools need a function name",
            f"tools.{index}")
    return Tool(function["name"], function.get("description"), function.get("parameters"))


def _tool_choice(choice, parallel) -> ToolChoice | None:
    if choice is None:
        return ToolChoice("auto", parallel=parallel) if parallel is not None else None
    if isinstance(choice, str):
        require(choice in ("auto", "none", "required"), "unknown tool_choice", "tool_choice")
        return ToolChoice(choice, parallel=parallel)
    name = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
    require(isinstance(name, str), "tool_choice must name a function", "tool_choice")
    return ToolChoice("tool", name, parallel)


def usage_json(usage: Usage) -> dict:
    """Internal usage in chat shape."""
    return {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens}}


def render_reply(reply: Reply, model_name: str) -> dict:
    """A chat completion for ``reply``; reasoning goes in ``reasoning_content`` (the
    convention of OpenAI-compatible servers; OpenAI's own shape has no field for it)."""
    texts = [part.text for part in reply.parts if isinstance(part, Text)]
    message: dict = {"role": "assistant", "content": "".join(texts) if texts else None,
                     "refusal": None}
    reasoning = [part.text for part in reply.parts if isinstance(part, Reasoning)]
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    calls = [{"id": part.id, "type": "function",
              "function": {"name": part.name, "arguments": part.arguments}}
             for part in reply.parts if isinstance(part, ToolCall)]
    if calls:
        message["tool_calls"] = calls
    return {"id": reply.id or "chatcmpl-plano", "object": "chat.completion",
            "created": int(time.time()), "model": model_name,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": STOP_TO_FINISH.get(reply.stop_reason, "stop")}],
            "usage": usage_json(reply.usage)}


class ChatStreamRenderer:
    """Internal stream events in, ``chat.completion.chunk`` SSE bytes out (with usage as
    a last chunk when the client asked for ``stream_options.include_usage``)."""

    def __init__(self, model_name: str, include_usage: bool):
        self._model = model_name
        self._include_usage = include_usage
        self._id = "chatcmpl-plano"
        self._created = int(time.time())
        self._kinds: dict[int, str] = {}
        self._tools: dict[int, int] = {}

    def _chunk(self, delta: dict, finish: str | None = None) -> bytes:
        chunk = {"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                 "model": self._model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + dumps(chunk) + b"\n\n"

    def render(self, event: StreamEvent) -> bytes:
        """The bytes for one event (possibly none)."""
        if isinstance(event, Start):
            self._id = event.id or self._id
            return self._chunk({"role": "assistant", "content": ""})
        if isinstance(event, BlockStart):
            self._kinds[event.index] = event.kind
            if event.kind != "tool_call":
                return b""
            position = self._tools[event.index] = len(self._tools)
            return self._chunk({"tool_calls": [{"index": position, "id": event.call_id,
                                                "type": "function",
                                                "function": {"name": event.name,
                                                             "arguments": ""}}]})
        if isinstance(event, Delta):
            if not event.text:
                return b""
            kind = self._kinds.get(event.index, "text")
            if kind == "tool_call":
                return self._chunk({"tool_calls": [{"index": self._tools[event.index],
                                                    "function": {"arguments": event.text}}]})
            key = "reasoning_content" if kind == "reasoning" else "content"
            return self._chunk({key: event.text})
        if isinstance(event, Finish):
            out = self._chunk({}, STOP_TO_FINISH.get(event.stop_reason, "stop"))
            if self._include_usage:
                chunk = {"id": self._id, "object": "chat.completion.chunk",
                         "created": self._created, "model": self._model, "choices": [],
                         "usage": usage_json(event.usage)}
                out += b"data: " + dumps(chunk) + b"\n\n"
            return out + b"data: [DONE]\n\n"
        if isinstance(event, Failure):
            return render_stream_error(event)
        return b""


def render_stream_error(failure: Failure) -> bytes:
    """An in-band error in a chat stream (the §8 envelope as one ``data`` event)."""
    envelope = {"error": {"message": failure.message, "type": failure.error_type,
                          "param": None, "code": failure.code}}
    return b"data: " + dumps(envelope) + b"\n\n"


def error_body(message: str, error_type: str, code: str | None,
               param: str | None = None) -> dict:
    """The §8 error envelope."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def include_usage(body: dict) -> bool:
    """Whether the client asked for a usage chunk at the end of its stream."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True
