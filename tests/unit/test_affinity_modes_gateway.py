"""Affinity modes (SPEC §16) through the chat endpoint: sliding TTL, implicit sessions,
turn-level routing; a memory cache on a fake clock, a router the test steers and counts."""

from __future__ import annotations

import re

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app import create_app
from app.affinity import CHAT_COMPLETIONS, implicit_session_id
from app.config import config_from_dict
from app.errors import RouterError
from app.router.base import Router
from app.session_cache.base import SessionBinding
from app.session_cache.memory import MemorySessionCache
from tests.support.configs import make_config_dict
from tests.support.fake_provider import fake_providers
from tests.support.fakes import FailingCache, RecordingMetrics

CHAT = "/v1/chat/completions"
TTL = 300
SYSTEM = {"role": "system", "content": "You are a coding agent."}
TOOLS = [{"type": "function", "function": {"name": "read_file", "parameters": {}}}]
TOOL_CALL = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_1", "type": "function",
     "function": {"name": "read_file", "arguments": "{\"path\": \"main.py\"}"}}]}
TOOL_RESULT = {"role": "tool", "tool_call_id": "call_1", "content": "x = 1/0  # ZeroDivision"}
REMINDER = {"role": "user", "content": "<system-reminder>todo list is empty</system-reminder>"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class SteeredRouter(Router):
    """Answers the route the test sets (``None``: no match), or raises; counts calls."""

    kind = "steered"

    def __init__(self, routes, route_name: str | None):
        self.routes = tuple(routes)
        self.by_name = {route.name: route for route in routes}
        self.route_name = route_name
        self.fail = False
        self.calls = 0

    def for_routes(self, routes):
        return self

    def select_route(self, messages):
        self.calls += 1
        if self.fail:
            raise RouterError("routing model timed out")
        return self.by_name.get(self.route_name)


class RecordingSkips(RecordingMetrics):
    def __init__(self):
        super().__init__()
        self.skips: list[tuple] = []

    def router_skip(self, route, model):
        self.skips.append((route, model))


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def cache(clock):
    return MemorySessionCache(1000, clock=clock)


@pytest.fixture
def metrics():
    return RecordingSkips()


@pytest.fixture
def span_exporter():
    return InMemorySpanExporter()


@pytest.fixture
def make_client(cache, metrics, span_exporter):
    """``make_client(**routing_keys)`` -> (test client, router) on the base config."""
    providers: list[TracerProvider] = []

    def make(route="deep_reasoning", **routing):
        config = config_from_dict(make_config_dict(routing={"session_ttl_seconds": TTL,
                                                            **routing}))
        router = SteeredRouter(config.routing_preferences, route)
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
        providers.append(tracer_provider)
        app = create_app(config, session_cache=cache, router=router, metrics=metrics,
                         providers=fake_providers(config), tracer_provider=tracer_provider)
        return app.test_client(), router

    yield make
    for provider in providers:
        provider.shutdown()


def conversation(*later, first="Fix the bug in main.py", system=SYSTEM) -> dict:
    return {"messages": [system, {"role": "user", "content": first}, *later], "tools": TOOLS}


def post(client, body, **headers):
    response = client.post(CHAT, json=body, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response


def served(response) -> str:
    return response.get_json()["model"]


def server_span(span_exporter):
    return [s for s in span_exporter.get_finished_spans() if s.name == f"POST {CHAT}"][-1]


# --------------------------------------------------------------------------- defaults

def test_defaults_report_the_derived_id_but_pin_nothing_and_route_every_request(
        make_client, cache, span_exporter):
    client, router = make_client()
    first = post(client, conversation())
    derived = first.headers["x-plano-session-id"]
    assert re.fullmatch(r"prefix-[0-9a-f]{16}", derived)
    assert derived == implicit_session_id(conversation(), CHAT_COMPLETIONS)
    continuation = post(client, conversation(TOOL_CALL, TOOL_RESULT))
    assert continuation.headers["x-plano-session-id"] == derived
    assert len(cache) == 0 and router.calls == 2
    for response in (first, continuation):
        assert {"x-plano-affinity", "x-plano-pinned", "x-plano-routing"}.isdisjoint(
            response.headers.keys())
    attributes = server_span(span_exporter).attributes
    assert "plano.session_id" not in attributes and "plano.routing.skipped" not in attributes


def test_fixed_ttl_is_not_renewed_by_hits(make_client, cache, clock):
    client, _ = make_client()
    post(client, conversation(), **{"X-Model-Affinity": "s1"})
    clock.now += 250
    assert post(client, conversation(), **{"X-Model-Affinity": "s1"}).headers[
        "x-plano-affinity"] == "pinned"
    assert cache.ttl("s1") == TTL - 250


# --------------------------------------------------------------------------- sliding TTL

def test_sliding_ttl_renews_on_every_hit_and_only_an_idle_session_expires(
        make_client, cache, clock):
    client, router = make_client(session_ttl_mode="sliding")
    headers = {"X-Model-Affinity": "s1"}
    assert post(client, conversation(), **headers).headers["x-plano-affinity"] == "new"
    for _ in range(3):  # 750 s of activity, well past one TTL
        clock.now += 250
        answer = post(client, conversation(), **headers)
        assert answer.headers["x-plano-affinity"] == "pinned"
        assert cache.ttl("s1") == TTL
    router.route_name = "fast_responses"
    clock.now += TTL  # idle for a whole TTL: gone
    assert post(client, conversation(), **headers).headers["x-plano-affinity"] == "new"
    assert cache.get("s1") == SessionBinding("openai/gpt-4o-mini", "fast_responses")


# --------------------------------------------------------------------------- implicit sessions

def test_implicit_affinity_pins_every_turn_of_a_conversation_without_a_header(
        make_client, cache, metrics):
    client, router = make_client(implicit_affinity=True)
    first = post(client, conversation())
    derived = first.headers["x-plano-session-id"]
    assert (first.headers["x-plano-affinity"], served(first)) == ("new", "openai/gpt-5.2")
    router.route_name = "fast_responses"
    later = post(client, conversation({"role": "assistant", "content": "Fixed."},
                                      {"role": "user", "content": "hi"}))
    assert later.headers["x-plano-affinity"] == "pinned" and served(later) == "openai/gpt-5.2"
    assert later.headers["x-plano-session-id"] == derived
    assert cache.get(derived) == SessionBinding("openai/gpt-5.2", "deep_reasoning")
    # Another conversation (another first message) is another session.
    other = post(client, conversation(first="hi"))
    assert other.headers["x-plano-session-id"] != derived
    assert (other.headers["x-plano-affinity"], served(other)) == ("new", "openai/gpt-4o-mini")
    assert router.calls == 2


def test_explicit_header_wins_over_the_implicit_session(make_client, cache):
    client, router = make_client(implicit_affinity=True)
    post(client, conversation())  # pins the implicit session on gpt-5.2
    router.route_name = "fast_responses"
    explicit = post(client, conversation(), **{"X-Model-Affinity": "mine"})
    assert explicit.headers["x-plano-affinity"] == "new"
    assert served(explicit) == "openai/gpt-4o-mini"
    assert (explicit.headers["x-plano-session-id"],
            explicit.headers["x-plano-session-source"]) == ("mine", "header")
    assert cache.get("mine").model_name == "openai/gpt-4o-mini"


def test_implicit_sessions_are_per_tenant(make_client, cache):
    client, _ = make_client(implicit_affinity=True,
                            session_cache={"type": "memory", "tenant_header": "x-org-id"})
    one = post(client, conversation(), **{"x-org-id": "acme"})
    other = post(client, conversation(), **{"x-org-id": "globex"})
    assert one.headers["x-plano-session-id"] != other.headers["x-plano-session-id"]
    assert cache.get(f"acme:{one.headers['x-plano-session-id']}") is not None
    assert other.headers["x-plano-affinity"] == "new"


def test_routing_api_reports_and_pins_the_implicit_session(make_client, cache):
    client, _ = make_client(implicit_affinity=True)
    answer = client.post("/routing/v1/chat/completions", json=conversation())
    derived = answer.headers["x-plano-session-id"]
    assert answer.get_json()["models"] == ["openai/gpt-5.2"]
    assert "session_id" not in answer.get_json()  # SPEC §7: only for the header
    assert cache.get(derived).model_name == "openai/gpt-5.2"


# --------------------------------------------------------------------------- turn-level routing

def test_continuations_reuse_the_turns_model_without_calling_the_router(
        make_client, cache, metrics, span_exporter):
    client, router = make_client(route_on_user_only=True)
    turn = post(client, conversation())
    derived = turn.headers["x-plano-session-id"]
    assert served(turn) == "openai/gpt-5.2" and router.calls == 1
    assert cache.get(f"turn:{derived}") == SessionBinding("openai/gpt-5.2", "deep_reasoning")
    assert cache.ttl(f"turn:{derived}") == TTL
    assert server_span(span_exporter).attributes["plano.routing.skipped"] is False

    router.route_name = "fast_responses"  # what a router would say about tool output
    for later in ([TOOL_CALL, TOOL_RESULT], [TOOL_CALL, TOOL_RESULT, REMINDER]):
        continuation = post(client, conversation(*later))
        assert served(continuation) == "openai/gpt-5.2"
        assert continuation.headers["x-plano-routing"] == "skipped"
        assert continuation.headers["x-plano-route"] == "deep_reasoning"
        assert "x-plano-affinity" not in continuation.headers  # nothing is pinned
    assert router.calls == 1
    assert metrics.skips == [("deep_reasoning", "openai/gpt-5.2")] * 2
    span = server_span(span_exporter)
    assert span.attributes["plano.routing.skipped"] is True
    assert span.attributes["plano.session_id"] == derived
    assert span.attributes["plano.session.implicit"] is True

    # The user speaks again: a new turn is routed and recorded; its loop follows it.
    new_turn = post(client, conversation(TOOL_CALL, TOOL_RESULT,
                                         {"role": "assistant", "content": "Fixed."},
                                         {"role": "user", "content": "thanks, now say hi"}))
    assert served(new_turn) == "openai/gpt-4o-mini" and router.calls == 2
    assert "x-plano-routing" not in new_turn.headers
    router.route_name = "deep_reasoning"
    loop = post(client, conversation(TOOL_CALL, TOOL_RESULT,
                                     {"role": "assistant", "content": "Fixed."},
                                     {"role": "user", "content": "thanks, now say hi"},
                                     TOOL_CALL, TOOL_RESULT))
    assert served(loop) == "openai/gpt-4o-mini" and router.calls == 2


def test_explicit_sessions_record_turns_under_their_own_id(make_client, cache):
    client, router = make_client(route_on_user_only=True,
                                 session_cache={"type": "memory", "tenant_header": "x-org"})
    headers = {"X-Model-Affinity": "loop-1", "x-org": "acme"}
    post(client, conversation(), **headers)
    assert cache.get("turn:acme:loop-1").model_name == "openai/gpt-5.2"
    cache.delete("acme:loop-1")  # the pin is gone; the turn record still knows the turn
    router.route_name = "fast_responses"
    continuation = post(client, conversation(TOOL_CALL, TOOL_RESULT), **headers)
    assert served(continuation) == "openai/gpt-5.2" and router.calls == 1
    assert continuation.headers["x-plano-routing"] == "skipped"
    # The session's pin is made again from the reused decision (first writer wins).
    assert continuation.headers["x-plano-affinity"] == "new"
    assert cache.get("acme:loop-1").model_name == "openai/gpt-5.2"


def test_a_pin_wins_over_turn_level_routing(make_client, metrics):
    client, router = make_client(route_on_user_only=True)
    headers = {"X-Model-Affinity": "pinned-session"}
    post(client, conversation(), **headers)
    router.route_name = "fast_responses"
    for body in (conversation(TOOL_CALL, TOOL_RESULT),
                 conversation({"role": "assistant", "content": "ok"},
                              {"role": "user", "content": "hi"})):
        answer = post(client, body, **headers)
        assert answer.headers["x-plano-affinity"] == "pinned"
        assert served(answer) == "openai/gpt-5.2" and "x-plano-routing" not in answer.headers
    assert router.calls == 1 and metrics.skips == []


def test_a_continuation_without_a_turn_record_is_routed_and_recorded(make_client, cache):
    client, router = make_client(route_on_user_only=True, route="fast_responses")
    answer = post(client, conversation(TOOL_CALL, TOOL_RESULT))
    derived = answer.headers["x-plano-session-id"]
    assert router.calls == 1 and "x-plano-routing" not in answer.headers
    assert cache.get(f"turn:{derived}").model_name == "openai/gpt-4o-mini"
    router.route_name = "deep_reasoning"
    assert served(post(client, conversation(TOOL_CALL, TOOL_RESULT, TOOL_CALL,
                                            TOOL_RESULT))) == "openai/gpt-4o-mini"
    assert router.calls == 1


def test_a_turn_record_naming_an_unknown_model_is_routed_over(make_client, cache):
    client, router = make_client(route_on_user_only=True)
    derived = implicit_session_id(conversation(), CHAT_COMPLETIONS)
    cache.put(f"turn:{derived}", SessionBinding("openai/retired", "old"), TTL)
    answer = post(client, conversation(TOOL_CALL, TOOL_RESULT))
    assert served(answer) == "openai/gpt-5.2" and router.calls == 1
    assert cache.get(f"turn:{derived}").model_name == "openai/gpt-5.2"


def test_a_failed_routing_is_not_recorded_as_the_turn(make_client, cache):
    client, router = make_client(route_on_user_only=True)
    router.fail = True
    answer = post(client, conversation())
    assert served(answer) == "openai/gpt-4o-mini"  # the default, unrecorded
    assert cache.get(f"turn:{answer.headers['x-plano-session-id']}") is None
    router.fail = False
    post(client, conversation(TOOL_CALL, TOOL_RESULT))
    assert router.calls == 2


def test_sliding_mode_renews_turn_records_too(make_client, cache, clock):
    client, router = make_client(route_on_user_only=True, session_ttl_mode="sliding")
    derived = post(client, conversation()).headers["x-plano-session-id"]
    for _ in range(3):
        clock.now += 250
        post(client, conversation(TOOL_CALL, TOOL_RESULT))
        assert cache.ttl(f"turn:{derived}") == TTL
    assert router.calls == 1


def test_turn_level_routing_with_a_failing_cache_routes_every_request(metrics):
    config = config_from_dict(make_config_dict(routing={"route_on_user_only": True}))
    router = SteeredRouter(config.routing_preferences, "deep_reasoning")
    cache = FailingCache()
    client = create_app(config, session_cache=cache, router=router, metrics=metrics,
                        providers=fake_providers(config), tracer_provider=None).test_client()
    for body in (conversation(), conversation(TOOL_CALL, TOOL_RESULT)):
        assert served(post(client, body)) == "openai/gpt-5.2"
    assert router.calls == 2 and metrics.skips == []
    assert "store_error" in metrics.cache_events and "error" in metrics.cache_events


def test_without_routes_turn_level_routing_touches_no_cache(metrics):
    raw = make_config_dict(routing={"route_on_user_only": True})
    raw["routing_preferences"] = []
    config = config_from_dict(raw)
    cache = FailingCache()
    client = create_app(config, session_cache=cache, metrics=metrics,
                        providers=fake_providers(config), tracer_provider=None).test_client()
    post(client, conversation(TOOL_CALL, TOOL_RESULT))
    assert cache.calls == 0


def test_prometheus_counts_router_skips_by_route_and_model():
    from app.observability.prometheus_metrics import PrometheusMetrics
    config = config_from_dict(make_config_dict(routing={"route_on_user_only": True}))
    metrics = PrometheusMetrics(config, multiproc_dir="")
    metrics.router_skip("deep_reasoning", "openai/gpt-5.2")
    metrics.router_skip("deep_reasoning", "openai/gpt-5.2")
    text = metrics.exposition()[0].decode()
    assert 'plano_router_skips_total{model="openai/gpt-5.2",route="deep_reasoning"} 2.0' in text
    # Known pairs are there from the start, at 0.
    assert 'plano_router_skips_total{model="openai/gpt-4o-mini",route="fast_responses"} 0.0' \
        in text


@pytest.mark.parametrize("routing", [{}, {"route_on_user_only": True}])
def test_request_routes_are_not_even_checked_on_a_pinned_hit(make_client, routing):
    client, _ = make_client(**routing)
    headers = {"X-Model-Affinity": "hit-with-routes"}
    post(client, conversation(), **headers)
    body = {**conversation(), "routing_preferences": [
        {"name": "r", "description": "d", "models": ["nope/not-configured"]}]}
    answer = post(client, body, **headers)
    assert answer.headers["x-plano-affinity"] == "pinned"


ANTHROPIC_LOOP = [
    {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "read_file",
                                       "input": {}}]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "x"},
                                 {"type": "text", "text": REMINDER["content"]}]}]
