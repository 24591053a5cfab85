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

__all__ = ["CHAT_COMPLETIONS", "IMPLICIT_ID_PREFIX", "MESSAGES", "RESPONSES", "SHAPES",
           "SessionContext", "implicit_session_id", "session_context", "starts_user_turn",
           "strip_envelopes"]


@dataclass(frozen=True, slots=True)
class SessionContext:
    """Which session a request belongs to, and whether it starts a user turn.

    ``session_id``: the ``X-Model-Affinity`` value, else the derived id (``implicit``
    true), else ``None``. ``user_turn`` is only computed when turn-level routing is on;
    otherwise it is ``True`` (every request is routed as a turn of its own).
    """

    session_id: str | None
    implicit: bool = False
    user_turn: bool = True

    @property
    def implicit_id(self) -> str | None:
        """The derived id, for the ``x-plano-session-id`` header; ``None`` when explicit."""
        return self.session_id if self.implicit else None


def session_context(body: dict, shape: str, *, explicit_id: str | None,
                    tenant: str | None, model: str | None,
                    route_on_user_only: bool) -> SessionContext:
    """The :class:`SessionContext` of one request; an explicit id always wins.

    ``model`` is the requested model as sent; ``route_on_user_only`` is the
    ``routing.route_on_user_only`` setting.
    """
    user_turn = starts_user_turn(body, shape) if route_on_user_only else True
    if explicit_id is not None:
        return SessionContext(explicit_id, implicit=False, user_turn=user_turn)
    derived = implicit_session_id(body, shape, tenant=tenant, model=model)
    return SessionContext(derived, implicit=derived is not None, user_turn=user_turn)
