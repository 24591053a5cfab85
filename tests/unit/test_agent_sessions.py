"""Agent sessions (SPEC §18): the session id a coding agent sends is adopted without
configuration, scoped by its lane, with a sliding TTL; through the app with a memory cache
on a fake clock and a router the test steers."""

from __future__ import annotations

import pytest

from app import create_app
from app.affinity.agent import agent_session_id, invalid_reason, lane
from app.config import AgentSessionsConfig, config_from_dict
from app.errors import ConfigError
from app.observability.prometheus_metrics import PrometheusMetrics
from app.session_cache.memory import MemorySessionCache
from tests.support.configs import make_config_dict
from tests.support.fake_provider import fake_providers
from tests.support.fakes import FakeClock, RecordingMetrics
from tests.unit.test_affinity_modes_gateway import SteeredRouter

TTL = 300
CLAUDE = "X-Claude-Code-Session-Id"
CODEX = "session-id"
SESSION = "4f1c2d3e-0a1b-4c5d-8e9f-0123456789ab"
FAST, DEEP = "openai/gpt-4o-mini", "openai/gpt-5.2"


class RecordingIgnored(RecordingMetrics):
    def __init__(self):
        super().__init__()
        self.ignored: list[tuple[str, str]] = []

    def agent_session_ignored(self, header, reason):
        self.ignored.append((header, reason))


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def cache(clock):
    return MemorySessionCache(1000, clock=clock)


@pytest.fixture
def metrics():
    return RecordingIgnored()


@pytest.fixture
def make_client(cache, metrics):
    """``make_client(**routing_keys)`` -> (test client, router) on the base config."""
    def make(route="deep_reasoning", **routing):
        config = config_from_dict(make_config_dict(routing={"session_ttl_seconds": TTL,
                                                            **routing}))
        router = SteeredRouter(config.routing_preferences, route)
        app = create_app(config, session_cache=cache, router=router, metrics=metrics,
                         providers=fake_providers(config))
        return app.test_client(), router
    return make


def messages_body(text="Fix the failing test in tests/test_api.py", model=None) -> dict:
    body = {"max_tokens": 256, "messages": [{"role": "user", "content": text}]}
    if model is not None:
        body["model"] = model
    return body


