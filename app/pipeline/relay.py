"""Send: the one relay for every plan (SPEC §4 steps 5-6, §12, §18).

:meth:`Relay.send` posts a planned :class:`~app.pipeline.plan.UpstreamCall` (the byte-level
chat pass-through, a same-shape Messages or Responses pass-through, or a translated call)
and shapes what comes back with the plan's own functions: a non-streamed answer is read
whole (bounded by the attempt's read timeout) and handed to the plan's ``reply`` (or
``error`` for an HTTP error status); a stream is relayed read by read through the plan's
stream shaper, never buffered, its integrity checked event by event, a failure told to the
client in-band in its API's own form. The upstream response is released exactly once in
every case: at the end of the stream, when the WSGI server closes the answer (a client
disconnect included), and when the answer is discarded before it was ever iterated
(:meth:`UpstreamStream.close`).

What else happens around a call (metrics, the client span, later usage and cost) is done by
the relay's observers (:mod:`app.observability.relay_observers`), not here.

Only a reviewed allow-list of upstream headers reaches the client (rate limits, retry
hints, the provider's request id): never the provider's account identity
(``openai-organization``, ``openai-project``, ...). Provider error messages are relayed with
key-like strings scrubbed (:func:`app.providers.openai_compat.scrub_secrets`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping

import requests

from app.errors import UpstreamError
from app.observability.relay_observers import Call, RelayObserver
from app.pipeline.plan import UpstreamCall
from app.pipeline.stream_integrity import StreamFailure
from app.providers.openai_compat import ProviderClient

log = logging.getLogger(__name__)

DROPPED_HEADER = "x-plano-dropped"

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
    #: The call's usage meter (:class:`app.usage.meter.UsageMeter`, SPEC §19), if any: its
    #: ``record`` is the answer's usage once the call ended.
    meter: object = None


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
    """Sends planned calls to providers and turns their answers into :class:`Answer`
    objects, telling its ``observers`` (:mod:`app.observability.relay_observers`) each
    call's events."""

    def __init__(self, clients: Mapping[str, ProviderClient],
                 observers: Iterable[RelayObserver] = ()):
        self._clients = clients
        self._observers = tuple(observers)

    def send(self, provider_name: str, call: UpstreamCall, *, pinned: bool,
             read_timeout: float | None = None,
             auth_headers: Mapping[str, str] | None = None, meter=None) -> Answer:
        """Send ``call`` to ``provider_name`` and shape the answer with the plan.

        ``read_timeout`` (default: the client's, the listener timeout) bounds the wait for
        the answer's head and, without a stream, the whole answer: what an attempt chain
        has left of the listener timeout (:mod:`app.pipeline.failover`). ``auth_headers``: the
        client's own key for a ``passthrough_auth`` provider. ``meter``: the call's usage
        meter (:mod:`app.usage.meter`, SPEC §19), a per-call observer: fed each stream read
        (or the whole JSON answer), it filters what is relayed and is finished before the
        client span ends.

        Raises :class:`UpstreamError` (502/504) when the provider cannot be reached or does
        not answer in time; an HTTP error status from the provider is an :class:`Answer`.
        """
        client = self._clients[provider_name]
        headers = call.headers
        if auth_headers:
            headers = {**headers, **auth_headers}
        state = Call(provider_name, call.stream, headers, time.perf_counter())
        state.meter = meter
        observers = self._observers
        for observer in observers:
            observer.started(state)
        deadline = time.monotonic() + (read_timeout or client.read_timeout_seconds)
        try:
            response = client.post(call.body, headers=state.headers, path=call.path,
                                   read_timeout_seconds=read_timeout)
        except UpstreamError as error:
            self._end(state, error)
            raise
        state.status = response.status_code
        for observer in observers:
            observer.head(state)
        extra = relayed_headers(response.headers)
        if call.dropped:
            extra[DROPPED_HEADER] = ",".join(call.dropped)
        if (call.stream and response.status_code < 400
                and response.headers.get("Content-Type", "").startswith("text/event-stream")):
            answer = Answer(response.status_code, extra, (), "text/event-stream", meter=meter)
            answer.body = UpstreamStream(self, client, response, state, answer,
                                         call.stream_translator())
            return answer
        return self._whole_answer(client, response, call, state, deadline, extra, pinned)

    def _whole_answer(self, client: ProviderClient, response: requests.Response,
                      call: UpstreamCall, state: Call, deadline: float, extra: dict,
                      pinned: bool) -> Answer:
        """Read a non-streamed answer to the end (by ``deadline``) and shape it: the plan's
        ``error`` for an HTTP error status, else its ``reply``, whose ``None`` (not a JSON
        object) is an :class:`UpstreamError`."""
        try:
            raw = client.read_body(response, deadline)
        except UpstreamError as error:
            self._end(state, error)
            raise
        if response.status_code >= 400:
            body = call.error(response.status_code, raw, client.secrets)
        else:
            body = call.reply(raw, pinned)
            if body is None:
                error = UpstreamError(f"provider {state.model_name} answered with a body "
                                      "that is not a JSON object")
                self._end(state, error)
                raise error
            if state.meter is not None:
                state.meter.answer(raw)
        self._end(state)
        return Answer(response.status_code, extra, body, upstream_seconds=state.seconds,
                      meter=state.meter)

    def _end(self, state: Call, error: Exception | None = None) -> None:
        state.seconds = time.perf_counter() - state.started
        if error is not None and state.error is None:
            state.error = error
        if state.meter is not None:  # usage read so far, on the span before it ends
            state.meter.finish(state.span)
        for observer in self._observers:
            observer.ended(state)

    def _stream_failed(self, state: Call, failure: StreamFailure,
                       error: UpstreamError | None = None) -> None:
        state.error = error or failure.error()
        for observer in self._observers:
            observer.stream_failed(state, failure.reason)


