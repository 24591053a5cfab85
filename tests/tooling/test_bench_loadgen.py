"""bin/bench's load-generator plumbing that needs no sockets: scripts, parsing, scenarios."""

from __future__ import annotations

import json

import pytest

from benchlib import loadgen, pygen, wrk
from benchlib import scenarios as sc


def spec(**overrides) -> loadgen.LoadSpec:
    values = {"host": "127.0.0.1", "port": 8080, "path": "/v1/chat/completions",
              "body": b'{"messages":[]}'}
    values.update(overrides)
    return loadgen.LoadSpec(**values)


# --------------------------------------------------------------------------- wrk


def test_lua_long_strings_survive_closing_brackets_in_the_text():
    literal = wrk._lua_str("a]=]b]]c")
    assert literal.startswith("[==[\n") and literal.endswith("]==]")
    assert "a]=]b]]c" in literal


def test_wrk_script_embeds_body_pool_and_expectations():
    script = wrk.wrk_script(spec(sessions="pool", pool=["s-000", "s-001"],
                                     expect={"X-Plano-Pinned": "true"}))
    assert '{"messages":[]}' in script
    assert "s-000" in script and "s-001" in script
    # Expected header names are lower-cased, and table keys are not "[[" (a Lua string).
    assert "[ [=[\nx-plano-pinned]=] ] = [=[\ntrue]=]" in script
    assert "[[=[" not in script
    for hook in ("function setup(", "function init(", "function request(",
                 "function response(", "function done("):
        assert hook in script


def test_wrk_output_is_parsed_from_the_json_line():
    data = {"requests": 5000, "duration_us": 5_000_000, "responses": 5000, "non_2xx": 2,
            "matched": 4990, "connect": 0, "read": 1, "write": 0, "timeout": 0,
            "p50_us": 1200, "p99_us": 4500, "mean_us": 1300.5, "max_us": 9000}
    stdout = "Running 5s test @ http://x\n  1 threads\nBENCH_JSON " + json.dumps(data) + "\n"
    result = wrk.parse_wrk_output(stdout, check=True)
    assert result.requests == 5000 and result.rps == 1000.0
    assert result.p50_ms == 1.2 and result.p99_ms == 4.5 and result.mean_ms == 1.3005
    assert result.max_ms == 9.0
    assert result.error_count == 3 and result.matched == 4990
    assert wrk.parse_wrk_output(stdout, check=False).matched is None


def test_wrk_output_without_result_line_is_an_error():
    with pytest.raises(RuntimeError, match="no result line"):
        wrk.parse_wrk_output("unable to connect to 127.0.0.1:1\n", check=False)


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


def test_all_issue_6_scenarios_exist_in_order():
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
