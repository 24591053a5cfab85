"""Plan one upstream call for a client API request, and translate what comes back.

Pure (no Flask, no HTTP): :func:`plan_call` picks the upstream path for the client API
and the provider's interface (SPEC §13), builds the body, and returns the functions that
turn the upstream's answer, stream and errors into the client API's shapes. Same shape in
and out (Messages -> Anthropic, Responses -> native Responses) is a pass-through with
``model`` rewritten (and, to Anthropic, ``thinking`` blocks without a signature dropped:
Anthropic refuses them, SPEC §18); everything else meets in :mod:`app.conversation` (one
adapter per client API, one per upstream interface). Chat -> an OpenAI-interface model is
the byte-level pass-through plan (:mod:`app.pipeline.passthrough`): ``model`` rewritten in
bytes, the pinned path's speed. Every plan is sent by the one
:class:`app.pipeline.relay.Relay`.

A plan's stream shaper (:class:`app.pipeline.passthrough.ChatPassthroughStream`,
:class:`app.pipeline.streams.PassthroughStream`,
:class:`app.pipeline.streams.StreamTranslator`) is a
:class:`~app.pipeline.stream_integrity.CheckedStream`: ``feed(raw)`` and ``finish()`` give
the bytes to send, ``fail(StreamFailure)`` the in-band error for a stream that broke off,
and ``failure`` says why the stream is not an answer (SPEC §18).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable

from app.client_apis import chat_completions, messages, messages_stream, responses, responses_stream
from app.client_apis.common import dumps
from app.conversation import Conversation, UnsupportedParameterError
from app.pipeline.passthrough import ChatPassthroughStream, rewrite_completion
from app.pipeline.stream_integrity import (
    check_for,
)
from app.pipeline.streams import (
    AnthropicFeed,
    ChatFeed,
    PassthroughStream,
    StreamTranslator,
    json_object,
)
from app.providers.openai_compat import upstream_error_body
from app.upstreams import anthropic_messages, openai_chat, openai_responses
from app.upstreams.custom_tools import custom_tool_names
from app.upstreams.errors import context_length_error, parse_upstream_error

CLIENT_APIS = ("chat", "messages", "responses")


@dataclass(frozen=True, slots=True)
class Target:
    """Where a request goes: the provider's configured name, the model id it is sent as,
    its interface, vendor, whether it takes Responses natively, its max_tokens default."""

    model_name: str
    model_id: str
    interface: str = "openai"
    vendor: str = "openai"
    native_responses: bool = False
    default_max_tokens: int = 4096


@dataclass(slots=True)
class UpstreamCall:
    """What to send upstream and how to read its answer for the client (a *plan*)."""

    #: The provider's path for this call; ``None``: its interface's own (chat completions).
    path: str | None
    body: bytes
    headers: dict
    stream: bool
    passthrough: bool
    dropped: list = field(default_factory=list)
    #: upstream JSON answer -> client JSON answer (``None``: not a JSON object)
    reply: Callable[[bytes, bool], bytes | None] = None
    #: a fresh stream shaper (feed / finish / fail / failure, see the module docstring)
    stream_translator: Callable[[], "StreamTranslator"] = None
    #: upstream HTTP error (status, body, provider secrets to scrub) -> client error JSON
    error: Callable[..., bytes] = None
    #: The gateway asked for a Chat stream's usage chunk the client did not ask for: it is
    #: removed from what is relayed (SPEC §19).
    strip_usage: bool = False


def interface_path(api: str, target: Target) -> str:
    """The upstream path a client API's request takes to ``target`` (SPEC §13)."""
    if target.interface == "anthropic":
        return anthropic_messages.PATH
    if api == "responses" and target.native_responses:
        return openai_responses.PATH
    return openai_chat.PATH


