"""Usage from upstream answers, as each provider reports it (SPEC §19). Pure, no I/O.

:class:`Usage` counts four kinds of tokens, the same way for every provider:

* ``input``: prompt tokens billed at the full input price, i.e. *excluding* cache reads
  and cache writes (Anthropic's ``input_tokens``; OpenAI's ``prompt_tokens -
  cached_tokens``);
* ``cache_read``: prompt tokens served from the provider's prompt cache (OpenAI
  ``prompt_tokens_details.cached_tokens``, Responses ``input_tokens_details.cached_tokens``,
  Anthropic ``cache_read_input_tokens``, DeepSeek ``prompt_cache_hit_tokens``);
* ``cache_write``: prompt tokens written to the cache (Anthropic
  ``cache_creation_input_tokens``; OpenAI does not bill or report writes);
* ``output``: completion tokens.

So ``input + cache_read + cache_write`` is the whole prompt for every provider.

Upstream APIs are named by what the gateway sent: ``chat`` (Chat Completions),
``responses`` (OpenAI Responses), ``messages`` (Anthropic Messages).

:class:`StreamUsageReader` is fed the upstream's raw SSE bytes as they arrive and only
decodes the data lines that hold a ``"usage": {`` object (a chat usage chunk, Anthropic's
``message_start`` and ``message_delta``, Responses' ``response.completed``): every other
event costs a substring search.
"""

from __future__ import annotations

import json
import re
from typing import NamedTuple

CHAT = "chat"
RESPONSES = "responses"
MESSAGES = "messages"

#: A JSON member ``"usage": {`` (an object, not the ``null`` of ordinary chat chunks).
USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
#: Decodes one JSON value where it starts (the usage object cut out of a whole answer).
_DECODER = json.JSONDecoder()
#: A partial line longer than this is not an event we read (bounded memory).
_MAX_PENDING = 1 << 20


class Usage(NamedTuple):
    """Tokens of one answer by kind (see the module docstring for what each counts). A
    named tuple: made once per answer on the request path, where a frozen dataclass's
    constructor costs several times as much."""

    input: int = 0
    cache_read: int = 0
    cache_write: int = 0
    output: int = 0

    @property
    def prompt(self) -> int:
        """Every prompt token: uncached input, cache reads and cache writes."""
        return self.input + self.cache_read + self.cache_write


def _int(value) -> int:
    """A token count: a positive JSON integer, else 0 (``type`` is exact: ``True`` is not 1)."""
    return value if type(value) is int and value > 0 else 0


def _details(usage: dict, name: str) -> dict:
    details = usage.get(name)
    return details if isinstance(details, dict) else {}


def from_usage_object(api: str, usage) -> Usage | None:
    """The :class:`Usage` of a provider's ``usage`` object for upstream API ``api``;
    ``None`` when it is not an object."""
    if not isinstance(usage, dict):
        return None
    if api == MESSAGES:
        return Usage(_int(usage.get("input_tokens")), _int(usage.get("cache_read_input_tokens")),
                     _int(usage.get("cache_creation_input_tokens")),
                     _int(usage.get("output_tokens")))
    if api == RESPONSES:
        prompt = _int(usage.get("input_tokens"))
        cached = min(_int(_details(usage, "input_tokens_details").get("cached_tokens")), prompt)
        return Usage(prompt - cached, cached, 0, _int(usage.get("output_tokens")))
    prompt = _int(usage.get("prompt_tokens"))
    cached = (_int(_details(usage, "prompt_tokens_details").get("cached_tokens"))
              or _int(usage.get("prompt_cache_hit_tokens")))
    cached = min(cached, prompt)
    return Usage(prompt - cached, cached, 0, _int(usage.get("completion_tokens")))


def usage_from_answer(api: str, answer) -> Usage | None:
    """The usage of a parsed JSON answer of upstream API ``api`` (``None``: none reported)."""
    if not isinstance(answer, dict):
        return None
    return from_usage_object(api, answer.get("usage"))


def usage_from_bytes(api: str, raw: bytes) -> Usage | None:
    """The usage of a whole JSON answer in bytes. Only its ``usage`` object is decoded when
    it can be found safely (the last ``"usage": {`` member outside a string), which costs a
    third of parsing even a small answer whole; otherwise the whole answer is parsed."""
    if b'"usage"' not in raw:
        return None  # no usage member anywhere: nothing to parse the answer for
    start = _usage_object_start(raw)
    if start is not None:
        try:  # the tail from the object's brace, decoded up to the object's end only
            return from_usage_object(api, _DECODER.raw_decode(raw[start:].decode())[0])
        except (ValueError, RecursionError):
            pass
    try:
        return usage_from_answer(api, json.loads(raw))
    except (ValueError, RecursionError):
        return None


