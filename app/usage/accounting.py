"""One request's accounting plan (SPEC §19): cache hints and a usage meter per attempt.

Built by the endpoint for each request (:meth:`RequestAccounting.for_request`), handed to
the attempt chain; for each model tried it

* prepares a chat body on the byte-level hot path (:meth:`chat_call`): asks an
  OpenAI-interface upstream for ``stream_options.include_usage`` on a stream (the usage
  chunk is then removed for a client that did not ask) and sets ``prompt_cache_key``;
* gives :func:`app.translation.plan_call` the hints for its upstream body (:meth:`hints`);
* makes the call's :class:`~app.usage.meter.UsageMeter` (:meth:`meter`).

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

    def chat_call(self, forwarded: dict, endpoint, stream: bool) -> tuple[dict, UsageMeter]:
        """A chat body for an OpenAI-interface model (``forwarded`` is the relay's own
        copy, changed in place) and the call's meter."""
        strip = False
        if stream:
            options = forwarded.get("stream_options")
            if not (isinstance(options, dict) and options.get("include_usage") is True):
                forwarded["stream_options"] = {**options, "include_usage": True} \
                    if isinstance(options, dict) else {"include_usage": True}
                strip = True
        if self._cache_key_for(endpoint):
            forwarded = with_prompt_cache_key(forwarded, self.session_key)
        return forwarded, UsageMeter(self._recorder, endpoint.name, CHAT, strip)

    def hints(self, endpoint) -> Callable[[str, dict], dict] | None:
        """The hints for :func:`app.translation.plan_call` to ``endpoint`` (``None``: none)."""
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

    def meter(self, endpoint, path: str) -> UsageMeter:
        """The meter of a planned call to ``endpoint`` at interface ``path``."""
        return UsageMeter(self._recorder, endpoint.name, upstream_api(path))