def plan_call(api: str, body: dict, target: Target, *,
              client_headers: dict | None = None,
              hints: Callable[[str, dict], dict] | None = None,
              stream_usage: bool = False) -> UpstreamCall:
    """The upstream call for a validated ``body`` of client API ``api`` to ``target``.

    ``hints(upstream path, upstream body) -> body``: cache hints added to what is sent
    (:mod:`app.usage.hints`, SPEC §19); ``None``: the body as built. ``stream_usage``: a
    pass-through Chat stream asks for ``stream_options.include_usage`` (SPEC §19), and the
    call's ``strip_usage`` says the client did not ask for the usage-only chunk.

    Raises a 400 (:class:`~app.conversation.UntranslatableError` or
    :class:`~app.conversation.UnsupportedParameterError`) for what cannot be translated.
    """
    path = interface_path(api, target)
    stream = body.get("stream") is True
    if api == "chat" and path == openai_chat.PATH:
        return _chat_passthrough(body, target, stream, hints, stream_usage)
    error = _error_renderer(api)
    if (api, path) in (("messages", anthropic_messages.PATH),
                       ("responses", openai_responses.PATH)):
        dropped: list = []
        if api == "messages":
            headers = anthropic_messages.headers(None, client_headers)
            body, dropped = anthropic_messages.drop_unsigned_thinking(body)
        else:
            headers = {}
        upstream = {**body, "model": target.model_id}
        if hints is not None:
            upstream = hints(path, upstream)
        return UpstreamCall(path, dumps(upstream), headers, stream,
                            True, dropped, reply=_passthrough_reply(target.model_name),
                            stream_translator=lambda: PassthroughStream(target.model_name,
                                                                        api),
                            error=error)
    conversation = _parse(api, body)
    if conversation.previous_response_id is not None:
        raise UnsupportedParameterError(
            "'previous_response_id' works only when the model serves the Responses API "
            f"natively; {target.model_name} does not: send the whole conversation in "
            "'input'", param="previous_response_id")
    dropped = list(conversation.hints)
    # ``tools``: what the answer parsers restore with (custom tool names for Anthropic; a
    # per-request ToolMapping of names and call ids for OpenAI chat, SPEC §18).
    if path == anthropic_messages.PATH:
        tools = custom_tool_names(conversation.tools)
        upstream_body = anthropic_messages.build_body(
            conversation, target.model_id, default_max_tokens=target.default_max_tokens,
            dropped=dropped)
        headers = anthropic_messages.headers(None)
        parse_reply, make_parser = anthropic_messages.parse_reply, (
            lambda: AnthropicFeed(anthropic_messages.MessagesStreamParser(tools)))
    else:
        tools = openai_chat.tool_mapping(conversation, target.vendor)
        upstream_body = openai_chat.build_body(conversation, target.model_id,
                                               vendor=target.vendor, dropped=dropped,
                                               tools=tools)
        headers = {}
        parse_reply, make_parser = openai_chat.parse_reply, (
            lambda: ChatFeed(openai_chat.ChatStreamParser(tools)))
    render = {"chat": chat_completions.render_reply, "messages": messages.render_reply,
              "responses": responses.render_reply}[api]

    def reply(raw: bytes, pinned: bool) -> bytes | None:
        parsed = json_object(raw)
        if parsed is None:
            return None
        answer = render(parse_reply(parsed, tools), target.model_name)
        if pinned:
            answer["x_plano_pinned"] = True
        return dumps(answer)

    include_usage = api == "chat" and chat_completions.include_usage(body)

    def translator() -> StreamTranslator:
        return StreamTranslator(make_parser(),
                                _renderer(api, target.model_name, include_usage),
                                check_for(path, target.model_name))

    if hints is not None:
        upstream_body = hints(path, upstream_body)
    return UpstreamCall(path, dumps(upstream_body), headers, stream, False, dropped,
                        reply=reply, stream_translator=translator, error=error)


def _chat_passthrough(body: dict, target: Target, stream: bool,
                      hints: Callable[[str, dict], dict] | None,
                      stream_usage: bool) -> UpstreamCall:
    """The byte-level plan: the client's own body with ``model`` set to the provider's id,
    to the interface's own path; the answer's ``model`` rewritten in bytes."""
    reply, error, shaper = _passthrough_functions(target.model_name)
    upstream = {**body, "model": target.model_id}
    strip = False
    if stream and stream_usage:
        options = upstream.get("stream_options")
        if not (isinstance(options, dict) and options.get("include_usage") is True):
            upstream["stream_options"] = ({**options, "include_usage": True}
                                          if isinstance(options, dict)
                                          else {"include_usage": True})
            strip = True
    if hints is not None:
        upstream = hints(openai_chat.PATH, upstream)
    call = UpstreamCall(None, dumps(upstream), {}, stream, True, reply=reply,
                        stream_translator=shaper, error=error)
    call.strip_usage = strip
    return call


@functools.lru_cache(maxsize=1024)
def _passthrough_functions(model_name: str) -> tuple:
    """The pass-through plan's reply, error and stream-shaper functions for one configured
    model: made once, not per request (the pinned path's cost)."""
    def reply(raw: bytes, pinned: bool) -> bytes | None:
        return rewrite_completion(raw, model_name, pinned)

    def error(status: int, raw: bytes, secrets=()) -> bytes:
        return dumps(upstream_error_body(status, raw, secrets))

    def shaper() -> ChatPassthroughStream:
        return ChatPassthroughStream(model_name)

    return reply, error, shaper


def _parse(api: str, body: dict) -> Conversation:
    return {"chat": chat_completions.parse, "messages": messages.parse,
            "responses": responses.parse}[api](body)


def _renderer(api: str, model_name: str, include_usage: bool):
    if api == "chat":
        return chat_completions.ChatStreamRenderer(model_name, include_usage)
    if api == "messages":
        return messages_stream.MessagesStreamRenderer(model_name)
    return responses_stream.ResponsesStreamRenderer(model_name)


def error_json(api: str, status: int, message: str, error_type: str,
               code: str | None) -> bytes:
    """An error body in client API ``api``'s shape (Anthropic's on Messages, §8 else)."""
    if api == "messages":
        return dumps(messages.error_body(status, message, code))
    return dumps(chat_completions.error_body(message, error_type, code))


def _error_renderer(api: str) -> Callable[..., bytes]:
    def render(status: int, raw: bytes, secrets=()) -> bytes:
        message, error_type, code = parse_upstream_error(status, raw, secrets)
        too_long = context_length_error(api, status, message, code)
        if too_long is not None:
            return error_json(api, 400, *too_long)
        if api != "messages" and error_type not in ("invalid_request_error",
                                                    "authentication_error",
                                                    "upstream_error", "server_error"):
            error_type = "upstream_error" if status >= 500 else "invalid_request_error"
        return error_json(api, status, message, error_type, code)
    return render


def _passthrough_reply(model_name: str) -> Callable[[bytes, bool], bytes | None]:
    def reply(raw: bytes, pinned: bool) -> bytes | None:
        parsed = json_object(raw)
        if parsed is None:
            return None
        parsed["model"] = model_name
        if pinned:
            parsed["x_plano_pinned"] = True
        return dumps(parsed)
    return reply
