"""One request's trip upstream, through the attempt chain (SPEC §4 steps 5-6, §12, §15).

:func:`attempt_for` builds the ``attempt(endpoint, read_timeout)`` callable the chain
(:mod:`app.failover`) calls per try: chat to an ``openai``-interface model stays the
byte-level :class:`~app.relay.Relay` pass-through; everything else (Messages, Responses,
any API to another interface) is planned by :func:`app.translation.plan_call` for *that*
model and sent by :class:`~app.api_relay.ApiRelay` — so an OpenAI model failing over to an
Anthropic one is translated. :func:`failover_headers` says what the client is told. No Flask.
"""

from __future__ import annotations

from typing import Callable, Mapping

from app.api_relay import ApiRelay
from app.config import ModelEndpoint
from app.failover import Attempt, FailoverResult
from app.gateway import AFFINITY_FAILOVER, AFFINITY_NEW, AFFINITY_PINNED, Decision
from app.relay import Answer, Relay
from app.translation import Target, plan_call

FAILOVER_FROM_HEADER = "x-plano-failover-from"
#: The affinities under which the session's pin names the decided model.
_PINNED_AFFINITIES = frozenset({AFFINITY_NEW, AFFINITY_PINNED})


def attempt_for(api: str, body: dict, stream: bool, decision: Decision, relay: Relay,
                api_relay: ApiRelay, client_headers: Mapping[str, str] | None,
                auth_for: Callable[[ModelEndpoint], Mapping[str, str] | None] = lambda _: None,
                accounting=None) -> Attempt:
    """The per-try call for one request of client API ``api`` (``chat``, ``messages``,
    ``responses``); the body's ``model`` is set to each candidate's provider id.
    ``auth_for(endpoint)``: the client's own key for a ``passthrough_auth`` candidate.
    ``accounting``: the request's :class:`app.usage.accounting.RequestAccounting` (cache
    hints and usage meters, SPEC §19), or ``None``."""
    decided = decision.endpoint
    pinned = decision.pinned

    def attempt(endpoint: ModelEndpoint, read_timeout: float) -> Answer:
        served_pin = pinned and endpoint.name == decided.name
        if api == "chat" and endpoint.interface == "openai":
            forwarded = dict(body)
            forwarded["model"] = endpoint.model_id
            meter = None
            if accounting is not None:  # SPEC §19: usage asked for, cache key, meter
                forwarded, meter = accounting.chat_call(forwarded, endpoint, stream)
            answer = relay.forward(endpoint.name, forwarded, stream=stream, pinned=served_pin,
                                   read_timeout=read_timeout, headers=auth_for(endpoint),
                                   meter=meter)
        else:
            target = Target(endpoint.name, endpoint.model_id, endpoint.interface,
                            endpoint.vendor, endpoint.responses_native, endpoint.max_tokens)
            call = plan_call(api, body, target, client_headers=client_headers,
                             hints=accounting.hints(endpoint) if accounting else None)
            answer = api_relay.forward(api, endpoint.name, call, pinned=served_pin,
                                       read_timeout=read_timeout,
                                       auth_headers=auth_for(endpoint),
                                       meter=accounting.meter(endpoint, call.path)
                                       if accounting else None)
        if answer.mimetype == "text/event-stream":
            answer.body = first_bytes_read(answer)
        return answer

    return attempt


class PrefetchedStream:
    """A stream body whose first output was read already; ``close`` reaches the stream."""

    __slots__ = ("_first", "_rest", "_stream")

    def __init__(self, first: bytes, rest, stream):
        self._first = first
        self._rest = rest
        self._stream = stream

    def __iter__(self):
        if self._first:
            yield self._first
        yield from self._rest

    def close(self) -> None:
        """Release the upstream (idempotent, as the stream's own ``close``)."""
        self._stream.close()


def first_bytes_read(answer: Answer) -> PrefetchedStream:
    """Read a stream's first output before anything is sent to the client: a stream that
    breaks off before its first event has sent the client nothing, so its failure is raised
    (the chain tries the next model) instead of being relayed in-band."""
    stream = answer.body
    rest = iter(stream)
    first = next(rest, b"")
    if answer.failure is not None:
        stream.close()
        raise answer.failure
    return PrefetchedStream(first, rest, stream)


def answered(result: FailoverResult) -> bool:
    """Whether the chain ended with a successful answer (not a relayed failure)."""
    return result.answer is not None and result.answer.status < 400


def failover_headers(decision: Decision, result: FailoverResult) -> dict:
    """The headers that tell the client a fallback served it (SPEC §15): the first model
    that failed or was skipped, on any answer from a fallback; ``x-plano-affinity:
    failover`` when it was a session's model and another one answered."""
    if result.failed_from is None:
        return {}
    headers = {FAILOVER_FROM_HEADER: result.failed_from}
    if decision.affinity in _PINNED_AFFINITIES and answered(result):
        headers["x-plano-affinity"] = AFFINITY_FAILOVER
    return headers


def should_repin(decision: Decision, result: FailoverResult, repin: bool) -> bool:
    """Whether the session's pin is to move to the model that answered (``repin: true``
    and a fallback of the pinned model succeeded)."""
    return (repin and decision.affinity in _PINNED_AFFINITIES and answered(result)
            and result.served.name != decision.endpoint.name)
