"""bin/bench's load-generator plumbing that needs no sockets: scripts, parsing, scenarios."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bin"))

from benchlib import loadgen, pygen, wrk  # noqa: E402
from benchlib import scenarios as sc  # noqa: E402


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


def test_request_bytes_are_a_complete_http11_request():
    raw = pygen._request_bytes(spec(), "sess-1")
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/chat/completions HTTP/1.1"
    assert "Host: 127.0.0.1:8080" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert "X-Model-Affinity: sess-1" in lines
    assert body == b'{"messages":[]}'
    assert b"X-Model-Affinity" not in pygen._request_bytes(spec(), None)


def read(data: bytes):
    async def go():
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        first = await pygen._read_response(reader)
        return first, await reader.read()
    return asyncio.run(go())


def test_read_response_with_content_length_leaves_the_next_response():
    (status, headers), rest = read(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                                   b"X-Plano-Pinned: true\r\n\r\n{}HTTP/1.1 ...")
    assert status == 200 and headers["x-plano-pinned"] == "true"
    assert rest == b"HTTP/1.1 ..."


def test_read_response_with_chunked_body_reads_to_the_end():
    body = b"5\r\ndata:\r\n3\r\n ok\r\n0\r\n\r\n"
    (status, headers), rest = read(b"HTTP/1.1 503 Service Unavailable\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n" + body + b"NEXT")
    assert status == 503 and headers["transfer-encoding"] == "chunked"
    assert rest == b"NEXT"


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


def test_sliding_scenario_runs_a_valid_sliding_redis_gateway():
    from app.config import config_from_dict
    from benchlib import servers
    scenario = sc.select("pinned_redis_sliding")[0]
    assert scenario.target == sc.GATEWAY_REDIS_SLIDING and scenario.sessions == "pool"
    assert "redis" in servers.Servers.NEEDS[scenario.target]
    raw = servers.gateway_config(8080, "http://127.0.0.1:9", cache="redis",
                                 redis_url="redis://127.0.0.1:6379", ttl_mode="sliding")
    assert config_from_dict(raw).routing.session_ttl_mode == "sliding"
    fixed = servers.gateway_config(8080, "http://127.0.0.1:9", cache="memory")
    assert config_from_dict(fixed).routing.session_ttl_mode == "fixed"
