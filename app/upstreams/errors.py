"""An upstream's HTTP error answer, whatever its shape, as (message, type, code).

OpenAI-style ``{"error": {"message", "type", "code"}}`` and Anthropic-style ``{"type":
"error", "error": {"type", "message"}}`` are both read; anything else is quoted, truncated,
as ``upstream_error``. Anything that looks like a key (or quotes the provider's) is
scrubbed, as on the chat path. The client API then renders it in its own shape.
"""

from __future__ import annotations

import json
from typing import Iterable

from app.providers.openai_compat import scrub_secrets

MAX_ERROR_BODY_CHARS = 500


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