RESPONSES_LOOP = [{"type": "function_call", "call_id": "c1", "name": "read_file",
                   "arguments": "{}"},
                  {"type": "custom_tool_call_output", "call_id": "c1", "output": "x"}]


@pytest.mark.parametrize("path, build, loop", [
    ("/routing/v1/messages",
     lambda *later: {"max_tokens": 9, "system": "sys", "messages": [
         {"role": "user", "content": "Fix the bug in main.py"}, *later]}, ANTHROPIC_LOOP),
    ("/routing/v1/responses",
     lambda *later: {"instructions": "sys", "input": [
         {"role": "user", "content": "Fix the bug in main.py"}, *later]}, RESPONSES_LOOP),
], ids=["messages", "responses"])
def test_every_api_shape_reuses_the_turn_and_reports_the_derived_id(make_client, path,
                                                                     build, loop):
    client, router = make_client(route_on_user_only=True)
    turn = client.post(path, json=build())
    derived = turn.headers["x-plano-session-id"]
    assert turn.get_json()["models"] == ["openai/gpt-5.2"] and router.calls == 1
    router.route_name = "fast_responses"
    continuation = client.post(path, json=build(*loop))
    assert continuation.headers["x-plano-session-id"] == derived
    assert continuation.headers["x-plano-routing"] == "skipped"
    assert continuation.get_json()["models"] == ["openai/gpt-5.2"] and router.calls == 1
