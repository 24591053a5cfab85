"""bin/bench's load-generator plumbing that needs no sockets: request plans, scenarios."""

from __future__ import annotations

import json

import pytest

from benchlib import loadgen, pygen
from benchlib import scenarios as sc


def spec(**overrides) -> loadgen.LoadSpec:
    values = {"host": "127.0.0.1", "port": 8080, "path": "/v1/chat/completions",
              "body": b'{"messages":[]}'}
    values.update(overrides)
    return loadgen.LoadSpec(**values)


# --------------------------------------------------------------------------- python


def headers_of(planner, index: int) -> dict:
    return dict(planner(index).headers)


def test_python_generator_cycles_the_session_pool():
    planner = pygen._planner(spec(sessions="pool", pool=["a", "b"]), run="0")
    assert [headers_of(planner, i)["X-Model-Affinity"] for i in range(3)] == ["a", "b", "a"]
    assert planner(0).payload() == b'{"messages":[]}'


def test_python_generator_sends_a_new_session_per_request_and_run():
    first = pygen._planner(spec(sessions="unique", unique_prefix="p"), run="0")
    second = pygen._planner(spec(sessions="unique", unique_prefix="p"), run="1")
    ids = {headers_of(planner, i)["X-Model-Affinity"] for planner in (first, second)
           for i in range(3)}
    assert len(ids) == 6 and all(session.startswith("p-") for session in ids)


def test_python_generator_without_sessions_sends_no_affinity_header():
    planner = pygen._planner(spec(), run="0")
    assert "X-Model-Affinity" not in headers_of(planner, 0)
    assert headers_of(planner, 0)["Content-Type"] == "application/json"


# --------------------------------------------------------------------------- scenarios


def test_all_request_path_scenarios_exist_in_order():
    assert [s.name for s in sc.SCENARIOS] == [
        "direct", "passthrough", "no_session", "pinned_memory", "pinned_redis", "miss_redis",
        "stream_redis", "llm_miss", "llm_pinned"]


def test_pinned_scenarios_use_a_pool_and_check_the_pinned_header():
    for scenario in sc.SCENARIOS:
        if scenario.name.startswith("pinned") or scenario.name in ("stream_redis",
                                                                     "llm_pinned"):
            assert scenario.sessions == "pool"
            assert scenario.expect["x-plano-pinned"] == "true"
        if "miss" in scenario.name:
            assert scenario.sessions == "unique"
            assert scenario.expect["x-plano-affinity"] == "new"


def test_select_keeps_the_given_order_and_rejects_unknown_names():
    assert [s.name for s in sc.select("pinned_redis, direct")] == ["pinned_redis", "direct"]
    assert len(sc.select("")) == len(sc.SCENARIOS)
    with pytest.raises(ValueError, match="bogus"):
        sc.select("direct,bogus")


def test_session_pool_ids_are_unique_per_run_and_valid_affinity_values():
    pool = sc.session_pool(sc.BY_NAME["pinned_redis"], "run1")
    assert len(pool) == len(set(pool)) == sc.SESSION_POOL_SIZE
    assert all(s.isascii() and s.isprintable() and len(s) <= 256 for s in pool)
    assert pool != sc.session_pool(sc.BY_NAME["pinned_redis"], "run2")


def test_stream_scenario_body_asks_for_a_stream():
    assert json.loads(sc.BY_NAME["stream_redis"].body)["stream"] is True
    assert "stream" not in json.loads(sc.BY_NAME["pinned_redis"].body)


def test_sliding_scenario_runs_a_valid_sliding_redis_gateway():
    from app.config import config_from_dict
    from benchlib import servers
    scenario = sc.select("pinned_redis_sliding")[0]
    assert scenario.target == sc.GATEWAY_REDIS_SLIDING and scenario.sessions == "pool"
    assert "redis" in servers.Servers.NEEDS[scenario.target]
    raw = servers.bench_config("http://127.0.0.1:9/v1", cache="redis",
                               redis_url="redis://127.0.0.1:6379", ttl_mode="sliding")
    assert config_from_dict(raw).routing.session_ttl_mode == "sliding"
    fixed = servers.bench_config("http://127.0.0.1:9/v1", cache="memory")
    assert config_from_dict(fixed).routing.session_ttl_mode == "fixed"
