"""Many simultaneous HTTP requests on loopback, from one process, with gevent.

:mod:`tests.support.load` uses a thread per connection, which stops being practical near a
thousand. Here each request is a greenlet on gevent's own sockets (``gevent.socket``: the
calling process is not monkey-patched, so pytest and ``bin/bench`` are unaffected). All
connections are opened first; then every request is sent at once, so the server really
has ``len(plans)`` requests in flight together ("simultaneous first requests").

Each :class:`BurstResult` has the status, the headers, the body, and when each piece of the
body arrived (for time to first byte and the gaps between stream chunks). Requests send
``Connection: close``, so the end of the body is the end of the connection.

Bounded: loopback only, at most :data:`MAX_REQUESTS` requests, every socket operation has a
timeout and the whole burst a deadline.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import gevent
import gevent.event
import gevent.socket

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
MAX_REQUESTS = 5000


@dataclass(frozen=True, slots=True)
class BurstRequest:
    """One planned request: a JSON body and extra headers."""

    body: Mapping
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class BurstResult:
    """One request's outcome; ``status`` 0 when no HTTP answer came (``error`` says why).

    Times are ``time.monotonic()`` values; ``sent`` is when the request left.
    """

    status: int = 0
    headers: dict = field(default_factory=dict)
    body: bytes = b""
    error: str | None = None
    sent: float = 0.0
    head_at: float = 0.0
    #: Arrival time of each read that carried body bytes.
    body_reads: list[float] = field(default_factory=list)

    @property
    def ttfb(self) -> float | None:
        """Seconds from sending to the first body byte (``None`` without a body)."""
        return self.body_reads[0] - self.sent if self.body_reads else None

    @property
    def gaps(self) -> list[float]:
        """Seconds between consecutive body reads (stream chunk gaps)."""
        reads = self.body_reads
        return [later - earlier for earlier, later in itertools.pairwise(reads)]

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def burst(host: str, port: int, path: str, plans: Sequence[BurstRequest], *,
          timeout: float = 60.0, deadline: float = 300.0) -> list[BurstResult]:
    """Connect ``len(plans)`` sockets, then send every request at once; wait for all.

    ``timeout`` bounds each connect and each read; ``deadline`` the whole burst (what is
    still running then is killed and reported with ``error="deadline"``).
    """
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"bursts only go to loopback, not {host!r}")
    if not 1 <= len(plans) <= MAX_REQUESTS:
        raise ValueError(f"1..{MAX_REQUESTS} requests per burst")
    results = [BurstResult() for _ in plans]
    go = gevent.event.Event()
    connected = gevent.event.Event()
    pending = [len(plans)]

    def one_connected() -> None:
        pending[0] -= 1
        if pending[0] == 0:
            connected.set()

    def run(plan: BurstRequest, result: BurstResult) -> None:
        try:
            sock = gevent.socket.create_connection((host, port), timeout=timeout)
        except OSError as error:
            result.error = f"connect: {type(error).__name__}"
            one_connected()
            return
        try:
            one_connected()
            go.wait()
            _exchange(sock, host, port, path, plan, result)
        except OSError as error:
            result.error = type(error).__name__
        finally:
            sock.close()

    greenlets = [gevent.spawn(run, plan, result)
                 for plan, result in zip(plans, results, strict=True)]
    connected.wait(timeout=deadline)
    go.set()
    finished = gevent.joinall(greenlets, timeout=deadline)
    if len(finished) < len(greenlets):
        gevent.killall([g for g in greenlets if not g.dead], block=True, timeout=5)
        for result in results:
            if result.status == 0 and result.error is None:
                result.error = "deadline"
    return results


def _exchange(sock, host: str, port: int, path: str, plan: BurstRequest,
              result: BurstResult) -> None:
    body = json.dumps(plan.body, separators=(",", ":")).encode()
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close",
            "Content-Type: application/json", f"Content-Length: {len(body)}"]
    head += [f"{name}: {value}" for name, value in plan.headers.items()]
    result.sent = time.monotonic()
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        data = sock.recv(65536)
        if not data:
            result.error = "closed before the answer's head"
            return
        buffer += data
    result.head_at = time.monotonic()
    raw_head, _, rest = buffer.partition(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    result.status = int(lines[0].split()[1])
    for line in lines[1:]:
        name, _, value = line.partition(":")
        result.headers[name.strip().lower()] = value.strip()
    chunks = []
    if rest:
        result.body_reads.append(result.head_at)
        chunks.append(rest)
    while True:
        data = sock.recv(65536)
        if not data:
            break
        result.body_reads.append(time.monotonic())
        chunks.append(data)
    raw = b"".join(chunks)
    if result.headers.get("transfer-encoding", "").lower() == "chunked":
        raw = _dechunk(raw)
    result.body = raw


def _dechunk(raw: bytes) -> bytes:
    """The payload of a complete chunked body."""
    out, position = [], 0
    while True:
        line_end = raw.find(b"\r\n", position)
        if line_end < 0:
            break
        size = int(raw[position:line_end].split(b";")[0] or b"0", 16)
        if size == 0:
            break
        start = line_end + 2
        out.append(raw[start:start + size])
        position = start + size + 2
    return b"".join(out)
