"""Affinity modes (SPEC §16) under real gunicorn (gevent workers), with a real redis-server
and with the memory backend.

Four gateways, each started once for the module: per backend, one with turn-level routing
(``route_on_user_only``, sliding TTL, an LLM router pointed at a routing LLM that counts its
calls) and one with implicit affinity (embedded router, fixed TTL). Redis gateways run two
workers and every request opens a new connection, so turns land on either worker; memory
gateways run one worker (a per-process map cannot be shared). Stored pins and turn records
are read through the admin API on both backends, and on Redis also raw (layout, ``TTL``).
TTL expiry is made instant with ``PEXPIRE`` on the raw key, never slept.
"""

from __future__ import annotations

import re
import time

import pytest
import requests

from devkit.gateway import Gateway
from devkit.processes import wait_until
from devkit.redis_servers import RedisServer
from tests.integration.test_affinity import command_counts
from tests.support.configs import DEEP_PROMPT, FAST_PROMPT, gateway_config, redis_cache
from tests.support.routing_llm import RoutingLLM
from tests.support.servers import fresh_post, require_redis_server

pytestmark = pytest.mark.integration

TTL = 300
ADMIN_TOKEN = "modes-admin-token-0123456789"
PREFIX = "plano:affinity:"
BACKENDS = ["redis", "memory"]
SYSTEM = {"role": "system", "content": "You are a coding agent."}
TOOLS = [{"type": "function", "function": {"name": "read_file", "parameters": {}}}]
TOOL_CALL = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_1", "type": "function",
     "function": {"name": "read_file", "arguments": "{\"path\": \"main.py\"}"}}]}
TOOL_RESULT = {"role": "tool", "tool_call_id": "call_1",
               "content": "Traceback (most recent call last): ZeroDivisionError"}
REMINDER = {"role": "user", "content": "<system-reminder>Todo list empty.</system-reminder>"}


def conversation(first: str, *later) -> dict:
    return {"messages": [SYSTEM, {"role": "user", "content": first}, *later], "tools": TOOLS}


def unique(text: str) -> str:
    """A first user message no other test (or earlier run on this Redis) has sent."""
    return f"{text} [{time.time_ns()}]"


@pytest.fixture(scope="module")
def routing_llm():
    with RoutingLLM("deep_reasoning") as llm:
        yield llm


@pytest.fixture(scope="module")
def module_redis():
    """A redis-server of this module's own (its keyspace is read raw)."""
    require_redis_server()
    with RedisServer() as server:
        yield server


def _gateway(raw: dict, backend: str, server) -> Gateway:
    raw["routing"]["session_cache"] = (redis_cache(server) if backend == "redis"
                                       else {"type": "memory"})
    raw["routing"]["session_ttl_seconds"] = TTL
    raw["admin"] = {"token": ADMIN_TOKEN}
    gateway = Gateway(raw, workers=2 if backend == "redis" else 1)
    gateway.backend = backend
    return gateway.start()


def _turn_gateway(backend: str, server, mock_llm, routing_llm) -> Gateway:
    """``route_on_user_only`` + sliding TTL, LLM router on :func:`routing_llm`."""
    raw = gateway_config(mock_llm)
    raw["model_providers"].append({"model": "openai/arch-router",
                                   "base_url": routing_llm.base_url})
    raw["routing"].update(model="openai/arch-router", session_ttl_mode="sliding",
                          route_on_user_only=True)
    return _gateway(raw, backend, server)


def _implicit_gateway(backend: str, server, mock_llm) -> Gateway:
    """``implicit_affinity``, fixed TTL, the embedded router."""
    raw = gateway_config(mock_llm)
    raw["routing"]["implicit_affinity"] = True
    return _gateway(raw, backend, server)


@pytest.fixture(scope="module")
def redis_turn_gateway(module_redis, mock_llm, routing_llm):
    with _turn_gateway("redis", module_redis, mock_llm, routing_llm) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def memory_turn_gateway(mock_llm, routing_llm):
    with _turn_gateway("memory", None, mock_llm, routing_llm) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def redis_implicit_gateway(module_redis, mock_llm):
    with _implicit_gateway("redis", module_redis, mock_llm) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def memory_implicit_gateway(mock_llm):
    with _implicit_gateway("memory", None, mock_llm) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def raw_redis(module_redis):
    client = module_redis.client()
    yield client
    client.close()


