"""The internal model every client API and upstream interface maps to (SPEC §12, §13).

Three client APIs (Chat Completions, Messages, Responses) and three upstream interfaces
(OpenAI chat, OpenAI Responses, Anthropic Messages) meet here: each has one adapter that
parses its shape into these value objects and one that renders them back, so N + M
adapters cover every pair instead of N x M translators. Same-shape traffic never comes
here: it is a byte-level pass-through (``app.pipeline.relay``).

- :class:`Conversation`: a request (system prompt, messages of parts, tools, sampling).
- :class:`Reply`: a whole answer (parts, stop reason, usage).
- Stream events (:class:`Start`, :class:`BlockStart`, :class:`Delta`, :class:`BlockStop`,
  :class:`Finish`, :class:`Failure`): an answer told incrementally, in Anthropic-like
  blocks (one block per text, tool call or reasoning item), which every API can express.

Stop reasons use the internal vocabulary ``stop``, ``length``, ``tool_use``,
``stop_sequence``, ``content_filter``; each adapter maps its own to and from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Union

from app.errors import InvalidRequestError

StopReason = Literal["stop", "length", "tool_use", "stop_sequence", "content_filter"]


class UntranslatableError(InvalidRequestError):
    """Content that the chosen upstream interface cannot express (400, says what and why)."""

    code = "untranslatable_content"


class UnsupportedParameterError(InvalidRequestError):
    """A parameter that only works natively on one upstream interface (400)."""

    code = "unsupported_parameter"


# --- parts of a message -------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Text:
    """Plain text."""

    text: str


@dataclass(frozen=True, slots=True)
class Image:
    """An image: a URL, or base64 ``data`` with its ``media_type``."""

    url: str | None = None
    data: str | None = None
    media_type: str | None = None

    def data_url(self) -> str:
        """The image as one URL (``data:`` URL for inline data), as OpenAI shapes take it."""
        if self.url is not None:
            return self.url
        return f"data:{self.media_type or 'image/png'};base64,{self.data}"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model calls a tool: ``arguments`` is the JSON text (function) or raw input
    (``kind == "custom"``: a Responses custom tool such as Codex's ``apply_patch``)."""

    id: str
    name: str
    arguments: str
    kind: Literal["function", "custom"] = "function"


@dataclass(frozen=True, slots=True)
class ToolResult:
    """The client's answer to a tool call: text (and images) for ``call_id``."""

    call_id: str
    parts: tuple = ()
    is_error: bool = False
    kind: Literal["function", "custom"] = "function"

    def text(self) -> str:
        """The result's text parts joined (what a text-only result field can carry)."""
        return "\n".join(part.text for part in self.parts if isinstance(part, Text))


@dataclass(frozen=True, slots=True)
class Reasoning:
    """Thinking / reasoning the model showed; ``signature`` is opaque to other vendors."""

    text: str
    signature: str | None = None


Part = Union[Text, Image, ToolCall, ToolResult, Reasoning]


@dataclass(frozen=True, slots=True)
class Message:
    """One turn: ``role`` is ``user`` or ``assistant`` (tool results travel as user parts,
    as Anthropic does; OpenAI shapes split them into tool messages / items), or ``system``:
    a system message at its place in the conversation (Claude Code sends one inside a
    Messages ``messages`` list, SPEC §18), text parts only."""

    role: Literal["user", "assistant", "system"]
    parts: tuple


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool the model may call. ``parameters`` is a JSON schema (function tools);
    ``kind == "custom"`` is a free-form Responses tool (``format`` kept as given)."""

    name: str
    description: str | None = None
    parameters: dict | None = None
    kind: Literal["function", "custom"] = "function"
    format: dict | None = None


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """``auto`` / ``none`` / ``required`` (any tool) / ``tool`` (the one named)."""

    mode: Literal["auto", "none", "required", "tool"]
    name: str | None = None
    parallel: bool | None = None


@dataclass(slots=True)
class Conversation:
    """A request in the internal model, parsed from any client API."""

    messages: list
    model: str | None = None
    system: list = field(default_factory=list)   # system / developer texts, in order
    tools: list = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list = field(default_factory=list)
    stream: bool = False
    #: Hints with no equivalent elsewhere, dropped when translating (``x-plano-dropped``).
    hints: list = field(default_factory=list)
    #: ``previous_response_id`` (Responses): only a native Responses upstream can honour it.
    previous_response_id: str | None = None

    def router_messages(self) -> list[dict]:
        """The conversation as ``[{"role", "content"}]`` text turns, what routers read."""
        turns = [{"role": "system", "content": text} for text in self.system]
        for message in self.messages:
            texts = [part.text for part in message.parts if isinstance(part, Text)]
            if texts:
                turns.append({"role": message.role, "content": "\n".join(texts)})
            elif any(isinstance(part, ToolResult) for part in message.parts):
                turns.append({"role": "tool", "content": ""})
        return turns or [{"role": "user", "content": ""}]


# --- answers --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts; ``input_tokens`` includes ``cached_tokens`` (OpenAI's convention)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass(slots=True)
class Reply:
    """A whole (non-streaming) answer in the internal model."""

    id: str
    model: str
    parts: list
    stop_reason: StopReason | None = "stop"
    usage: Usage = Usage()
    stop_sequence: str | None = None


# --- stream events --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Start:
    """The answer begins (first event of every stream)."""

    id: str
    model: str
    usage: Usage = Usage()


@dataclass(frozen=True, slots=True)
class BlockStart:
    """Block ``index`` opens: ``kind`` text / tool_call / reasoning (tool calls name
    their ``call_id``, ``name`` and ``tool_kind``)."""

    index: int
    kind: Literal["text", "tool_call", "reasoning"]
    call_id: str | None = None
    name: str | None = None
    tool_kind: Literal["function", "custom"] = "function"


@dataclass(frozen=True, slots=True)
class Delta:
    """More of block ``index``: text, tool-call argument text, or reasoning text;
    ``signature`` carries a reasoning block's opaque signature."""

    index: int
    text: str = ""
    signature: str | None = None


