"""An upstream's HTTP error answer, whatever its shape, as (message, type, code).

OpenAI-style ``{"error": {"message", "type", "code"}}`` and Anthropic-style ``{"type":
"error", "error": {"type", "message"}}`` are both read; anything else is quoted, truncated,
as ``upstream_error``. Anything that looks like a key (or quotes the provider's) is
scrubbed, as on the chat path. The client API then renders it in its own shape.

A provider's context-length error, in whatever words (OpenAI's ``context_length_exceeded``,
Anthropic's ``prompt is too long``, Gemini's, xAI's, vLLM's ...), is recognised by
:func:`context_length_error` and told to each client API the way its agents react to it
(SPEC §18): Messages clients get Anthropic's own wording ``prompt is too long: N tokens > M
maximum`` (Claude Code compacts the conversation on it), Chat and Responses clients the
code ``context_length_exceeded`` (OpenAI's).
"""

from __future__ import annotations

import json
import re
from typing import Iterable

from app.providers.openai_compat import scrub_secrets

MAX_ERROR_BODY_CHARS = 500
CONTEXT_LENGTH_CODE = "context_length_exceeded"

#: Provider wordings that name the prompt's tokens (``n``) and the model's maximum (``m``),
#: in the order their numbers appear.
_CONTEXT_WORDINGS = (
    # Anthropic: "prompt is too long: 210000 tokens > 200000 maximum"
    (re.compile(r"prompt is too long: (\d+) tokens > (\d+) maximum", re.I), "nm"),
    # OpenAI: "This model's maximum context length is 128000 tokens. However, your messages
    # resulted in 130000 tokens"; DeepSeek and vLLM: "... However, you requested 70000 tokens"
    (re.compile(r"maximum context length is (\d+) tokens?\.? However, (?:your messages "
                r"resulted in|you requested) (\d+) tokens", re.I), "mn"),
    # Gemini: "The input token count (1200000) exceeds the maximum number of tokens allowed
    # (1048576)."
    (re.compile(r"input token count \(?(\d+)\)? exceeds the maximum number of tokens "
                r"allowed \(?(\d+)", re.I), "nm"),
    # xAI: "This model's maximum prompt length is 131072 but the request contains 150000
    # tokens."
    (re.compile(r"maximum prompt length is (\d+) but the request contains (\d+) tokens",
                re.I), "mn"),
    # vLLM (Mistral and others): "Prompt contains 40000 tokens ..., too large for model with
    # 32768 maximum context length"
    (re.compile(r"prompt contains (\d+) tokens.{0,80}?too large for model with (\d+) "
                r"maximum context length", re.I | re.S), "nm"),
)
#: Wordings that say so without both numbers (Groq, OpenAI's Responses API, others).
_CONTEXT_PHRASES = re.compile(r"context[_ ]length|context window|prompt is too long|"
                              r"maximum context|too many input tokens", re.I)


def parse_upstream_error(status: int, raw: bytes,
                         secrets: Iterable[str] = ()) -> tuple[str, str, str]:
    """``(message, type, code)`` for an upstream's error answer with ``status``; key-like
    strings and pieces of ``secrets`` are scrubbed from the message."""
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        error_type = str(error.get("type") or "upstream_error")
        code = error.get("code")
        return (scrub_secrets(error["message"], secrets), scrub_secrets(error_type, secrets),
                scrub_secrets(str(code), secrets) if code else f"upstream_{status}")
    text = raw.decode("utf-8", errors="replace").strip()
    if len(text) > MAX_ERROR_BODY_CHARS:
        text = text[:MAX_ERROR_BODY_CHARS] + "..."
    return (f"upstream answered HTTP {status}: {scrub_secrets(text, secrets)}",
            "upstream_error", f"upstream_{status}")


def context_length_error(api: str, status: int, message: str,
                         code: str | None) -> tuple[str, str, str] | None:
    """``(message, type, code)`` for client API ``api`` when an upstream error (already
    parsed and scrubbed) says the prompt exceeds the model's context, else ``None``.

    Messages: ``prompt is too long: N tokens > M maximum`` with the provider's numbers
    (without them: ``prompt is too long: <the provider's message>``); Chat and Responses:
    the provider's message with code ``context_length_exceeded``. Both are
    ``invalid_request_error`` (a 400 for the client to act on, not an upstream failure).
    Rate limits (429) and server errors never qualify, nor Anthropic's ``input length and
    max_tokens exceed context limit`` (Claude Code lowers ``max_tokens`` on that one)."""
    if not 400 <= status < 500 or status == 429:
        return None
    numbers = None
    for wording, order in _CONTEXT_WORDINGS:
        match = wording.search(message)
        if match is not None:
            found = dict(zip(order, match.groups(), strict=True))
            numbers = (int(found["n"]), int(found["m"]))
            break
    if numbers is None and code != CONTEXT_LENGTH_CODE and not _CONTEXT_PHRASES.search(
            message):
        return None
    if api != "messages":
        return message, "invalid_request_error", CONTEXT_LENGTH_CODE
    if numbers is not None:
        wording = f"prompt is too long: {numbers[0]} tokens > {numbers[1]} maximum"
    elif message.lower().startswith("prompt is too long"):
        wording = message
    else:
        wording = f"prompt is too long: {message}"
    return wording, "invalid_request_error", CONTEXT_LENGTH_CODE
