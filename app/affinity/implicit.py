"""Implicit session ids: affinity without an ``X-Model-Affinity`` header (SPEC §16).

A conversation's head repeats verbatim in every request of it (history grows at the tail),
so a hash of the head names the conversation: the tenant, the requested model (its *lane*:
an agent's side requests on a small model are another session), the system prompt, the tool
names and the first user message that says something (harness envelopes stripped, and a
user message made only of them skipped: Codex opens every conversation of a workspace with
the same AGENTS.md and ``<environment_context>`` items, Claude Code with the same
``<system-reminder>`` blocks; :mod:`app.affinity.envelopes`). The id is ``prefix-`` and
the first 16 hex digits of the SHA-256 of those parts, encoded as one JSON array so that
no two different heads can be spelled alike. Only the hash leaves this module, never prompt content.

Two conversations that open with the same words under the same system prompt and tools share
an id (and, with ``routing.implicit_affinity``, a pin); clients that need them apart send
``X-Model-Affinity``, which always wins. A conversation without such a user message has no id.
"""

from __future__ import annotations

import hashlib
import json

from app.affinity.envelopes import strip_envelopes
from app.affinity.shapes import UserContent, system_text, tool_names, user_contents

IMPLICIT_ID_PREFIX = "prefix-"
#: Folded into every hash: bump it when the derivation changes, so old ids stop matching.
DERIVATION_VERSION = "plano-implicit-session-v2"
_HEX_DIGITS = 16


def implicit_session_id(body: dict, shape: str, *, tenant: str | None = None,
                        model: str | None = None) -> str | None:
    """The derived session id of the request (raw JSON body of the ``shape`` API), or
    ``None`` when it has no user message to anchor on. ``model`` is the requested model as
    the client sent it (``None`` when it sent none)."""
    first = first_said(body, shape)
    if first is None:
        return None
    head = [DERIVATION_VERSION, tenant or "", model or "", system_text(body, shape),
            list(tool_names(body, shape)), first.text, list(first.attachments)]
    # ensure_ascii (the default) keeps lone surrogates, which JSON allows, encodable.
    material = json.dumps(head, separators=(",", ":")).encode("ascii")
    return IMPLICIT_ID_PREFIX + hashlib.sha256(material).hexdigest()[:_HEX_DIGITS]


def first_said(body: dict, shape: str) -> UserContent | None:
    """The first user message that is more than harness envelopes, with its text stripped
    of them; ``None`` when there is none. Only a message whose text was envelopes and
    nothing else is skipped: one with blank text and no envelope stays the anchor, so
    appending messages never moves the anchor to a later one."""
    for content in user_contents(body, shape):
        text = content.text
        stripped = strip_envelopes(text)
        said = stripped.strip()
        if said or content.attachments or (text and stripped == text):
            return UserContent(said, content.attachments)
    return None