class UpstreamStream:
    """The body of a streamed answer: relays the upstream's reads through the plan's
    stream shaper, then releases the upstream.

    Releasing (closing the upstream response, ending the call for the observers) happens
    exactly once: when the last event is relayed or the stream fails, or in
    :meth:`close`, which the WSGI server calls when it is done with the answer (a client
    disconnect included) and the request teardown calls when the answer was discarded
    before anyone iterated it (a generator's ``finally`` would then never run).
    """

    __slots__ = ("_relay", "_client", "_response", "_state", "_answer", "_shaper",
                 "_released", "_events")

    def __init__(self, relay: Relay, client: ProviderClient, response: requests.Response,
                 state: Call, answer: Answer, shaper):
        self._relay = relay
        self._client = client
        self._response = response
        self._state = state
        self._answer = answer
        self._shaper = shaper
        self._released = False
        self._events = self._relay_events()

    def __iter__(self) -> Iterator[bytes]:
        return self._events

    def close(self) -> None:
        """Stop relaying and release the upstream (idempotent)."""
        self._events.close()
        self._release()

    def _relay_events(self) -> Iterator[bytes]:
        shaper = self._shaper
        meter = self._state.meter
        feed_meter = meter.feed if meter is not None else None
        strip = meter.outgoing if meter is not None and meter.strips else None
        try:
            for raw in self._client.iter_raw(self._response):
                if feed_meter is not None:
                    feed_meter(raw)
                out = shaper.feed(raw)
                if strip is not None and out:
                    out = strip(out)
                if shaper.failure is not None:
                    self._failed(shaper.failure)
                    if out:
                        yield out
                    return
                if out:
                    yield out
            tail = shaper.finish()
            if shaper.failure is not None:
                self._failed(shaper.failure)
            if strip is not None and tail:
                tail = strip(tail)
            if tail:
                yield tail
        except UpstreamError as error:
            # Headers are gone already: tell the client in-band, in its API's own form.
            failure = StreamFailure.broken(error)
            out = shaper.fail(failure)
            self._failed(failure, error)
            yield out
        finally:
            self._release()

    def _failed(self, failure: StreamFailure, error: UpstreamError | None = None) -> None:
        """Record why the stream is not an answer (before its in-band error is yielded:
        an attempt that has sent nothing yet fails over on ``answer.failure``)."""
        self._relay._stream_failed(self._state, failure, error)
        self._answer.failure = self._state.error
        log.warning("stream from %s failed (%s): %s", self._state.model_name, failure.reason,
                    failure.message, extra={"event": "stream_error", "cause": failure.message,
                                            "reason": failure.reason})

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        self._response.close()
        self._relay._end(self._state)
        self._answer.upstream_seconds = self._state.seconds