def post(client, body, path="/v1/messages", **headers):
    response = client.post(path, json=body, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response


def served(response) -> str:
    return response.get_json()["model"]


def test_the_claude_code_session_header_pins_without_configuration(make_client, cache):
    client, router = make_client()
    first = post(client, messages_body(), **{CLAUDE: SESSION})
    assert (first.headers["x-plano-session-id"], first.headers["x-plano-session-source"]) \
        == (f"{SESSION}:{FAST}", "agent")
    assert (served(first), first.headers["x-plano-affinity"]) == (DEEP, "new")
    # The next prompt alone would route elsewhere; the agent's session keeps its model.
    router.route_name = "fast_responses"
    second = post(client, messages_body("hi"), **{CLAUDE: SESSION})
    assert (served(second), second.headers["x-plano-affinity"]) == (DEEP, "pinned")
    assert cache.get(f"{SESSION}:{FAST}").model_name == DEEP
    assert router.calls == 1


def test_a_side_call_for_another_model_has_its_own_pin(make_client, cache):
    client, router = make_client()
    post(client, messages_body(), **{CLAUDE: SESSION})  # the loop: lane gpt-4o-mini
    router.route_name = "fast_responses"
    side = post(client, messages_body("Summarise this in five words", model=DEEP),
                **{CLAUDE: SESSION})
    assert side.headers["x-plano-session-id"] == f"{SESSION}:{DEEP}"
    assert (served(side), side.headers["x-plano-affinity"]) == (FAST, "new")
    # Neither pin took or disturbed the other.
    assert cache.get(f"{SESSION}:{FAST}").model_name == DEEP
    assert cache.get(f"{SESSION}:{DEEP}").model_name == FAST


def test_the_lane_is_the_requested_model_after_alias_resolution(make_client):
    client, _ = make_client()
    aliased = post(client, messages_body(model="fast-model"), **{CLAUDE: SESSION})
    bare = post(client, messages_body(model="gpt-4o-mini"), **{CLAUDE: SESSION})
    assert aliased.headers["x-plano-session-id"] == bare.headers["x-plano-session-id"] \
        == f"{SESSION}:{FAST}"
    assert bare.headers["x-plano-affinity"] == "pinned"


def test_an_agent_session_slides_even_with_the_fixed_ttl_mode(make_client, clock):
    client, router = make_client(session_ttl_mode="fixed")
    post(client, messages_body(), **{CLAUDE: SESSION})
    router.route_name = "fast_responses"
    for _ in range(3):  # each hit comes before the TTL of the previous one runs out
        clock.now += TTL - 10
        hit = post(client, messages_body("hi"), **{CLAUDE: SESSION})
        assert (served(hit), hit.headers["x-plano-affinity"]) == (DEEP, "pinned")
    clock.now += TTL + 1  # idle for a whole TTL
    assert post(client, messages_body("hi"), **{CLAUDE: SESSION}).headers[
        "x-plano-affinity"] == "new"


def test_codex_session_header_on_responses(make_client, cache):
    client, router = make_client()
    body = {"input": "Refactor the parser into two modules"}
    first = post(client, body, "/v1/responses", **{CODEX: "019a-codex"})
    assert first.headers["x-plano-session-source"] == "agent"
    router.route_name = "fast_responses"
    again = post(client, {"input": "ok"}, "/v1/responses", **{CODEX: "019a-codex"})
    assert (served(again), again.headers["x-plano-affinity"]) == (DEEP, "pinned")
    # The first configured header present wins over a later one.
    both = post(client, messages_body(), **{CLAUDE: SESSION, CODEX: "019a-codex"})
    assert both.headers["x-plano-session-id"] == f"{SESSION}:{FAST}"


def test_the_explicit_header_always_wins(make_client, cache):
    client, router = make_client()
    post(client, messages_body(), **{CLAUDE: SESSION})
    router.route_name = "fast_responses"
    explicit = post(client, messages_body(), **{CLAUDE: SESSION, "X-Model-Affinity": "mine"})
    assert (explicit.headers["x-plano-session-id"],
            explicit.headers["x-plano-session-source"]) == ("mine", "header")
    assert (served(explicit), explicit.headers["x-plano-affinity"]) == (FAST, "new")
    assert cache.get(f"{SESSION}:{FAST}").model_name == DEEP


@pytest.mark.parametrize("value, reason", [
    ("", "empty"), ("x" * 257, "too_long"), ("sess\tion", "not_printable"),
    ("turn:abc", "reserved_prefix"), ("usage:abc", "reserved_prefix")])
def test_an_invalid_agent_value_is_ignored_and_counted_never_refused(make_client, metrics,
                                                                    cache, value, reason):
    client, _ = make_client()
    answer = post(client, messages_body(), **{CLAUDE: value})
    assert answer.headers["x-plano-session-source"] == "implicit"
    assert "x-plano-affinity" not in answer.headers  # served without affinity
    assert metrics.ignored == [(CLAUDE, reason)]
    # The next configured header still names the session.
    named = post(client, messages_body(), **{CLAUDE: value, CODEX: "codex-1"})
    assert named.headers["x-plano-session-id"] == f"codex-1:{FAST}"


def test_disabled_agent_sessions_restore_header_only_affinity(make_client, cache):
    client, _ = make_client(agent_sessions={"enabled": False})
    answer = post(client, messages_body(), **{CLAUDE: SESSION})
    assert answer.headers["x-plano-session-source"] == "implicit"
    assert "x-plano-affinity" not in answer.headers
    assert cache.get(f"{SESSION}:{FAST}") is None


def test_with_route_on_user_only_the_agent_id_keys_the_turn_record(make_client, cache):
    client, router = make_client(route_on_user_only=True)
    turn = {"max_tokens": 64, "messages": [
        {"role": "user", "content": "Fix the failing test"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash",
                                            "input": {"command": "pytest"}}]}]}
    first = post(client, messages_body("Fix the failing test"), **{CLAUDE: SESSION})
    assert served(first) == DEEP and "x-plano-affinity" not in first.headers
    assert cache.get(f"{SESSION}:{FAST}") is None  # no pin: user turns are re-routed
    assert cache.get(f"turn:{SESSION}:{FAST}").model_name == DEEP
    router.route_name = "fast_responses"
    turn["messages"].append({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t1", "content": "1 passed"}]})
    continuation = post(client, turn, **{CLAUDE: SESSION})
    assert (served(continuation), continuation.headers["x-plano-routing"]) == (DEEP,
                                                                              "skipped")
    new_turn = post(client, messages_body("hi"), **{CLAUDE: SESSION})
    assert served(new_turn) == FAST


def test_agent_session_id_reads_the_configured_headers_in_order():
    config = AgentSessionsConfig(headers=("A", "B"))
    assert agent_session_id({"B": "b", "A": "a"}, config) == "a"
    assert agent_session_id({"B": "b"}, config) == "b"
    assert agent_session_id({}, config) is None
    assert agent_session_id({"A": "a"}, AgentSessionsConfig(enabled=False)) is None
    assert invalid_reason("ok-1") is None


def test_lane_resolves_aliases_bare_ids_and_the_default():
    config = config_from_dict(make_config_dict())
    assert lane(config, None) == lane(config, "fast-model") == lane(config, "gpt-4o-mini") \
        == FAST
    assert lane(config, "nope/unknown") == "nope/unknown"


def test_config_defaults_and_validation():
    routing = config_from_dict(make_config_dict()).routing
    assert routing.agent_sessions == AgentSessionsConfig(
        True, ("X-Claude-Code-Session-Id", "session-id"))
    custom = config_from_dict(make_config_dict(routing={"agent_sessions": {
        "headers": ["X-Agent-Session"]}})).routing.agent_sessions
    assert custom == AgentSessionsConfig(True, ("X-Agent-Session",))
    with pytest.raises(ConfigError, match="agent_sessions"):
        config_from_dict(make_config_dict(routing={"agent_sessions": {"headers": ["a b"]}}))
    with pytest.raises(ConfigError, match="agent_sessions"):
        config_from_dict(make_config_dict(routing={"agent_sessions": {"header": ["x"]}}))


def test_prometheus_counts_ignored_values_by_configured_header(tmp_path):
    config = config_from_dict(make_config_dict())
    prometheus = PrometheusMetrics(config, multiproc_dir="")
    prometheus.agent_session_ignored(CLAUDE, "reserved_prefix")
    text = prometheus.exposition()[0].decode()
    assert ('plano_agent_session_ignored_total{header="X-Claude-Code-Session-Id",'
            'reason="reserved_prefix"} 1.0') in text
    assert 'plano_agent_session_ignored_total{header="session-id",reason="empty"} 0.0' in text


def test_the_request_span_names_the_session_and_its_source(cache, metrics):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    config = config_from_dict(make_config_dict())
    app = create_app(config, session_cache=cache, metrics=metrics, tracer_provider=provider,
                     providers=fake_providers(config))
    try:
        post(app.test_client(), messages_body(), **{CLAUDE: SESSION})
        [span] = [s for s in exporter.get_finished_spans() if s.name == "POST /v1/messages"]
        assert span.attributes["plano.session.source"] == "agent"
        assert span.attributes["plano.session_id"] == f"{SESSION}:{FAST}"
    finally:
        provider.shutdown()
