"""Agent sessions (SPEC §18) under real gunicorn (two gevent workers) with a real
redis-server: requests that carry only the session header Claude Code or Codex sends, and
whose prompts alone would route to different models, all land on one model whichever
worker serves them. The bodies are the real first requests of both CLIs
(``tests/data/agents/``), with their prompts swapped."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from devkit.gateway import Gateway
from devkit.redis_servers import RedisServer
from tests.support.agent_requests import CLAUDE_CODE_OPENAI, CODEX, captured, first_body
from tests.support.configs import DEEP_PROMPT, FAST_PROMPT, gateway_config, redis_cache
from tests.support.servers import fresh_post, require_redis_server

pytestmark = pytest.mark.integration

TTL = 300
PREFIX = "plano:affinity:"
#: Prompts alternate: each alone routes to the other model (embedded router).
PROMPTS = (DEEP_PROMPT, FAST_PROMPT)
MAX_ROUNDS = 20


@pytest.fixture(scope="module")
def module_redis():
    require_redis_server()
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def gateway(module_redis, mock_llm):
    raw = gateway_config(mock_llm, server={"expose_worker_header": True})
    raw["routing"]["session_cache"] = redis_cache(module_redis)
    raw["routing"]["session_ttl_seconds"] = TTL  # fixed mode: agent sessions slide anyway
    # One listening socket per worker: the kernel spreads fresh connections over both.
    with Gateway(raw, workers=2, env={"PLANO_REUSE_PORT": "1"}) as started:
        started.wait_ready(all_workers=True)
        yield started


@pytest.fixture(scope="module")
def raw_redis(module_redis):
    client = module_redis.client()
    yield client
    client.close()


def agent_loop(url: str, name: str, headers: dict) -> tuple[list, Counter]:
    """Send the agent's first request with alternating prompts, each on a new connection,
    until both workers have served it: (answers, answers per worker)."""
    answers, workers = [], Counter()
    for round_ in range(MAX_ROUNDS):
        body = first_body(name, PROMPTS[round_ % 2])
        body["stream"] = False
        answer = fresh_post(url, body, **headers)
        assert answer.status_code == 200, answer.text
        answers.append(answer)
        workers[answer.headers["x-plano-worker"]] += 1
        if len(workers) == 2 and round_ >= 3:
            break
    return answers, workers


def test_only_the_claude_code_session_header_keeps_one_model(gateway, raw_redis):
    record = captured(CLAUDE_CODE_OPENAI)[0]
    session = str(uuid.uuid4())
    headers = {"X-Claude-Code-Session-Id": session,
               "anthropic-beta": record["headers"]["anthropic-beta"]}
    answers, workers = agent_loop(f"{gateway.url}/v1/messages?beta=true",
                                  CLAUDE_CODE_OPENAI, headers)
    assert len(workers) == 2, "the kernel gave every connection to one worker"
    assert {a.json()["model"] for a in answers} == {"openai/gpt-5.2"}
    assert [a.headers["x-plano-affinity"] for a in answers] == \
        ["new"] + ["pinned"] * (len(answers) - 1)
    key = f"{session}:openai/gpt-4o-mini"  # the lane: the model Claude Code asked for
    assert {(a.headers["x-plano-session-id"], a.headers["x-plano-session-source"])
            for a in answers} == {(key, "agent")}
    assert raw_redis.get(PREFIX + key) == \
        '{"model_name":"openai/gpt-5.2","route_name":"deep_reasoning"}'
    # The TTL slides: a hit renews it (fixed mode would leave it running down).
    raw_redis.pexpire(PREFIX + key, 5000)
    body = first_body(CLAUDE_CODE_OPENAI, FAST_PROMPT)
    body["stream"] = False
    assert fresh_post(f"{gateway.url}/v1/messages", body, **headers).json()["model"] == \
        "openai/gpt-5.2"
    assert TTL - 10 < raw_redis.ttl(PREFIX + key) <= TTL
    # Control: without the header the fast prompt goes to the fast model.
    assert fresh_post(f"{gateway.url}/v1/messages", body).json()["model"] == \
        "openai/gpt-4o-mini"


def test_only_the_codex_session_header_keeps_one_model(gateway, raw_redis):
    session = str(uuid.uuid4())
    answers, workers = agent_loop(f"{gateway.url}/v1/responses", CODEX,
                                  {"session-id": session})
    assert len(workers) == 2, "the kernel gave every connection to one worker"
    assert {a.json()["model"] for a in answers} == {"openai/gpt-5.2"}
    assert {a.headers["x-plano-session-id"] for a in answers} == \
        {f"{session}:openai/gpt-4o-mini"}  # Codex asked for gpt-4o-mini: its lane
    assert answers[0].headers["x-plano-affinity"] == "new"
    assert all(a.headers["x-plano-affinity"] == "pinned" for a in answers[1:])
    assert raw_redis.exists(f"{PREFIX}{session}:openai/gpt-4o-mini")
