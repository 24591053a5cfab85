"""Forward a decided request to its provider and shape the answer (SPEC §4 steps 5-6).

Non-streaming answers are read whole (bounded by the listener timeout) and re-emitted with
``model`` set to the configured name (and ``x_plano_pinned`` when pinned). Streaming answers
are relayed event by event as they arrive, never buffered whole; each chunk's ``model`` is
rewritten, and every other field of an event (``id``, ``retry``, ``event``, comments) is
kept. The upstream response is released exactly once in every case: at the end of the
stream, when the WSGI server closes the answer (a client disconnect included), and when the
answer is discarded before it was ever iterated (:meth:`UpstreamStream.close`).

Only a reviewed allow-list of upstream headers reaches the client (rate limits, retry
hints, the provider's request id): never the provider's account identity
(``openai-organization``, ``openai-project``, ...). Provider error messages are relayed with
key-like strings scrubbed (:func:`app.providers.openai_compat.scrub_secrets`).
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Iterator, Mapping

import requests

from app.errors import UpstreamError
from app.metrics import Metrics
from app.providers.openai_compat import ProviderClient, upstream_error_body
from app.providers.sse import (
    ServerSentEvent,
    SSEDecoder,
    encode_data,
    encode_event,
    simple_data_events,
)
from app.tracing import ATTR_STREAM, ClientSpan, Tracing

log = logging.getLogger(__name__)

#: The upstream headers a client may see (lower case): when to come back, and the provider's
#: request id for support tickets. Reviewed one by one; anything else (account and project
#: identity, processing details, cookies) stays with the gateway.
RELAYED_HEADERS = frozenset({
    "retry-after", "retry-after-ms",
    "x-ratelimit-limit-requests", "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests", "x-ratelimit-reset-tokens",
    "x-request-id",
})
#: The gateway answers with its own ``x-request-id``; the provider's is passed on as this.
UPSTREAM_REQUEST_ID_HEADER = "x-upstream-request-id"


@dataclass(slots=True)
class Answer:
    """What to send the client: status, headers and a body (bytes or a chunk iterator)."""

    status: int
    headers: dict
    body: bytes | Iterable[bytes]
    mimetype: str = "application/json"
    #: How long the provider call took; for a stream, set when the stream has ended.
    upstream_seconds: float | None = None
    #: A stream's upstream failure, once it broke off (told to the client in-band).
    failure: UpstreamError | None = None
    #: The call's usage observer (:class:`app.usage.meter.UsageMeter`, SPEC §19), if any.
    meter: object = None


def _dumps(value) -> bytes:
    """Compact JSON bytes. Text stays UTF-8; a lone surrogate (valid JSON ``"\\ud800"``, but
    not encodable as UTF-8) is kept as the same ``\\u`` escape the client sent."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":")).encode("ascii")


def rewrite_completion(body: bytes, model_name: str, pinned: bool) -> bytes | None:
    """The completion JSON with ``model`` set to ``model_name`` (and the pinned marker).

    ``None`` when ``body`` is not a JSON object (the caller reports a bad upstream answer).
    A body that ends with ``}`` and has its ``model`` member where
    :func:`set_top_level_model_bytes` proves it to be is rewritten in bytes, the marker
    appended before the closing brace: no decode and encode of the whole answer, and the
    provider's own bytes (formatting, escapes) are kept. Anything else is parsed.
    """
    trimmed = body.rstrip()
    if trimmed.endswith(b"}") and b'"x_plano_pinned"' not in trimmed:
        rewritten = set_top_level_model_bytes(trimmed, model_json_bytes(model_name))
        if rewritten is not None:
            return rewritten[:-1] + b',"x_plano_pinned":true}' if pinned else rewritten
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    if not isinstance(parsed, dict):
        return None
    parsed["model"] = model_name
    if pinned:
        parsed["x_plano_pinned"] = True
    return _dumps(parsed)


