"""Client API: OpenAI Responses (``POST /v1/responses``, SPEC §12).

To a provider that offers Responses natively the body passes through as sent; otherwise
:func:`parse` turns it into a :class:`~app.conversation.Conversation` (input items:
messages with ``input_text`` / ``input_image`` parts, ``function_call`` and
``function_call_output``, ``custom_tool_call`` and ``custom_tool_call_output`` as Codex
sends them, ``reasoning``), refusing built-in tools (``web_search``, ``file_search``, ...)
and items with no equivalent. :func:`render_reply` and :mod:`app.client_apis.
responses_stream` answer with a response object or its event stream. Errors keep §8.
"""

from __future__ import annotations

import time

from app.client_apis.chat_completions import image_from_url
from app.conversation import (
    Conversation,
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

NAME = "responses"
HINTS = ("store", "include", "reasoning", "prompt_cache_key", "metadata", "truncation",
         "service_tier", "user", "safety_identifier", "text", "prompt_cache_retention",
         "top_logprobs", "stream_options", "background")
#: Top-level fields :func:`parse` translates or lists as hints; any other is dropped, listed.
KNOWN_FIELDS = frozenset(("model", "input", "instructions", "tools", "tool_choice",
                          "parallel_tool_calls", "max_output_tokens", "temperature", "top_p",
                          "stream", "previous_response_id") + HINTS)
#: OpenAI's built-in tools: they run at OpenAI, so a request offering one is a 400 when
#: translated. A tool type outside this list and the function / custom tools is newer than
#: this contract (Codex's ``namespace``): dropped, listed (SPEC §18).
BUILT_IN_TOOLS = frozenset(("web_search", "web_search_preview", "web_search_2025_08_26",
                            "web_search_preview_2025_03_11", "file_search", "computer",
                            "computer_use_preview", "code_interpreter", "image_generation",
                            "mcp", "local_shell", "shell", "apply_patch"))
#: Input items that only OpenAI can resolve (calls of its built-in tools, stored items):
#: a 400 when translated. Other unknown item types are dropped, listed.
UNCARRIABLE_ITEMS = frozenset(("item_reference", "web_search_call", "file_search_call",
                               "computer_call", "computer_call_output",
                               "code_interpreter_call", "image_generation_call",
                               "local_shell_call", "local_shell_call_output", "shell_call",
                               "shell_call_output", "apply_patch_call",
                               "apply_patch_call_output", "mcp_call", "mcp_list_tools",
                               "mcp_approval_request", "mcp_approval_response"))
#: Content parts with no equivalent on other interfaces: a 400 when translated.
UNCARRIABLE_PARTS = frozenset(("input_file", "input_audio"))


def validate(body: dict) -> None:
    """What every Responses request needs: ``input`` a string or a non-empty array of
    objects, ``instructions`` a string when given; raises 400 otherwise."""
    items = body.get("input")
    require(isinstance(items, str) or (isinstance(items, list) and bool(items)
                                       and all(isinstance(i, dict) for i in items)),
            "'input' must be a string or a non-empty array of items", "input")
    require(body.get("instructions") is None or isinstance(body["instructions"], str),
            "'instructions' must be a string", "instructions")
    parse_model(body)
    parse_stream_flag(body)


def _content_text(content) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "\n".join(p["text"] for p in content if isinstance(p, dict)
                     and isinstance(p.get("text"), str))


def router_messages(body: dict) -> list[dict]:
    """The text turns of a Responses body, as routers read them (lenient, no refusals)."""
    turns = []
    if isinstance(body.get("instructions"), str):
        turns.append({"role": "system", "content": body["instructions"]})
    items = body.get("input")
    if isinstance(items, str):
        return turns + [{"role": "user", "content": items}]
    for item in items or []:
        kind = item.get("type", "message")
        if kind == "message" and isinstance(item.get("role"), str):
            role = "system" if item["role"] == "developer" else item["role"]
            turns.append({"role": role, "content": _content_text(item.get("content"))})
        elif kind in ("function_call_output", "custom_tool_call_output"):
            turns.append({"role": "tool", "content": ""})
    return turns


def parse(body: dict) -> Conversation:
    """A validated Responses body as a Conversation (for a translated upstream)."""
    conversation = Conversation(messages=[], model=parse_model(body),
                                stream=parse_stream_flag(body),
                                max_tokens=optional_int(body, "max_output_tokens"),
                                temperature=optional_number(body, "temperature"),
                                top_p=optional_number(body, "top_p"))
    if body.get("instructions"):
        conversation.system.append(body["instructions"])
    items = body["input"]
    if isinstance(items, str):
        items = [{"type": "message", "role": "user", "content": items}]
    for index, item in enumerate(items):
        _item(conversation, item, f"input.{index}")
    tools = (_tool(tool, i, conversation.hints) for i, tool in enumerate(body.get("tools")
                                                                        or []))
    conversation.tools = [tool for tool in tools if tool is not None]
    conversation.tool_choice = _tool_choice(body.get("tool_choice"),
                                            body.get("parallel_tool_calls"))
    conversation.previous_response_id = body.get("previous_response_id")
    drop_hints(body, HINTS, conversation.hints)
    drop_unknown_fields(body, KNOWN_FIELDS, conversation.hints)
    return conversation


def _append(conversation: Conversation, role: str, part) -> None:
    messages = conversation.messages
    if messages and messages[-1].role == role:
        messages[-1] = Message(role, messages[-1].parts + (part,))
    else:
        messages.append(Message(role, (part,)))


def _message_parts(content, where: str, hints: list | None = None) -> list:
    if isinstance(content, str):
        return [Text(content)]
    require(isinstance(content, list), f"{where}.content must be a string or an array", where)
    parts = []
    for part in content:
        require(isinstance(part, dict), f"{where}.content parts must be objects", where)
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            parts.append(Text(str(part.get("text") or "")))
        elif kind == "refusal":
            parts.append(Text(str(part.get("refusal") or "")))
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str):
                raise refuse(f"an input_image without image_url in {where}",
                             "file_id images live in OpenAI's file store", where)
            parts.append(image_from_url(url))
        elif kind in UNCARRIABLE_PARTS or hints is None:
            raise refuse(f"a {kind!r} content part in {where}",
                         "only text and images translate", where)
        else:   # a part type newer than this contract
            note_dropped(hints, listed_name(kind))
    return parts


