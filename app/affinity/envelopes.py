"""Harness envelopes: text an agent harness writes into user messages (SPEC §16, §18).

Coding agents put their own material into the user's turn: Claude Code wraps context and
hook output in ``<system-reminder>`` / ``<user-prompt-submit-hook>`` tags; Codex sends its
``<environment_context>``, ``<user_instructions>`` and each AGENTS.md file (``# AGENTS.md
instructions for <dir>`` followed by ``<INSTRUCTIONS>…</INSTRUCTIONS>``) as user items of
their own. None of it is what the user said, and it repeats identically across every
conversation in one workspace, so:

* turn detection (:mod:`app.affinity.turns`) does not count an envelope-only user message
  as the user speaking,
* implicit session ids (:mod:`app.affinity.implicit`) skip envelope-only user messages when
  they pick the first one, and hash the first one without its envelopes,
* the routers (:mod:`app.router`) see user text with the envelopes stripped.

Pure string functions; no shape knowledge (the readers in :mod:`app.affinity.shapes` and
:mod:`app.router.base` hand over text).
"""

from __future__ import annotations

#: Harness-written envelopes (opening, closing): text from an opening to its closing is not
#: the user's. Codex's AGENTS.md envelope opens with a Markdown heading naming the directory
#: and closes with its ``</INSTRUCTIONS>`` tag.
INJECTED_ENVELOPES = (("<system-reminder>", "</system-reminder>"),
                      ("<user-prompt-submit-hook>", "</user-prompt-submit-hook>"),
                      ("<environment_context>", "</environment_context>"),
                      ("<user_instructions>", "</user_instructions>"),
                      ("# AGENTS.md instructions for ", "</INSTRUCTIONS>"))


def strip_envelopes(text: str) -> str:
    """``text`` without any injected envelope; an unterminated opening tag swallows the rest
    (a truncated envelope is still harness output)."""
    for opening, closing in INJECTED_ENVELOPES:
        start = text.find(opening)
        while start != -1:
            end = text.find(closing, start + len(opening))
            end = len(text) if end == -1 else end + len(closing)
            text = text[:start] + text[end:]
            start = text.find(opening, start)
    return text


def user_text(text: str) -> str:
    """What the user said in ``text``: envelopes stripped, surrounding blank space
    removed (``""``: the text was only envelopes)."""
    return strip_envelopes(text).strip()
