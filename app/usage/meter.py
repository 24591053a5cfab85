"""The per-call observer the relay feeds (SPEC §19): usage in, one record out.

A :class:`UsageMeter` belongs to one provider call. The relay hands it the upstream's raw
stream reads (:meth:`feed`), or the whole JSON answer (:meth:`answer`), passes what it
relays to the client through :meth:`outgoing` (which removes the usage-only chat chunk the
gateway asked for on the client's behalf) and calls :meth:`finish` once, when the call is
released, before the client span ends. The relay never looks inside.
"""

from __future__ import annotations

from app.usage.recorder import UsageRecord, UsageRecorder
from app.usage.tokens import StreamUsageReader, Usage, drop_usage_chunks, usage_from_bytes


class UsageMeter:
    """Reads one call's usage and records it once."""

    __slots__ = ("_recorder", "_model", "_api", "_reader", "_strip", "_usage", "record",
                 "_finished", "feed")

    def __init__(self, recorder: UsageRecorder, model_name: str, upstream_api: str,
                 strip_usage_chunk: bool = False, stream: bool = True):
        """``upstream_api``: ``chat``, ``responses`` or ``messages`` (what was sent);
        ``strip_usage_chunk``: the client of a chat stream did not ask for usage;
        ``stream``: the call asked for a stream (else only :meth:`answer` is called, and
        no stream reader is made)."""
        self._recorder = recorder
        self._model = model_name
        self._api = upstream_api
        self._reader = StreamUsageReader(upstream_api) if stream else None
        #: One upstream stream read (the reader's own ``feed``: no extra call per chunk).
        self.feed = self._reader.feed if stream else None
        self._strip = strip_usage_chunk
        self._usage: Usage | None = None
        self.record: UsageRecord | None = None
        self._finished = False

    @property
    def strips(self) -> bool:
        """Whether :meth:`outgoing` may remove anything (the relay skips it otherwise)."""
        return self._strip

    def outgoing(self, out: bytes) -> bytes:
        """What to relay for ``out`` (a chat stream's whole events, those the last
        :meth:`feed` completed, or the stream's tail): only a read that completed a usage
        object is searched for the usage-only chunk."""
        reader = self._reader
        if not self._strip or not (reader.found or reader.partial):
            return out
        return drop_usage_chunks(out)

    def answer(self, raw: bytes) -> None:
        """A whole (successful) JSON answer."""
        self._usage = usage_from_bytes(self._api, raw)
        self._reader = None

    def finish(self, span=None) -> UsageRecord | None:
        """Record the usage read (once); its attributes go on ``span`` when given."""
        if self._finished:
            return self.record
        self._finished = True
        usage = self._reader.result() if self._reader is not None else self._usage
        if usage is None:
            return None
        self.record = self._recorder.observe(self._model, usage)
        if span is not None:
            span.set_attributes(self.record.span_attributes())
        return self.record
