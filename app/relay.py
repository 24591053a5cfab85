"""Forward a decided request to its provider and shape the answer (SPEC §4 steps 5-6).

Non-streaming answers are read whole (bounded by the listener timeout) and re-emitted with
``model`` set to the configured name (and ``x_plano_pinned`` when pinned). Streaming answers
are relayed event by event as they arrive, never buffered whole; each chunk's ``model`` is
rewritten. The upstream response is closed in every case, a client disconnect included
(the WSGI server closes our generator, whose ``finally`` closes the upstream).
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping

import requests

from app.errors import UpstreamError
from app.metrics import Metrics
from app.providers.openai_compat import ProviderClient, upstream_error_body
from app.providers.sse import SSEDecoder, ServerSentEvent, encode_data, encode_event
from app.tracing import ATTR_STREAM, ClientSpan, Tracing

log = logging.getLogger(__name__)

#: Upstream headers worth passing on (rate limits tell a client when to come back).
RELAYED_HEADER_PREFIXES = ("x-ratelimit-", "retry-after", "x-request-id", "openai-")
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
    """
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


def rewrite_chunk(event: ServerSentEvent, model_name: str,
                  model_json: str | None = None) -> bytes:
    """One SSE event re-encoded with its JSON ``model`` rewritten; others pass as they are."""
    data = event.data
    if data is None or event.is_done or event.event is not None or event.comments:
        return encode_event(event)
    fast = set_top_level_model(data, model_json or json.dumps(model_name))
    if fast is not None:
        return encode_data(fast)
    try:
        chunk = json.loads(data)
    except ValueError:
        return encode_event(event)
    if isinstance(chunk, dict) and "model" in chunk:
        chunk["model"] = model_name
        return b"data: " + _dumps(chunk) + b"\n\n"
    return encode_data(data)


def relayed_headers(upstream: Mapping[str, str]) -> dict:
    """The upstream headers a client may use (rate limits, request ids).

    The provider's ``x-request-id`` becomes ``x-upstream-request-id``: ``x-request-id`` is
    the gateway's own (the one in its log line).
    """
    relayed = {}
    for name, value in upstream.items():
        lowered = name.lower()
        if lowered.startswith(RELAYED_HEADER_PREFIXES):
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
                headers: Mapping[str, str] | None = None) -> Answer:
        """Send ``body`` (its ``model`` already the provider's id) and shape the answer.

        Raises :class:`UpstreamError` (502/504) when the provider cannot be reached or does
        not answer in time; an HTTP error status from the provider is an :class:`Answer`.
        """
        span = None
        if self._tracing is not None:
            span = self.start_span(provider_name, stream, headers)
            headers = span.headers
        try:
            return self._forward(provider_name, body, stream, pinned, headers, span)
        except UpstreamError as error:
            if span is not None:
                span.end(error=error)
            raise

    def _forward(self, provider_name: str, body: dict, stream: bool, pinned: bool,
                 headers: Mapping[str, str] | None, span: ClientSpan | None) -> Answer:
        client = self._clients[provider_name]
        started = time.perf_counter()
        deadline = time.monotonic() + client.read_timeout_seconds
        response = client.post(_dumps(body), headers=headers)
        content_type = response.headers.get("Content-Type", "")
        extra = relayed_headers(response.headers)
        if stream and response.status_code < 400 and content_type.startswith(
                "text/event-stream"):
            answer = Answer(response.status_code, extra, (), "text/event-stream")
            answer.body = self._stream(client, response, provider_name, started, answer, span)
            return answer
        try:
            raw = client.read_body(response, deadline)
        finally:
            seconds = time.perf_counter() - started
            self._metrics.upstream_finished(provider_name, seconds)
        if response.status_code >= 400:
            body = _dumps(upstream_error_body(response.status_code, raw))
        else:
            body = rewrite_completion(raw, provider_name, pinned)
            if body is None:
                raise UpstreamError(f"provider {provider_name} answered with a body that is "
                                    "not a JSON object")
        if span is not None:
            span.end(response.status_code)
        return Answer(response.status_code, extra, body, upstream_seconds=seconds)

    def start_span(self, provider_name: str, stream: bool,
                   headers: Mapping[str, str] | None) -> ClientSpan:
        """The provider call's client span (tracing on); its ``headers`` go upstream."""
        name, attributes = (self._span_specs.get((provider_name, stream)) or
                            (f"chat {provider_name}", {ATTR_STREAM: stream}))
        return self._tracing.client_span(name, attributes, headers)

    def _stream(self, client: ProviderClient, response: requests.Response,
                model_name: str, started: float, answer: Answer,
                span: ClientSpan | None) -> Iterator[bytes]:
        decoder = SSEDecoder()
        model_json = json.dumps(model_name)
        failure = None
        try:
            for raw in client.iter_raw(response):
                # Everything one upstream read completed goes out in one write: no event
                # waits for a later one, and a burst costs one send, not one per token.
                out = b"".join(rewrite_chunk(event, model_name, model_json)
                               for event in decoder.feed(raw))
                if out:
                    yield out
            tail = b"".join(rewrite_chunk(event, model_name, model_json)
                            for event in decoder.flush())
            if tail:
                yield tail
        except UpstreamError as error:
            # Headers are gone already: tell the client in-band, as OpenAI does.
            failure = error
            log.warning("stream from %s broke off: %s", model_name, error,
                        extra={"event": "stream_error", "cause": str(error)})
            envelope = {"error": {"message": error.message, "type": error.error_type,
                                  "param": None, "code": error.code}}
            yield b"data: " + _dumps(envelope) + b"\n\n"
        finally:
            response.close()
            answer.upstream_seconds = time.perf_counter() - started
            self._metrics.upstream_finished(model_name, answer.upstream_seconds)
            if span is not None:
                span.end(response.status_code, failure)

