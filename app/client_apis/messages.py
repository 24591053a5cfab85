"""Client API: Anthropic Messages (``POST /v1/messages``, SPEC §12).

:func:`validate` checks what the gateway itself needs (enough for the pass-through to an
Anthropic-interface provider, which gets the body as sent); :func:`parse` turns the body
into a :class:`~app.conversation.Conversation` when it must be translated, refusing content
with no equivalent (server tools, documents) with a 400 and recording hints that are
dropped (``cache_control``, ``thinking``, ``metadata``, ...). :func:`render_reply`,
:mod:`app.client_apis.messages_stream` and :func:`error_body` answer in Anthropic's shapes, so the
``anthropic`` SDK parses answers and raises its matching exception classes.
"""

from __future__ import annotations

import json

from app.conversation import (
    Conversation,
    Image,
    Message,
    Reasoning,
    Reply,
    Text,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
    Usage,
    drop_hints,
    drop_unknown_fields,
    listed_name,
    note_dropped,
    optional_int,
    optional_number,
    parse_model,
    parse_stream_flag,
    refuse,
    require,
)
from app.errors import anthropic_error_body

NAME = "messages"
STOP_TO_ANTHROPIC = {"stop": "end_turn", "length": "max_tokens", "tool_use": "tool_use",
                     "stop_sequence": "stop_sequence", "content_filter": "refusal",
                     None: "end_turn"}
HINTS = ("metadata", "thinking", "context_management", "output_config", "service_tier",
         "container", "mcp_servers", "inference_geo")
#: Top-level fields :func:`parse` translates or lists as hints; any other is dropped, listed.
KNOWN_FIELDS = frozenset(("model", "max_tokens", "messages", "system", "stop_sequences",
                          "temperature", "top_p", "top_k", "stream", "tools", "tool_choice")
                         + HINTS)
#: Roles translated; another (newer) role passes unchanged to an Anthropic model and its
#: message is dropped, listed, when translated.
ROLES = ("user", "assistant", "system")
#: Known content blocks that carry what no other interface can (documents, results of
#: Anthropic's server tools): a 400 when translated. Unknown block types are dropped, listed.
UNCARRIABLE_BLOCKS = frozenset(("document", "search_result", "server_tool_use",
                                "mcp_tool_use", "mcp_tool_result", "container_upload"))


def validate(body: dict) -> None:
    """What every Messages request needs, translated or not: non-empty ``messages`` of
    objects with a string ``role`` (any: ``system`` and roles newer than this contract are
    the upstream's to judge, SPEC §18), an integer ``max_tokens``; raises 400 otherwise.

    The refusals use the Anthropic API's own wording for the same case (``max_tokens: Field
    required``, ``messages: at least one message is required``, ...), since clients key
    their handling on it.
    """
    messages = body.get("messages")
    require("messages" in body, "messages: Field required", "messages")
    require(isinstance(messages, list), "messages: Input should be a valid list", "messages")
    require(bool(messages), "messages: at least one message is required", "messages")
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        require(isinstance(message, dict),
                f"{where}: Input should be a valid dictionary or object to extract fields "
                "from", where)
        require("role" in message, f"{where}.role: Field required", f"{where}.role")
        require(isinstance(message["role"], str) and bool(message["role"]),
                f"{where}.role: Input should be a valid string", f"{where}.role")
    max_tokens = body.get("max_tokens")
    require(max_tokens is not None, "max_tokens: Field required", "max_tokens")
    require(isinstance(max_tokens, int) and not isinstance(max_tokens, bool),
            "max_tokens: Input should be a valid integer", "max_tokens")
    require(max_tokens >= 1, "max_tokens: Input should be greater than or equal to 1",
            "max_tokens")
    require(body.get("model") is None or isinstance(body["model"], str),
            "model: Input should be a valid string", "model")
    require(body.get("stream") is None or isinstance(body["stream"], bool),
            "stream: Input should be a valid boolean", "stream")


