"""Read the parts of a conversation that affinity modes look at, from the raw JSON body of
each client API (SPEC §12, §16): OpenAI Chat Completions, Anthropic Messages and OpenAI
Responses.

Pure functions over the parsed body (a ``dict``), no Flask, no validation: each API's parser
has already refused what it cannot serve, and anything unexpected here (a missing field, a
number where text was expected) reads as "nothing there" instead of raising, because affinity
is an optimisation and must never fail a request.

What is read, per shape:

* the *system prompt* (Chat: ``system`` / ``developer`` messages; Messages: ``system``;
  Responses: ``instructions`` plus ``system`` / ``developer`` input items),
* the *tool names* in the order the client lists them,
* the *first* and the *last* user message as :class:`UserContent`.

Tool results are never user content: Chat's ``tool`` messages, Anthropic's ``tool_result``
blocks and Responses' ``function_call_output`` / ``custom_tool_call_output`` items are the
agent harness reporting back, not the user speaking.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Iterator

CHAT_COMPLETIONS = "chat_completions"
MESSAGES = "messages"
RESPONSES = "responses"
#: Every client API shape these readers understand.
SHAPES = (CHAT_COMPLETIONS, MESSAGES, RESPONSES)

_SYSTEM_ROLES = ("system", "developer")
#: Part / block types that carry text, in any of the three shapes.
_TEXT_PARTS = frozenset(("text", "input_text", "output_text"))
#: What the harness sends back inside a user message (Anthropic) rather than the user.
_TOOL_OUTPUT_PARTS = frozenset(("tool_result",))
#: Fields that change between turns without changing what was said (prompt-cache markers).
_VOLATILE_FIELDS = frozenset(("cache_control",))


@dataclass(frozen=True, slots=True)
class UserContent:
    """What a user message says: its text parts joined by newlines, and one stable marker
    per non-text part the user supplied (an image, a file), in order."""

    text: str = ""
    attachments: tuple[str, ...] = ()


def system_text(body: dict, shape: str) -> str:
    """The system prompt as one string (several parts joined by newlines)."""
    return _reader(shape).system_text(body)


def tool_names(body: dict, shape: str) -> tuple[str, ...]:
    """The names of the tools the request offers, in the client's order."""
    return _reader(shape).tool_names(body)


def first_user_content(body: dict, shape: str) -> UserContent | None:
    """The first user message, or ``None`` when the conversation has none."""
    reader = _reader(shape)
    for message in reader.messages(body):
        if reader.is_user(message):
            return reader.user_content(message)
    return None


def user_contents(body: dict, shape: str) -> Iterator[UserContent]:
    """Every user message, oldest first."""
    reader = _reader(shape)
    for message in reader.messages(body):
        if reader.is_user(message):
            yield reader.user_content(message)


def last_user_content(body: dict, shape: str) -> UserContent | None:
    """The last message when it is a user message, else ``None`` (a tool result, an
    assistant message, a function call, an empty conversation)."""
    reader = _reader(shape)
    messages = reader.messages(body)
    if not messages or not reader.is_user(messages[-1]):
        return None
    return reader.user_content(messages[-1])


# --------------------------------------------------------------------------- helpers


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _dicts(value: Any) -> list[dict]:
    return [item for item in _list(value) if isinstance(item, dict)]


def _marker(part: dict) -> str:
    """A stable identity for a non-text part: its canonical JSON without prompt-cache
    markers (Claude Code moves ``cache_control`` between turns)."""
    stable = {key: value for key, value in part.items() if key not in _VOLATILE_FIELDS}
    return json.dumps(stable, sort_keys=True, separators=(",", ":"), default=str)


