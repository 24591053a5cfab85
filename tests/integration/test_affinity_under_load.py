"""SPEC §11 "Under load, affinity holds": a burst of first requests all pin.

Real redis-server, real gunicorn with 2 gevent workers, the mock upstream; 1,000 requests of
1,000 new sessions sent at the same moment (all connections opened first), then the same
sessions again. A per-worker Redis pool smaller than the burst (64 connections, 200 ms wait)
turns this local congestion into "Redis failed", opens the circuit breaker and answers part
of the burst ``x-plano-affinity: unavailable``; pools sized from ``worker_connections`` do not.
"""

from __future__ import annotations

from collections import Counter

import pytest

from devkit.burst import BurstRequest, burst
from tests.support.configs import DEEP_PROMPT, FAST_PROMPT, chat_body, gateway_config

pytestmark = pytest.mark.integration

SESSIONS = 1000


def plans(prompt_for) -> list[BurstRequest]:
    # The upstream holds each answer a moment, so the whole burst is in flight together.
    return [BurstRequest(chat_body(prompt_for(i), mock_fault={"latency_ms": 200}),
                         {"X-Model-Affinity": f"burst-{i}"}) for i in range(SESSIONS)]


def test_a_burst_of_first_requests_all_pin_and_then_all_follow_their_pins(
        mock_llm, redis_server, start_gateway):
    config = gateway_config(mock_llm, cache={"type": "redis", "url": redis_server.url})
    gateway = start_gateway(config, workers=2)

    first = burst("127.0.0.1", gateway.port, "/v1/chat/completions",
                  plans(lambda i: DEEP_PROMPT if i % 2 else FAST_PROMPT))
    assert Counter(r.status for r in first) == {200: SESSIONS}, \
        Counter(r.error for r in first)
    outcomes = Counter(r.headers.get("x-plano-affinity") for r in first)
    # Every session is pinned by its first request. "pinned" instead of "new" can happen
    # when the SET NX's answer was late (the event loop is busy with the burst) and
    # redis-py's one retry then found the value the first attempt had stored.
    assert outcomes["unavailable"] == 0 and set(outcomes) <= {"new", "pinned"}, outcomes
    models = [r.json()["model"] for r in first]
    assert set(models) == {"openai/gpt-5.2", "openai/gpt-4o-mini"}

    # Round two asks every session the other prompt: only the pin keeps its model.
    second = burst("127.0.0.1", gateway.port, "/v1/chat/completions",
                   plans(lambda i: FAST_PROMPT if i % 2 else DEEP_PROMPT))
    assert Counter(r.status for r in second) == {200: SESSIONS}
    assert Counter(r.headers.get("x-plano-affinity") for r in second) == {"pinned": SESSIONS}
    assert [r.json()["model"] for r in second] == models

    log = gateway.log_tail(lines=100000)
    assert "session_cache_error" not in log and "not calling it for" not in log
    assert "Connection pool is full" not in log
