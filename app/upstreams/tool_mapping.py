"""Tool names and tool-call ids a provider cannot take: mapped for it, restored for the client.

OpenAI-interface providers take function names of at most 64 characters of
``[a-zA-Z0-9_-]``; MCP tool names (``mcp__server__a_very_long_tool_name...``, dots, other
characters) often break that rule. Mistral takes tool-call ids of exactly 9 alphanumerics,
while a conversation that began on another model carries ``toolu_...`` / ``call_...`` ids.
A :class:`ToolMapping` is built once per translated request from its conversation: names and
ids that break the provider's rule get a deterministic stand-in (the same original always
gives the same stand-in, so a replayed history maps the same way in every request), and
the reverse maps restore the client's originals in answers and streams. Valid names and ids
map to themselves, so a conforming request goes out unchanged.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

from app.conversation import Conversation, ToolCall, ToolResult
from app.upstreams.custom_tools import custom_tool_names

#: OpenAI's function-name rule (Chat Completions ``tools[].function.name``).
NAME_LIMIT = 64
_VALID_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NAME_OUTSIDE = re.compile(r"[^A-Za-z0-9_-]")
#: Hex digits of the name's SHA-256 kept after the readable prefix (40 bits).
NAME_HASH_CHARS = 10
#: Mistral's tool-call id rule.
_MISTRAL_ID = re.compile(r"[A-Za-z0-9]{9}")
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
#: Stand-ins remembered per worker: an agent replays the same names and ids every turn.
#: Bounded (least recently used go first), so client-chosen names never grow memory.
STAND_IN_CACHE_SIZE = 4096


@lru_cache(maxsize=STAND_IN_CACHE_SIZE)
def short_name(name: str, hash_chars: int = NAME_HASH_CHARS) -> str:
    """``name`` itself when an OpenAI-interface provider takes it, else a readable prefix
    (characters outside ``[a-zA-Z0-9_-]`` as ``_``) plus ``_`` and a hash of the whole
    name, at most 64 characters: ``mcp__github__create_or_update_file_in_a_..._3f9a0c1b2d``."""
    if _VALID_NAME.fullmatch(name):
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:hash_chars]
    prefix = _NAME_OUTSIDE.sub("_", name)[:NAME_LIMIT - hash_chars - 1] or "tool"
    return f"{prefix}_{digest}"


@lru_cache(maxsize=STAND_IN_CACHE_SIZE)
def mistral_id(call_id: str, salt: int = 0) -> str:
    """``call_id`` itself when it is 9 alphanumerics (Mistral's rule), else 9 base-62
    characters of its SHA-256 (``salt`` > 0 only to resolve a clash within a request)."""
    if salt == 0 and _MISTRAL_ID.fullmatch(call_id):
        return call_id
    seed = call_id if salt == 0 else f"{call_id}#{salt}"
    number = int.from_bytes(hashlib.sha256(seed.encode("utf-8", "surrogatepass")).digest()[:8],
                            "big")
    chars = []
    for _ in range(9):
        number, digit = divmod(number, 62)
        chars.append(_BASE62[digit])
    return "".join(chars)


class ToolMapping:
    """One translated request's tool names and call ids, client side <-> upstream side.

    ``custom`` holds the client's names of Responses custom tools (their calls are
    unwrapped on the way back). Unknown upstream names and ids (calls the model made up,
    ids the provider generated) pass through unchanged.
    """

    __slots__ = ("custom", "_names", "_names_back", "_ids", "_ids_back")

    def __init__(self, custom: set | None = None, names: dict | None = None,
                 ids: dict | None = None):
        self.custom = custom or set()
        self._names = names or {}
        self._names_back = {short: name for name, short in self._names.items()}
        self._ids = ids or {}
        self._ids_back = {short: call_id for call_id, short in self._ids.items()}

    @classmethod
    def for_conversation(cls, conversation: Conversation, *,
                         mistral_ids: bool = False) -> ToolMapping:
        """The mapping for ``conversation``: every tool name it uses (tools, tool choice,
        earlier calls) shortened where needed; with ``mistral_ids``, every call id it holds
        (earlier calls and results) as 9 alphanumerics."""
        names: list[str] = [tool.name for tool in conversation.tools]
        if conversation.tool_choice is not None and conversation.tool_choice.name:
            names.append(conversation.tool_choice.name)
        ids: list[str] = []
        for message in conversation.messages:
            for part in message.parts:
                if isinstance(part, ToolCall):
                    names.append(part.name)
                    ids.append(part.id)
                elif isinstance(part, ToolResult):
                    ids.append(part.call_id)
        return cls(custom_tool_names(conversation.tools), _unique(names, _short_names),
                   _unique(ids, _mistral_ids) if mistral_ids else None)

    def upstream_name(self, name: str) -> str:
        """The name the provider sees for the client's tool ``name``."""
        return self._names.get(name, name)

    def client_name(self, name: str) -> str:
        """The client's tool name for a name the provider answered with."""
        return self._names_back.get(name, name)

    def upstream_id(self, call_id: str) -> str:
        """The id the provider sees for the client's tool-call id."""
        return self._ids.get(call_id, call_id)

    def client_id(self, call_id: str) -> str:
        """The client's tool-call id for an id the provider answered with."""
        return self._ids_back.get(call_id, call_id)


def _short_names(name: str, attempt: int) -> str:
    return short_name(name, NAME_HASH_CHARS + 6 * attempt)


def _mistral_ids(call_id: str, attempt: int) -> str:
    return mistral_id(call_id, attempt)


def _unique(originals: list[str], shorten) -> dict[str, str]:
    """``original -> stand-in`` for the originals that need one, no two alike and none equal
    to another original kept as it is (a clash, astronomically rare, takes the next
    attempt: a longer hash for names, a salted one for ids)."""
    distinct = list(dict.fromkeys(originals))
    taken = {original for original in distinct if shorten(original, 0) == original}
    mapped: dict[str, str] = {}
    for original in distinct:
        if original in taken:
            continue
        attempt = 0
        stand_in = shorten(original, attempt)
        while stand_in in taken:
            attempt += 1
            stand_in = shorten(original, attempt)
        taken.add(stand_in)
        mapped[original] = stand_in
    return mapped