def _output_parts(output, where: str) -> tuple:
    if isinstance(output, str):
        return (Text(output),)
    if isinstance(output, list):
        return tuple(_message_parts(output, where))
    raise refuse(f"the output of {where}", "it must be a string or content parts", where)


def _item(conversation: Conversation, item: dict, where: str) -> None:
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in ("system", "developer", "user", "assistant"):
            note_dropped(conversation.hints, "role:" + listed_name(role))  # a newer role
            return
        parts = _message_parts(item.get("content"), where, conversation.hints)
        if role in ("system", "developer"):
            conversation.system.append("\n".join(p.text for p in parts
                                                 if isinstance(p, Text)))
            return
        for part in parts:
            _append(conversation, role, part)
    elif kind in ("function_call", "custom_tool_call"):
        custom = kind == "custom_tool_call"
        arguments = item.get("input") if custom else item.get("arguments")
        _append(conversation, "assistant",
                ToolCall(str(item.get("call_id") or ""), str(item.get("name") or ""),
                         str(arguments or ""), "custom" if custom else "function"))
    elif kind in ("function_call_output", "custom_tool_call_output"):
        _append(conversation, "user",
                ToolResult(str(item.get("call_id") or ""),
                           _output_parts(item.get("output"), where),
                           kind=("custom" if kind == "custom_tool_call_output"
                                 else "function")))
    elif kind == "reasoning":
        summary = "\n".join(s.get("text", "") for s in item.get("summary") or []
                            if isinstance(s, dict))
        _append(conversation, "assistant", Reasoning(summary))
    elif kind in UNCARRIABLE_ITEMS:
        raise refuse(f"an input item of type {kind!r} ({where})",
                     "only messages, function/custom tool calls and their outputs, and "
                     "reasoning translate to this model", where)
    else:   # an item type newer than this contract: no equivalent known (SPEC §18)
        note_dropped(conversation.hints, listed_name(kind))


