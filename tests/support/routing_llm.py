"""A routing LLM for integration tests: answers every chat call ``{"route": <route>}`` and
counts the calls, so a test can tell whether the gateway asked its router.

A real HTTP server on loopback in the test process (standard library, one thread per
connection), spoken to by the gateway's LLM router exactly as it would speak to
Arch-Router. The test sets :attr:`RoutingLLM.route` to steer it and reads
:attr:`RoutingLLM.calls`.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class RoutingLLM:
    """``with RoutingLLM("deep_reasoning") as llm:`` -> ``llm.base_url``, ``llm.calls``."""

    def __init__(self, route: str):
        self.route = route
        self.calls = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="routing-llm", daemon=True)

    @property
    def base_url(self) -> str:
        """A provider ``base_url`` that reaches this server."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> "RoutingLLM":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _answer(self) -> bytes:
        with self._lock:
            self.calls += 1
            route = self.route
        return json.dumps({
            "id": f"chatcmpl-routing-{self.calls}", "object": "chat.completion",
            "model": "arch-router", "choices": [{
                "index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": json.dumps({"route": route})}}],
        }).encode()

    def _handler(self):
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = owner._answer()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        return Handler