@functools.lru_cache(maxsize=1024)
def model_json_bytes(model_name: str) -> bytes:
    """``model_name`` as a JSON string, UTF-8 (one per configured model, kept)."""
    return _dumps(model_name)


_MODEL_MEMBER = re.compile(r'"model"\s*:\s*"(?:[^"\\]|\\.)*"')
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def set_top_level_model(text: str, model_json: str) -> str | None:
    """``text`` (a JSON object) with its top-level ``"model"`` string set, at the text level.

    ``model_json`` is the new value already JSON-encoded. The first ``"model": "..."`` member
    is used only if it sits at depth 1 (strings removed, the opening brackets before it
    outnumber the closing ones by exactly one); otherwise ``None`` and the caller parses.
    A stream has one such chunk per token, so this saves a JSON decode and encode each.
    """
    match = _MODEL_MEMBER.search(text)
    if match is None or not text.startswith("{"):
        return None
    prefix = _JSON_STRING.sub("", text[:match.start()])
    if '"' in prefix:  # the match began inside a string (after an escaped quote)
        return None
    depth = prefix.count("{") + prefix.count("[") - prefix.count("}") - prefix.count("]")
    if depth != 1:
        return None
    return f'{text[:match.start()]}"model":{model_json}{text[match.end():]}'


_MODEL_MEMBER_BYTES = re.compile(rb'"model"\s*:\s*"(?:[^"\\]|\\.)*"')
_JSON_STRING_BYTES = re.compile(rb'"(?:[^"\\]|\\.)*"')


def set_top_level_model_bytes(data: bytes, model_json: bytes) -> bytes | None:
    """:func:`set_top_level_model` on UTF-8 bytes, for the stream fast path."""
    rewritten, _ = _set_model_bytes(data, model_json)
    return rewritten


def _set_model_bytes(data: bytes, model_json: bytes) -> tuple[bytes | None, int]:
    """The rewritten data, and the length of its *head* (up to the model value's closing
    quote) when that head alone proves where the member is, else 0.

    Compact chunks (``{"id":"...","object":"chat.completion.chunk","created":1,"model":...``)
    take a shortcut: when the text before ``"model":"`` has no backslash, no bracket and no
    brace but the opening one, and an even number of quotes, the member is at depth 1 and
    outside any string, and its value ends at the next quote. Anything else uses the regexes.
    """
    start = data.find(b'"model":"')
    if start > 0 and data[0] == 0x7B:  # "{"
        prefix = data[:start]
        if (prefix.count(b"{") == 1 and prefix.count(b'"') % 2 == 0 and b"\\" not in prefix
                and b"[" not in prefix and b"}" not in prefix and b"]" not in prefix):
            end = data.find(b'"', start + 9)
            if end > 0 and data[end - 1] != 0x5C:  # not an escaped quote: the value ends
                return b"".join((prefix, b'"model":', model_json, data[end + 1:])), end + 1
    match = _MODEL_MEMBER_BYTES.search(data)
    if match is None or not data.startswith(b"{"):
        return None, 0
    start = match.start()
    prefix = _JSON_STRING_BYTES.sub(b"", data[:start])
    if b'"' in prefix:
        return None, 0
    depth = prefix.count(b"{") + prefix.count(b"[") - prefix.count(b"}") - prefix.count(b"]")
    if depth != 1:
        return None, 0
    return b"".join((data[:start], b'"model":', model_json, data[match.end():])), 0


