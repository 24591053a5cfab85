"""The pure-Python load generator for ``bin/bench`` (used when ``wrk`` is not installed).

Asyncio streams, one task per connection, minimal HTTP/1.1 parsing (Content-Length and
chunked bodies), in the ``bin/bench`` process itself. It is slower than ``wrk``, so
``bin/bench`` prints its ceiling (the mock measured directly with it) and flags rows that
come close to it: there the generator, not the server, may be the limit.
"""

from __future__ import annotations

import asyncio
import time

from benchlib.loadgen import RESPONSE_TIMEOUT_S, LoadSpec
from benchlib.report import LoadResult, summarize_latencies


class _Tally:
    """Counters shared by the connections of one Python-generator run."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = {"non_2xx": 0, "connect": 0, "read": 0, "write": 0, "timeout": 0}
        self.matched = 0
        self.counter = 0


def _request_bytes(spec: LoadSpec, session: str | None) -> bytes:
    head = [f"POST {spec.path} HTTP/1.1", f"Host: {spec.host}:{spec.port}",
            f"Content-Length: {len(spec.body)}"]
    head += [f"{name}: {value}" for name, value in spec.headers(session).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + spec.body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict]:
    """Read one response (Content-Length or chunked); its status and lower-cased headers."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readline()).split(b";", 1)[0], 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b""):
                    pass
                break
            await reader.readexactly(size + 2)
    else:
        await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers


async def _connection(spec: LoadSpec, requests: list[bytes], deadline: float,
                      tally: _Tally, index: int) -> None:
    expect = {name.lower(): value for name, value in spec.expect.items()}
    sent = 0
    while time.perf_counter() < deadline:
        try:
            reader, writer = await asyncio.open_connection(spec.host, spec.port)
        except OSError:
            tally.errors["connect"] += 1
            await asyncio.sleep(0.01)
            continue
        try:
            while True:
                if spec.sessions == "unique":
                    tally.counter += 1
                    payload = _request_bytes(
                        spec, f"{spec.unique_prefix}-{index}-{tally.counter}")
                else:
                    payload = requests[(sent + index) % len(requests)]
                sent += 1
                started = time.perf_counter()
                if started >= deadline:
                    return
                writer.write(payload)
                status, headers = await _read_response(reader)
                finished = time.perf_counter()
                if finished > deadline:
                    return  # like wrk: answers after the end are not counted
                tally.latencies.append((finished - started) * 1000.0)
                if not 200 <= status <= 299:
                    tally.errors["non_2xx"] += 1
                if expect and all(headers.get(k) == v for k, v in expect.items()):
                    tally.matched += 1
                if headers.get("connection", "").lower() == "close":
                    break
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError, IndexError):
            if time.perf_counter() < deadline:
                tally.errors["read"] += 1
        finally:
            writer.close()


async def _run_python(spec: LoadSpec, concurrency: int, duration: float) -> LoadResult:
    tally = _Tally()
    if spec.sessions == "pool":
        requests = [_request_bytes(spec, session) for session in spec.pool]
    else:
        requests = [_request_bytes(spec, None)]
    started = time.perf_counter()
    deadline = started + duration
    tasks = [asyncio.ensure_future(_connection(spec, requests, deadline, tally, index))
             for index in range(concurrency)]
    _, pending = await asyncio.wait(tasks, timeout=duration + RESPONSE_TIMEOUT_S)
    for task in pending:
        tally.errors["timeout"] += 1
        task.cancel()
    if pending:
        await asyncio.wait(pending)
    return summarize_latencies(tally.latencies, duration, tally.errors,
                               tally.matched if spec.expect else None)


class PythonGenerator:
    """Asyncio keep-alive HTTP/1.1 load generator (stdlib only), in this process."""

    name = "python"

    def version(self) -> str:
        """Describes the generator."""
        return "python asyncio generator (benchlib.loadgen)"

    def run(self, spec: LoadSpec, concurrency: int, duration: float) -> LoadResult:
        """Load ``spec`` with ``concurrency`` connections for ``duration`` seconds."""
        return asyncio.run(_run_python(spec, concurrency, duration))


