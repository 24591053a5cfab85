"""Attempt: one request's trip upstream, through the attempt chain (SPEC §4 steps 5-6,
§12, §15).

:func:`attempt_for` builds the ``attempt(endpoint, read_timeout)`` callable the chain
(:mod:`app.pipeline.failover`) calls per try: plan the call for *that* model
(:func:`app.pipeline.plan.plan_call`: the byte-level chat pass-through, a same-shape
pass-through or a translation — so an OpenAI model failing over to an Anthropic one is
translated), send it with the one :class:`~app.pipeline.relay.Relay`, and read a stream's first
output before anything reaches the client. :func:`failover_headers` says what the client
is told. No Flask.
"""

from __future__ import annotations

from typing import Callable, Mapping

from app.config import ModelEndpoint
from app.pipeline.decide import AFFINITY_FAILOVER, AFFINITY_NEW, AFFINITY_PINNED, Decision
from app.pipeline.failover import Attempt, FailoverResult
from app.pipeline.plan import Target, plan_call
from app.pipeline.relay import Answer, Relay

FAILOVER_FROM_HEADER = "x-plano-failover-from"
#: The affinities under which the session's pin names the decided model.
_PINNED_AFFINITIES = frozenset({AFFINITY_NEW, AFFINITY_PINNED})


def attempt_for(api: str, body: dict, decision: Decision, relay: Relay,
                client_headers: Mapping[str, str] | None,
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
        meter = None
        if accounting is None:
            call = plan_call(api, body, target_of(endpoint), client_headers=client_headers)
        else:  # SPEC §19: cache hints on the way out, usage asked for, the call's meter
            call = plan_call(api, body, target_of(endpoint), client_headers=client_headers,
                             hints=accounting.hints(endpoint), stream_usage=True)
            meter = accounting.meter(endpoint, call)
        answer = relay.send(endpoint.name, call,
                            pinned=pinned and endpoint.name == decided.name,
                            read_timeout=read_timeout, auth_headers=auth_for(endpoint),
                            meter=meter)
        if answer.mimetype == "text/event-stream":
            answer.body = first_bytes_read(answer)
        return answer

    return attempt


#: Each endpoint's :class:`Target`, made once (the pinned path's cost); keyed by name, the
#: endpoint object itself checked (a reloaded config has new ones); capped.
_TARGETS: dict[str, tuple[ModelEndpoint, Target]] = {}
_MAX_TARGETS = 1024


def target_of(endpoint: ModelEndpoint) -> Target:
    """What the plan stage needs of ``endpoint``."""
    cached = _TARGETS.get(endpoint.name)
    if cached is not None and cached[0] is endpoint:
        return cached[1]
    if len(_TARGETS) >= _MAX_TARGETS:
        _TARGETS.clear()
    target = Target(endpoint.name, endpoint.model_id, endpoint.interface, endpoint.vendor,
                    endpoint.responses_native, endpoint.max_tokens)
    _TARGETS[endpoint.name] = (endpoint, target)
    return target


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
