"""Plan one upstream call for a client API request, and translate what comes back.

Pure (no Flask, no HTTP): :func:`plan_call` picks the upstream path for the client API
and the provider's interface (SPEC §13), builds the body, and returns the functions that
turn the upstream's answer, stream and errors into the client API's shapes. Same shape in
and out (Messages -> Anthropic, Responses -> native Responses) is a pass-through with
``model`` rewritten; everything else meets in :mod:`app.conversation` (one adapter per
client API, one per upstream interface). Chat -> OpenAI chat never comes here: it is the
byte-level hot path of :class:`app.relay.Relay`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

from app.client_apis import chat_completions, messages, messages_stream, responses, responses_stream
from app.client_apis.common import dumps
from app.conversation import Conversation, Failure, UnsupportedParameterError
from app.providers.sse import ServerSentEvent, SSEDecoder, encode_event
from app.upstreams import anthropic_messages, openai_chat, openai_responses
from app.upstreams.custom_tools import custom_tool_names
from app.upstreams.errors import parse_upstream_error

CLIENT_APIS = ("chat", "messages", "responses")
#: Answer events whose JSON carries the model one level down (pass-through rewrite).
_NESTED_MODEL = {"message_start": "message", "response.created": "response",
                 "response.in_progress": "response", "response.completed": "response",
                 "response.incomplete": "response", "response.failed": "response",
                 "response.queued": "response"}


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
    """What to send upstream and how to read its answer for the client."""

    path: str
    body: bytes
    headers: dict
    stream: bool
    passthrough: bool
    dropped: list = field(default_factory=list)
    #: upstream JSON answer -> client JSON answer (``None``: not a JSON object)
    reply: Callable[[bytes, bool], bytes | None] = None
    #: a fresh incremental stream translator
    stream_translator: Callable[[], "StreamTranslator"] = None
    #: upstream HTTP error (status, body, provider secrets to scrub) -> client error JSON
    error: Callable[..., bytes] = None


def interface_path(api: str, target: Target) -> str:
    """The upstream path a client API's request takes to ``target`` (SPEC §13)."""
    if target.interface == "anthropic":
        return anthropic_messages.PATH
    if api == "responses" and target.native_responses:
        return openai_responses.PATH
    return openai_chat.PATH


def plan_call(api: str, body: dict, target: Target, *,
              client_headers: dict | None = None,
              hints: Callable[[str, dict], dict] | None = None) -> UpstreamCall:
    """The upstream call for a validated ``body`` of client API ``api`` to ``target``.

    ``hints(upstream path, upstream body) -> body``: cache hints added to what is sent
    (:mod:`app.usage.hints`, SPEC §19); ``None``: the body as built.

    Raises a 400 (:class:`~app.conversation.UntranslatableError` or
    :class:`~app.conversation.UnsupportedParameterError`) for what cannot be translated.
    """
    path = interface_path(api, target)
    stream = body.get("stream") is True
    error = _error_renderer(api)
    if (api, path) in (("messages", anthropic_messages.PATH),
                       ("responses", openai_responses.PATH)):
        headers = (anthropic_messages.headers(None, client_headers)
                   if api == "messages" else {})
        upstream = {**body, "model": target.model_id}
        if hints is not None:
            upstream = hints(path, upstream)
        return UpstreamCall(path, dumps(upstream), headers, stream,
                            True, reply=_passthrough_reply(target.model_name),
                            stream_translator=lambda: PassthroughStream(target.model_name),
                            error=error)
    conversation = _parse(api, body)
    if conversation.previous_response_id is not None:
        raise UnsupportedParameterError(
            "'previous_response_id' works only when the model serves the Responses API "
            f"natively; {target.model_name} does not: send the whole conversation in "
            "'input'", param="previous_response_id")
    dropped = list(conversation.hints)
    custom = custom_tool_names(conversation.tools)
    if path == anthropic_messages.PATH:
        upstream_body = anthropic_messages.build_body(
            conversation, target.model_id, default_max_tokens=target.default_max_tokens,
            dropped=dropped)
        headers = anthropic_messages.headers(None)
        parse_reply, make_parser = anthropic_messages.parse_reply, (
            lambda: _AnthropicFeed(anthropic_messages.MessagesStreamParser(custom)))
    else:
        upstream_body = openai_chat.build_body(conversation, target.model_id,
                                               vendor=target.vendor, dropped=dropped)
        headers = {}
        parse_reply, make_parser = openai_chat.parse_reply, (
            lambda: _ChatFeed(openai_chat.ChatStreamParser(custom)))
    render = {"chat": chat_completions.render_reply, "messages": messages.render_reply,
              "responses": responses.render_reply}[api]

    def reply(raw: bytes, pinned: bool) -> bytes | None:
        parsed = _json_object(raw)
        if parsed is None:
            return None
        answer = render(parse_reply(parsed, custom), target.model_name)
        if pinned:
            answer["x_plano_pinned"] = True
        return dumps(answer)

    include_usage = api == "chat" and chat_completions.include_usage(body)

    def translator() -> StreamTranslator:
        return StreamTranslator(make_parser(),
                                _renderer(api, target.model_name, include_usage))

    if hints is not None:
        upstream_body = hints(path, upstream_body)
    return UpstreamCall(path, dumps(upstream_body), headers, stream, False, dropped,
                        reply=reply, stream_translator=translator, error=error)


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
        if api != "messages" and error_type not in ("invalid_request_error",
                                                    "authentication_error",
                                                    "upstream_error", "server_error"):
            error_type = "upstream_error" if status >= 500 else "invalid_request_error"
        return error_json(api, status, message, error_type, code)
    return render


