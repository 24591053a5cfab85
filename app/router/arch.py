"""The LLM router (SPEC §5): asks a chat model, with the Arch-Router prompt, which route fits.

Split so that almost everything is pure and testable without HTTP:

- :func:`build_routing_prompt` -> the one user message (routes, conversation, instruction);
- :func:`build_routing_request` -> the chat-completions payload;
- :func:`parse_route_answer` -> the route name from the model's answer, after repairs;
- :class:`ArchRouter` -> one call through an injected client, every failure a
  :class:`RouterError`.

The prompt follows the one Plano (katanemo/archgw) sends to ``katanemo/Arch-Router-1.5B``
closely, since that model was trained on it: routes as compact JSON inside
``<routes></routes>``, the conversation as compact JSON inside
``<conversation></conversation>``, then numbered instructions and the answer format
``{"route": "<name>"}`` / ``{"route": "other"}``. General chat models follow it as well.

Conversation budget: only ``user`` and ``assistant`` messages with text are sent (system,
developer and tool messages, and assistant turns that only call tools, say nothing about
the user's intent). Tokens are estimated as ``ceil(len(text) / 4)`` of each message's text;
the newest user message is always kept (cut to the budget, keeping its end, if alone it is
larger), then the newest other messages are added while they fit, so the oldest are dropped
first. The fixed parts of the prompt (instruction, routes) are not counted: they are known
at start-up.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Collection, Mapping, Protocol, Sequence

from app.config import RouteConfig
from app.errors import RouterError, UpstreamError
from app.router.base import Router, newest_chars, said_text

DEFAULT_TOKEN_BUDGET = 2048
CHARS_PER_TOKEN = 4
ROUTING_TEMPERATURE = 0.01
NO_MATCH_ROUTE = "other"
MAX_QUOTED_CHARS = 200

_KEPT_ROLES = ("user", "assistant")
_COMPACT = {"separators": (",", ":"), "ensure_ascii": False}

_PROMPT_HEAD = """\
You are a helpful assistant designed to find the best suited route.
You are provided with route descriptions within <routes></routes> XML tags:
<routes>
"""
_PROMPT_MIDDLE = """
</routes>

<conversation>
"""
_PROMPT_TAIL = """
</conversation>

Your task is to decide which route best suits the user's intent in the conversation \
within <conversation></conversation> XML tags. Follow these instructions:
1. If the user's latest intent is irrelevant to every route, or the user's intent is \
already fulfilled, respond with the other route {"route": "other"}.
2. Analyze the route descriptions and find the route that best matches the user's \
latest intent.
3. Respond only with the name of the route that best matches the user's request, using \
the exact name given in <routes></routes>.

Based on your analysis, respond with exactly {"route": "<name>"} if a route matches, \
or {"route": "other"} when no route fits.
"""

_FENCE_PATTERN = re.compile(r"```(?:json)?", re.IGNORECASE)
_FLAT_OBJECT_PATTERN = re.compile(r"\{[^{}]*\}")
_TRAILING_COMMA_PATTERN = re.compile(r",\s*([}\]])")


class CompletionClient(Protocol):
    """What the router needs from a provider client (``ProviderClient`` has it)."""

    def complete_json(self, payload: dict, *, timeout: float,
                      headers: Mapping[str, str] | None = None) -> dict:
        """Send one non-streaming chat completion; raise ``UpstreamError`` on failure."""


# --------------------------------------------------------------------------- prompt

def routes_json(routes: Sequence[RouteConfig]) -> str:
    """The routes as a compact JSON array of ``{"name", "description"}``."""
    return json.dumps([{"name": route.name, "description": route.description}
                       for route in routes], **_COMPACT)


def estimate_tokens(text: str) -> int:
    """A cheap token estimate, ``ceil(len(text) / 4)``; no tokenizer on the request path."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def conversation_turns(messages: Sequence[Mapping]) -> list[dict[str, str]]:
    """The ``{"role", "content"}`` turns worth showing the router, oldest first.

    Only user and assistant messages with some text remain; content parts are flattened and
harness envelopes stripped from user text (an envelope-only user message is dropped).
    """
    turns = []
    for message in messages:
        if not isinstance(message, Mapping) or message.get("role") not in _KEPT_ROLES:
            continue
        text = said_text(message)
        if text:
            turns.append({"role": message["role"], "content": text})
    return turns


def select_turns(turns: Sequence[dict[str, str]], token_budget: int) -> list[dict[str, str]]:
    """The newest turns that fit ``token_budget``, always including the newest user turn.

    The newest user turn is cut to the budget if alone it exceeds it, keeping its end (the
    newest text: what the user asked comes after what the harness put before it). Other turns are
    taken newest first until one does not fit; that one and everything older is dropped.
    """
    anchor = next((i for i in range(len(turns) - 1, -1, -1) if turns[i]["role"] == "user"),
                  None)
    kept: dict[int, dict[str, str]] = {}
    used = 0
    if anchor is not None:
        text = newest_chars(turns[anchor]["content"], token_budget * CHARS_PER_TOKEN)
        kept[anchor] = {"role": "user", "content": text}
        used = estimate_tokens(text)
    for index in range(len(turns) - 1, -1, -1):
        if index == anchor:
            continue
        cost = estimate_tokens(turns[index]["content"])
        if used + cost > token_budget:
            break
        kept[index] = turns[index]
        used += cost
    return [kept[index] for index in sorted(kept)]


