"""Affinity modes (SPEC §16) as pure functions over the raw JSON body of any client API.

Every endpoint (Chat Completions, Messages, Responses, and their routing-only twins) calls
:func:`session_context` with its parsed body and its shape name, and hands the result to
:meth:`app.gateway.Gateway.decide`: one decision path for all three APIs.

* :mod:`app.affinity.shapes` reads system prompt, tools and user messages of each shape,
* :mod:`app.affinity.turns` says whether a request starts a user turn,
* :mod:`app.affinity.implicit` derives the implicit session id.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.affinity.implicit import IMPLICIT_ID_PREFIX, implicit_session_id
from app.affinity.shapes import CHAT_COMPLETIONS, MESSAGES, RESPONSES, SHAPES
from app.affinity.turns import starts_user_turn, strip_envelopes
from app.config import RoutingConfig

__all__ = ["CHAT_COMPLETIONS", "IMPLICIT_ID_PREFIX", "MESSAGES", "RESPONSES", "SHAPES",
           "SessionContext", "implicit_session_id", "session_context", "starts_user_turn",
           "strip_envelopes"]


@dataclass(frozen=True, slots=True)
class SessionContext:
    """Which session a request belongs to, and whether it starts a user turn.

    ``session_id``: the id the decision uses — the ``X-Model-Affinity`` value, else the
    derived id when a mode uses derived ids (``implicit_affinity`` or
    ``route_on_user_only``, or ``routing_budget`` which implies it; then ``implicit`` is
    true), else ``None``. ``derived_id``: the
    id derived from the conversation whenever no header was sent (reported in
    ``x-plano-session-id`` even when unused). ``user_turn`` is only computed with
    ``route_on_user_only``; otherwise it is ``True`` (every request is its own turn).
    """

    session_id: str | None
    implicit: bool = False
    user_turn: bool = True
    derived_id: str | None = None


def session_context(body: dict, shape: str, *, explicit_id: str | None, tenant: str | None,
                    model: str | None, routing: RoutingConfig) -> SessionContext:
    """The :class:`SessionContext` of one request; an explicit id always wins.

    ``body`` is the parsed JSON body of the ``shape`` API, ``model`` the requested model as
    sent, ``routing`` the ``routing`` configuration.
    """
    user_turn = starts_user_turn(body, shape) if routing.turn_routing else True
    if explicit_id is not None:
        return SessionContext(explicit_id, implicit=False, user_turn=user_turn)
    derived = implicit_session_id(body, shape, tenant=tenant, model=model)
    if derived is not None and (routing.implicit_affinity or routing.turn_routing):
        return SessionContext(derived, implicit=True, user_turn=user_turn, derived_id=derived)
    return SessionContext(None, user_turn=user_turn, derived_id=derived)