class ChunkRewriter:
    """Rewrites ``model`` in the reads of one stream that hold only one-line data events,
    in bytes, without the decoder (:meth:`rewrite` answers ``None`` for anything else).

    The chunks of one stream repeat the same head (``{"id":"chatcmpl-1","object":...,
    "created":...,"model":"gpt-4o-mini"``); once one head has been checked, a chunk that
    starts with exactly those bytes has its member in the same place, so it is rewritten by
    swapping the head, with no search at all.
    """

    __slots__ = ("_model_json", "_head", "_new_head")

    def __init__(self, model_json: bytes):
        self._model_json = model_json
        self._head = b"\0"  # matches no chunk (data starts with "{")
        self._new_head = b""

    def rewrite(self, chunk: bytes) -> bytes | None:
        """``chunk`` with every event's model rewritten, or ``None``: use the decoder."""
        if not chunk.startswith(b"data: ") or not chunk.endswith(b"\n\n") or b"\r" in chunk:
            return None
        if chunk.find(b"\n", 6) == len(chunk) - 2:  # one event: the usual read
            data = self._data(chunk[6:-2])
            return None if data is None else b"data: " + data + b"\n\n"
        datas = simple_data_events(chunk)
        if datas is None:
            return None
        out = []
        for data in datas:
            data = self._data(data)
            if data is None:
                return None
            out.append(b"data: " + data + b"\n\n")
        return b"".join(out)

    def _data(self, data: bytes) -> bytes | None:
        head = self._head
        if data.startswith(head):
            return self._new_head + data[len(head):]
        if data == b"[DONE]":
            return data
        rewritten, head_length = _set_model_bytes(data, self._model_json)
        if head_length:
            self._head = data[:head_length]
            self._new_head = rewritten[:len(rewritten) - (len(data) - head_length)]
        return rewritten


def rewrite_simple_events(chunk: bytes, model_json: bytes) -> bytes | None:
    """``chunk`` rewritten without decoding it, when it is only one-line data events whose
    ``model`` sits where :func:`set_top_level_model_bytes` finds it (or ``[DONE]``);
    ``None``: use the decoder. Same output as decoding and :func:`rewrite_chunk`."""
    return ChunkRewriter(model_json).rewrite(chunk)


def rewrite_chunk(event: ServerSentEvent, model_name: str,
                  model_json: str | None = None) -> bytes:
    """One SSE event re-encoded with its JSON ``model`` rewritten.

    Named events (``event:``), comments and ``[DONE]`` pass as they are; ``id`` and
    ``retry`` are kept alongside the rewritten data.
    """
    data = event.data
    if data is None or event.is_done or event.event is not None or event.comments:
        return encode_event(event)
    rewritten = _rewrite_data(data, model_name, model_json)
    if event.id is None and event.retry is None:
        return encode_data(rewritten)
    return encode_event(replace(event, data=rewritten))


def _rewrite_data(data: str, model_name: str, model_json: str | None) -> str:
    """A chunk's data with its top-level ``model`` set (unchanged when it has none)."""
    fast = set_top_level_model(data, model_json or json.dumps(model_name))
    if fast is not None:
        return fast
    try:
        chunk = json.loads(data)
    except ValueError:
        return data
    if isinstance(chunk, dict) and "model" in chunk:
        chunk["model"] = model_name
        return _dumps(chunk).decode("utf-8")
    return data


def relayed_headers(upstream: Mapping[str, str]) -> dict:
    """The upstream headers a client may use (rate limits, request ids).

    The provider's ``x-request-id`` becomes ``x-upstream-request-id``: ``x-request-id`` is
    the gateway's own (the one in its log line).
    """
    relayed = {}
    for name, value in upstream.items():
        lowered = name.lower()
        if lowered in RELAYED_HEADERS:
            relayed[UPSTREAM_REQUEST_ID_HEADER if lowered == "x-request-id" else name] = value
    return relayed