@dataclass(frozen=True, slots=True)
class BlockStop:
    """Block ``index`` is complete."""

    index: int


@dataclass(frozen=True, slots=True)
class Finish:
    """The answer is complete: why, and the usage known by then."""

    stop_reason: StopReason | None
    usage: Usage = Usage()
    stop_sequence: str | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    """The stream broke off: rendered in-band in the client API's own error form."""

    message: str
    error_type: str = "upstream_error"
    code: str | None = "upstream_error"


StreamEvent = Union[Start, BlockStart, Delta, BlockStop, Finish, Failure]


# --- shared helpers -------------------------------------------------------------------------

def refuse(what: str, why: str, param: str | None = None) -> UntranslatableError:
    """The 400 for content that cannot be translated: says what and why."""
    return UntranslatableError(f"{what} cannot be sent to this model: {why}", param=param)


def require(condition: bool, message: str, param: str | None = None) -> None:
    """A 400 ``invalid_request_error`` unless ``condition`` holds."""
    if not condition:
        raise InvalidRequestError(message, param=param)


def optional_number(body: dict, name: str) -> Any:
    """``body[name]`` when it is a number (bools excluded), ``None`` when absent."""
    value = body.get(name)
    if value is None:
        return None
    require(isinstance(value, (int, float)) and not isinstance(value, bool),
            f"'{name}' must be a number", name)
    return value


def optional_int(body: dict, name: str) -> int | None:
    """``body[name]`` when it is an integer, ``None`` when absent."""
    value = body.get(name)
    if value is None:
        return None
    require(isinstance(value, int) and not isinstance(value, bool),
            f"'{name}' must be an integer", name)
    return value


def parse_stream_flag(body: dict) -> bool:
    """``stream``: absent or null is false; anything but a boolean is a 400."""
    stream = body.get("stream", False)
    if stream is None:
        return False
    require(isinstance(stream, bool), "'stream' must be a boolean", "stream")
    return stream


def parse_model(body: dict) -> str | None:
    """``model``: optional string."""
    model = body.get("model")
    require(model is None or isinstance(model, str), "'model' must be a string", "model")
    return model


_LISTABLE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:")
_MAX_LISTED_NAME = 64


def listed_name(name: object) -> str:
    """A client-chosen name (an unknown field, block type or role) as it may appear in the
    ``x-plano-dropped`` header: at most 64 characters of ``[A-Za-z0-9_.:-]``, else
    ``unknown`` (a header value must never carry what a client smuggled into a name)."""
    if (isinstance(name, str) and 0 < len(name) <= _MAX_LISTED_NAME
            and all(char in _LISTABLE for char in name)):
        return name
    return "unknown"


def note_dropped(hints: list, name: str) -> None:
    """Record ``name`` once as dropped by translation (``x-plano-dropped``)."""
    if name not in hints:
        hints.append(name)


def drop_unknown_fields(body: dict, known, hints: list) -> None:
    """List every top-level field of ``body`` outside ``known`` as dropped (SPEC §18: a
    field newer than this contract goes unchanged to a same-shape upstream, and is dropped,
    listed, when the request is translated)."""
    for name in body:
        if name not in known:
            note_dropped(hints, listed_name(name))


def drop_hints(body: dict, names, hints: list) -> None:
    """Record the ``names`` present in ``body`` as hints that translation drops."""
    for name in names:
        if body.get(name) is not None and name not in hints:
            hints.append(name)


def stop_with_tools(stop: StopReason | None, called: bool) -> StopReason | None:
    """The stop reason of an answer that did (``called``) or did not call tools: with tool
    calls it is ``tool_use`` whatever the provider said (Gemini says ``stop``, some
    Anthropic-compatible servers ``end_turn``), because agents run the calls only on
    ``tool_use`` / ``tool_calls`` (SPEC §18). ``length`` is kept: a call cut off by the
    token limit has incomplete arguments and must not be run."""
    if called and stop != "length":
        return "tool_use"
    return stop