def router_messages(body: dict) -> list[dict]:
    """The text turns of a Messages body, as routers read them (lenient, no refusals)."""
    turns = []
    system = body.get("system")
    if isinstance(system, str):
        turns.append({"role": "system", "content": system})
    elif isinstance(system, list):
        turns.append({"role": "system", "content": "\n".join(
            b.get("text", "") for b in system if isinstance(b, dict)
            and isinstance(b.get("text"), str))})
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            turns.append({"role": message["role"], "content": content})
            continue
        blocks = content if isinstance(content, list) else []
        texts = [b["text"] for b in blocks if isinstance(b, dict) and b.get("type") == "text"
                 and isinstance(b.get("text"), str)]
        if texts:
            turns.append({"role": message["role"], "content": "\n".join(texts)})
        elif any(isinstance(b, dict) and b.get("type") == "tool_result" for b in blocks):
            turns.append({"role": "tool", "content": ""})
    return turns


def parse(body: dict) -> Conversation:
    """A validated Messages body as a Conversation (for a non-Anthropic upstream)."""
    conversation = Conversation(messages=[], model=parse_model(body),
                                stream=parse_stream_flag(body),
                                max_tokens=optional_int(body, "max_tokens"),
                                temperature=optional_number(body, "temperature"),
                                top_p=optional_number(body, "top_p"),
                                top_k=optional_int(body, "top_k"))
    hints = conversation.hints
    system = body.get("system")
    if isinstance(system, str):
        conversation.system.append(system)
    elif isinstance(system, list):
        conversation.system.append("\n".join(_text_block(b, "system", hints) for b in system))
    elif system is not None:
        raise refuse("'system'", "it must be a string or text blocks", "system")
    for index, message in enumerate(body["messages"]):
        role, where = message["role"], f"messages.{index}"
        if role not in ROLES:
            note_dropped(hints, "role:" + listed_name(role))
            continue
        parts = _parts(message.get("content"), where, hints)
        if role == "system":
            # At its place: Chat upstreams take system messages anywhere in the list, as
            # text; anything else in it has no equivalent there.
            texts = [part for part in parts if isinstance(part, Text)]
            if len(texts) < len(parts):
                note_dropped(hints, "system_message_non_text")
            parts = texts
        conversation.messages.append(Message(role, tuple(parts)))
    stops = body.get("stop_sequences")
    if stops is not None:
        require(isinstance(stops, list) and all(isinstance(s, str) for s in stops),
                "'stop_sequences' must be an array of strings", "stop_sequences")
        conversation.stop = list(stops)
    conversation.tools = [_tool(t, i, hints) for i, t in enumerate(body.get("tools") or [])]
    conversation.tool_choice = _tool_choice(body.get("tool_choice"))
    drop_hints(body, HINTS, hints)
    drop_unknown_fields(body, KNOWN_FIELDS, hints)
    return conversation


def _cache_hint(block: dict, hints: list) -> None:
    if block.get("cache_control") is not None and "cache_control" not in hints:
        hints.append("cache_control")


def _text_block(block, where: str, hints: list) -> str:
    require(isinstance(block, dict) and block.get("type") == "text"
            and isinstance(block.get("text"), str), f"{where}: expected text blocks", where)
    _cache_hint(block, hints)
    return block["text"]


def _image(block: dict, where: str) -> Image:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        return Image(data=source.get("data"), media_type=source.get("media_type"))
    if source.get("type") == "url":
        return Image(url=source.get("url"))
    raise refuse(f"an image with source {source.get('type')!r} in {where}",
                 "only base64 and url images translate", where)


def _parts(content, where: str, hints: list) -> list:
    if isinstance(content, str):
        return [Text(content)]
    require(isinstance(content, list), f"{where}.content must be a string or an array", where)
    parts: list = []
    for block in content:
        require(isinstance(block, dict), f"{where}.content blocks must be objects", where)
        _cache_hint(block, hints)
        kind = block.get("type")
        if kind == "text":
            parts.append(Text(str(block.get("text") or "")))
        elif kind == "image":
            parts.append(_image(block, where))
        elif kind == "tool_use":
            parts.append(ToolCall(str(block.get("id") or ""), str(block.get("name") or ""),
                                  json.dumps(block.get("input") or {}, ensure_ascii=False)))
        elif kind == "tool_result":
            parts.append(_tool_result(block, where, hints))
        elif kind == "thinking":
            parts.append(Reasoning(str(block.get("thinking") or ""), block.get("signature")))
        elif kind == "redacted_thinking":
            note_dropped(hints, "redacted_thinking")
        elif kind in UNCARRIABLE_BLOCKS or (isinstance(kind, str)
                                            and kind.endswith("_tool_result")):
            raise refuse(f"a {kind!r} content block in {where}",
                         "only text, image, tool_use, tool_result and thinking translate",
                         where)
        else:   # a block type newer than this contract: no equivalent known
            note_dropped(hints, listed_name(kind))
    return parts


