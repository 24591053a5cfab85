"""The one Python load generator (fault tests and ``bin/bench``): bounded, loopback only.

N requests, or as many as fit in a duration, at concurrency C: one asyncio task per unit of
concurrency on an event loop of its own thread, so a test can inject a fault mid-load and a
single core drives thousands of requests a second. Each task sends requests back to back,
on a kept-alive connection of its own (``keep_alive=True``, the default) or on a new
connection per request (``keep_alive=False``: the kernel may then hand each request to any
gunicorn worker). Each request's status, headers, body and latency (from the first byte sent
to the last byte read) are recorded; a request that fails at the transport level (refused,
reset, timed out) gets status 0 and the error's name. In a timed run, answers that end after
the deadline are not counted (as ``wrk`` does).

A :class:`Load` runs in the background so a test can inject a fault mid-load::

    load = Load(url, count=2000, concurrency=16, request_for=plan).start()
    load.wait_completed(600)        # a third done
    redis_server.kill()
    result = load.wait()
    result.summary()                # counts, p50/p99, throughput

It only ever targets loopback (127.0.0.1 / localhost / ::1): refusing anything else keeps a
mistyped URL from turning a test into a load test of somebody else's server.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping
from urllib.parse import urlsplit

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_REQUESTS = 100_000
MAX_DURATION_S = 600
MAX_TIMED_REQUESTS = 10_000_000
MAX_CONCURRENCY = 256


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    """What request number ``index`` sends: a JSON body (or raw bytes) and extra headers."""

    body: Mapping | bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Free-form tag a test uses to group outcomes (a session id, a fault name).
    tag: str | None = None

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body, separators=(",", ":")).encode()


@dataclass(slots=True)
class Outcome:
    """One request's result. ``status`` 0 means no HTTP answer (``error`` names why)."""

    index: int
    tag: str | None
    started: float  # time.monotonic() when the request began
    latency: float  # seconds, first byte sent to last byte read (or to the failure)
    status: int
    headers: dict = field(default_factory=dict)  # lower-cased names
    body: bytes = b""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def finished(self) -> float:
        return self.started + self.latency

    @property
    def error_kind(self) -> str | None:
        """``connect``, ``timeout`` or ``read`` for a transport failure; None otherwise."""
        if self.status != 0:
            return None
        return {"ConnectionRefusedError": "connect", "TimeoutError": "timeout",
                "timeout": "timeout"}.get(self.error or "", "read")

    def json(self):
        """The body as JSON, ``None`` when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def percentile(values: Iterable[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100); 0.0 for no values."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil(n * pct / 100), at least 1
    return ordered[min(int(rank), len(ordered)) - 1]


@dataclass
class LoadResult:
    """Every outcome of a run (in completion order) and figures computed from them."""

    outcomes: list[Outcome]
    concurrency: int
    duration: float

    def where(self, predicate: Callable[[Outcome], bool]) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if predicate(outcome)]

    def started_between(self, start: float, end: float = float("inf")) -> list[Outcome]:
        """The outcomes of requests that began in ``[start, end)`` (monotonic times)."""
        return self.where(lambda outcome: start <= outcome.started < end)

    @property
    def statuses(self) -> Counter:
        return Counter(outcome.status for outcome in self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        """Outcomes without a 2xx answer (transport failures included)."""
        return self.where(lambda outcome: not outcome.ok)

    def summary(self, outcomes: list[Outcome] | None = None) -> dict:
        """Counts and latency figures (milliseconds) of ``outcomes`` (default: all)."""
        return summarize(self.outcomes if outcomes is None else outcomes,
                         duration=self.duration if outcomes is None else None)


def summarize(outcomes: list[Outcome], duration: float | None = None) -> dict:
    """``requests``, ``non_2xx``, ``transport_errors``, ``statuses``, p50/p99/max in ms."""
    latencies = [outcome.latency for outcome in outcomes]
    figures = {
        "requests": len(outcomes),
        "non_2xx": sum(not outcome.ok for outcome in outcomes),
        "transport_errors": sum(outcome.status == 0 for outcome in outcomes),
        "statuses": {str(status): count for status, count in
                     sorted(Counter(outcome.status for outcome in outcomes).items())},
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "max_ms": round(max(latencies, default=0.0) * 1000, 1),
    }
    if duration is not None:
        figures["duration_s"] = round(duration, 2)
        figures["requests_per_s"] = round(len(outcomes) / duration, 1) if duration else 0.0
    return figures


class Load:
    """``count`` requests (or, with ``duration``, as many as fit in that many seconds) at
    ``concurrency`` against ``url`` (loopback only), in threads.

    ``request_for(index)`` plans request ``index`` (0-based). ``timeout`` bounds each
    request's connect and each read. ``keep_alive=False`` opens a connection per request;
    ``keep_body=False`` drops answer bodies (long timed runs).
    """

    def __init__(self, url: str, count: int | None, concurrency: int,
                 request_for: Callable[[int], PlannedRequest], *, timeout: float = 10.0,
                 keep_alive: bool = True, method: str = "POST",
                 duration: float | None = None, keep_body: bool = True):
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname not in LOOPBACK_HOSTS:
            raise ValueError(f"load is only sent to http:// on loopback, not {url!r}")
        if duration is None and (count is None or not 1 <= count <= MAX_REQUESTS):
            raise ValueError(f"count must be 1..{MAX_REQUESTS}")
        if duration is not None and not 0 < duration <= MAX_DURATION_S:
            raise ValueError(f"duration must be in (0, {MAX_DURATION_S}] seconds")
        count = count or MAX_TIMED_REQUESTS
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise ValueError(f"concurrency must be 1..{MAX_CONCURRENCY}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.path = parts.path or "/"
        self.count, self.concurrency = count, concurrency
        self.request_for, self.timeout, self.keep_alive = request_for, timeout, keep_alive
        self.method, self.duration, self.keep_body = method, duration, keep_body
        self._deadline = float("inf")
        self._lock = threading.Lock()
        self._next = 0
        self._stopped = threading.Event()
        self._done = threading.Condition(self._lock)
        self._outcomes: list[Outcome] = []
        self._thread = threading.Thread()
        self._started_at = 0.0
        self._finished_at: float | None = None

    # -- control

    def start(self) -> Load:
        """Start the senders (an event loop in a thread of its own); returns at once."""
        self._started_at = time.monotonic()
        if self.duration is not None:
            self._deadline = self._started_at + self.duration
        self._thread = threading.Thread(target=asyncio.run, args=(self._send_all(),),
                                        name="load", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Send no further requests (those in flight finish)."""
        self._stopped.set()

    @property
    def completed(self) -> int:
        with self._lock:
            return len(self._outcomes)

    def outcomes(self) -> list[Outcome]:
        """A snapshot of the outcomes so far."""
        with self._lock:
            return list(self._outcomes)

    def wait_completed(self, n: int, timeout: float = 60.0) -> None:
        """Block until at least ``n`` requests have finished (or all have)."""
        deadline = time.monotonic() + timeout
        with self._done:
            while len(self._outcomes) < min(n, self.count):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    raise TimeoutError(f"{len(self._outcomes)} of {n} requests finished")
                self._done.wait(min(remaining, 0.1))

    def wait(self, timeout: float = 120.0) -> LoadResult:
        """Wait for every sender to finish; the result."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.stop()
            raise TimeoutError(f"load did not finish within {timeout}s")
        finished = self._finished_at or time.monotonic()
        duration = self.duration or finished - self._started_at
        return LoadResult(self.outcomes(), self.concurrency, duration)

    def run(self, timeout: float = 120.0) -> LoadResult:
        """Start and wait."""
        return self.start().wait(timeout)

    # -- senders (in the load thread's event loop)

    def _take(self) -> int | None:
        with self._lock:
            if self._stopped.is_set() or self._next >= self.count or \
                    time.monotonic() >= self._deadline:
                return None
            index, self._next = self._next, self._next + 1
            return index

    async def _send_all(self) -> None:
        await asyncio.gather(*(self._sender() for _ in range(self.concurrency)))

    async def _sender(self) -> None:
        connection = None
        try:
            while (index := self._take()) is not None:
                planned = self.request_for(index)
                outcome, connection = await self._send(connection, index, planned)
                if outcome.finished > self._deadline:
                    break
                with self._done:
                    self._outcomes.append(outcome)
                    if len(self._outcomes) == self.count:
                        self._finished_at = time.monotonic()
                    self._done.notify_all()
        finally:
            if connection is not None:
                connection[1].close()

    def _request_bytes(self, planned: PlannedRequest) -> bytes:
        body = planned.payload()
        headers = {"Host": f"{self.host}:{self.port}", "Content-Type": "application/json",
                   **planned.headers, "Content-Length": str(len(body))}
        if not self.keep_alive:
            headers["Connection"] = "close"
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        return f"{self.method} {self.path} HTTP/1.1\r\n{head}\r\n".encode("latin-1") + body

    async def _send(self, connection, index: int, planned: PlannedRequest):
        """One request (opening a connection when needed): its outcome, and the connection
        to reuse (None when it is closed)."""
        data = self._request_bytes(planned)
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout):
                if connection is None:
                    connection = await asyncio.open_connection(self.host, self.port)
                reader, writer = connection
                writer.write(data)
                await writer.drain()
                status, headers, body = await read_response(reader)
        except (OSError, TimeoutError, EOFError, ValueError, IndexError,
                asyncio.LimitOverrunError) as error:
            if connection is not None:
                connection[1].close()
            return Outcome(index, planned.tag, started, time.monotonic() - started, 0,
                           error=type(error).__name__), None
        outcome = Outcome(index, planned.tag, started, time.monotonic() - started, status,
                          headers, body if self.keep_body else b"")
        if not self.keep_alive or headers.get("connection", "").lower() == "close":
            writer.close()
            connection = None
        return outcome, connection


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict, bytes]:
    """One HTTP/1.1 response: status, lower-cased headers, body (Content-Length, chunked,
    or up to the end of the connection)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while size := int((await reader.readline()).split(b";", 1)[0], 16):
            body += (await reader.readexactly(size + 2))[:-2]
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        return status, headers, bytes(body)
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    headers["connection"] = "close"
    return status, headers, await reader.read()
