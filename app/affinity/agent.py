"""Agent sessions: adopt the session id a coding agent already sends (SPEC §18).

Claude Code sends ``X-Claude-Code-Session-Id`` on every request of a session, Codex
``session-id``; ``routing.agent_sessions.headers`` lists the headers looked at, in order.
Without ``X-Model-Affinity``, the first of them carrying a valid value names the session.

* *Lanes.* An agent's one session id covers calls for several models: Claude Code asks its
  small fast model for titles and summaries next to the main loop. The session is scoped by
  its lane, the requested model after alias resolution, so the pin is keyed
  ``<id>:<lane>``: a side call has its own pin and never takes or disturbs the loop's.
* *Invalid values are ignored, never refused*: the agent did not choose to send them to us.
  An empty value, one longer than 256 characters, one with characters outside printable
  ASCII, or one beginning with a prefix the gateway uses for its own keys (``turn:``,
  ``usage:``) is skipped as if that header were absent (the next configured header, then
  §16's implicit id, apply) and counted (``plano_agent_session_ignored_total{header,
  reason}``).

Pure functions over plain values (headers as a mapping); no Flask.
"""

from __future__ import annotations

from typing import Callable, Mapping

from app.config import AgentSessionsConfig, Config

#: Where a request's session id came from (``x-plano-session-source``).
SOURCE_HEADER = "header"
SOURCE_AGENT = "agent"
SOURCE_IMPLICIT = "implicit"
#: Key prefixes the gateway writes for itself: never a session id's start.
RESERVED_PREFIXES = ("turn:", "usage:")
MAX_AGENT_ID_LENGTH = 256
#: Why a value was ignored: the ``reason`` label (a fixed set).
IGNORED_REASONS = ("empty", "too_long", "not_printable", "reserved_prefix")


def invalid_reason(value: str) -> str | None:
    """Why ``value`` cannot name a session (one of :data:`IGNORED_REASONS`), else ``None``."""
    if not value:
        return "empty"
    if len(value) > MAX_AGENT_ID_LENGTH:
        return "too_long"
    if not value.isascii() or not value.isprintable():
        return "not_printable"
    if value.startswith(RESERVED_PREFIXES):
        return "reserved_prefix"
    return None


def agent_session_id(headers: Mapping[str, str], config: AgentSessionsConfig, *,
                     ignored: Callable[[str, str], None] | None = None) -> str | None:
    """The agent's session id: the value of the first configured header present with a
    valid value, else ``None`` (also when agent sessions are disabled). ``ignored(header,
    reason)`` is told about every invalid value skipped."""
    if not config.enabled:
        return None
    for header in config.headers:
        value = headers.get(header)
        if value is None:
            continue
        reason = invalid_reason(value)
        if reason is None:
            return value
        if ignored is not None:
            ignored(header, reason)
    return None


def lane(config: Config, model: str | None) -> str:
    """The lane of a request: the configured name its ``model`` resolves to (an alias to
    its target, a bare id to its provider's full name), the default model's without one,
    and the name as sent when it resolves to nothing (the request is refused later)."""
    if model is None:
        return config.default_endpoint.name
    endpoint = config.resolve_model(model)
    return endpoint.name if endpoint is not None else model


def agent_session_key(session_id: str, lane_name: str) -> str:
    """The session id an agent session is pinned under: ``<id>:<lane>``."""
    return f"{session_id}:{lane_name}"
