"""Parse and validate what a client sends (SPEC §4 step 1, §8), without Flask.

Only what the gateway needs is checked: ``messages`` (a non-empty list of objects with a
string ``role``), ``model`` (optional string) and ``stream`` (optional boolean). Every other
field is passed to the provider untouched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from app.config import RouteConfig
from app.errors import InvalidAffinityIdError, InvalidRequestError
from app.session_cache.base import RESERVED_KEY_PREFIXES

MAX_AFFINITY_ID_LENGTH = 256
#: A request-body route name is kept in pins and turn records and answered in a header.
MAX_ROUTE_NAME_LENGTH = 128
#: Key prefixes the gateway uses for its own records next to the pins (turn records,
#: usage): an explicit session id may not begin with one (SPEC §8).
RESERVED_SESSION_PREFIXES = RESERVED_KEY_PREFIXES
#: Plano's routing API lets a request bring its own routes under this key.
ROUTES_FIELD = "routing_preferences"


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated request body (chat completions, or a Messages / Responses body with its
    conversation normalised to chat-style ``messages`` for the routers); ``body`` is the
    parsed JSON object.

    ``routes``: the request's own ``routing_preferences`` (Plano's routing API, SPEC §14),
    already removed from ``body`` so they never reach a provider; ``None`` when not sent.
    """

    body: dict
    messages: list
    model: str | None
    stream: bool
    routes: tuple[RouteConfig, ...] | None = None


def parse_json_object(raw: bytes) -> dict:
    """The request body as a JSON object; 400 when it is not JSON or not an object."""
    try:
        body: Any = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidRequestError("request body is not valid JSON",
                                  code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("request body must be a JSON object", code="invalid_body")
    return body


def parse_chat_request(raw: bytes) -> ChatRequest:
    """Parse the request body; raises :class:`InvalidRequestError` (400) when unusable."""
    body = parse_json_object(raw)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("'messages' must be a non-empty array",
                                  param="messages", code="invalid_messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequestError(f"messages[{index}] must be an object with a string "
                                      "'role'", param=f"messages.{index}",
                                      code="invalid_messages")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequestError("'model' must be a string", param="model",
                                  code="invalid_model")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequestError("'stream' must be a boolean", param="stream",
                                  code="invalid_stream")
    routes = parse_request_routes(body.pop(ROUTES_FIELD)) if ROUTES_FIELD in body else None
    return ChatRequest(body=body, messages=messages, model=model, stream=stream,
                       routes=routes)


def parse_request_routes(value: Any) -> tuple[RouteConfig, ...]:
    """A body's ``routing_preferences``: ``[{name, description, models: [...]}]``.

    The model names are checked against the configuration by the gateway, when (and only
    when) the routes are used: a pinned hit ignores them. Route names are checked here,
    before anything is stored or sent (SPEC §8): 1 to 128 characters of printable ASCII,
    like an affinity id, as they end up in pins, an answer header and traces.
    """
    if not isinstance(value, list) or not value:
        raise InvalidRequestError(f"'{ROUTES_FIELD}' must be a non-empty array",
                                  param=ROUTES_FIELD, code="invalid_routing_preferences")
    routes = []
    for index, item in enumerate(value):
        models = item.get("models") if isinstance(item, dict) else None
        if (not isinstance(item, dict) or not _is_text(item.get("name"))
                or not _is_text(item.get("description")) or not isinstance(models, list)
                or not models or not all(_is_text(model) for model in models)):
            raise InvalidRequestError(
                f"{ROUTES_FIELD}[{index}] must be an object with a string 'name', a string "
                "'description' and a non-empty 'models' array of model names",
                param=f"{ROUTES_FIELD}.{index}", code="invalid_routing_preferences")
        if not is_route_name(item["name"]):
            raise InvalidRequestError(
                f"{ROUTES_FIELD}[{index}].name must be 1 to {MAX_ROUTE_NAME_LENGTH} "
                "characters of printable ASCII", param=f"{ROUTES_FIELD}.{index}.name",
                code="invalid_routing_preferences")
        routes.append(RouteConfig(item["name"], item["description"], tuple(models)))
    return tuple(routes)


def is_route_name(name: str) -> bool:
    """Whether a request-body route name is acceptable: at most 128 characters of printable
    ASCII (emptiness is checked with the other fields)."""
    return len(name) <= MAX_ROUTE_NAME_LENGTH and name.isascii() and name.isprintable()


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def validate_affinity_value(value: str | None, header: str, *, allow_colon: bool = True,
                            allow_reserved: bool = False) -> str | None:
    """Check an ``X-Model-Affinity`` or tenant header value; ``None`` when not sent.

    1 to 256 characters of printable ASCII (space through ``~``); a tenant may not contain
    ``:`` because it is the separator of the logical key ``tenant:session``; no value may
    begin with a prefix of the gateway's own records (:data:`RESERVED_SESSION_PREFIXES`),
    or ``X-Model-Affinity: turn:abc`` would read and write session ``abc``'s turn record
    (``allow_reserved``: the admin API, whose operator may inspect those records).
    Anything else is refused with 400 ``invalid_affinity_id`` rather than stored under a
    surprising key.
    """
    if value is None:
        return None
    problem = None
    if not value:
        problem = "must not be empty"
    elif len(value) > MAX_AFFINITY_ID_LENGTH:
        problem = f"must be at most {MAX_AFFINITY_ID_LENGTH} characters"
    elif not value.isascii() or not value.isprintable():
        problem = "must contain only printable ASCII characters"
    elif not allow_colon and ":" in value:
        problem = "must not contain ':'"
    elif not allow_reserved and value.startswith(RESERVED_SESSION_PREFIXES):
        problem = ("must not begin with " + " or ".join(
            f"'{prefix}'" for prefix in RESERVED_SESSION_PREFIXES)
            + " (the gateway's own keys)")
    if problem:
        raise InvalidAffinityIdError(f"header {header} {problem}", param=header)
    return value