def _tool(tool, index: int, hints: list) -> Tool | None:
    where = f"tools.{index}"
    require(isinstance(tool, dict), "tools entries must be objects", where)
    kind = tool.get("type")
    if kind == "function":
        require(isinstance(tool.get("name"), str), "function tools need a name", where)
        return Tool(tool["name"], tool.get("description"), tool.get("parameters"))
    if kind == "custom":
        require(isinstance(tool.get("name"), str), "custom tools need a name", where)
        return Tool(tool["name"], tool.get("description"), kind="custom",
                    format=tool.get("format"))
    if kind in BUILT_IN_TOOLS or not isinstance(kind, str):
        raise refuse(f"the built-in tool {kind!r}",
                     "OpenAI built-in tools run only on OpenAI's Responses API", where)
    note_dropped(hints, "tool:" + listed_name(kind))   # a tool type newer than this contract
    return None


def _tool_choice(choice, parallel) -> ToolChoice | None:
    if choice is None:
        return ToolChoice("auto", parallel=parallel) if parallel is not None else None
    if isinstance(choice, str):
        require(choice in ("auto", "none", "required"), "unknown tool_choice", "tool_choice")
        return ToolChoice(choice, parallel=parallel)
    if isinstance(choice, dict) and choice.get("type") in ("function", "custom"):
        require(isinstance(choice.get("name"), str), "tool_choice needs a name",
                "tool_choice")
        return ToolChoice("tool", choice["name"], parallel)
    raise refuse("this tool_choice", "only auto, none, required or a named function or "
                 "custom tool translate", "tool_choice")


def usage_json(usage: Usage) -> dict:
    """Internal usage in Responses shape."""
    return {"input_tokens": usage.input_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_tokens},
            "output_tokens": usage.output_tokens,
            "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
            "total_tokens": usage.input_tokens + usage.output_tokens}


def output_item(part, item_id: str) -> dict | None:
    """One output item for an answer part (completed)."""
    if isinstance(part, Text):
        return {"type": "message", "id": item_id, "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": part.text, "annotations": []}]}
    if isinstance(part, ToolCall) and part.kind == "custom":
        return {"type": "custom_tool_call", "id": item_id, "call_id": part.id,
                "name": part.name, "input": part.arguments, "status": "completed"}
    if isinstance(part, ToolCall):
        return {"type": "function_call", "id": item_id, "call_id": part.id,
                "name": part.name, "arguments": part.arguments, "status": "completed"}
    if isinstance(part, Reasoning):
        return {"type": "reasoning", "id": item_id,
                "summary": [{"type": "summary_text", "text": part.text}]}
    return None


def response_object(response_id: str, model_name: str, status: str, output: list,
                    usage: Usage | None, created_at: int | None = None,
                    error: dict | None = None, incomplete: str | None = None) -> dict:
    """A response object (the body of an answer, and the snapshot in stream events)."""
    return {"id": response_id, "object": "response",
            "created_at": created_at or int(time.time()), "status": status,
            "error": error,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "instructions": None, "model": model_name, "output": output,
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "temperature": None, "top_p": None, "metadata": {},
            "usage": usage_json(usage) if usage is not None else None}


_ITEM_PREFIX = {Text: "msg", ToolCall: "fc", Reasoning: "rs"}


def render_reply(reply: Reply, model_name: str) -> dict:
    """A response object for ``reply``; ``max_tokens`` reached is ``incomplete``."""
    output = [item for n, part in enumerate(reply.parts)
              if (item := output_item(part, f"{_ITEM_PREFIX.get(type(part), 'item')}_{n}"))
              is not None]
    incomplete = reply.stop_reason == "length"
    response_id = reply.id if reply.id.startswith("resp_") else f"resp_{reply.id or 'plano'}"
    return response_object(response_id, model_name,
                           "incomplete" if incomplete else "completed", output, reply.usage,
                           incomplete="max_output_tokens" if incomplete else None)
