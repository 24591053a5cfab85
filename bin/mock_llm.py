#!/usr/bin/env python3
"""mock_llm: a MOCK OpenAI-compatible upstream LLM for offline demos, tests and benchmarks.

Nothing here is a model. Every answer is canned, says so in its text (``[mock-llm] ...``),
carries a top-level ``"mock": true`` field and the response header ``x-mock-llm: true``.

Standard library only (asyncio with a small HTTP/1.1 ``asyncio.Protocol`` server: keep-alive,
pipelined requests answered in order, ``Content-Length`` request bodies; chunked request bodies
are refused with 411), so it runs under any Python 3.11+ and is fast enough to benchmark a
gateway against.

Endpoints:
  POST .../chat/completions (any prefix: /v1, /openai/v1, /v1beta/openai, ...)
      OpenAI chat completion; ``"stream": true`` answers with SSE ``chat.completion.chunk``
      events (role, one delta per word, finish, optional usage, ``[DONE]``) in a chunked body.
  POST .../messages
      Anthropic Messages; ``"stream": true`` answers with its SSE events (message_start,
      content_block_start/delta/stop, message_delta, message_stop).
  POST .../responses
      OpenAI Responses; ``"stream": true`` answers with response.created ... response.completed.
  On all three: when the request offers tools and the last user text contains
  ``[mock:tool]``, the answer calls the first tool (a custom tool with raw input); a tool
  result as the last turn is quoted back (``tool result: ...``); images are counted
  (``[images: N]``).
  GET /health                    -> {"status": "ok", "mock": true}
  GET /_mock/requests            -> the last 100 recorded requests (every path except /health
                                    and /_mock/*): [{"path", "headers", "body"}]
  DELETE /_mock/requests         -> clears the record
  GET /_mock/streams             -> {"started", "completed", "aborted"} stream counts
  POST /v1/traces                -> 200, empty body: a do-nothing OTLP/HTTP collector (bench)

Fault injection, per request, through headers (so one process serves every test):
  x-mock-status: N       -> status N with an OpenAI error envelope
  x-mock-raw-status: N   -> status N with the plain-text body "mock plain failure"
  x-mock-latency-ms: N   -> delay before answering (overrides --latency-ms)
  x-mock-route: NAME     -> assistant content is exactly {"route": "NAME"} (drives an LLM router;
                            --route NAME makes it the default, as the LLM router sends its own
                            headers)
  x-mock-content: TEXT   -> assistant content is exactly TEXT
  x-mock-chunk-delay-ms: N -> (Messages, Responses) gap between streamed events
  x-mock-retry-after: N  -> with a fault status: a "retry-after: N" header on the answer
  x-mock-drop: 1         -> close the connection without answering (after any latency)
  x-mock-break-after: N  -> a stream sends N events, then the connection is cut mid-body
  x-mock-cached-tokens: N -> usage reports N prompt tokens read from the prompt cache
                            (instead of the simulated cache below)
The same faults can be asked for in the request body, which a gateway forwards untouched:
  "mock_fault": {"status": 429, "raw_status": 500, "latency_ms": 3000, "route": "x",
                 "content": "...", "retry_after": 5, "drop": 1, "break_after": 2}
Per model (the body's ``model``, i.e. the id a gateway sends upstream), so the models of
one route can fail differently:
  "mock_fault": {"models": {"gpt-5.2": {"status": 503}, "gpt-4o-mini": {"drop": 1}}}
and, held by the mock until lifted (faults a client cannot put in the body, e.g. the demo's
"the deep model is down"):
  POST /_mock/faults {"model": "gpt-5.2", "status": 503, "count": 2}
                                 -> that model's requests get the fault (the next ``count``
                                    ones; without count, until DELETE)
  GET /_mock/faults, DELETE /_mock/faults (all) or DELETE /_mock/faults?model=ID

A MOCK prompt cache, per model (SPEC §20): a conversation prefix (tools, system, then each
message) that the same model saw within --cache-warm-seconds (default 300; 0: off) is
billed as cache reads, reported the way each provider does: Chat
``prompt_tokens_details.cached_tokens``, Responses ``input_tokens_details.cached_tokens``,
Messages ``cache_read_input_tokens`` (and ``cache_creation_input_tokens`` for the rest of the
prefix; Anthropic caches only requests that carry ``cache_control`` breakpoints). Tokens
are words. ``cache_control`` markers are ignored when comparing prefixes.

On start it prints one line to stdout:
  mock_llm listening on http://HOST:PORT (MOCK upstream: answers are canned, not from a real model)
Unless --quiet, one line per request goes to stderr (drain or redirect it when piping).
SIGTERM / SIGINT stop it with exit status 0.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import http
import itertools
import json
import re
import signal
import sys
import time
import urllib.parse
from dataclasses import dataclass

#: The API a path asks for, by its last segments: any provider's path prefix works
#: (``/openai/v1/chat/completions`` as Groq's, ``/openai/deployments/x/...`` as Azure's), so
#: the gateway's provider catalogue can be checked against this one mock.
API_SUFFIXES = (("/chat/completions", "chat"), ("/messages", "messages"),
                ("/responses", "responses"))


def api_of(path: str) -> str | None:
    """``chat``, ``messages`` or ``responses`` for an API path (query ignored), else None."""
    bare = path.split("?", 1)[0]
    return next((api for suffix, api in API_SUFFIXES if bare.endswith(suffix)), None)
TOOL_MARKER = "[mock:tool]"
PATCH = "*** mock patch ***"
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 32 * 1024 * 1024
RECORD_LIMIT = 100
JSON_TYPE = "application/json"


@dataclass(slots=True)
class Request:
    """One parsed HTTP request."""
    method: str
    path: str
    version: str
    headers: dict
    body: bytes
    keep_alive: bool
    query: dict | None = None


@dataclass(slots=True)
class Reply:
    """A planned answer: a plain body, or SSE ``events`` when streaming, after ``delay`` s."""
    status: int
    body: bytes = b""
    content_type: str = JSON_TYPE
    delay: float = 0.0
    events: list | None = None
    #: Gap between streamed events for this reply (``None``: ``--chunk-delay-ms``).
    chunk_delay: float | None = None
    #: Extra header lines (``"name: value\r\n"``).
    extra_headers: str = ""
    #: Close the connection instead of answering (a MOCK connection failure).
    drop: bool = False
    #: Cut a stream after this many events (a MOCK failure mid-stream).
    break_after: int | None = None


class State:
    """Settings and shared data of one mock server."""

    def __init__(self, latency_ms: float, chunk_delay_ms: float, quiet: bool,
                 route: str | None = None):
        self.latency = latency_ms / 1000.0
        self.route = route
        self.chunk_delay = chunk_delay_ms / 1000.0
        self.quiet = quiet
        self.recorded: collections.deque = collections.deque(maxlen=RECORD_LIMIT)
        self.ids = itertools.count(1)
        self.connections: set = set()
        # How streams ended: lets tests see that a gateway closes its upstream when its
        # own client goes away mid-stream.
        self.streams = {"started": 0, "completed": 0, "aborted": 0}
        #: Held per-model faults (POST /_mock/faults): model id -> {"fault", "count"}.
        self.faults: dict[str, dict] = {}
        #: The MOCK prompt cache: (model, prefix hash) -> when last seen (monotonic).
        self.prompt_cache: collections.OrderedDict = collections.OrderedDict()
        self.cache_warm = 300.0

    def take_fault(self, model) -> dict | None:
        """The held fault of ``model``, counting one use of it."""
        held = self.faults.get(model) if isinstance(model, str) else None
        if held is None:
            return None
        if held["count"] is not None:
            held["count"] -= 1
            if held["count"] <= 0:
                del self.faults[model]
        return held["fault"]


def reason(status: int) -> str:
    """Reason phrase of a status code (any code in 100..599 is accepted)."""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Mock Status"


def error_reply(status: int, message: str, code: str, etype: str = "invalid_request_error",
                delay: float = 0.0) -> Reply:
    """A reply carrying an OpenAI error envelope."""
    err = {"message": message, "type": etype, "param": None, "code": code}
    return Reply(status, json.dumps({"error": err}).encode(), delay=delay)


def text_of(content) -> str:
    """Plain text of a message ``content`` (a string or a list of content parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content
                        if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def split_deltas(text: str) -> list[str]:
    """Split ``text`` into >= 3 stream deltas (words where possible) that join back exactly."""
    pieces = re.split(r"(?<=\s)(?=\S)", text)
    if len(pieces) < 3 and len(text) >= 3:
        step = -(-len(text) // 3)
        pieces = [text[i:i + step] for i in range(0, len(text), step)]
    return pieces


def header_int(headers: dict, name: str) -> int | None:
    """Integer value of a header, None when absent; ValueError when malformed."""
    value = headers.get(name)
    return None if value is None else int(value)


def recordable(record: dict) -> dict:
    """A recorded request that ``json.dumps`` can write (a body nested too deep is replaced
    by a marker instead of breaking every later listing)."""
    try:
        json.dumps(record["body"])
    except (RecursionError, ValueError):
        return {**record, "body": "<not serialisable: nested too deep>"}
    return record


def with_body_faults(headers: dict, body, state: State | None = None) -> dict:
    """Headers plus the faults named in the body's ``mock_fault`` object (its ``models``
    entry for the body's model included) and the fault held for that model.

    A gateway forwards the body's unknown fields untouched but not the client's headers, so
    tests that go through a gateway ask for faults in the body:
    ``"mock_fault": {"status": 429, "latency_ms": 3000, "raw_status": 500, "route": "x",
    "content": "..."}`` means the same as the ``x-mock-*`` headers.
    """
    if not isinstance(body, dict):
        return headers
    faults = body.get("mock_fault")
    faults = dict(faults) if isinstance(faults, dict) else {}
    per_model = faults.pop("models", None)
    model = body.get("model")
    if isinstance(per_model, dict) and isinstance(per_model.get(model), dict):
        faults.update(per_model[model])
    held = state.take_fault(model) if state is not None else None
    if held:
        faults.update(held)
    if not faults:
        return headers
    extra = {f"x-mock-{name.replace('_', '-')}": str(value) for name, value in faults.items()}
    return {**headers, **extra}


def fault_reply(h: dict, delay: float) -> Reply | None:
    """A dropped connection when asked for (``x-mock-drop``), else ``None``."""
    if h.get("x-mock-drop", "0") not in ("", "0", "false", "False"):
        return Reply(0, delay=delay, drop=True)
    return None


def with_fault_extras(reply: Reply, h: dict) -> Reply:
    """``reply`` with the asked-for ``retry-after`` header (error answers) and stream cut."""
    if reply.status >= 400 and "x-mock-retry-after" in h:
        reply.extra_headers += f"retry-after: {int(h['x-mock-retry-after'])}\r\n"
    if reply.events is not None and "x-mock-break-after" in h:
        reply.break_after = max(0, int(h["x-mock-break-after"]))
    return reply


def manage_faults(state: State, req: Request) -> Reply:
    """GET/POST/DELETE /_mock/faults: the faults held per model."""
    if req.method == "GET":
        return Reply(200, json.dumps(state.faults).encode())
    if req.method == "DELETE":
        model = (req.query or {}).get("model")
        cleared = [model] if model else list(state.faults)
        for name in cleared:
            state.faults.pop(name, None)
        return Reply(200, json.dumps({"cleared": cleared}).encode())
    if req.method != "POST":
        return error_reply(405, f"mock: {req.method} not allowed", "method_not_allowed")
    try:
        spec = json.loads(req.body)
    except (ValueError, UnicodeDecodeError):
        spec = None
    if not isinstance(spec, dict) or not isinstance(spec.get("model"), str):
        return error_reply(400, "mock: a JSON object with a model id is required",
                           "invalid_body")
    model = spec.pop("model")
    count = spec.pop("count", None)
    state.faults[model] = {"fault": spec, "count": count if isinstance(count, int) else None}
    return Reply(200, json.dumps({"model": model, **state.faults[model]}).encode())


#: The integer fault headers (``x-mock-<name>``); any that is not an integer is a 400.
_MOCK_INTS = ("latency-ms", "raw-status", "status", "chunk-delay-ms", "retry-after",
              "break-after", "cached-tokens")


def mock_ints(h: dict) -> dict:
    """Every integer ``x-mock-*`` header (``None`` when absent); ValueError on a bad one."""
    return {name: header_int(h, f"x-mock-{name}") for name in _MOCK_INTS}


def answer_delay(state: State, ints: dict) -> float:
    """Seconds before answering: ``x-mock-latency-ms``, else ``--latency-ms``."""
    latency = ints["latency-ms"]
    return state.latency if latency is None else max(latency, 0) / 1000.0


def recorded_body(state: State, req: Request):
    """The request's JSON body (``ValueError``, the class, when it is not JSON), recorded
    for ``GET /_mock/requests`` with its path, query and headers."""
    try:
        body = json.loads(req.body) if req.body else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        body = ValueError
    state.recorded.append({"path": req.path, "query": req.query, "headers": req.headers,
                           "body": None if body is ValueError else body})
    return body


def planned(state: State, req: Request, answer) -> Reply:
    """Record the request, apply its faults, else ``answer(h, body, delay, ints)``."""
    body = recorded_body(state, req)
    h = with_body_faults(req.headers, body, state)
    try:
        ints = mock_ints(h)
    except ValueError:
        return error_reply(400, "mock: x-mock-* headers must be integers", "mock_bad_header")
    delay = answer_delay(state, ints)
    return with_fault_extras(fault_reply(h, delay) or answer(h, body, delay, ints), h)


def chat(state: State, req: Request) -> Reply:
    """Plan the answer to a chat-completions request (faults, canned answer, stream)."""
    return planned(state, req, lambda h, body, delay, ints: chat_reply(
        state, h, body, delay, ints["raw-status"], ints["status"]))


def chat_reply(state: State, h: dict, body, delay: float, raw_status: int | None,
               status: int | None) -> Reply:
    """The chat-completions answer once the request's faults are known."""
    for fault in (raw_status, status):
        if fault is not None and not 200 <= fault <= 599:
            return error_reply(400, "mock: fault status must be 200..599", "mock_bad_header")
    if raw_status is not None:
        return Reply(raw_status, b"mock plain failure", "text/plain; charset=utf-8", delay)
    if status is not None:
        return error_reply(status, f"mock error {status}", f"mock_{status}", "mock_error", delay)
    if body is ValueError:
        return error_reply(400, "mock: request body is not valid JSON", "invalid_json")
    if not isinstance(body, dict):
        return error_reply(400, "mock: request body must be a JSON object", "invalid_body")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return error_reply(400, "you must provide a model parameter", "missing_model")
    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    texts = [text_of(m.get("content")) for m in messages if isinstance(m, dict)]
    if "x-mock-content" in h:
        content = h["x-mock-content"]
    elif "x-mock-route" in h or state.route:
        content = json.dumps({"route": h.get("x-mock-route", state.route)})
    else:
        users = [text_of(m.get("content")) for m in messages
                 if isinstance(m, dict) and m.get("role") == "user"]
        last = users[-1] if users else ""
        content = f"[mock-llm] canned answer from model {model} to: {last[:60]}"
    prompt_tokens = max(1, sum(len(t.split()) for t in texts))
    completion_tokens = max(1, len(content.split()))
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
             "total_tokens": prompt_tokens + completion_tokens}
    cid, created = f"chatcmpl-mock-{next(state.ids)}", int(time.time())
    if (body.get("tools") or any(isinstance(m, dict) and (
            m.get("role") == "tool" or isinstance(m.get("content"), list))
            for m in messages)) and "x-mock-content" not in h and "x-mock-route" not in h:
        convo = chat_view(body)   # tool calls, tool results and images (rarely: not the
        if convo.tool_result is not None or convo.images or convo.wants_tool:  # bench path)
            return api_reply(state, "chat", body, convo, delay, h)
    usage = with_prompt_cache(state, "chat", h, body, usage)
    if body.get("stream") is True:
        return Reply(200, content_type="text/event-stream", delay=delay,
                     events=stream_events(cid, created, model, content, usage, body))
    answer = {"id": cid, "object": "chat.completion", "created": created, "model": model,
              "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                           "message": {"role": "assistant", "content": content}}],
              "usage": usage, "mock": True}
    return Reply(200, json.dumps(answer).encode(), delay=delay)


def stream_events(cid, created, model, content, usage, body) -> list[bytes]:
    """The SSE payloads of a streamed answer, ``[DONE]`` last."""
    def chunk(delta, finish=None):
        return {"id": cid, "object": "chat.completion.chunk", "created": created,
                "model": model, "mock": True,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": piece}) for piece in split_deltas(content)]
    chunks.append(chunk({}, "stop"))
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        chunks.append({**chunk({}), "choices": [], "usage": usage})
    return [json.dumps(c).encode() for c in chunks] + [b"[DONE]"]


# --------------------------------------------------------------- MOCK prompt cache

#: Prefix hashes kept at most (oldest forgotten first).
PROMPT_CACHE_LIMIT = 100_000


def _words(value) -> int:
    """Words in every string of a JSON value (the mock's tokens)."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, dict):
        return sum(_words(v) for v in value.values())
    if isinstance(value, list):
        return sum(_words(v) for v in value)
    return 0


def _without_cache_control(value):
    """``value`` without ``cache_control`` members (breakpoints move; prefixes do not)."""
    if isinstance(value, dict):
        return {k: _without_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_without_cache_control(v) for v in value]
    return value


def prompt_units(api: str, body: dict) -> list:
    """The request's prompt in cache order: (tools, system, instructions) first, then
    each message or input item, as (canonical JSON, words) pairs."""
    head = {k: body.get(k) for k in ("tools", "system", "instructions") if body.get(k)}
    items = body.get("input") if api == "responses" else body.get("messages")
    if isinstance(items, str):
        items = [items]
    units = [head] + (list(items) if isinstance(items, list) else [])
    return [(json.dumps(_without_cache_control(u), sort_keys=True), _words(u)) for u in units]


def prompt_cache_tokens(state: State, api: str, h: dict, body, prompt: int) -> tuple:
    """(prompt, cache-read, cache-write) tokens of a request (MOCK prompt cache).

    ``x-mock-cached-tokens`` forces the cache reads. Otherwise the longest prefix (all but
    the newest unit) that this model saw within the warm window is read from the cache;
    Messages requests without ``cache_control`` are not cached, and with it, the rest of the
    prefix is written. Every prefix of the request is then remembered as warm.
    """
    forced = header_int(h, "x-mock-cached-tokens") if h else None
    if forced is not None:
        return prompt, max(0, min(forced, prompt)), 0
    if state.cache_warm <= 0 or not isinstance(body, dict):
        return prompt, 0, 0
    try:
        if api == "messages" and "cache_control" not in json.dumps(body):
            return prompt, 0, 0
    except (RecursionError, ValueError):
        return prompt, 0, 0
    model = body.get("model")
    try:
        units = prompt_units(api, body)
    except (RecursionError, ValueError):  # a hostile body nested too deep: not cached
        return prompt, 0, 0
    now = time.monotonic()
    cache = state.prompt_cache
    digest = ""
    total = cached = 0
    for index, (text, words) in enumerate(units):
        digest = hashlib.sha1((digest + text).encode()).hexdigest()
        seen = cache.pop((model, digest), None)
        if index < len(units) - 1 and seen is not None and now - seen < state.cache_warm \
                and cached == total:
            cached = total + words
        total += words
        cache[(model, digest)] = now
    while len(cache) > PROMPT_CACHE_LIMIT:
        cache.popitem(last=False)
    prompt = max(prompt, total)
    written = 0
    if api == "messages":
        written = max(0, total - units[-1][1] - cached) if units else 0
    return prompt, cached, written


def with_prompt_cache(state: State, api: str, h: dict, body, usage: dict) -> dict:
    """A chat ``usage`` object with the MOCK cache's reads (``prompt_tokens_details``)."""
    prompt, cached, _ = prompt_cache_tokens(state, api, h, body, usage["prompt_tokens"])
    return {**usage, "prompt_tokens": prompt, "total_tokens": prompt + usage[
        "completion_tokens"], "prompt_tokens_details": {"cached_tokens": cached}}


def _usage_object(api: str, old: dict, counts: tuple) -> dict:
    """A provider's usage object with (prompt, cache-read, cache-write) counts put in."""
    prompt, cached, written = counts
    usage = dict(old)
    if api == "messages":
        usage["input_tokens"] = max(0, prompt - cached - written)
        usage["cache_read_input_tokens"] = cached
        usage["cache_creation_input_tokens"] = written
    elif api == "responses":
        usage["input_tokens"] = prompt
        usage["input_tokens_details"] = {"cached_tokens": cached}
        usage["total_tokens"] = prompt + usage.get("output_tokens", 0)
    else:
        usage["prompt_tokens"] = prompt
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
        usage["total_tokens"] = prompt + usage.get("completion_tokens", 0)
    return usage


def cached_usage_in(api: str, result, counts: tuple, stream: bool):
    """A rendered answer (JSON object, or SSE events) with its usage carrying ``counts``:
    the JSON's ``usage``; in a stream, the chat usage chunk, Anthropic's ``message_start``
    and the Responses ``response.completed`` snapshot."""
    if not stream:
        if isinstance(result, dict) and isinstance(result.get("usage"), dict):
            result["usage"] = _usage_object(api, result["usage"], counts)
        return result
    out = []
    for event in result:
        name, data = event if isinstance(event, tuple) else (None, event)
        if b'"usage": {' in data and name in (None, "message_start", "response.completed"):
            payload = json.loads(data)
            holder = payload.get("message") or payload.get("response") or payload
            if isinstance(holder.get("usage"), dict):
                holder["usage"] = _usage_object(api, holder["usage"], counts)
            data = json.dumps(payload).encode()
        out.append((name, data) if name is not None else data)
    return out


@dataclass(slots=True)
class View:
    """What the mock reads from a request of any API: the last user text, images, the
    tools offered ((name, kind) pairs) and the text of a trailing tool result."""
    last_user: str = ""
    images: int = 0
    tools: list = None
    tool_result: str | None = None
    words: int = 1

    @property
    def wants_tool(self) -> bool:
        return bool(self.tools) and TOOL_MARKER in self.last_user and self.tool_result is None


def _count_words(texts) -> int:
    return max(1, sum(len(t.split()) for t in texts))


def chat_view(body: dict) -> View:
    """A chat-completions body as a :class:`View`."""
    view = View(tools=[(t.get("function", {}).get("name", "tool"), "function",
                        t.get("function", {}).get("parameters"))
                       for t in body.get("tools") or [] if isinstance(t, dict)])
    texts = []
    for m in body.get("messages") or []:
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        texts.append(text_of(content))
        if m.get("role") == "user":
            view.last_user, view.tool_result = text_of(content), None
            if isinstance(content, list):
                view.images += sum(1 for p in content
                                   if isinstance(p, dict) and p.get("type") == "image_url")
        elif m.get("role") == "tool":
            view.tool_result = text_of(content)
    view.words = _count_words(texts)
    return view


def messages_view(body: dict) -> View:
    """An Anthropic Messages body as a :class:`View`."""
    view = View(tools=[(t.get("name", "tool"), "function", t.get("input_schema"))
                       for t in body.get("tools") or [] if isinstance(t, dict)])
    texts = []
    for m in body.get("messages") or []:
        if not isinstance(m, dict) or m.get("role") != "user":
            continue
        content = m.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else (
            content if isinstance(content, list) else [])
        results = [b for b in blocks if isinstance(b, dict) and b.get("type") == "tool_result"]
        text = text_of([b for b in blocks if isinstance(b, dict) and b.get("type") == "text"])
        texts.append(text)
        view.images += sum(1 for b in blocks if isinstance(b, dict) and b.get("type") == "image")
        view.tool_result = None
        if results:
            inner = results[-1].get("content")
            view.tool_result = inner if isinstance(inner, str) else text_of(inner or [])
        if text:
            view.last_user = text
    view.words = _count_words(texts)
    return view


def responses_view(body: dict) -> View:
    """An OpenAI Responses body as a :class:`View`."""
    view = View(tools=[(t.get("name", "tool"), t.get("type", "function"), t.get("parameters"))
                       for t in body.get("tools") or [] if isinstance(t, dict)])
    items = body.get("input")
    if isinstance(items, str):
        items = [{"type": "message", "role": "user", "content": items}]
    texts = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message")
        if kind == "message" and item.get("role") == "user":
            content = item.get("content")
            view.last_user, view.tool_result = text_of(content), None
            texts.append(view.last_user)
            if isinstance(content, list):
                view.images += sum(1 for p in content
                                   if isinstance(p, dict) and p.get("type") == "input_image")
        elif kind in ("function_call_output", "custom_tool_call_output"):
            out = item.get("output")
            view.tool_result = out if isinstance(out, str) else text_of(out or [])
    view.words = _count_words(texts)
    return view


def answer_text(model: str, view: View) -> str:
    """The canned answer for a :class:`View` (labelled as the mock's)."""
    if view.tool_result is not None:
        text = (f"[mock-llm] canned answer from model {model} to tool result: "
                f"{view.tool_result[:60]}")
    else:
        text = f"[mock-llm] canned answer from model {model} to: {view.last_user[:60]}"
    if view.images:
        text += f" [images: {view.images}]"
    return text


def tool_call_of(view: View, n: int) -> tuple[str, str, str, str]:
    """(call id, name, kind, arguments or raw input) of the mock's tool call. A function
    whose schema takes one ``input`` string (how gateways offer a free-form custom tool to
    JSON-schema APIs) gets the same raw text a custom tool would."""
    name, kind, schema = view.tools[0]
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if kind == "custom":
        payload = PATCH
    elif isinstance(properties, dict) and list(properties) == ["input"]:
        payload = json.dumps({"input": PATCH})
    else:
        payload = json.dumps({"mock": True, "n": n})
    return f"call_mock_{n}", name, kind, payload


def api_reply(state: State, api: str, body: dict, view: View, delay: float,
              h: dict | None = None) -> Reply:
    """The JSON or SSE reply of ``api`` (chat, messages, responses) for a View."""
    model = body.get("model")
    n = next(state.ids)
    call = tool_call_of(view, n) if view.wants_tool else None
    text = None if call else answer_text(model, view)
    out_tokens = max(1, len((text or "").split()) or 1)
    usage = (view.words, out_tokens)
    stream = body.get("stream") is True
    render = {"chat": (chat_json, chat_sse), "messages": (messages_json, messages_sse),
              "responses": (responses_json, responses_sse)}[api][1 if stream else 0]
    result = render(n, model, text, call, usage, body)
    result = cached_usage_in(api, result, prompt_cache_tokens(state, api, h or {}, body,
                                                              usage[0]), stream)
    if stream:
        return Reply(200, content_type="text/event-stream", delay=delay, events=result)
    return Reply(200, json.dumps(result).encode(), delay=delay)


def chat_json(n, model, text, call, usage, body):
    """A chat completion (used when tools or images are involved)."""
    message = {"role": "assistant", "content": text}
    if call:
        message["tool_calls"] = [{"id": call[0], "type": "function",
                                  "function": {"name": call[1], "arguments": call[3]}}]
    return {"id": f"chatcmpl-mock-{n}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "mock": True,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "tool_calls" if call else "stop"}],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                      "total_tokens": sum(usage)}}


def chat_sse(n, model, text, call, usage, body):
    """The chat stream of :func:`chat_json`."""
    base = {"id": f"chatcmpl-mock-{n}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model, "mock": True}
    def chunk(delta, finish=None):
        return json.dumps({**base, "choices": [{"index": 0, "delta": delta,
                                                "finish_reason": finish}]}).encode()
    out = [chunk({"role": "assistant", "content": ""})]
    if call:
        args = call[3]
        out.append(chunk({"tool_calls": [{"index": 0, "id": call[0], "type": "function",
                                          "function": {"name": call[1], "arguments": ""}}]}))
        for piece in (args[:len(args) // 2], args[len(args) // 2:]):
            out.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
    else:
        out += [chunk({"content": piece}) for piece in split_deltas(text)]
    out.append(chunk({}, "tool_calls" if call else "stop"))
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        out.append(json.dumps({**base, "choices": [], "usage": {
            "prompt_tokens": usage[0], "completion_tokens": usage[1],
            "total_tokens": sum(usage)}}).encode())
    return out + [b"[DONE]"]


def messages_json(n, model, text, call, usage, body):
    """An Anthropic message object."""
    if call:
        tool_input = {"input": call[3]} if call[2] == "custom" else json.loads(call[3])
        content = [{"type": "tool_use", "id": call[0], "name": call[1], "input": tool_input}]
    else:
        content = [{"type": "text", "text": text}]
    return {"id": f"msg_mock_{n}", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": "tool_use" if call else "end_turn",
            "stop_sequence": None, "mock": True,
            "usage": {"input_tokens": usage[0], "output_tokens": usage[1],
                      "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}}


def messages_sse(n, model, text, call, usage, body):
    """The Messages event stream of :func:`messages_json` (named events, one ping)."""
    def ev(name, payload):
        return (name, json.dumps({"type": name, **payload}).encode())
    message = {**messages_json(n, model, text, call, usage, body), "content": [],
               "stop_reason": None, "usage": {"input_tokens": usage[0], "output_tokens": 1}}
    out = [ev("message_start", {"message": message}), ev("ping", {})]
    if call:
        out.append(ev("content_block_start", {"index": 0, "content_block": {
            "type": "tool_use", "id": call[0], "name": call[1], "input": {}}}))
        args = json.dumps({"input": call[3]}) if call[2] == "custom" else call[3]
        for piece in (args[:len(args) // 2], args[len(args) // 2:]):
            out.append(ev("content_block_delta", {"index": 0, "delta": {
                "type": "input_json_delta", "partial_json": piece}}))
    else:
        out.append(ev("content_block_start", {"index": 0, "content_block": {
            "type": "text", "text": ""}}))
        out += [ev("content_block_delta", {"index": 0, "delta": {"type": "text_delta",
                                                                  "text": piece}})
                for piece in split_deltas(text)]
    out.append(ev("content_block_stop", {"index": 0}))
    out.append(ev("message_delta", {"delta": {"stop_reason": "tool_use" if call else "end_turn",
                                              "stop_sequence": None},
                                    "usage": {"output_tokens": usage[1]}}))
    out.append(ev("message_stop", {}))
    return out


def _responses_item(n, text, call):
    if call and call[2] == "custom":
        return {"type": "custom_tool_call", "id": f"ctc_mock_{n}", "call_id": call[0],
                "name": call[1], "input": call[3], "status": "completed"}
    if call:
        return {"type": "function_call", "id": f"fc_mock_{n}", "call_id": call[0],
                "name": call[1], "arguments": call[3], "status": "completed"}
    return {"type": "message", "id": f"msg_mock_{n}", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def responses_json(n, model, text, call, usage, body, status="completed", output=None):
    """An OpenAI response object."""
    return {"id": f"resp_mock_{n}", "object": "response", "created_at": int(time.time()),
            "status": status, "error": None, "incomplete_details": None, "model": model,
            "output": [_responses_item(n, text, call)] if output is None else output,
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "mock": True,
            "usage": {"input_tokens": usage[0], "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens": usage[1],
                      "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": sum(usage)}}


def responses_sse(n, model, text, call, usage, body):
    """The Responses event stream of :func:`responses_json`."""
    seq = itertools.count()
    def ev(name, payload):
        return (name, json.dumps({"type": name, "sequence_number": next(seq),
                                  **payload}).encode())
    item = _responses_item(n, text, call)
    snapshot = responses_json(n, model, text, call, usage, body, "in_progress", [])
    out = [ev("response.created", {"response": snapshot}),
           ev("response.in_progress", {"response": snapshot})]
    where = {"item_id": item["id"], "output_index": 0}
    if item["type"] == "message":
        out.append(ev("response.output_item.added", {"output_index": 0, "item": {
            **item, "status": "in_progress", "content": []}}))
        part = {"type": "output_text", "text": "", "annotations": []}
        out.append(ev("response.content_part.added", {**where, "content_index": 0, "part": part}))
        out += [ev("response.output_text.delta", {**where, "content_index": 0, "delta": piece,
                                                  "logprobs": []})
                for piece in split_deltas(text)]
        out.append(ev("response.output_text.done", {**where, "content_index": 0, "text": text,
                                                    "logprobs": []}))
        out.append(ev("response.content_part.done", {**where, "content_index": 0,
                                                     "part": {**part, "text": text}}))
    else:
        key = "input" if item["type"] == "custom_tool_call" else "arguments"
        name = ("response.custom_tool_call_input" if key == "input"
                else "response.function_call_arguments")
        out.append(ev("response.output_item.added", {"output_index": 0, "item": {
            **item, key: "", "status": "in_progress"}}))
        out.append(ev(f"{name}.delta", {**where, "delta": item[key]}))
        out.append(ev(f"{name}.done", {**where, key: item[key]}))
    out.append(ev("response.output_item.done", {"output_index": 0, "item": item}))
    out.append(ev("response.completed", {
        "response": responses_json(n, model, text, call, usage, body)}))
    return out


def api_request(state: State, req: Request, api: str) -> Reply:
    """Plan the answer to a Messages or Responses request (faults as for chat)."""
    return planned(state, req, lambda h, body, delay, ints: api_answer(
        state, api, h, body, delay, ints["status"], ints["chunk-delay-ms"]))


def api_answer(state: State, api: str, h: dict, body, delay: float, status: int | None,
               chunk_delay: int | None) -> Reply:
    """The Messages or Responses answer once the request's faults are known."""
    if status is not None:
        if api == "messages":
            err = {"type": "error", "error": {"type": "api_error" if status >= 500
                                              else "invalid_request_error",
                                              "message": f"mock error {status}"}}
            return Reply(status, json.dumps(err).encode(), delay=delay)
        return error_reply(status, f"mock error {status}", f"mock_{status}", "mock_error", delay)
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return error_reply(400, "mock: a JSON object with a model is required", "invalid_body")
    if api == "messages" and not isinstance(body.get("max_tokens"), int):
        err = {"type": "error", "error": {"type": "invalid_request_error",
                                          "message": "max_tokens: Field required"}}
        return Reply(400, json.dumps(err).encode())
    view = messages_view(body) if api == "messages" else responses_view(body)
    reply = api_reply(state, api, body, view, delay, h)
    if chunk_delay is not None:
        reply.chunk_delay = max(chunk_delay, 0) / 1000.0
    return reply


def dispatch(state: State, req: Request) -> Reply:
    """Route one request to its answer."""
    path, method = req.path, req.method
    api = api_of(path)
    if api is not None:
        if method != "POST":
            return error_reply(405, f"mock: {method} not allowed on {path}", "method_not_allowed")
        return chat(state, req) if api == "chat" else api_request(state, req, api)
    if path == "/v1/traces" and method == "POST":
        return Reply(200, b"", "application/x-protobuf")
    if path == "/health" and method in ("GET", "HEAD"):
        return Reply(200, b'{"status":"ok","mock":true}')
    if path == "/_mock/faults":
        return manage_faults(state, req)
    if path == "/_mock/streams" and method == "GET":
        return Reply(200, json.dumps(state.streams).encode())
    if path == "/_mock/requests":
        if method == "GET":
            return Reply(200, json.dumps([recordable(r) for r in state.recorded]).encode())
        if method == "DELETE":
            cleared = len(state.recorded)
            state.recorded.clear()
            return Reply(200, json.dumps({"cleared": cleared}).encode())
        return error_reply(405, f"mock: {method} not allowed on {path}", "method_not_allowed")
    state.recorded.append({"path": path, "headers": req.headers, "body": None})
    return error_reply(404, f"mock: no route for {method} {path}", "not_found")


class MockHTTP(asyncio.Protocol):
    """A minimal HTTP/1.1 connection: parses requests in order, one answer at a time."""

    def __init__(self, state: State):
        self.state = state
        self.buf = bytearray()
        self.transport = None
        self.busy = False      # an answer is being delayed or streamed; later requests wait
        self.closing = False
        self.task = None
        self.sent_continue = False

    def connection_made(self, transport):
        self.transport = transport
        self.state.connections.add(self)

    def connection_lost(self, exc):
        self.closing = True
        self.state.connections.discard(self)
        if self.task is not None:
            self.task.cancel()

    def data_received(self, data):
        self.buf += data
        if not self.busy:
            self.process()

    def process(self):
        """Answer every complete buffered request; hand delayed/streamed ones to a task."""
        while not self.busy and not self.closing:
            req = self.parse()
            if req is None:
                return
            reply = dispatch(self.state, req)
            if reply.drop and reply.delay <= 0:
                self.hang_up(req)
                return
            if reply.delay > 0 or reply.events is not None:
                self.busy = True
                self.task = asyncio.get_running_loop().create_task(self.deliver(req, reply))
            else:
                self.send(req, reply)

    def parse(self) -> Request | None:
        """Take one complete request off the buffer; None if incomplete or refused."""
        buf = self.buf
        while buf[:2] == b"\r\n":      # tolerate stray CRLF between pipelined requests
            del buf[:2]
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEADER_BYTES:
                self.refuse(431, "request header too large")
            return None
        lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return self.refuse(400, "malformed request line")
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                return self.refuse(400, "malformed header line")
            headers[name.strip().lower()] = value.strip()
        if "transfer-encoding" in headers:
            return self.refuse(411, "chunked request bodies are not supported; send Content-Length")
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            return self.refuse(400, "bad Content-Length")
        if not 0 <= length <= MAX_BODY_BYTES:
            return self.refuse(413, "request body too large")
        total = end + 4 + length
        if len(buf) < total:
            if headers.get("expect", "").lower() == "100-continue" and not self.sent_continue:
                self.sent_continue = True
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return None
        body = bytes(buf[end + 4:total])
        del buf[:total]
        self.sent_continue = False
        method, target, version = parts
        conn = headers.get("connection", "").lower()
        keep = conn != "close" if version == "HTTP/1.1" else conn == "keep-alive"
        path, _, query = target.partition("?")
        return Request(method, path, version, headers, body, keep,
                       dict(urllib.parse.parse_qsl(query)))

    def refuse(self, status: int, message: str) -> None:
        """Answer an unparseable request with an error and close the connection."""
        reply = error_reply(status, f"mock: {message}", "bad_request")
        self.send(Request("-", "-", "HTTP/1.1", {}, b"", False), reply)
        return None

    def hang_up(self, req: Request) -> None:
        """Close the connection without answering (a MOCK connection failure)."""
        if not self.state.quiet:
            sys.stderr.write(f"mock_llm {req.method} {req.path} dropped\n")
        self.closing = True
        self.transport.close()

    def head(self, req: Request, status: int, extra: str) -> bytes:
        """Status line and headers (``extra`` carries type and length/framing)."""
        conn = "" if req.keep_alive and req.version == "HTTP/1.1" else (
            "connection: keep-alive\r\n" if req.keep_alive else "connection: close\r\n")
        return (f"HTTP/1.1 {status} {reason(status)}\r\n{extra}x-mock-llm: true\r\n"
                f"server: mock_llm\r\n{conn}\r\n").encode("latin-1")

    def send(self, req: Request, reply: Reply):
        """Write a complete (non-streamed) answer."""
        extra = (f"content-type: {reply.content_type}\r\ncontent-length: {len(reply.body)}"
                 f"\r\n{reply.extra_headers}")
        body = b"" if req.method == "HEAD" else reply.body
        self.transport.write(self.head(req, reply.status, extra) + body)
        self.finish(req, reply.status)

    def finish(self, req: Request, status: int):
        """Log the request and close the connection unless it is kept alive."""
        if not self.state.quiet:
            sys.stderr.write(f"mock_llm {req.method} {req.path} {status}\n")
        if not req.keep_alive:
            self.closing = True
            self.transport.close()

    async def deliver(self, req: Request, reply: Reply):
        """Answer after the configured delay, streaming when asked; then resume parsing."""
        try:
            if reply.delay > 0:
                await asyncio.sleep(reply.delay)
            if self.closing:
                return
            if reply.drop:
                self.hang_up(req)
                return
            if reply.events is None:
                self.send(req, reply)
            else:
                await self.stream(req, reply)
        finally:
            self.busy, self.task = False, None
        if not self.closing:
            self.process()

    async def stream(self, req: Request, reply: Reply):
        """Write each SSE event as its own HTTP chunk, ``--chunk-delay-ms`` apart."""
        chunked = req.version == "HTTP/1.1"
        if not chunked:                # HTTP/1.0 has no chunked framing: end by closing
            req.keep_alive = False
        framing = "transfer-encoding: chunked\r\n" if chunked else ""
        self.transport.write(self.head(
            req, 200, f"content-type: text/event-stream\r\ncache-control: no-cache\r\n{framing}"))
        streams = self.state.streams
        streams["started"] += 1
        gap = self.state.chunk_delay if reply.chunk_delay is None else reply.chunk_delay
        for i, event in enumerate(reply.events):
            if i and gap > 0:
                try:
                    await asyncio.sleep(gap)
                except asyncio.CancelledError:
                    streams["aborted"] += 1
                    raise
            if self.closing:
                streams["aborted"] += 1
                return
            if reply.break_after is not None and i >= reply.break_after:
                streams["aborted"] += 1
                self.hang_up(req)
                return
            if isinstance(event, tuple):      # a named event (Messages, Responses)
                data = b"event: " + event[0].encode() + b"\ndata: " + event[1] + b"\n\n"
            else:
                data = b"data: " + event + b"\n\n"
            self.transport.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
        streams["completed"] += 1
        if chunked:
            self.transport.write(b"0\r\n\r\n")
        self.finish(req, 200)


async def serve(args) -> None:
    """Run the server until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    state = State(args.latency_ms, args.chunk_delay_ms, args.quiet, args.route)
    state.cache_warm = args.cache_warm_seconds
    server = await loop.create_server(lambda: MockHTTP(state), args.host, args.port,
                                      backlog=1024)
    port = server.sockets[0].getsockname()[1]
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"mock_llm listening on http://{host}:{port} "
          "(MOCK upstream: answers are canned, not from a real model)", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    for conn in list(state.connections):
        conn.transport.close()
    await server.wait_closed()


def main(argv=None) -> int:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description="MOCK OpenAI-compatible upstream LLM "
                                     "(canned answers, for offline demos, tests, benchmarks)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18080, help="0 picks a free port")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="delay before answering (streaming: before the first chunk)")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0,
                        help="delay between streamed SSE events")
    parser.add_argument("--route", help="answer every chat request with {\"route\": ROUTE} "
                        "unless x-mock-route says otherwise (a routing LLM)")
    parser.add_argument("--quiet", action="store_true", help="no per-request log on stderr")
    parser.add_argument("--cache-warm-seconds", type=float, default=300.0,
                        help="MOCK prompt cache: how long a prefix stays warm (0: off)")
    args = parser.parse_args(argv)
    try:
        import uvloop  # optional speed-up, used only when already installed
        run = getattr(uvloop, "run", asyncio.run)
    except ImportError:
        run = asyncio.run
    run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
