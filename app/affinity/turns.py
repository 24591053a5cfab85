"""Turn detection for ``routing.route_on_user_only`` (SPEC §16, Plano's semantics).

An agent loop (Claude Code, Codex) sends many requests per user turn: the user's message,
then one request per tool round trip carrying the tool's output. A router that sees those
continuations judges the tool output (code, logs, diffs), not what the user asked, so it may
switch models in the middle of a turn. With turn-level routing the router runs only when a
request *starts a user turn*; continuations reuse the model the turn started on.

A request starts a user turn when its last message is a user message that says something:
text that is not only harness envelopes, or a non-text part the user supplied (a pasted
screenshot without a caption is still the user speaking). Not a user turn: a trailing tool
result (Chat ``role: tool``; an Anthropic user message holding only ``tool_result`` blocks;
a Responses ``function_call_output`` / ``custom_tool_call_output`` item), a trailing
assistant message or function call, and a user message made only of harness envelopes
(:mod:`app.affinity.envelopes`: Claude Code's ``<system-reminder>`` next to tool results,
Codex's ``<environment_context>`` and AGENTS.md items).
Anthropic user text sent alongside ``tool_result`` blocks is the user speaking: a new turn.
"""

from __future__ import annotations

from app.affinity.envelopes import INJECTED_ENVELOPES, strip_envelopes, user_text
from app.affinity.shapes import last_user_content

__all__ = ["INJECTED_ENVELOPES", "starts_user_turn", "strip_envelopes"]


def starts_user_turn(body: dict, shape: str) -> bool:
    """Whether the request (raw JSON body of the ``shape`` API) starts a user turn."""
    content = last_user_content(body, shape)
    if content is None:
        return False
    return bool(content.attachments) or bool(user_text(content.text))
