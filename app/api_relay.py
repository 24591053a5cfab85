"""Forward a Messages or Responses request, or a translated one, and shape the answer.

The counterpart of :class:`app.relay.Relay` (which keeps the chat -> OpenAI chat hot path
byte-level) for everything planned by :func:`app.translation.plan_call`: the body goes to
the interface's path, a JSON answer is translated (or has ``model`` rewritten), a stream is
translated chunk by chunk as it arrives (never buffered), and an upstream error status is
answered in the client API's error shape. Same guarantees as the relay: explicit timeouts,
the upstream response closed in every case (client disconnect included), one metric and
one client span per provider call. No Flask here.
"""

from __future__ import annotations

import logging
import time
from typing import Iterator, Mapping

import requests

from app.conversation import Failure
from app.errors import UpstreamError
from app.providers.openai_compat import ProviderClient
from app.relay import Answer, Relay, relayed_headers
from app.tracing import ClientSpan
from app.translation import UpstreamCall

log = logging.getLogger(__name__)

DROPPED_HEADER = "x-plano-dropped"


class ApiRelay:
    """Sends planned :class:`~app.translation.UpstreamCall` objects to providers."""

    def __init__(self, relay: Relay):
        self._relay = relay

    def forward(self, api: str, provider_name: str, call: UpstreamCall, *,
                pinned: bool, read_timeout: float | None = None,
                auth_headers: Mapping[str, str] | None = None, meter=None) -> Answer:
        """Send ``call`` to ``provider_name`` and shape the answer for client API ``api``
        (``read_timeout`` as in :meth:`app.relay.Relay.forward`; ``auth_headers``: the
        client's own key for a ``passthrough_auth`` provider).

        Raises :class:`UpstreamError` (502/504) when the provider cannot be reached or does
        not answer in time; an HTTP error status from the provider is an :class:`Answer`.
        """
        relay = self._relay
        headers = {**call.headers, **(auth_headers or {})}
        span = None
        if relay.tracing is not None:
            span = relay.start_span(provider_name, call.stream, headers)
            headers = dict(span.headers)
        try:
            answer = self._forward(api, provider_name, call, pinned, headers, span,
                                   read_timeout, meter)
        except UpstreamError as error:
            if span is not None:
                span.end(error=error)
            raise
        if call.dropped:
            answer.headers[DROPPED_HEADER] = ",".join(call.dropped)
        return answer

    def _forward(self, api: str, provider_name: str, call: UpstreamCall, pinned: bool,
                 headers: dict, span: ClientSpan | None, read_timeout: float | None,
                 meter=None) -> Answer:
        client: ProviderClient = self._relay.clients[provider_name]
        started = time.perf_counter()
        deadline = time.monotonic() + (read_timeout or client.read_timeout_seconds)
        response = client.post(call.body, headers=headers, path=call.path,
                               read_timeout_seconds=read_timeout)
        content_type = response.headers.get("Content-Type", "")
        extra = relayed_headers(response.headers)
        if (call.stream and response.status_code < 400
                and content_type.startswith("text/event-stream")):
            answer = Answer(response.status_code, extra, (), "text/event-stream", meter=meter)
            answer.body = self._stream(api, client, response, provider_name, call, started,
                                       answer, span, meter)
            return answer
        return self._relay.whole_answer(
            client, response, provider_name, started=started, deadline=deadline,
            extra=extra, span=span, meter=meter,
            shape_error=lambda status, raw: call.error(status, raw, client.secrets),
            shape_reply=lambda raw: call.reply(raw, pinned))

    def _stream(self, api: str, client: ProviderClient, response: requests.Response,
                model_name: str, call: UpstreamCall, started: float, answer: Answer,
                span: ClientSpan | None, meter=None) -> Iterator[bytes]:
        translator = call.stream_translator()
        failure = None
        try:
            for raw in client.iter_raw(response):
                if meter is not None:  # usage accounting (SPEC §19)
                    meter.feed(raw)
                out = translator.feed(raw)
                if out:
                    yield out
            tail = translator.finish()
            if tail:
                yield tail
        except UpstreamError as error:
            # Headers are gone already: tell the client in-band, in its API's own form.
            failure = answer.failure = error
            log.warning("stream from %s broke off: %s", model_name, error,
                        extra={"event": "stream_error", "cause": str(error)})
            yield translator.fail(Failure(error.message, error.error_type, error.code), api)
        finally:
            response.close()
            answer.upstream_seconds = time.perf_counter() - started
            self._relay.metrics.upstream_finished(model_name, answer.upstream_seconds)
            if meter is not None:  # usage accounting (SPEC §19): record what was read
                meter.finish(span)
            if span is not None:
                span.end(response.status_code, failure)
