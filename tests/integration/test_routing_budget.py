"""Switching under a budget (SPEC §20), end to end.

Plano's own ``routing_budget.yaml`` under the real ``bin/serve`` (its providers are real
vendors, so only the routing-only API is used, as Plano's GUIDE does): a warm session is
retained at 0 % and switches at 100 %. Then the full proxy through real gunicorn (2 gevent
workers), a real redis-server and the bundled mock: headers, metrics, the budget's state in
the session's usage totals, continuations staying on the retained model, a free switch, and
a bad header refused with the §8 envelope.
"""

from __future__ import annotations

import time

import pytest
import requests

from devkit.gateway import Gateway
from devkit.ports import free_port
from devkit.processes import http_ok, wait_until
from tests.integration.test_plano_drop_in import PLANO_CONFIGS, serve
from tests.support.configs import make_config_dict

pytestmark = pytest.mark.integration

GENERATE = "Generate new boilerplate code for a REST handler function"
EXPLAIN = "Explain this existing code snippet and help me understand the library"
SONNET = "anthropic/claude-sonnet-4-6"
GPT4O = "openai/gpt-4o"
MINI = "openai/gpt-4o-mini"
ADMIN_TOKEN = "budget-admin-token-0123456789"


def conversation(system: str, user_turns: list[str]) -> list[dict]:
    messages = [{"role": "system", "content": system}]
    for index, text in enumerate(user_turns):
        if index:
            messages.append({"role": "assistant", "content": f"Answer {index}."})
        messages.append({"role": "user", "content": text})
    return messages


def routed(port: int, messages: list[dict], **headers) -> requests.Response:
    answer = requests.post(f"http://127.0.0.1:{port}/routing/v1/chat/completions",
                           json={"model": MINI, "messages": messages}, headers=headers,
                           timeout=10)
    assert answer.status_code == 200, answer.text
    return answer


def test_plano_routing_budget_yaml_retains_a_warm_session_at_0_and_switches_at_100():
    port = free_port()
    process = serve(PLANO_CONFIGS / "routing_budget.yaml", port)
    try:
        wait_until(lambda: http_ok(port, "/healthz"), 60, "routing_budget.yaml /healthz",
                   alive=process.check_alive)
        # A large system prompt keeps the context about constant, so each warm turn adds
        # about the same to the never-switch baseline (the context at Sonnet's cached
        # price), while a switch costs the context at GPT-4o's uncached price minus
        # Sonnet's cached one: 2.2 / 0.3 = 7.3 warm turns' worth.
        for pct, warm_turns, expected in (("0", 1, ("retained", SONNET)),
                                          ("100", 10, ("allowed", GPT4O))):
            system = f"You are a senior engineer ({pct}). " + "Be precise. " * 400
            turns = [GENERATE]
            first = routed(port, conversation(system, turns), **{
                "x-plano-max-switch-spend-pct": pct})
            assert first.json()["models"][0] == SONNET
            assert "x-plano-switch" not in first.headers  # a new session: nothing judged
            for index in range(warm_turns):
                turns.append(f"{GENERATE} number {index}")
                same = routed(port, conversation(system, turns),
                              **{"x-plano-max-switch-spend-pct": pct})
                assert same.headers["x-plano-switch"] == "allowed"  # same_anchor
                assert same.json()["models"][0] == SONNET
            turns.append(EXPLAIN)
            switch = routed(port, conversation(system, turns),
                            **{"x-plano-max-switch-spend-pct": pct})
            assert (switch.headers["x-plano-switch"], switch.json()["models"][0]) == expected
            assert switch.headers["x-plano-session-id"] == first.headers["x-plano-session-id"]
        # The configured 20 % (no header): one warm turn is far too little baseline.
        system = "You are a senior engineer (20). " + "Be precise. " * 400
        routed(port, conversation(system, [GENERATE]))
        retained = routed(port, conversation(system, [GENERATE, EXPLAIN]))
        assert retained.headers["x-plano-switch"] == "retained"
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert _sample(metrics, 'decision="retained",reason="over_cap"') == 2
        assert _sample(metrics, 'decision="allowed",reason="within_cap"') == 1
        assert _sample(metrics, 'decision="allowed",reason="same_anchor"') == 11
        log = process.log_path.read_text(errors="replace")
        assert "not supported" not in log and "Traceback" not in log
    finally:
        process.stop()


def _sample(metrics: str, labels: str) -> float:
    for line in metrics.splitlines():
        if line.startswith("plano_session_switch_decisions_total{") and labels in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no plano_session_switch_decisions_total{{{labels}}}")


# ------------------------------------------------ full proxy: gunicorn + Redis + mock


