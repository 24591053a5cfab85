"""One request's accounting plan (SPEC §19): cache hints and a usage meter per attempt.

Built by the endpoint for each request (:meth:`RequestAccounting.for_request`), handed to
the attempt chain; for each model tried it

* gives :func:`app.pipeline.plan.plan_call` the hints for its upstream body
  (:meth:`hints`: ``prompt_cache_key``, Anthropic breakpoints); the plan itself asks a
  pass-through Chat stream for ``stream_options.include_usage`` (``stream_usage``);
* makes the call's :class:`~app.usage.meter.UsageMeter` (:meth:`meter`), which the relay
  feeds and which removes the usage chunk for a client that did not ask for it.

Hints are sent only with ``prompt_caching.enabled`` and not for a request with
``X-Plano-Cache: off``; usage is read from every answer either way.
"""

from __future__ import annotations

from typing import Callable

from app.usage.hints import with_breakpoints, with_prompt_cache_key
from app.usage.meter import UsageMeter
from app.usage.recorder import UsageRecorder
from app.usage.tokens import CHAT, MESSAGES, RESPONSES

#: ``X-Plano-Cache: off``: no cache hints, and no implicit affinity, for this request.
CACHE_HEADER = "X-Plano-Cache"


def cache_off(header_value: str | None) -> bool:
    """Whether an ``X-Plano-Cache`` header value turns caching off (``off``, any case)."""
    return header_value is not None and header_value.strip().lower() == "off"


def upstream_api(path: str) -> str:
    """The upstream API of an interface path (``/messages`` -> ``messages``)."""
    if path.endswith("/messages"):
        return MESSAGES
    if path.endswith("/responses"):
        return RESPONSES
    return CHAT


class RequestAccounting:
    """Cache hints and usage meters for the attempts of one request."""

    __slots__ = ("_recorder", "_caching", "session_key", "_hints_on")

    def __init__(self, recorder: UsageRecorder, caching, session_key: str | None,
                 cache_is_off: bool = False):
        """``caching``: the ``prompt_caching`` config; ``session_key``: the request's
        session (explicit, agent or implicit; with its tenant), ``None`` without one."""
        self._recorder = recorder
        self._caching = caching
        self.session_key = session_key
        self._hints_on = caching.enabled and not cache_is_off

    def _cache_key_for(self, endpoint) -> bool:
        return (self._hints_on and self._caching.prompt_cache_key and endpoint.prompt_cache_key
                and self.session_key is not None)

    def hints(self, endpoint) -> Callable[[str, dict], dict] | None:
        """The hints for :func:`app.pipeline.plan.plan_call` to ``endpoint`` (``None``: none)."""
        if not self._hints_on:
            return None
        caching = self._caching
        cache_key = self._cache_key_for(endpoint)
        session_key = self.session_key

        def apply(path: str, body: dict) -> dict:
            api = upstream_api(path)
            if api == MESSAGES:
                if caching.inject_cache_control:
                    return with_breakpoints(body, caching.min_prefix_tokens)
                return body
            return with_prompt_cache_key(body, session_key) if cache_key else body
        return apply

    def meter(self, endpoint, call) -> UsageMeter:
        """The meter of a planned call (:class:`app.pipeline.plan.UpstreamCall`) to
        ``endpoint``: its upstream API from the call's path (``None``: the interface's own,
        chat completions), the usage-only chunk removed when the plan asked for it on the
        client's behalf."""
        path = call.path
        return UsageMeter(self._recorder, endpoint.name,
                          CHAT if path is None else upstream_api(path), call.strip_usage,
                          call.stream)
