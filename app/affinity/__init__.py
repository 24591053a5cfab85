"""Affinity modes (SPEC §16, §18) as pure functions over the raw JSON body of any client API.

Every endpoint (Chat Completions, Messages, Responses, and their routing-only twins) calls
:func:`request_session` with its parsed body, its shape name and the request headers, and
hands the result to :meth:`app.pipeline.decide.Gateway.decide`: one decision path for all
three APIs.

* :mod:`app.affinity.shapes` reads system prompt, tools and user messages of each shape,
* :mod:`app.affinity.envelopes` knows the harness envelopes agents put in user messages,
* :mod:`app.affinity.turns` says whether a request starts a user turn,
* :mod:`app.affinity.implicit` derives the implicit session id,
* :mod:`app.affinity.agent` adopts the session id a coding agent sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from app.affinity.agent import (
    SOURCE_AGENT,
    SOURCE_HEADER,
    SOURCE_IMPLICIT,
    agent_session_id,
    agent_session_key,
    lane,
)
from app.affinity.implicit import IMPLICIT_ID_PREFIX, implicit_session_id
from app.affinity.shapes import CHAT_COMPLETIONS, MESSAGES, RESPONSES, SHAPES
from app.affinity.turns import starts_user_turn, strip_envelopes
from app.config import Config, RoutingConfig
from app.observability.metrics import Metrics

__all__ = ["CHAT_COMPLETIONS", "IMPLICIT_ID_PREFIX", "MESSAGES", "RESPONSES", "SHAPES",
           "SOURCE_AGENT", "SOURCE_HEADER", "SOURCE_IMPLICIT", "SessionContext",
           "implicit_session_id", "request_session", "session_context", "starts_user_turn",
           "strip_envelopes"]


@dataclass(frozen=True, slots=True)
class SessionContext:
    """Which session a request belongs to, and whether it starts a user turn.

    ``session_id``: the id the decision uses — the ``X-Model-Affinity`` value; else an
    agent's session id scoped by its lane (``<id>:<lane>``, ``agent`` true); else the
    derived id when a mode uses derived ids (``implicit_affinity`` or
    ``route_on_user_only``, or ``routing_budget`` which implies it; then ``implicit`` is
    true); else ``None``. ``derived_id``: the id derived from the conversation whenever
    neither header was sent (reported even when unused). ``source``: ``header``, ``agent``
    or ``implicit`` (``None``: no id at all), reported with :attr:`reported_id` in
    ``x-plano-session-source`` / ``-id``. ``user_turn`` is only computed with turn-level
    routing; otherwise it is ``True`` (every request is its own turn).
    """

    session_id: str | None
    implicit: bool = False
    user_turn: bool = True
    derived_id: str | None = None
    source: str | None = None
    agent: bool = False

    @property
    def reported_id(self) -> str | None:
        """The session id the answer names (``x-plano-session-id``)."""
        return self.derived_id if self.source == SOURCE_IMPLICIT else self.session_id


def session_context(body: dict, shape: str, *, explicit_id: str | None, tenant: str | None,
                    model: str | None, routing: RoutingConfig,
                    agent_key: str | None = None, implicit_allowed: bool = True
                    ) -> SessionContext:
    """The :class:`SessionContext` of one request; an explicit id always wins, then an
    agent's (``agent_key``: already scoped by its lane), then the derived one.

    ``body`` is the parsed JSON body of the ``shape`` API, ``model`` the requested model as
    sent, ``routing`` the ``routing`` configuration; ``implicit_allowed`` false (the request
    said ``X-Plano-Cache: off``, SPEC §19): no derived session for this request.
    """
    user_turn = starts_user_turn(body, shape) if routing.turn_routing else True
    if explicit_id is not None:
        return SessionContext(explicit_id, user_turn=user_turn, source=SOURCE_HEADER)
    if agent_key is not None:
        return SessionContext(agent_key, user_turn=user_turn, source=SOURCE_AGENT, agent=True)
    derived = implicit_session_id(body, shape, tenant=tenant, model=model)
    if not implicit_allowed:
        return SessionContext(None, user_turn=user_turn, derived_id=derived)
    source = SOURCE_IMPLICIT if derived is not None else None
    if derived is not None and (routing.implicit_affinity or routing.turn_routing):
        return SessionContext(derived, implicit=True, user_turn=user_turn, derived_id=derived,
                              source=source)
    return SessionContext(None, user_turn=user_turn, derived_id=derived, source=source)


def request_session(body: dict, shape: str, headers: Mapping[str, str], *,
                    explicit_id: str | None, tenant: str | None, model: str | None,
                    config: Config, metrics: Metrics | None = None,
                    implicit_allowed: bool = True) -> SessionContext:
    """:func:`session_context` with the agent's session id read from ``headers`` (SPEC
    §18) when no explicit id was sent; invalid agent values are counted on ``metrics``."""
    agent_key = None
    if explicit_id is None:
        ignored = metrics.agent_session_ignored if metrics is not None else None
        agent_id = agent_session_id(headers, config.routing.agent_sessions, ignored=ignored)
        if agent_id is not None:
            agent_key = agent_session_key(agent_id, lane(config, model))
    return session_context(body, shape, explicit_id=explicit_id, tenant=tenant, model=model,
                           routing=config.routing, agent_key=agent_key,
                           implicit_allowed=implicit_allowed)