def stored(gateway: Gateway, session_id: str) -> dict | None:
    """The binding under ``session_id`` as the admin API shows it, or ``None``."""
    answer = requests.get(f"{gateway.url}/admin/sessions/{session_id}", timeout=5,
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    if answer.status_code == 404:
        return None
    assert answer.status_code == 200, answer.text
    return answer.json()


def served(answer: requests.Response) -> str:
    assert answer.status_code == 200, answer.text
    return answer.json()["model"]


def skips(gateway: Gateway, route: str, model: str) -> float:
    """``plano_router_skips_total{route,model}`` summed over the gateway's workers."""
    text = requests.get(f"{gateway.url}/metrics", timeout=5).text
    pattern = re.compile(r'^plano_router_skips_total\{model="%s",route="%s"\} (\S+)$'
                         % (re.escape(model), re.escape(route)), re.M)
    match = pattern.search(text)
    return float(match.group(1)) if match else 0.0


# --------------------------------------------------------------------------- sliding TTL

def expire_now(raw, key: str) -> None:
    """Make the key's TTL run out at once (PEXPIRE 1 ms) and wait, polling, until it has."""
    raw.pexpire(key, 1)
    wait_until(lambda: not raw.exists(key), 2, f"{key} to expire", interval=0.002)


def test_sliding_hit_renews_the_redis_ttl_and_an_idle_session_expires(redis_turn_gateway,
                                                                      raw_redis):
    session = f"sliding-{time.time_ns()}"
    key = PREFIX + session
    body = conversation(unique(DEEP_PROMPT))
    assert fresh_post(redis_turn_gateway.chat_url, body, session).headers[
        "x-plano-affinity"] == "new"
    for _ in range(2):
        raw_redis.pexpire(key, 5000)  # as if the session had been active for a while
        assert raw_redis.ttl(key) <= 5
        hit = fresh_post(redis_turn_gateway.chat_url, body, session)
        assert (served(hit), hit.headers["x-plano-affinity"]) == ("openai/gpt-5.2", "pinned")
        assert TTL - 10 < raw_redis.ttl(key) <= TTL  # renewed by the hit (GETEX)
    expire_now(raw_redis, key)  # idle for a whole TTL
    again = fresh_post(redis_turn_gateway.chat_url, body, session)
    assert again.headers["x-plano-affinity"] == "new"


# --------------------------------------------------------------------------- implicit sessions

@pytest.mark.parametrize("backend", BACKENDS)
def test_two_turns_of_one_conversation_stay_pinned_without_a_header(request, backend):
    implicit_gateway = request.getfixturevalue(f"{backend}_implicit_gateway")
    first_message = unique(DEEP_PROMPT)
    first = fresh_post(implicit_gateway.chat_url, conversation(first_message))
    derived = first.headers["x-plano-session-id"]
    assert re.fullmatch(r"prefix-[0-9a-f]{16}", derived)
    assert (served(first), first.headers["x-plano-affinity"]) == ("openai/gpt-5.2", "new")
    # The second turn alone would route to the fast model; the conversation's pin wins.
    second = fresh_post(implicit_gateway.chat_url, conversation(
        first_message, {"role": "assistant", "content": "E = mc^2 ..."},
        {"role": "user", "content": FAST_PROMPT}))
    assert second.headers["x-plano-session-id"] == derived
    assert (served(second), second.headers["x-plano-affinity"]) == ("openai/gpt-5.2",
                                                                    "pinned")
    assert second.json()["x_plano_pinned"] is True
    pin = stored(implicit_gateway, derived)
    assert (pin["model_name"], pin["route_name"]) == ("openai/gpt-5.2", "deep_reasoning")
    # Another conversation is another session; an explicit header always wins.
    other = fresh_post(implicit_gateway.chat_url, conversation(unique(FAST_PROMPT)))
    assert other.headers["x-plano-session-id"] != derived
    assert (served(other), other.headers["x-plano-affinity"]) == ("openai/gpt-4o-mini", "new")
    explicit = fresh_post(implicit_gateway.chat_url, conversation(first_message),
                          session=f"explicit-{time.time_ns()}")
    assert explicit.headers["x-plano-affinity"] == "new"
    assert explicit.headers["x-plano-session-source"] == "header"


def test_implicit_pin_is_stored_in_redis_with_the_fixed_ttl(redis_implicit_gateway,
                                                            raw_redis):
    body = conversation(unique(FAST_PROMPT))
    first = fresh_post(redis_implicit_gateway.chat_url, body)
    key = PREFIX + first.headers["x-plano-session-id"]
    assert raw_redis.get(key) == '{"model_name":"openai/gpt-4o-mini","route_name":"fast_responses"}'
    assert 0 < raw_redis.ttl(key) <= TTL
    raw_redis.pexpire(key, 5000)
    hit = fresh_post(redis_implicit_gateway.chat_url, body)
    assert hit.headers["x-plano-affinity"] == "pinned"
    assert raw_redis.ttl(key) <= 5  # fixed: a hit does not renew
    expire_now(raw_redis, key)
    assert fresh_post(redis_implicit_gateway.chat_url, body).headers[
        "x-plano-affinity"] == "new"


# --------------------------------------------------------------------------- turn-level routing

@pytest.mark.parametrize("backend", BACKENDS)
def test_tool_result_continuations_are_served_without_a_router_call(request, backend,
                                                                    routing_llm):
    turn_gateway = request.getfixturevalue(f"{backend}_turn_gateway")
    routing_llm.route = "deep_reasoning"
    first_message = unique("Fix the failing division in main.py")
    calls = routing_llm.calls
    turn = fresh_post(turn_gateway.chat_url, conversation(first_message))
    derived = turn.headers["x-plano-session-id"]
    assert served(turn) == "openai/gpt-5.2" and "x-plano-routing" not in turn.headers
    assert routing_llm.calls == calls + 1
    record = stored(turn_gateway, f"turn:{derived}")
    assert (record["model_name"], record["route_name"]) == ("openai/gpt-5.2", "deep_reasoning")
    assert 0 < record["ttl_seconds"] <= TTL
    skipped_before = skips(turn_gateway, "deep_reasoning", "openai/gpt-5.2")

    # Tool output reads like a quick answer to a router; the loop must not switch models.
    routing_llm.route = "fast_responses"
    loop = [TOOL_CALL, TOOL_RESULT]
    for later in (loop, loop + [REMINDER], loop + loop):
        continuation = fresh_post(turn_gateway.chat_url, conversation(first_message, *later))
        assert served(continuation) == "openai/gpt-5.2"
        assert continuation.headers["x-plano-routing"] == "skipped"
        assert continuation.headers["x-plano-route"] == "deep_reasoning"
    assert routing_llm.calls == calls + 1  # counted at the routing LLM itself
    assert skips(turn_gateway, "deep_reasoning", "openai/gpt-5.2") == skipped_before + 3

    # The user speaks again: the router runs, and the new turn's loop follows its model.
    spoken = [*loop, {"role": "assistant", "content": "Fixed."},
              {"role": "user", "content": "Thanks! Say hi to the team."}]
    new_turn = fresh_post(turn_gateway.chat_url, conversation(first_message, *spoken))
    assert served(new_turn) == "openai/gpt-4o-mini" and routing_llm.calls == calls + 2
    routing_llm.route = "deep_reasoning"
    follow = fresh_post(turn_gateway.chat_url, conversation(first_message, *spoken, *loop))
    assert served(follow) == "openai/gpt-4o-mini" and routing_llm.calls == calls + 2
    assert stored(turn_gateway, f"turn:{derived}")["model_name"] == "openai/gpt-4o-mini"


def test_turn_record_is_a_redis_key_renewed_by_continuations(redis_turn_gateway, raw_redis,
                                                             routing_llm):
    routing_llm.route = "fast_responses"
    first_message = unique("hi there")
    turn = fresh_post(redis_turn_gateway.chat_url, conversation(first_message))
    key = f"{PREFIX}turn:{turn.headers['x-plano-session-id']}"
    assert raw_redis.get(key) == \
        '{"model_name":"openai/gpt-4o-mini","route_name":"fast_responses"}'
    assert 0 < raw_redis.ttl(key) <= TTL
    raw_redis.pexpire(key, 5000)
    calls = routing_llm.calls
    continuation = fresh_post(redis_turn_gateway.chat_url,
                              conversation(first_message, TOOL_CALL, TOOL_RESULT))
    assert continuation.headers["x-plano-routing"] == "skipped"
    assert routing_llm.calls == calls
    assert TTL - 10 < raw_redis.ttl(key) <= TTL  # sliding: the continuation renewed it
    # Once the turn record is gone, a continuation is routed (and recorded) again.
    expire_now(raw_redis, key)
    rerouted = fresh_post(redis_turn_gateway.chat_url,
                          conversation(first_message, TOOL_CALL, TOOL_RESULT))
    assert "x-plano-routing" not in rerouted.headers and routing_llm.calls == calls + 1
    assert raw_redis.exists(key)


def test_sliding_hits_and_continuations_cost_one_redis_command(redis_turn_gateway,
                                                                module_redis, routing_llm):
    """Counted by Redis itself (INFO commandstats): a sliding hit is one GETEX; a turn's
    continuation one GETEX of its turn record; a new user turn one SET of it."""
    routing_llm.route = "deep_reasoning"
    session = f"counted-{time.time_ns()}"
    body = conversation(unique(DEEP_PROMPT))
    fresh_post(redis_turn_gateway.chat_url, body, session)  # pins (and connects)
    admin = module_redis.client()
    admin.config_resetstat()
    for _ in range(3):
        assert fresh_post(redis_turn_gateway.chat_url, body, session).headers[
            "x-plano-affinity"] == "pinned"
    assert command_counts(module_redis) == {"getex": 3}

    first_message = unique(DEEP_PROMPT)
    admin.config_resetstat()
    fresh_post(redis_turn_gateway.chat_url, conversation(first_message))
    assert command_counts(module_redis) == {"set": 1}
    admin.config_resetstat()
    continuation = fresh_post(redis_turn_gateway.chat_url,
                              conversation(first_message, TOOL_CALL, TOOL_RESULT))
    assert continuation.headers["x-plano-routing"] == "skipped"
    assert command_counts(module_redis) == {"getex": 1}
    admin.close()


# --------------------------------------------------------------------------- every client API

SYSTEM_TEXT = SYSTEM["content"]


def messages_body(first: str, *later) -> dict:
    """An Anthropic Messages conversation (what Claude Code sends, in small)."""
    return {"max_tokens": 64, "system": [{"type": "text", "text": SYSTEM_TEXT}],
            "tools": [{"name": "read_file", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": first}]},
                         *later]}


def responses_body(first: str, *later) -> dict:
    """An OpenAI Responses conversation (what Codex sends, in small)."""
    return {"instructions": SYSTEM_TEXT,
            "tools": [{"type": "function", "name": "read_file", "parameters": {}}],
            "input": [{"role": "user", "content": [{"type": "input_text", "text": first}]},
                      *later]}


#: Per API (chat has its own tests above): path, conversation builder, one tool round trip
#: (a continuation), then the assistant's answer and a new user message (a new turn).
APIS = {
    "messages": ("/v1/messages", messages_body, [
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "read_file",
             "input": {"path": "main.py"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1",
             "content": "Traceback (most recent call last): ZeroDivisionError"},
            {"type": "text", "text": REMINDER["content"]}]}],
        [{"role": "assistant", "content": [{"type": "text", "text": "Fixed."}]},
         {"role": "user", "content": "Thanks! Say hi to the team."}]),
    "responses": ("/v1/responses", responses_body, [
        {"type": "function_call", "call_id": "call_1", "name": "read_file",
         "arguments": "{\"path\": \"main.py\"}"},
        {"type": "function_call_output", "call_id": "call_1",
         "output": "Traceback (most recent call last): ZeroDivisionError"}],
        [{"type": "message", "role": "assistant",
          "content": [{"type": "output_text", "text": "Fixed."}]},
         {"role": "user", "content": "Thanks! Say hi to the team."}]),
}