def prompt_frame(routes: Sequence[RouteConfig]) -> tuple[str, str]:
    """The constant text before and after the conversation JSON, routes included."""
    return _PROMPT_HEAD + routes_json(routes) + _PROMPT_MIDDLE, _PROMPT_TAIL


def render_prompt(frame: tuple[str, str], messages: Sequence[Mapping],
                  token_budget: int = DEFAULT_TOKEN_BUDGET) -> str:
    """The prompt for ``messages`` inside a precomputed :func:`prompt_frame`."""
    conversation = select_turns(conversation_turns(messages), token_budget)
    head, tail = frame
    return head + json.dumps(conversation, **_COMPACT) + tail


def build_routing_prompt(routes: Sequence[RouteConfig], messages: Sequence[Mapping],
                         token_budget: int = DEFAULT_TOKEN_BUDGET) -> str:
    """The Arch-Router user message for ``routes`` and the conversation ``messages``."""
    return render_prompt(prompt_frame(routes), messages, token_budget)


def build_routing_request(prompt: str, model_id: str) -> dict[str, Any]:
    """The non-streaming chat-completions payload sent to the routing model."""
    return {"model": model_id, "messages": [{"role": "user", "content": prompt}],
            "temperature": ROUTING_TEMPERATURE, "stream": False}


# --------------------------------------------------------------------------- answer

def quote(text: Any) -> str:
    """``text`` shortened to :data:`MAX_QUOTED_CHARS` for an error message or a log line."""
    text = str(text)
    return text if len(text) <= MAX_QUOTED_CHARS else text[:MAX_QUOTED_CHARS] + "..."


def _load_object(candidate: str) -> Any:
    """Parse one ``{...}`` candidate, repairing single quotes and trailing commas."""
    try:
        return json.loads(candidate)
    except ValueError:
        pass
    repaired = _TRAILING_COMMA_PATTERN.sub(r"\1", candidate.replace("'", '"'))
    try:
        return json.loads(repaired)
    except ValueError:
        return None


def parse_route_answer(text: str, route_names: Collection[str]) -> str | None:
    """The route named by the routing model's answer; ``None`` for "other" or unknown.

    Models wrap answers in fences and prose and use Python quoting, so the text is repaired
    first: fences removed, the first ``{...}`` object holding a ``route`` key taken, single
    quotes and trailing commas tolerated. ``{"route": ""}`` and ``{"route": null}`` mean no
    match, like "other". Raises :class:`RouterError` when no such object can be found.
    """
    if not isinstance(text, str):
        raise RouterError(f"routing answer is not text: {type(text).__name__}")
    cleaned = _FENCE_PATTERN.sub("", text).strip()
    for candidate in _FLAT_OBJECT_PATTERN.findall(cleaned):
        answer = _load_object(candidate)
        if isinstance(answer, dict) and "route" in answer:
            return _route_name(answer["route"], route_names, text)
    raise RouterError(f"unparseable routing answer: {quote(text)!r}")


def _route_name(value: Any, route_names: Collection[str],
                text: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise RouterError(f"routing answer has a non-string route: {quote(text)!r}")
    name = value.strip()
    return name if name and name != NO_MATCH_ROUTE and name in route_names else None


def answer_content(response: Any) -> str:
    """``choices[0].message.content`` of a chat-completions response, or RouterError."""
    try:
        content = response["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise RouterError(f"routing model answered without choices[0].message.content: "
                          f"{quote(response)!r}") from None
    if not isinstance(content, str):
        raise RouterError("routing model answered with non-text content")
    return content


# --------------------------------------------------------------------------- router

class ArchRouter(Router):
    """Routes with one call to an LLM speaking the Arch-Router prompt (no retries).

    The prompt frame (instruction and routes JSON) is built once here; a request only
    renders its conversation. ``timeout_seconds`` bounds the whole call.
    """

    kind = "llm"

    def __init__(self, routes: Sequence[RouteConfig], client: CompletionClient, model_id: str,
                 timeout_seconds: float, token_budget: int = DEFAULT_TOKEN_BUDGET):
        self.routes = tuple(routes)
        self.model_id = model_id
        self.timeout_seconds = timeout_seconds
        self.token_budget = token_budget
        self._client = client
        self._frame = prompt_frame(self.routes)
        self._routes_by_name = {route.name: route for route in self.routes}

    def for_routes(self, routes: Sequence[RouteConfig]) -> ArchRouter:
        return ArchRouter(routes, self._client, self.model_id, self.timeout_seconds,
                          self.token_budget)

    def select_route(self, messages: Sequence[Mapping]) -> RouteConfig | None:
        """Ask the routing model; the named route, ``None`` for no match, or RouterError."""
        prompt = render_prompt(self._frame, messages, self.token_budget)
        payload = build_routing_request(prompt, self.model_id)
        try:
            response = self._client.complete_json(payload, timeout=self.timeout_seconds)
        except UpstreamError as error:
            # The client's messages name the provider and host, never its key.
            raise RouterError(f"routing model call failed ({error.code}): "
                              f"{quote(error.message)}") from error
        name = parse_route_answer(answer_content(response), self._routes_by_name)
        return self._routes_by_name.get(name) if name else None
