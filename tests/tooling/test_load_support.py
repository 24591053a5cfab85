"""The one load generator (``devkit.load``): figures, guard rails and its HTTP reader.

No sockets: only what can be checked without sending a request.
"""

from __future__ import annotations

import asyncio

import pytest

from devkit.load import (
    Load,
    LoadResult,
    Outcome,
    PlannedRequest,
    percentile,
    read_response,
    summarize,
)


def outcome(index: int, latency: float, status: int = 200, started: float = 0.0) -> Outcome:
    return Outcome(index, None, started, latency, status)


def test_percentile_is_nearest_rank():
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 99) == 0.0


def test_summary_counts_non_2xx_and_transport_errors_and_reports_milliseconds():
    outcomes = [outcome(0, 0.010), outcome(1, 0.020, 504), outcome(2, 0.030, 0),
                outcome(3, 0.040, 204)]
    figures = summarize(outcomes, duration=2.0)
    assert figures["requests"] == 4
    assert figures["non_2xx"] == 2
    assert figures["transport_errors"] == 1
    assert figures["statuses"] == {"0": 1, "200": 1, "204": 1, "504": 1}
    assert (figures["p50_ms"], figures["p99_ms"], figures["max_ms"]) == (20.0, 40.0, 40.0)
    assert figures["requests_per_s"] == 2.0


def test_result_splits_outcomes_by_start_time():
    result = LoadResult([outcome(0, 0.1, started=1.0), outcome(1, 0.1, started=2.0),
                         outcome(2, 0.1, 0, started=3.0)], concurrency=2, duration=3.0)
    assert [o.index for o in result.started_between(2.0)] == [1, 2]
    assert [o.index for o in result.started_between(1.0, 3.0)] == [0, 1]
    assert [o.index for o in result.failures] == [2]
    assert result.statuses == {200: 2, 0: 1}
    assert result.summary()["duration_s"] == 3.0


def test_outcome_json_is_none_for_a_non_json_body():
    assert Outcome(0, None, 0.0, 0.1, 200, body=b'{"model": "m"}').json() == {"model": "m"}
    assert Outcome(0, None, 0.0, 0.1, 502, body=b"<html>").json() is None


def test_planned_request_serialises_json_and_passes_bytes_through():
    assert PlannedRequest({"a": [1, 2]}).payload() == b'{"a":[1,2]}'
    assert PlannedRequest(b"\xff raw").payload() == b"\xff raw"


@pytest.mark.parametrize("url", ["http://example.com/v1/chat/completions",
                                 "http://10.0.0.1:8080/", "https://127.0.0.1/"])
def test_load_is_only_ever_sent_to_loopback(url):
    with pytest.raises(ValueError, match="loopback"):
        Load(url, 10, 2, lambda index: PlannedRequest({}))


@pytest.mark.parametrize("count, concurrency", [(0, 1), (100_001, 1), (10, 0), (10, 257)])
def test_load_is_bounded(count, concurrency):
    with pytest.raises(ValueError):
        Load("http://127.0.0.1:1/", count, concurrency, lambda index: PlannedRequest({}))


@pytest.mark.parametrize("duration", [0, -1, 601])
def test_a_timed_run_is_bounded(duration):
    with pytest.raises(ValueError, match="duration"):
        Load("http://127.0.0.1:1/", None, 1, lambda index: PlannedRequest({}),
             duration=duration)


def test_transport_failures_are_told_apart():
    failed = [Outcome(0, None, 0.0, 0.1, 0, error=name)
              for name in ("ConnectionRefusedError", "TimeoutError", "IncompleteReadError")]
    assert [o.error_kind for o in failed] == ["connect", "timeout", "read"]
    assert outcome(0, 0.1, 503).error_kind is None


def read(data: bytes):
    async def go():
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        first = await read_response(reader)
        return first, await reader.read()
    return asyncio.run(go())


def test_read_response_with_content_length_leaves_the_next_response():
    (status, headers, body), rest = read(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                                         b"X-Plano-Pinned: true\r\n\r\n{}HTTP/1.1 ...")
    assert (status, headers["x-plano-pinned"], body) == (200, "true", b"{}")
    assert rest == b"HTTP/1.1 ..."


def test_read_response_with_chunked_body_reads_to_the_end():
    chunks = b"5\r\ndata:\r\n3\r\n ok\r\n0\r\n\r\n"
    (status, _, body), rest = read(b"HTTP/1.1 503 Service Unavailable\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"NEXT")
    assert (status, body, rest) == (503, b"data: ok", b"NEXT")


def test_read_response_without_length_reads_to_the_close_and_marks_it():
    (status, headers, body), rest = read(b"HTTP/1.1 400 Bad Request\r\n\r\nbad request")
    assert (status, body, rest, headers["connection"]) == (400, b"bad request", b"", "close")