def api_post(gateway: Gateway, api: str, *later, first: str) -> requests.Response:
    path, build, _, _ = APIS[api]
    return requests.post(f"{gateway.url}{path}", json=build(first, *later),
                         headers={"Connection": "close"}, timeout=10)


@pytest.mark.parametrize("api", ["messages", "responses"])
def test_every_api_pins_an_implicit_session_in_redis(redis_implicit_gateway, raw_redis, api):
    first_message = unique(DEEP_PROMPT)
    _, _, _, spoken = APIS[api]
    turn = api_post(redis_implicit_gateway, api, first=first_message)
    derived = turn.headers["x-plano-session-id"]
    assert (served(turn), turn.headers["x-plano-affinity"]) == ("openai/gpt-5.2", "new")
    later = api_post(redis_implicit_gateway, api, *spoken[:1],
                     {**spoken[1], "content": FAST_PROMPT}, first=first_message)
    assert later.headers["x-plano-session-id"] == derived
    assert (served(later), later.headers["x-plano-affinity"]) == ("openai/gpt-5.2", "pinned")
    assert raw_redis.get(PREFIX + derived) == \
        '{"model_name":"openai/gpt-5.2","route_name":"deep_reasoning"}'


@pytest.mark.parametrize("api", ["messages", "responses"])
def test_every_api_serves_tool_results_without_a_router_call(redis_turn_gateway, raw_redis,
                                                             routing_llm, api):
    _, _, loop, spoken = APIS[api]
    routing_llm.route = "deep_reasoning"
    first_message = unique("Fix the failing division in main.py")
    calls = routing_llm.calls
    turn = api_post(redis_turn_gateway, api, first=first_message)
    assert served(turn) == "openai/gpt-5.2" and routing_llm.calls == calls + 1
    key = f"{PREFIX}turn:{turn.headers['x-plano-session-id']}"
    assert raw_redis.get(key) == '{"model_name":"openai/gpt-5.2","route_name":"deep_reasoning"}'

    routing_llm.route = "fast_responses"
    continuation = api_post(redis_turn_gateway, api, *loop, first=first_message)
    assert served(continuation) == "openai/gpt-5.2"
    assert continuation.headers["x-plano-routing"] == "skipped"
    assert routing_llm.calls == calls + 1

    new_turn = api_post(redis_turn_gateway, api, *loop, *spoken, first=first_message)
    assert served(new_turn) == "openai/gpt-4o-mini" and routing_llm.calls == calls + 2
    assert "x-plano-routing" not in new_turn.headers
    assert raw_redis.get(key) == \
        '{"model_name":"openai/gpt-4o-mini","route_name":"fast_responses"}'