def _parts_content(content: Any) -> UserContent:
    """String content, or a list of parts/blocks of any of the three shapes."""
    if isinstance(content, str):
        return UserContent(content)
    texts: list[str] = []
    attachments: list[str] = []
    for part in _list(content):
        if isinstance(part, str):  # tolerated: a bare string part is text
            texts.append(part)
            continue
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in _TEXT_PARTS:
            texts.append(_text(part.get("text")))
        elif kind in _TOOL_OUTPUT_PARTS:
            continue
        else:
            attachments.append(_marker(part))
    return UserContent("\n".join(texts), tuple(attachments))


def _joined(texts: list[str]) -> str:
    return "\n".join(text for text in texts if text)


def _named_tools(tools: Any, name_of: Callable[[dict], Any]) -> tuple[str, ...]:
    names = (name_of(tool) for tool in _dicts(tools))
    return tuple(name for name in names if isinstance(name, str) and name)


# --------------------------------------------------------------------------- readers


class _ChatReader:
    """OpenAI Chat Completions: ``messages`` with roles, ``tools`` / legacy ``functions``."""

    @staticmethod
    def messages(body: dict) -> list[dict]:
        return _dicts(body.get("messages"))

    @staticmethod
    def is_user(message: dict) -> bool:
        return message.get("role") == "user"

    @staticmethod
    def user_content(message: dict) -> UserContent:
        return _parts_content(message.get("content"))

    @classmethod
    def system_text(cls, body: dict) -> str:
        return _joined([_parts_content(m.get("content")).text for m in cls.messages(body)
                        if m.get("role") in _SYSTEM_ROLES])

    @staticmethod
    def tool_names(body: dict) -> tuple[str, ...]:
        def name_of(tool: dict) -> Any:
            kind = tool.get("type", "function")
            spec = tool.get(kind)
            return spec.get("name") if isinstance(spec, dict) else tool.get("name", kind)
        return (_named_tools(body.get("tools"), name_of)
                + _named_tools(body.get("functions"), lambda f: f.get("name")))


class _MessagesReader(_ChatReader):
    """Anthropic Messages: ``system`` string or text blocks, ``messages`` of ``user`` /
    ``assistant`` turns whose blocks include ``tool_result`` (harness, not user); messages
    and user content are read as in Chat Completions."""

    @staticmethod
    def system_text(body: dict) -> str:
        return _parts_content(body.get("system")).text

    @staticmethod
    def tool_names(body: dict) -> tuple[str, ...]:
        return _named_tools(body.get("tools"), lambda tool: tool.get("name"))


class _ResponsesReader:
    """OpenAI Responses: ``instructions``, ``input`` as a string (one user message) or a
    list of items: messages (with or without ``type: message``), ``function_call``,
    ``function_call_output``, ``custom_tool_call(_output)``, ``reasoning``, ..."""

    @staticmethod
    def messages(body: dict) -> list[dict]:
        items = body.get("input")
        if isinstance(items, str):
            return [{"role": "user", "content": items}]
        return _dicts(items)

    @staticmethod
    def is_user(item: dict) -> bool:
        return item.get("type", "message") == "message" and item.get("role") == "user"

    @staticmethod
    def user_content(item: dict) -> UserContent:
        return _parts_content(item.get("content"))

    @classmethod
    def system_text(cls, body: dict) -> str:
        texts = [_text(body.get("instructions"))]
        texts += [_parts_content(item.get("content")).text for item in cls.messages(body)
                  if item.get("type", "message") == "message"
                  and item.get("role") in _SYSTEM_ROLES]
        return _joined(texts)

    @staticmethod
    def tool_names(body: dict) -> tuple[str, ...]:
        # Function and custom tools have names; built-in tools (web_search, ...) their type.
        return _named_tools(body.get("tools"), lambda tool: tool.get("name") or tool.get("type"))


_READERS = {CHAT_COMPLETIONS: _ChatReader, MESSAGES: _MessagesReader,
            RESPONSES: _ResponsesReader}


def _reader(shape: str):
    try:
        return _READERS[shape]
    except KeyError:
        raise ValueError(f"unknown client API shape {shape!r}; one of {SHAPES}") from None
