"""The router contract (SPEC §5): pick a route for a conversation.

A router only names a route; the gateway turns the route into a model (the route's first
model) or, on no match, into the fallback model. Routers never raise anything but
:class:`app.errors.RouterError`; the gateway treats that as "serve the fallback, do not pin".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Mapping, Sequence

from app.affinity.envelopes import user_text
from app.config import RouteConfig


class Router(ABC):
    """Chooses one of the configured routes for a conversation, or none."""

    #: Short name for logs and metrics (``embedded``, ``llm``).
    kind: str = "unknown"
    #: The routes this router chooses from.
    routes: tuple[RouteConfig, ...] = ()

    @abstractmethod
    def for_routes(self, routes: Sequence[RouteConfig]) -> Router:
        """A router of the same kind choosing among ``routes`` instead (a request's own
        ``routing_preferences``, SPEC §14)."""

    @abstractmethod
    def select_route(self, messages: Sequence[Mapping]) -> RouteConfig | None:
        """The matching route, or ``None`` for "no match"; raises :class:`RouterError`.

        ``messages`` are the request's chat messages as parsed from JSON (dicts with at
        least a string ``role``; ``content`` may be a string, a list of parts or absent).
        """


def message_text(message: Mapping) -> str:
    """The text of a chat message: a string, or the ``text`` parts of a content list.

    Non-text parts (images, audio) are ignored; missing or ``None`` content is empty.
    """
    content = message.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "\n".join(part["text"] for part in content
                     if isinstance(part, Mapping) and part.get("type") == "text"
                     and isinstance(part.get("text"), str))


def said_text(message: Mapping) -> str:
    """What a message says for routing: its text (:func:`message_text`), and for a ``user``
    message without the harness envelopes an agent put there (``<system-reminder>``,
    Codex's AGENTS.md, ...: :mod:`app.affinity.envelopes`), stripped of blank space."""
    text = message_text(message)
    return user_text(text) if message.get("role") == "user" else text.strip()


def latest_user_text(messages: Sequence[Mapping]) -> str:
    """The text of the newest ``user`` message that says something once harness envelopes
    are stripped (:func:`said_text`), or ``""`` when there is none: an envelope-only user
    message (Codex's ``<environment_context>`` item, a lone ``<system-reminder>``) is not
    what the user asked."""
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            text = said_text(message)
            if text:
                return text
    return ""


def newest_chars(text: str, limit: int) -> str:
    """``text`` cut to its last ``limit`` characters: a turn longer than a router's budget
    keeps its end, the newest text (Claude Code's first request puts about 10 kB of
    reminders before the prompt; an agent's pasted log ends with the question)."""
    return text if len(text) <= limit else text[len(text) - limit:]

