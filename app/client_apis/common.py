"""Small helpers the client-API adapters share (JSON bytes, data URLs, SSE frames)."""

from __future__ import annotations

import json
import re

_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+);base64,(.*)$", re.DOTALL)


def dumps(value) -> bytes:
    """Compact UTF-8 JSON bytes (lone surrogates kept as ``\\u`` escapes)."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":")).encode("ascii")


def named_event(name: str, payload: dict) -> bytes:
    """One ``event: <name>`` SSE frame with a JSON payload (Messages and Responses)."""
    return b"event: " + name.encode() + b"\ndata: " + dumps(payload) + b"\n\n"


def parse_data_url(url: str) -> tuple[str, str] | None:
    """``(media_type, base64 data)`` of a ``data:...;base64,`` URL, else ``None``."""
    match = _DATA_URL.match(url)
    return (match.group(1), match.group(2)) if match else None