@pytest.fixture(scope="module")
def gateway(mock_llm, shared_redis):
    raw = make_config_dict(
        model_providers=[
            {"model": MINI, "base_url": mock_llm.base_url, "default": True},
            {"model": GPT4O, "base_url": mock_llm.base_url},
            {"model": SONNET, "base_url": mock_llm.base_url, "access_key": "sk-ant-up"}],
        routing_preferences=[
            {"name": "code understanding", "description": "understand and explain existing "
             "code snippets, functions, or libraries", "models": [GPT4O]},
            {"name": "code generation", "description": "generating new code snippets, "
             "functions, or boilerplate based on user prompts or requirements",
             "models": [SONNET]}],
        admin={"token": ADMIN_TOKEN},
        routing={"session_ttl_seconds": 300,
                 "routing_budget": {"max_switch_spend_pct": 0, "record_counterfactual": True},
                 "session_cache": {"type": "redis", "url": shared_redis.url}})
    with Gateway(raw, workers=2) as running:
        yield running


def chat(gateway: Gateway, messages: list[dict], **headers) -> requests.Response:
    return requests.post(gateway.chat_url, json={"model": MINI, "messages": messages},
                         headers=headers, timeout=10)


def usage_totals(gateway: Gateway, session: str) -> dict:
    answer = requests.get(f"{gateway.url}/admin/sessions/{session}", timeout=5,
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    return (answer.json().get("usage") or {}) if answer.status_code == 200 else {}


def settled(gateway: Gateway, session: str, count: int) -> dict:
    wait_until(lambda: usage_totals(gateway, session).get("requests") == count, 10,
               f"{count} answers recorded for {session}")
    return usage_totals(gateway, session)


def test_a_warm_session_is_retained_over_the_cap_and_its_tool_loop_stays_there(gateway):
    system = f"You are a careful agent {time.time_ns()}. " + "Think first. " * 200
    first = chat(gateway, conversation(system, [GENERATE]))
    assert first.status_code == 200 and first.json()["model"] == SONNET
    session = first.headers["x-plano-session-id"]
    settled(gateway, session, 1)

    messages = conversation(system, [GENERATE, EXPLAIN])
    retained = chat(gateway, messages)
    assert retained.status_code == 200
    assert (retained.headers["x-plano-switch"], retained.json()["model"]) == ("retained",
                                                                              SONNET)
    totals = settled(gateway, session, 2)
    state = totals["routing_budget"]
    assert state["switch_spend_usd"] == 0
    assert state["baseline_usd"] > 0  # the warm turn's context at Sonnet's cached price
    assert (state["model"], state["default_model"]) == (SONNET, SONNET)
    assert totals["switches"] == 0

    # The tool loop of the retained turn stays on the retained model (routing skipped).
    messages += [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "read_file", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "fn main() {}"}]
    loop = chat(gateway, messages)
    assert loop.status_code == 200 and loop.json()["model"] == SONNET
    assert loop.headers["x-plano-routing"] == "skipped"
    assert "x-plano-switch" not in loop.headers
    settled(gateway, session, 3)

    # A cheaper model (no route matches: the default GPT-4o mini) is a free switch even
    # at 0 %: mini's uncached price is below Sonnet's cached one.
    messages += [{"role": "assistant", "content": "Done."},
                 {"role": "user", "content": "ok thanks"}]
    free = chat(gateway, messages)
    assert (free.headers["x-plano-switch"], free.json()["model"]) == ("allowed", MINI)
    totals = settled(gateway, session, 4)
    assert totals["switches"] == 1 and totals["routing_budget"]["switch_spend_usd"] == 0
    assert totals["routing_budget"]["model"] == MINI

    metrics = requests.get(f"{gateway.url}/metrics", timeout=5).text
    assert 'plano_session_switch_decisions_total{decision="retained",reason="over_cap"}' \
        in metrics
    assert 'plano_session_switch_decisions_total{decision="allowed",reason="free"}' in metrics


def test_the_request_header_lifts_the_cap_for_that_turn(gateway):
    system = f"You are a careful agent {time.time_ns()}. " + "Think first. " * 200
    first = chat(gateway, conversation(system, [GENERATE]))
    session = first.headers["x-plano-session-id"]
    settled(gateway, session, 1)
    # Configured 0 % retains; the header's 100 % still cannot pay 2.2 / 0.3 of one warm
    # turn's baseline: retained. The spend never exceeds the cap, whatever the header.
    lifted = chat(gateway, conversation(system, [GENERATE, EXPLAIN]),
                  **{"x-plano-max-switch-spend-pct": "100"})
    assert lifted.headers["x-plano-switch"] == "retained"
    totals = settled(gateway, session, 2)
    state = totals["routing_budget"]
    assert 0 < state["baseline_usd"] and state["switch_spend_usd"] == 0


@pytest.mark.parametrize("value", ["101", "-1", "twenty", "nan", ""])
def test_a_bad_max_switch_spend_pct_header_is_a_400_envelope(gateway, value):
    answer = chat(gateway, conversation("s", [GENERATE]),
                  **{"x-plano-max-switch-spend-pct": value})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error", "invalid_max_switch_spend_pct",
        "x-plano-max-switch-spend-pct")
    assert "Traceback" not in answer.text