def _tool_result(block: dict, where: str, hints: list) -> ToolResult:
    content = block.get("content")
    if content is None:
        inner: list = []
    elif isinstance(content, str):
        inner = [Text(content)]
    else:
        require(isinstance(content, list), f"{where}: tool_result content", where)
        inner = []
        for item in content:
            require(isinstance(item, dict), f"{where}: tool_result blocks", where)
            _cache_hint(item, hints)
            if item.get("type") == "text":
                inner.append(Text(str(item.get("text") or "")))
            elif item.get("type") == "image":
                inner.append(_image(item, where))
            else:
                raise refuse(f"a {item.get('type')!r} block in a tool_result",
                             "only text and images translate", where)
    return ToolResult(str(block.get("tool_use_id") or ""), tuple(inner),
                      bool(block.get("is_error")))


def _tool(tool, index: int, hints: list) -> Tool:
    where = f"tools.{index}"
    require(isinstance(tool, dict), "tools entries must be objects", where)
    if tool.get("type") not in (None, "custom"):
        raise refuse(f"the server tool {tool.get('type')!r}",
                     "Anthropic server tools run only on Anthropic models", where)
    require(isinstance(tool.get("name"), str), "tools need a name", where)
    _cache_hint(tool, hints)
    return Tool(tool["name"], tool.get("description"), tool.get("input_schema"))


def _tool_choice(choice) -> ToolChoice | None:
    if choice is None:
        return None
    require(isinstance(choice, dict), "'tool_choice' must be an object", "tool_choice")
    parallel = False if choice.get("disable_parallel_tool_use") else None
    mode = {"auto": "auto", "any": "required", "none": "none", "tool": "tool"}.get(
        choice.get("type"))
    require(mode is not None, "unknown tool_choice type", "tool_choice")
    if mode == "tool":
        require(isinstance(choice.get("name"), str), "tool_choice needs a name",
                "tool_choice")
    return ToolChoice(mode, choice.get("name"), parallel)


def usage_json(usage: Usage) -> dict:
    """Internal usage in Anthropic's shape (input excludes cache reads)."""
    return {"input_tokens": max(usage.input_tokens - usage.cached_tokens, 0),
            "output_tokens": usage.output_tokens,
            "cache_read_input_tokens": usage.cached_tokens,
            "cache_creation_input_tokens": 0}


def _content_block(part) -> dict | None:
    if isinstance(part, Text):
        return {"type": "text", "text": part.text}
    if isinstance(part, Reasoning):
        return {"type": "thinking", "thinking": part.text, "signature": part.signature or ""}
    if isinstance(part, ToolCall):
        try:
            tool_input = json.loads(part.arguments) if part.arguments.strip() else {}
        except ValueError:
            tool_input = {"input": part.arguments}
        if not isinstance(tool_input, dict):
            tool_input = {"input": tool_input}
        return {"type": "tool_use", "id": part.id, "name": part.name, "input": tool_input}
    return None


def render_reply(reply: Reply, model_name: str) -> dict:
    """An Anthropic message object for ``reply``."""
    content = [block for part in reply.parts if (block := _content_block(part)) is not None]
    return {"id": reply.id or "msg_plano", "type": "message", "role": "assistant",
            "model": model_name, "content": content,
            "stop_reason": STOP_TO_ANTHROPIC.get(reply.stop_reason, "end_turn"),
            "stop_sequence": reply.stop_sequence, "usage": usage_json(reply.usage)}


def error_body(status: int, message: str, code: str | None) -> dict:
    """Anthropic's error shape, with our specific ``code`` alongside."""
    return anthropic_error_body(status, message, code)
