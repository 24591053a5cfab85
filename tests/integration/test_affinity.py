"""Session affinity across real processes (SPEC §4, §6, §9).

Two gunicorn gateways (2 gevent workers each) share one real redis-server: a pin made
through one is honoured by the other, and concurrent first requests never split a session.
With the memory backend and several workers, sessions visibly lose their pin: the failure the
demo shows, asserted here so the demo rests on tested behaviour.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from devkit.processes import wait_until
from tests.support.configs import DEEP_PROMPT, FAST_PROMPT, chat_body, gateway_config, redis_cache
from tests.support.servers import fresh_post

pytestmark = pytest.mark.integration

PROMPTS = [DEEP_PROMPT, FAST_PROMPT, "Derive the equations of motion for a double pendulum "
           "in detail", "Write a short poem about the ocean."]


def test_pin_made_through_one_replica_is_honoured_by_the_other(mock_llm, shared_redis,
                                                               start_gateway):
    config = gateway_config(mock_llm, cache=redis_cache(shared_redis))
    first, second = start_gateway(config), start_gateway(config)
    session = f"replica-{time.time_ns()}"
    pinned = fresh_post(first.chat_url, chat_body(DEEP_PROMPT), session)
    assert pinned.json()["model"] == "openai/gpt-5.2"
    assert pinned.headers["x-plano-affinity"] == "new"
    assert "x_plano_pinned" not in pinned.json()
    for prompt in PROMPTS:
        answer = fresh_post(second.chat_url, chat_body(prompt), session)
        assert answer.json()["model"] == "openai/gpt-5.2"
        assert answer.json()["x_plano_pinned"] is True
        assert answer.headers["x-plano-pinned"] == "true"
        assert answer.headers["x-plano-route"] == "deep_reasoning"
    stored = shared_redis.client().get(f"plano:affinity:{session}")
    assert stored == '{"model_name":"openai/gpt-5.2","route_name":"deep_reasoning"}'
    assert 0 < shared_redis.client().ttl(f"plano:affinity:{session}") <= 300


def test_concurrent_first_requests_never_split_a_session(mock_llm, shared_redis,
                                                         start_gateway):
    config = gateway_config(mock_llm, cache=redis_cache(shared_redis))
    replicas = [start_gateway(config), start_gateway(config)]
    run = time.time_ns()
    jobs = [(replicas[i % 2].chat_url, PROMPTS[i % len(PROMPTS)], f"race-{run}-{i % 6}")
            for i in range(48)]
    with ThreadPoolExecutor(max_workers=24) as pool:
        answers = list(pool.map(lambda job: fresh_post(job[0], chat_body(job[1]), job[2]),
                                jobs))
    models: dict[str, set] = {}
    for (_, _, session), answer in zip(jobs, answers, strict=True):
        assert answer.status_code == 200
        models.setdefault(session, set()).add(answer.json()["model"])
    assert all(len(seen) == 1 for seen in models.values()), models
    created = sum(answer.headers["x-plano-affinity"] == "new" for answer in answers)
    assert created == 6  # exactly one request per session created its pin


def test_tenants_are_pinned_separately(mock_llm, shared_redis, start_gateway):
    config = gateway_config(mock_llm, cache=redis_cache(shared_redis,
                                                        tenant_header="x-org-id"))
    gateway = start_gateway(config, workers=1)
    session = f"tenant-{time.time_ns()}"
    deep = fresh_post(gateway.chat_url, chat_body(DEEP_PROMPT), session, **{"x-org-id": "a"})
    fast = fresh_post(gateway.chat_url, chat_body(FAST_PROMPT), session, **{"x-org-id": "b"})
    assert (deep.json()["model"], fast.json()["model"]) == ("openai/gpt-5.2",
                                                            "openai/gpt-4o-mini")
    client = shared_redis.client()
    assert json.loads(client.get(f"plano:affinity:a:{session}"))["model_name"] == \
        "openai/gpt-5.2"
    assert json.loads(client.get(f"plano:affinity:b:{session}"))["model_name"] == \
        "openai/gpt-4o-mini"


def test_expired_pin_is_routed_afresh(mock_llm, shared_redis, start_gateway):
    config = gateway_config(mock_llm, cache=redis_cache(shared_redis))
    config["routing"]["session_ttl_seconds"] = 30
    gateway = start_gateway(config, workers=1)
    session = f"ttl-{time.time_ns()}"
    assert fresh_post(gateway.chat_url, chat_body(DEEP_PROMPT), session).json()["model"] == \
        "openai/gpt-5.2"
    key, raw = f"plano:affinity:{session}", shared_redis.client()
    assert 0 < raw.pttl(key) <= 30_000  # the configured TTL; now let it run out at once
    raw.pexpire(key, 1)
    wait_until(lambda: not raw.exists(key), 3, "the pin to expire", interval=0.001)
    again = fresh_post(gateway.chat_url, chat_body(FAST_PROMPT), session)
    assert again.json()["model"] == "openai/gpt-4o-mini"
    assert again.headers["x-plano-affinity"] == "new"


def test_memory_backend_with_several_workers_loses_pins(mock_llm, start_gateway):
    """The demo's failure: each worker has its own map, so sessions change model.

    One listener per worker (``PLANO_REUSE_PORT=1``), as the demo does: the kernel then
    spreads the fresh connections over the workers. On one shared socket the worker that
    just answered usually accepts the next connection too, and a run where all 96 requests
    reached one worker (so no session changed model) was seen in a fresh-clone CI run.
    """
    gateway = start_gateway(gateway_config(mock_llm, cache={"type": "memory"}), workers=4,
                            env={"PLANO_REUSE_PORT": "1"})
    run = time.time_ns()
    split_sessions = 0
    for index in range(12):
        session = f"mem-{run}-{index}"
        seen = set()
        for round_ in range(8):
            answer = fresh_post(gateway.chat_url,
                                chat_body(PROMPTS[(index + round_) % len(PROMPTS)]), session)
            assert answer.status_code == 200
            seen.add(answer.json()["model"])
        split_sessions += len(seen) > 1
    assert split_sessions >= 1, "every session kept one model: requests never changed worker"


def test_memory_backend_with_one_worker_keeps_pins(mock_llm, start_gateway):
    gateway = start_gateway(gateway_config(mock_llm, cache={"type": "memory"}), workers=1)
    session = f"one-{time.time_ns()}"
    models = {fresh_post(gateway.chat_url, chat_body(prompt), session).json()["model"]
              for prompt in PROMPTS * 2}
    assert len(models) == 1


_TEST_COMMANDS = ("config", "info", "hello", "client")
#: The session's usage totals (SPEC §19), written after the answer's last byte in one
#: pipeline: not part of a pin's lookup, and not counted here.
_USAGE_COMMANDS = ("hincrby", "hincrbyfloat", "expire")


def command_counts(server) -> dict[str, int]:
    """Calls per Redis command since the last ``CONFIG RESETSTAT``, leaving out the
    commands this test itself sends (CONFIG, INFO, and a new connection's HELLO/CLIENT)
    and the usage write that follows an answer."""
    stats = server.client().info("commandstats")
    counts = {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}
    return {name: calls for name, calls in counts.items()
            if not name.startswith(_TEST_COMMANDS) and name not in _USAGE_COMMANDS}


def test_a_hit_costs_one_redis_command_and_a_miss_two(mock_llm, redis_server, start_gateway):
    """Through the real gateway, counted by Redis itself (INFO commandstats), not by timing."""
    gateway = start_gateway(gateway_config(mock_llm, cache=redis_cache(redis_server)),
                            workers=1)
    fresh_post(gateway.chat_url, chat_body(), "warm-up")  # connects; HELLO etc. not counted
    redis_server.client().config_resetstat()
    fresh_post(gateway.chat_url, chat_body(DEEP_PROMPT), "counted")
    assert command_counts(redis_server) == {"get": 1, "set": 1}
    redis_server.client().config_resetstat()
    for prompt in PROMPTS:
        assert fresh_post(gateway.chat_url, chat_body(prompt), "counted").headers[
            "x-plano-affinity"] == "pinned"
    assert command_counts(redis_server) == {"get": len(PROMPTS)}
