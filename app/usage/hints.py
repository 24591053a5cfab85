"""Cache hints added to upstream bodies at plan time (SPEC §19). Pure functions.

* Anthropic-interface requests: ``cache_control: {"type": "ephemeral"}`` breakpoints on the
  last block before the newest user turn, the last system block and the last tool, each only
  where the prefix it closes (tools, then system, then messages: Anthropic's cache order)
  holds at least ``min_prefix_tokens`` (estimated as characters / 4). The client's own
  breakpoints are kept and counted: a request never carries more than Anthropic's 4. A
  block that already has ``cache_control`` is left alone, so applying the hints twice adds
  nothing (idempotent). When breakpoints are short, the conversation's comes first (it
  covers the longest prefix), then the system's, then the tools'.
* OpenAI and Azure OpenAI requests (Chat and Responses) of a session: ``prompt_cache_key``
  = the first 32 hex digits of SHA-256 of the session key, unless the client sent one, so
  the provider's cache routing follows the gateway's session. Only providers whose
  catalogue entry takes the field (:attr:`app.config.ModelEndpoint.prompt_cache_key`).

The client's body is never modified: what changes is copied (the same body may be sent to
several models when one fails over to the next).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

#: Anthropic's limit of cache breakpoints per request.
MAX_BREAKPOINTS = 4
EPHEMERAL = {"type": "ephemeral"}
#: Blocks Anthropic does not let carry ``cache_control`` themselves.
_UNMARKABLE = frozenset({"thinking", "redacted_thinking"})


@lru_cache(maxsize=4096)
def prompt_cache_key(session_key: str) -> str:
    """The ``prompt_cache_key`` of a session: 32 hex digits of SHA-256 of its key."""
    return hashlib.sha256(session_key.encode("utf-8")).hexdigest()[:32]


def with_prompt_cache_key(body: dict, session_key: str | None) -> dict:
    """``body`` with ``prompt_cache_key`` set from the session (a copy), or ``body`` itself
    when there is no session or the client chose its own key."""
    if session_key is None or "prompt_cache_key" in body:
        return body
    return {**body, "prompt_cache_key": prompt_cache_key(session_key)}


def _chars(value) -> int:
    """Characters of text in a JSON value (strings only: a cheap token estimate base).
    Iterative: a hostile body nested a thousand levels deep costs no recursion."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return total


def count_breakpoints(body: dict) -> int:
    """``cache_control`` markers already in tools, system and message blocks."""
    count = 0
    for tool in body.get("tools") or ():
        count += isinstance(tool, dict) and "cache_control" in tool
    system = body.get("system")
    if isinstance(system, list):
        count += sum(isinstance(b, dict) and "cache_control" in b for b in system)
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            count += sum(isinstance(b, dict) and "cache_control" in b for b in content)
    return count


def _newest_user_index(messages: list) -> int | None:
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if isinstance(message, dict) and message.get("role") == "user":
            return index
    return None


def _mark_last_block(blocks: list) -> list | None:
    """A copy of ``blocks`` with the last markable block marked; ``None`` when there is
    none, or it is marked already."""
    for index in range(len(blocks) - 1, -1, -1):
        block = blocks[index]
        if not isinstance(block, dict) or block.get("type") in _UNMARKABLE:
            continue
        if block.get("type") == "text" and not block.get("text"):
            continue  # Anthropic refuses cache_control on an empty text block
        if "cache_control" in block:
            return None
        marked = list(blocks)
        marked[index] = {**block, "cache_control": dict(EPHEMERAL)}
        return marked
    return None


def _as_blocks(content) -> list | None:
    """Message or system content as a list of blocks (a string becomes one text block)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else None
    return content if isinstance(content, list) and content else None


def with_breakpoints(body: dict, min_prefix_tokens: int) -> dict:
    """``body`` (an Anthropic Messages request) with cache breakpoints added (a copy), or
    ``body`` itself when none is due. See the module docstring for where and when."""
    budget = MAX_BREAKPOINTS - count_breakpoints(body)
    if budget <= 0:
        return body
    min_chars = min_prefix_tokens * 4
    tools = body.get("tools")
    tools = tools if isinstance(tools, list) and tools else None
    system_blocks = _as_blocks(body.get("system"))
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    tool_chars = _chars(tools) if tools else 0
    system_chars = tool_chars + (_chars(system_blocks) if system_blocks else 0)
    changes: dict = {}

    newest = _newest_user_index(messages)
    if newest is not None and newest > 0:
        previous = messages[newest - 1]
        blocks = _as_blocks(previous.get("content")) if isinstance(previous, dict) else None
        if blocks is not None and system_chars + _chars(messages[:newest]) >= min_chars:
            marked = _mark_last_block(blocks)
            if marked is not None:
                copied = list(messages)
                copied[newest - 1] = {**previous, "content": marked}
                changes["messages"] = copied
                budget -= 1
    if budget > 0 and system_blocks is not None and system_chars >= min_chars:
        marked = _mark_last_block(system_blocks)
        if marked is not None:
            changes["system"] = marked
            budget -= 1
    if budget > 0 and tools is not None and tool_chars >= min_chars:
        last = tools[-1]
        if isinstance(last, dict) and "cache_control" not in last:
            changes["tools"] = [*tools[:-1], {**last, "cache_control": dict(EPHEMERAL)}]
    return {**body, **changes} if changes else body