class Relay:
    """Sends bodies to providers and turns their answers into :class:`Answer` objects.

    With ``tracing``, each provider call is a ``chat <model id>`` client span (ended with
    the stream for a stream) whose W3C ``traceparent`` goes to the provider.
    """

    def __init__(self, clients: Mapping[str, ProviderClient], metrics: Metrics | None = None,
                 tracing: Tracing | None = None,
                 span_specs: Mapping[str, tuple[str, dict]] | None = None):
        self._clients = clients
        self._metrics = metrics or Metrics()
        self._tracing = tracing
        # Span name and static attributes per provider and streaming flag, computed once.
        self._span_specs = {(provider, stream): (name, {**attributes, ATTR_STREAM: stream})
                            for provider, (name, attributes) in (span_specs or {}).items()
                            for stream in (False, True)}

    @property
    def clients(self) -> Mapping[str, ProviderClient]:
        """Provider clients by configured name (shared with :class:`app.api_relay.ApiRelay`)."""
        return self._clients

    @property
    def metrics(self) -> Metrics:
        """Where provider call durations are counted."""
        return self._metrics

    @property
    def tracing(self) -> Tracing | None:
        """Tracing, or ``None`` when off."""
        return self._tracing

    def forward(self, provider_name: str, body: dict, *, stream: bool, pinned: bool,
                headers: Mapping[str, str] | None = None,
                read_timeout: float | None = None, meter=None) -> Answer:
        """Send ``body`` (its ``model`` already the provider's id) and shape the answer.

        ``meter``: the call's usage observer (:mod:`app.usage.meter`), fed the answer.

        ``read_timeout`` (default: the client's, the listener timeout) bounds the wait for
        the answer's head and, without a stream, the whole answer: what an attempt chain
        has left of the listener timeout (:mod:`app.failover`).

        Raises :class:`UpstreamError` (502/504) when the provider cannot be reached or does
        not answer in time; an HTTP error status from the provider is an :class:`Answer`.
        """
        span = None
        if self._tracing is not None:
            span = self.start_span(provider_name, stream, headers)
            headers = span.headers
        try:
            return self._forward(provider_name, body, stream, pinned, headers, span,
                                 read_timeout, meter)
        except UpstreamError as error:
            if span is not None:
                span.end(error=error)
            raise

    def _forward(self, provider_name: str, body: dict, stream: bool, pinned: bool,
                 headers: Mapping[str, str] | None, span: ClientSpan | None,
                 read_timeout: float | None, meter=None) -> Answer:
        client = self._clients[provider_name]
        started = time.perf_counter()
        deadline = time.monotonic() + (read_timeout or client.read_timeout_seconds)
        response = client.post(_dumps(body), headers=headers,
                               read_timeout_seconds=read_timeout)
        content_type = response.headers.get("Content-Type", "")
        extra = relayed_headers(response.headers)
        if stream and response.status_code < 400 and content_type.startswith(
                "text/event-stream"):
            answer = Answer(response.status_code, extra, (), "text/event-stream", meter=meter)
            answer.body = UpstreamStream(self._metrics, client, response, provider_name,
                                         started, answer, span, meter)
            return answer
        return self.whole_answer(
            client, response, provider_name, started=started, deadline=deadline,
            extra=extra, span=span, meter=meter,
            shape_error=lambda status, raw: _dumps(upstream_error_body(status, raw,
                                                                       client.secrets)),
            shape_reply=lambda raw: rewrite_completion(raw, provider_name, pinned))

    def whole_answer(self, client: ProviderClient, response: requests.Response,
                     provider_name: str, *, started: float, deadline: float, extra: dict,
                     span: ClientSpan | None, shape_error: Callable[[int, bytes], bytes],
                     shape_reply: Callable[[bytes], bytes | None], meter=None) -> Answer:
        """Read a non-streamed answer to the end (by ``deadline``), record its duration and
        end its span; the body is ``shape_error(status, raw)`` for an HTTP error status,
        else ``shape_reply(raw)``, whose ``None`` (not a JSON object) is an
        :class:`UpstreamError`. Shared by this relay and :class:`app.api_relay.ApiRelay`."""
        try:
            raw = client.read_body(response, deadline)
        finally:
            seconds = time.perf_counter() - started
            self._metrics.upstream_finished(provider_name, seconds)
        if response.status_code >= 400:
            body = shape_error(response.status_code, raw)
        else:
            body = shape_reply(raw)
            if body is None:
                raise UpstreamError(f"provider {provider_name} answered with a body that is "
                                    "not a JSON object")
            if meter is not None:  # usage accounting (SPEC §19): read from the raw answer
                meter.answer(raw)
                meter.finish(span)
        if span is not None:
            span.end(response.status_code)
        return Answer(response.status_code, extra, body, upstream_seconds=seconds, meter=meter)

    def start_span(self, provider_name: str, stream: bool,
                   headers: Mapping[str, str] | None) -> ClientSpan:
        """The provider call's client span (tracing on); its ``headers`` go upstream."""
        name, attributes = (self._span_specs.get((provider_name, stream)) or
                            (f"chat {provider_name}", {ATTR_STREAM: stream}))
        return self._tracing.client_span(name, attributes, headers)


