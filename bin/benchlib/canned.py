"""A canned in-process provider for the in-process cost harnesses (``--failover-cost``,
``accounting_cost``): the few :class:`app.providers.openai_compat.ProviderClient` members
the relay uses, answering every call with the same bytes, so what is measured is the
gateway's own work, not a socket's."""

from __future__ import annotations

from typing import Iterable


class CannedResponse:
    """The head of a canned answer: 200, JSON or an event stream."""

    status_code = 200

    def __init__(self, stream: bool):
        self.headers = {"Content-Type": "text/event-stream" if stream else "application/json"}

    def close(self) -> None:
        pass


class CannedProvider:
    """Answers ``answer`` to a JSON call and the reads of ``stream`` to a streamed one."""

    read_timeout_seconds = 30.0
    secrets: tuple[str, ...] = ()

    def __init__(self, answer: bytes, stream: Iterable[bytes] = ()):
        self._answer = answer
        self._stream = tuple(stream)

    def post(self, body, *, headers=None, read_timeout_seconds=None, path=None):
        return CannedResponse(bool(self._stream) and b'"stream":true' in body)

    def read_body(self, response, deadline) -> bytes:
        return self._answer

    def iter_raw(self, response):
        return iter(self._stream)
