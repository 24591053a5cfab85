"""An in-process stand-in for :class:`app.providers.openai_compat.ProviderClient`.

Unit tests of the request path (tracing, metrics, logs) need a provider that answers
without sockets and remembers the headers it was sent (``traceparent``).
"""

from __future__ import annotations

import json
import time

from app.errors import UpstreamConnectionError


class FakeResponse:
    """The few ``requests.Response`` members the relay uses."""

    def __init__(self, status_code: int, body: bytes, content_type: str, headers=None):
        self.status_code = status_code
        self.headers = {"Content-Type": content_type, **(headers or {})}
        self.body = body
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeProviderClient:
    """Answers chat completions (JSON or SSE) and routing calls; records what it was sent.

    ``route``: what ``complete_json`` (the LLM router's call) answers, ``{"route": route}``.
    ``fail``: every call raises :class:`UpstreamConnectionError` (a 502).
    """

    read_timeout_seconds = 5.0
    secrets: tuple[str, ...] = ()

    def __init__(self, model_id: str = "gpt-4o-mini", *, route: str = "other",
                 fail: bool = False, headers: dict | None = None):
        self.model_id = model_id
        self.route = route
        self.fail = fail
        self.response_headers = headers or {}
        self.sent: list[dict] = []

    def post(self, body: bytes, *, headers=None, read_timeout_seconds=None,
             path=None) -> FakeResponse:
        payload = json.loads(body)
        self.sent.append({"headers": dict(headers or {}), "body": payload, "path": path})
        if self.fail:
            raise UpstreamConnectionError("provider fake could not be reached")
        if payload.get("stream"):
            # A whole Chat stream (SPEC §18): content deltas, a finish_reason, [DONE].
            chunks = b"".join(
                b"data: " + json.dumps({"object": "chat.completion.chunk",
                                        "model": self.model_id,
                                        "choices": [{"delta": delta,
                                                     "finish_reason": finish}]}).encode()
                + b"\n\n" for delta, finish in (({"content": "hello "}, None),
                                                 ({"content": "world"}, None),
                                                 ({}, "stop")))
            return FakeResponse(200, chunks + b"data: [DONE]\n\n", "text/event-stream",
                                self.response_headers)
        answer = {"id": "chatcmpl-fake", "object": "chat.completion", "model": self.model_id,
                  "created": int(time.time()),
                  "choices": [{"index": 0, "finish_reason": "stop",
                               "message": {"role": "assistant", "content": "hello"}}]}
        return FakeResponse(200, json.dumps(answer).encode(), "application/json",
                            self.response_headers)

    def read_body(self, response: FakeResponse, deadline: float) -> bytes:
        response.close()
        return response.body

    def iter_raw(self, response: FakeResponse):
        body = response.body
        yield from (body[index:index + 40] for index in range(0, len(body), 40))

    def complete_json(self, payload: dict, *, timeout: float, headers=None) -> dict:
        self.sent.append({"headers": dict(headers or {}), "body": payload})
        if self.fail:
            raise UpstreamConnectionError("provider fake could not be reached")
        return {"choices": [{"message": {"role": "assistant",
                                         "content": json.dumps({"route": self.route})}}]}


def fake_providers(config, **kwargs) -> dict[str, FakeProviderClient]:
    """One fake client per configured provider, keyed by provider name."""
    return {provider.name: FakeProviderClient(provider.model_id, **kwargs)
            for provider in config.model_providers}