class UpstreamStream:
    """The body of a streamed answer: relays the upstream's events, then releases it.

    Releasing (closing the upstream response, recording its duration, ending the client
    span) happens exactly once: when the last event is relayed or the stream breaks, or in
    :meth:`close`, which the WSGI server calls when it is done with the answer (a client
    disconnect included) and the request teardown calls when the answer was discarded
    before anyone iterated it (a generator's ``finally`` would then never run).
    """

    def __init__(self, metrics: Metrics, client: ProviderClient, response: requests.Response,
                 model_name: str, started: float, answer: Answer, span: ClientSpan | None,
                 meter=None):
        self._metrics = metrics
        self._client = client
        self._response = response
        self._model_name = model_name
        self._started = started
        self._answer = answer
        self._span = span
        self._meter = meter  # usage accounting (SPEC §19), or None
        self._failure: UpstreamError | None = None
        self._released = False
        self._events = self._relay()

    def __iter__(self) -> Iterator[bytes]:
        return self._events

    def close(self) -> None:
        """Stop relaying and release the upstream (idempotent)."""
        self._events.close()
        self._release()

    def _relay(self) -> Iterator[bytes]:
        model_name = self._model_name
        decoder = SSEDecoder()
        model_json = json.dumps(model_name)
        fast = ChunkRewriter(model_json.encode())
        meter = self._meter
        try:
            for raw in self._client.iter_raw(self._response):
                if meter is not None:  # usage accounting (SPEC §19)
                    meter.feed(raw)
                # Everything one upstream read completed goes out in one write: no event
                # waits for a later one, and a burst costs one send, not one per token.
                # The common read (whole one-line data events) is rewritten in bytes.
                out = fast.rewrite(raw) if decoder.idle else None
                if out is None:
                    out = b"".join(rewrite_chunk(event, model_name, model_json)
                                   for event in decoder.feed(raw))
                if out and meter is not None:  # drops the usage chunk the client did not ask for
                    out = meter.outgoing(out)
                if out:
                    yield out
            tail = b"".join(rewrite_chunk(event, model_name, model_json)
                            for event in decoder.flush())
            if tail and meter is not None:
                tail = meter.outgoing(tail)
            if tail:
                yield tail
        except UpstreamError as error:
            # Headers are gone already: tell the client in-band, as OpenAI does.
            self._failure = self._answer.failure = error
            log.warning("stream from %s broke off: %s", model_name, error,
                        extra={"event": "stream_error", "cause": str(error)})
            envelope = {"error": {"message": error.message, "type": error.error_type,
                                  "param": None, "code": error.code}}
            yield b"data: " + _dumps(envelope) + b"\n\n"
        finally:
            self._release()

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        self._response.close()
        self._answer.upstream_seconds = time.perf_counter() - self._started
        self._metrics.upstream_finished(self._model_name, self._answer.upstream_seconds)
        if self._meter is not None:  # usage accounting (SPEC §19): record what was read
            self._meter.finish(self._span)
        if self._span is not None:
            self._span.end(self._response.status_code, self._failure)
