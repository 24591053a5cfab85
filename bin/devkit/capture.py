"""A logging HTTP proxy on loopback: see exactly what a real client (Claude Code, Codex) sends.

Every request is forwarded to ``--upstream`` (the MOCK upstream or a gateway) and its answer
relayed back unchanged, streamed as it arrives (end-to-end headers kept, hop-by-hop ones
re-made; an answer cut by the upstream is cut for the client too); then one JSON line is
written to ``--out``: method, path, headers, JSON body (or text), and the answer's status and
headers. Without ``--upstream`` every request gets a 404. It is how tests/data/agents/ was
captured (docs/client-apis.md, "Claude Code and Codex"), and how the agent tests read the
gateway's answer headers, which the CLIs do not show:

    python -m devkit.capture --port 0 --upstream http://127.0.0.1:18080 --out /tmp/cap.jsonl

A development tool: loopback only, no TLS, one thread per connection.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import sys
import threading
import urllib.parse

#: Hop-by-hop headers that a proxy does not forward (RFC 9110 §7.6.1).
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-connection", "host", "content-length"}


def record_of(method: str, path: str, headers, body: bytes) -> dict:
    """One logged request: its JSON body when it parses, else its text."""
    try:
        parsed = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        parsed = body.decode("utf-8", "replace")
    return {"method": method, "path": path, "headers": dict(headers.items()), "body": parsed}


def answered(record: dict, status: int, headers) -> dict:
    """``record`` with the answer's status and headers (names lower-cased)."""
    return {**record, "status": status,
            "response_headers": {name.lower(): value for name, value in headers}}


class CaptureHandler(http.server.BaseHTTPRequestHandler):
    """Logs the request, then relays it to the upstream (or answers 404)."""

    protocol_version = "HTTP/1.1"
    server: CaptureServer

    def log_message(self, format, *args):
        """Quiet: the JSON lines are the log."""

    def _handle(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        record = record_of(self.command, self.path, self.headers, body)
        if self.server.upstream is None:
            self.server.write(answered(record, 404, []))
            self._answer(404, b'{"error": {"message": "capture: no upstream"}}')
            return
        self._relay(body, record)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _handle

    def _answer(self, status: int, body: bytes):
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _relay(self, body: bytes, record: dict):
        up = self.server.upstream
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=120)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            conn.request(self.command, up.path.rstrip("/") + self.path, body=body,
                         headers=headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as error:
            conn.close()
            self.server.write(answered(record, 502, []))
            self._answer(502, json.dumps({"error": {"message": f"capture: {error}"}}).encode())
            return
        self.server.write(answered(record, resp.status, resp.getheaders()))
        try:
            self._stream(resp)
        except (OSError, http.client.HTTPException):
            # The upstream cut its body (cut ours too), or the client went away.
            self.close_connection = True
        finally:
            conn.close()

    def _stream(self, resp: http.client.HTTPResponse):
        """The answer's status, end-to-end headers and body (re-chunked as it arrives)."""
        self.send_response(resp.status)
        for name, value in resp.getheaders():
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        while chunk := resp.read1(65536):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")


class CaptureServer(http.server.ThreadingHTTPServer):
    """The proxy: where to forward, where to log (``out``, a text file, or None) and the
    records so far (``records``, in the order the answers began)."""

    daemon_threads = True

    def __init__(self, address, upstream: str | None, out=None):
        super().__init__(address, CaptureHandler)
        self.upstream = urllib.parse.urlsplit(upstream) if upstream else None
        self.out = out
        self.records: list[dict] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def write(self, record: dict):
        with self.lock:
            self.records.append(record)
            if self.out is not None:
                self.out.write(json.dumps(record) + "\n")
                self.out.flush()

    def __enter__(self) -> CaptureServer:
        threading.Thread(target=self.serve_forever, name="capture", daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.shutdown()
        self.server_close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="log every request as a JSON line, then "
                                     "forward it (development tool, loopback only)")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--upstream", help="base URL to forward to (e.g. the mock)")
    parser.add_argument("--out", default="-", help="JSON-lines file (default stdout)")
    args = parser.parse_args(argv)
    out = sys.stdout if args.out == "-" else open(args.out, "a", encoding="utf-8")
    server = CaptureServer(("127.0.0.1", args.port), args.upstream, out)
    print(f"capture listening on http://127.0.0.1:{server.server_address[1]}", file=sys.stderr,
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
