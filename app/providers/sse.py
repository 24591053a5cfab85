"""Server-sent events: a pure incremental decoder and an encoder (no I/O).

The decoder takes bytes exactly as the network delivers them (a frame may be split anywhere,
even inside a ``\\r\\n`` or a UTF-8 sequence) and yields complete events. It follows the
WHATWG event-stream rules that matter for LLM streams: ``\\n``, ``\\r`` and ``\\r\\n`` line
ends, ``field: value`` with one optional space, several ``data`` lines joined by ``\\n``,
comment lines (``:``) kept so keep-alive pings can be relayed, and an event dispatched at a
blank line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

DONE = "[DONE]"


@dataclass(slots=True)
class ServerSentEvent:
    """One decoded event; ``data`` is ``None`` for an event without data lines."""

    data: str | None = None
    event: str | None = None
    id: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def is_done(self) -> bool:
        """The OpenAI end-of-stream sentinel ``data: [DONE]``."""
        return self.data == DONE


class SSEDecoder:
    """Incremental decoder: ``feed(chunk)`` yields every event the chunk completes."""

    def __init__(self) -> None:
        self._buffer = b""
        self._pending_cr = False
        self._event = ServerSentEvent()
        self._data_lines: list[str] = []
        self._has_fields = False

    @property
    def idle(self) -> bool:
        """Between events: nothing buffered, no event half-read (a read may be handled
        without the decoder, see :func:`simple_data_events`)."""
        return not self._buffer and not self._pending_cr and not self._has_fields

    def feed(self, chunk: bytes) -> Iterator[ServerSentEvent]:
        """Decode ``chunk``; yield events completed by it (partial lines are kept)."""
        if self._pending_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]  # the \n of a \r\n split across chunks
        self._pending_cr = False
        buffer = self._buffer + chunk
        start = 0
        length = len(buffer)
        while start < length:
            newline = buffer.find(b"\n", start)
            carriage = buffer.find(b"\r", start, newline if newline >= 0 else length)
            if carriage >= 0:
                end, next_start = carriage, carriage + 1
                if next_start < length and buffer[next_start:next_start + 1] == b"\n":
                    next_start += 1
                elif next_start == length:
                    self._pending_cr = True
            elif newline >= 0:
                end, next_start = newline, newline + 1
            else:
                break
            event = self._line(buffer[start:end].decode("utf-8", errors="replace"))
            if event is not None:
                yield event
            start = next_start
        self._buffer = buffer[start:]

    def flush(self) -> Iterator[ServerSentEvent]:
        """End of stream: a final unterminated event is dispatched, per the spec's spirit."""
        if self._buffer:
            event = self._line(self._buffer.decode("utf-8", errors="replace"))
            self._buffer = b""
            if event is not None:
                yield event
        event = self._line("")
        if event is not None:
            yield event

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        self._has_fields = True
        if not name:
            self._event.comments.append(value)
        elif name == "data":
            self._data_lines.append(value)
        elif name == "event":
            self._event.event = value
        elif name == "id" and "\0" not in value:
            self._event.id = value
        elif name == "retry" and value.isdigit():
            self._event.retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._has_fields:
            return None
        event = self._event
        if self._data_lines:
            event.data = "\n".join(self._data_lines)
        self._event, self._data_lines, self._has_fields = ServerSentEvent(), [], False
        return event


def encode_event(event: ServerSentEvent) -> bytes:
    """Serialise ``event`` back to wire form, ending with the blank line."""
    lines = [f": {comment}" for comment in event.comments]
    if event.event is not None:
        lines.append(f"event: {event.event}")
    if event.id is not None:
        lines.append(f"id: {event.id}")
    if event.retry is not None:
        lines.append(f"retry: {event.retry}")
    if event.data is not None:
        lines.extend(f"data: {line}" for line in event.data.split("\n"))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def encode_data(data: str) -> bytes:
    """The common case, ``data: <data>\\n\\n``, without building an event object."""
    if "\n" not in data:
        return b"data: " + data.encode("utf-8") + b"\n\n"
    return encode_event(ServerSentEvent(data=data))


def simple_data_events(chunk: bytes) -> list[bytes] | None:
    """The data of each event when ``chunk`` is only whole one-line ``data: ...`` events.

    An LLM stream is almost only such events, one or a few per network read; they are
    recognised here without decoding, in bytes. Anything else (several fields or lines,
    other fields, comments, ``\\r`` line ends, an event cut by the read) gives ``None``
    and goes through :class:`SSEDecoder`. Only valid between events (``SSEDecoder.idle``).
    """
    if not chunk.endswith(b"\n\n") or not chunk.startswith(b"data: ") or b"\r" in chunk:
        return None
    blocks = chunk[:-2].split(b"\n\n")
    datas = []
    for block in blocks:
        if not block.startswith(b"data: ") or b"\n" in block:
            return None
        datas.append(block[6:])
    return datas
