"""A do-nothing OTLP/HTTP collector for ``bin/bench``'s traced scenario.

Answers every ``POST`` (``/v1/traces``) with 200 and an empty protobuf body, counting the
requests and bytes it swallowed, so the gateway's exporter does its full work (encode,
send) without a Jaeger. Stdlib only; prints ``otlp_sink listening on http://HOST:PORT``
first, like ``bin/mock_llm.py``, and answers ``GET /health``.

    python -m benchlib.otlp_sink --port 0
"""

from __future__ import annotations

import argparse
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class SinkHandler(BaseHTTPRequestHandler):
    """Reads and drops OTLP export requests."""

    protocol_version = "HTTP/1.1"
    exports = 0
    received_bytes = 0

    def do_POST(self):  # noqa: N802 - http.server's naming
        """Swallow one export."""
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        SinkHandler.exports += 1
        SinkHandler.received_bytes += length
        self._answer(b"", "application/x-protobuf")

    def do_GET(self):  # noqa: N802
        """Health, with what was received so far."""
        body = (f'{{"status":"ok","exports":{SinkHandler.exports},'
                f'"bytes":{SinkHandler.received_bytes}}}').encode()
        self._answer(body, "application/json")

    def _answer(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 - quiet
        """No per-request log."""


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description="OTLP/HTTP sink for bin/bench")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="accepted for symmetry")
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), SinkHandler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    print(f"otlp_sink listening on http://{args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