def _usage_object_start(raw: bytes) -> int | None:
    """Where the last ``"usage": {...}`` object of ``raw`` begins (its brace), or ``None``
    when that member is inside a string (its quote is escaped) or there is none.

    Every provider writes the answer's own ``usage`` after its content (the choices, the
    output, the content blocks), and any text holding ``"usage"`` is a string with escaped
    quotes, so the last such member is the answer's.
    """
    position = raw.rfind(b'"usage"')
    while position >= 0:
        match = USAGE_OBJECT.match(raw, position)
        if match is not None:
            if position > 0 and raw[position - 1] == 0x5C:  # \"usage\": inside a string
                return None
            return match.end() - 1
        position = raw.rfind(b'"usage"', 0, position)
    return None


class StreamUsageReader:
    """Reads the usage of one upstream SSE stream from its raw bytes, incrementally.

    Lines are cut at ``\\n`` (a partial line waits for the next read); only ``data:`` lines
    that contain a ``"usage": {`` object are decoded. Chat: the usage chunk (asked for
    with ``stream_options.include_usage``); Anthropic: ``message_start``'s
    ``message.usage`` updated by ``message_delta``'s cumulative ``usage``; Responses: the
    ``response.completed`` / ``response.incomplete`` / ``response.failed`` snapshot.
    """

    __slots__ = ("_api", "_pending", "_fields", "found")

    def __init__(self, api: str):
        self._api = api
        self._pending = b""
        self._fields: dict | None = None
        #: Whether the last read completed an event with a usage object.
        self.found = False

    def feed(self, raw: bytes) -> None:
        """Take one upstream read."""
        self.found = False
        if not self._pending and raw.endswith(b"\n") and b'"usage"' not in raw:
            return  # the common read: whole events, none with usage
        data = self._pending + raw if self._pending else raw
        end = data.rfind(b"\n")
        if end < 0:
            self._pending = data if len(data) <= _MAX_PENDING else b""
            return
        self._pending = data[end + 1:]
        if len(self._pending) > _MAX_PENDING:
            self._pending = b""
        if USAGE_OBJECT.search(data, 0, end) is None:
            return
        self.found = True
        for line in data[:end].split(b"\n"):
            if line.startswith(b"data:") and USAGE_OBJECT.search(line):
                self._event(line[5:].strip())

    def _event(self, payload: bytes) -> None:
        try:
            event = json.loads(payload)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        if self._api == MESSAGES:
            holder = event.get("message") if event.get("type") == "message_start" else event
            usage = holder.get("usage") if isinstance(holder, dict) else None
            if isinstance(usage, dict):
                merged = dict(self._fields or {})
                merged.update({k: v for k, v in usage.items() if v is not None})
                self._fields = merged
            return
        if self._api == RESPONSES:
            response = event.get("response")
            usage = response.get("usage") if isinstance(response, dict) else None
        else:
            usage = event.get("usage")
        if isinstance(usage, dict):
            self._fields = usage

    @property
    def partial(self) -> bool:
        """Whether a line without its newline is waiting (a stream's unterminated tail)."""
        return bool(self._pending)

    def result(self) -> Usage | None:
        """The usage read so far (``None``: the stream reported none)."""
        if self._pending:
            pending, self._pending = self._pending, b""
            self.feed(pending + b"\n")
        return from_usage_object(self._api, self._fields) if self._fields is not None else None


def is_usage_only_chunk(payload: bytes) -> bool:
    """Whether a chat chunk's JSON is the usage-only one (``"choices": []`` with usage)."""
    try:
        chunk = json.loads(payload)
    except ValueError:
        return False
    return (isinstance(chunk, dict) and chunk.get("choices") == []
            and isinstance(chunk.get("usage"), dict))


def drop_usage_chunks(out: bytes) -> bytes:
    """``out`` (whole SSE events of a chat stream) without the usage-only chunk, for a
    client that did not ask for ``stream_options.include_usage``. Events without a
    ``"usage": {`` object pass untouched, without decoding."""
    if USAGE_OBJECT.search(out) is None:
        return out
    kept = []
    for event in out.split(b"\n\n"):
        if USAGE_OBJECT.search(event):
            data = [line[5:].strip() for line in event.split(b"\n")
                    if line.startswith(b"data:")]
            if len(data) == 1 and is_usage_only_chunk(data[0]):
                continue
        kept.append(event)
    return b"\n\n".join(kept)