def _json_object(raw: bytes) -> dict | None:
    try:
        parsed = json.loads(raw)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _passthrough_reply(model_name: str) -> Callable[[bytes, bool], bytes | None]:
    def reply(raw: bytes, pinned: bool) -> bytes | None:
        parsed = _json_object(raw)
        if parsed is None:
            return None
        parsed["model"] = model_name
        if pinned:
            parsed["x_plano_pinned"] = True
        return dumps(parsed)
    return reply


class PassthroughStream:
    """A same-shape Messages or Responses stream: events pass as they are, except the few
    that carry the model (``message_start``, ``response.*`` snapshots), whose ``model``
    is rewritten to the configured name."""

    def __init__(self, model_name: str):
        self._model = model_name
        self._decoder = SSEDecoder()

    def _event(self, event: ServerSentEvent) -> bytes:
        holder = _NESTED_MODEL.get(event.event or "")
        if holder is None or event.data is None:
            return encode_event(event)
        payload = _json_object(event.data.encode("utf-8"))
        inner = payload.get(holder) if payload is not None else None
        if not isinstance(inner, dict):
            return encode_event(event)
        inner["model"] = self._model
        event.data = dumps(payload).decode("utf-8")
        return encode_event(event)

    def feed(self, chunk: bytes) -> bytes:
        """The bytes to send for an upstream chunk."""
        return b"".join(self._event(event) for event in self._decoder.feed(chunk))

    def finish(self) -> bytes:
        """The bytes to send at the end of the upstream stream."""
        return b"".join(self._event(event) for event in self._decoder.flush())

    def fail(self, failure: Failure, api: str) -> bytes:
        """The in-band error for a stream that broke off."""
        return render_failure(api, failure)


def render_failure(api: str, failure: Failure) -> bytes:
    """A broken stream's in-band end in client API ``api``'s own form."""
    if api == "messages":
        return messages_stream.render_stream_error(failure)
    if api == "responses":
        return responses_stream.ResponsesStreamRenderer("").failed(failure)
    return chat_completions.render_stream_error(failure)


class _ChatFeed:
    """Adapts :class:`~app.upstreams.openai_chat.ChatStreamParser` to SSE events."""

    def __init__(self, parser):
        self.parser = parser

    def feed(self, event: ServerSentEvent):
        return self.parser.feed(event.data) if event.data is not None else ()

    def finish(self):
        return self.parser.finish()


class _AnthropicFeed:
    """Adapts :class:`~app.upstreams.anthropic_messages.MessagesStreamParser`."""

    def __init__(self, parser):
        self.parser = parser

    def feed(self, event: ServerSentEvent):
        return self.parser.feed(event.event, event.data) if event.data is not None else ()

    def finish(self):
        return self.parser.finish()


class StreamTranslator:
    """Upstream SSE bytes in, client SSE bytes out, event by event (never buffered)."""

    def __init__(self, parser, renderer):
        self._decoder = SSEDecoder()
        self._parser = parser
        self._renderer = renderer
        self._failed = False

    def _render(self, events) -> bytes:
        out = []
        for event in events:
            if isinstance(event, Failure):
                self._failed = True
            out.append(self._renderer.render(event))
        return b"".join(out)

    def feed(self, chunk: bytes) -> bytes:
        """The bytes to send for an upstream chunk."""
        if self._failed:
            return b""
        return b"".join(self._render(self._parser.feed(event))
                        for event in self._decoder.feed(chunk))

    def finish(self) -> bytes:
        """The bytes to send at the end of the upstream stream."""
        if self._failed:
            return b""
        out = b"".join(self._render(self._parser.feed(event))
                       for event in self._decoder.flush())
        return out + self._render(self._parser.finish())

    def fail(self, failure: Failure, api: str) -> bytes:
        """The in-band error for a stream that broke off."""
        if self._failed:
            return b""
        self._failed = True
        return self._renderer.render(failure)
