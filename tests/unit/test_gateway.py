"""The per-request decision (SPEC §4 steps 2-4): hit, miss, conflict, stale pins, failures."""

from __future__ import annotations

import pytest

from app import create_app
from app.config import RouteConfig, config_from_dict
from app.errors import InvalidBindingError, RouterError, SessionCacheError, SessionCacheSkippedError
from app.pipeline.decide import Gateway, session_key
from app.pipeline.parse import parse_chat_request
from app.router.base import Router
from app.services import services_of
from app.session_cache.base import SessionBinding
from app.session_cache.memory import MemorySessionCache
from tests.support.configs import DEEP_PROMPT, FAST_PROMPT, chat_body, make_config_dict
from tests.support.fakes import FailingCache, RecordingMetrics


class FailingStoreCache(MemorySessionCache):
    """Reads work, writes fail."""

    def put_if_absent(self, key, binding, ttl_seconds):
        raise SessionCacheError("READONLY")


class RacingCache(MemorySessionCache):
    """Another writer pins the session between our miss and our write."""

    def __init__(self, winner: SessionBinding):
        super().__init__(100)
        self.winner = winner

    def put_if_absent(self, key, binding, ttl_seconds):
        super().put_if_absent(key, self.winner, ttl_seconds)
        return super().put_if_absent(key, binding, ttl_seconds)


class BrokenRouter(Router):
    kind = "broken"
    routes = (RouteConfig("any", "any", ("openai/gpt-5.2",)),)

    def for_routes(self, routes):
        return self

    def select_route(self, messages):
        raise RouterError("routing model timed out")


class CountingRouter(Router):
    """Delegates to a fixed route and counts calls."""

    kind = "counting"

    def __init__(self, route):
        self.route, self.calls, self.routes = route, 0, (route,)

    def for_routes(self, routes):
        return self

    def select_route(self, messages):
        self.calls += 1
        return self.route


def request(content=FAST_PROMPT, **extra):
    import json
    return parse_chat_request(json.dumps(chat_body(content, **extra)).encode())


@pytest.fixture
def metrics():
    return RecordingMetrics()


def make_gateway(config, cache=None, router="embedded", metrics=None):
    from app.router.embedded import EmbeddedRouter
    if router == "embedded":
        router = EmbeddedRouter(config.routing_preferences)
    cache = cache if cache is not None else MemorySessionCache(100)
    return Gateway(config, cache, router, metrics=metrics)


def test_no_session_routes_and_stores_nothing(config, metrics):
    cache = MemorySessionCache(100)
    decision = make_gateway(config, cache, metrics=metrics).decide(request(DEEP_PROMPT))
    assert (decision.endpoint.name, decision.route_name) == ("openai/gpt-5.2", "deep_reasoning")
    assert decision.affinity is None and not decision.pinned and len(cache) == 0
    assert metrics.cache_events == []


def test_first_request_pins_and_later_ones_follow_the_pin_without_routing(config, metrics):
    router = CountingRouter(config.routes_by_name["deep_reasoning"])
    gateway = make_gateway(config, router=router, metrics=metrics)
    first = gateway.decide(request(DEEP_PROMPT), "s1")
    assert first.affinity == "new" and not first.pinned
    router.route = config.routes_by_name["fast_responses"]
    second = gateway.decide(request(FAST_PROMPT), "s1")
    assert second.pinned and second.affinity == "pinned"
    assert second.endpoint.name == "openai/gpt-5.2" and second.route_name == "deep_reasoning"
    assert router.calls == 1
    assert metrics.cache_events == ["miss", "store", "hit"]


def test_no_match_pins_the_requested_model_with_null_route(config):
    cache = MemorySessionCache(100)
    decision = make_gateway(config, cache).decide(request("xyzzy", model="fast-model"), "s")
    assert decision.endpoint.name == "openai/gpt-4o-mini" and decision.route_name is None
    assert cache.get("s") == SessionBinding("openai/gpt-4o-mini", None)


def test_unknown_model_is_refused_before_touching_the_cache(config):
    cache = FailingCache()
    from app.errors import ModelNotFoundError
    with pytest.raises(ModelNotFoundError):
        make_gateway(config, cache).decide(request(model="nope/x"), "s")
    assert cache.calls == 0


def test_tenants_get_separate_pins(config):
    cache = MemorySessionCache(100)
    gateway = make_gateway(config, cache)
    gateway.decide(request(DEEP_PROMPT), "s", tenant="org1")
    other = gateway.decide(request(FAST_PROMPT), "s", tenant="org2")
    assert other.affinity == "new" and other.endpoint.name == "openai/gpt-4o-mini"
    assert cache.get("org1:s").model_name == "openai/gpt-5.2"
    assert session_key("s", None) == "s" and session_key("s", "t") == "t:s"


def test_cache_outage_routes_without_affinity(config, metrics):
    decision = make_gateway(config, FailingCache(), metrics=metrics).decide(
        request(DEEP_PROMPT), "s")
    assert decision.endpoint.name == "openai/gpt-5.2"
    assert decision.affinity == "unavailable" and not decision.pinned
    assert metrics.cache_events == ["error"]


def test_cache_cool_down_is_counted_as_skipped(config, metrics):
    cache = FailingCache(SessionCacheSkippedError("cooling down"))
    make_gateway(config, cache, metrics=metrics).decide(request(), "s")
    assert metrics.cache_events == ["skipped"]


def test_undecodable_pin_is_served_unpinned_and_counted_invalid(config, metrics):
    cache = FailingCache(InvalidBindingError("not JSON"))
    decision = make_gateway(config, cache, metrics=metrics).decide(request(), "s")
    assert decision.affinity == "unavailable" and metrics.cache_events == ["invalid"]


def test_store_failure_still_serves_the_routed_model(config, metrics):
    decision = make_gateway(config, FailingStoreCache(100), metrics=metrics).decide(
        request(DEEP_PROMPT), "s")
    assert decision.endpoint.name == "openai/gpt-5.2" and decision.affinity == "unavailable"
    assert metrics.cache_events == ["miss", "store_error"]


def test_conflict_uses_the_winners_model(config, metrics):
    winner = SessionBinding("openai/gpt-4o-mini", "fast_responses")
    decision = make_gateway(config, RacingCache(winner), metrics=metrics).decide(
        request(DEEP_PROMPT), "s")
    assert decision.pinned and decision.affinity == "pinned"
    assert (decision.endpoint.name, decision.route_name) == ("openai/gpt-4o-mini",
                                                             "fast_responses")
    assert metrics.cache_events == ["miss", "conflict"]


def test_losing_a_race_to_an_equal_pin_is_still_a_conflict(config, metrics):
    """Two first requests that route alike: only the one that stored says ``new``."""
    winner = SessionBinding("openai/gpt-5.2", "deep_reasoning")
    decision = make_gateway(config, RacingCache(winner), metrics=metrics).decide(
        request(DEEP_PROMPT), "s")
    assert decision.pinned and decision.affinity == "pinned"
    assert metrics.cache_events == ["miss", "conflict"]


def test_pin_to_a_model_no_longer_configured_is_rerouted_and_repinned(config, metrics):
    cache = MemorySessionCache(100)
    cache.put_if_absent("s", SessionBinding("openai/retired", "old"), 300)
    decision = make_gateway(config, cache, metrics=metrics).decide(request(DEEP_PROMPT), "s")
    assert decision.affinity == "new" and decision.endpoint.name == "openai/gpt-5.2"
    assert cache.get("s") == SessionBinding("openai/gpt-5.2", "deep_reasoning")
    assert metrics.cache_events == ["miss", "store"]


class StaleReadCache(MemorySessionCache):
    """Every lookup still sees the stale pin, as a request that read it just before another
    request replaced it would."""

    def __init__(self, stale: SessionBinding):
        super().__init__(100)
        self.stale = stale
        super().put_if_absent("s", stale, 300)

    def get(self, key):
        return self.stale


def test_racing_replacements_of_a_stale_pin_keep_the_first_fresh_pin(config, metrics):
    cache = StaleReadCache(SessionBinding("openai/retired", "old"))
    gateway = make_gateway(config, cache, metrics=metrics)
    first = gateway.decide(request(DEEP_PROMPT), "s")
    assert (first.affinity, first.endpoint.name) == ("new", "openai/gpt-5.2")
    # The second request routes elsewhere but must follow the first one's fresh pin, not
    # delete it and pin its own model.
    second = gateway.decide(request(FAST_PROMPT), "s")
    assert (second.affinity, second.endpoint.name) == ("pinned", "openai/gpt-5.2")
    assert super(StaleReadCache, cache).get("s") == \
        SessionBinding("openai/gpt-5.2", "deep_reasoning")
    assert metrics.cache_events == ["miss", "store", "miss", "conflict"]


def test_router_failure_serves_fallback_and_does_not_pin(config, metrics):
    cache = MemorySessionCache(100)
    gateway = make_gateway(config, cache, router=BrokenRouter(), metrics=metrics)
    decision = gateway.decide(request(DEEP_PROMPT, model="openai/gpt-5.2"), "s")
    assert decision.endpoint.name == "openai/gpt-5.2" and decision.route_name is None
    assert decision.affinity == "unavailable"
    assert cache.get("s") is None
    assert metrics.decisions == [(None, "openai/gpt-5.2", True)]


def test_without_routes_the_router_is_never_called(metrics):
    raw = make_config_dict()
    raw["routing_preferences"] = []
    config = config_from_dict(raw)
    app = create_app(config, metrics=metrics)
    assert services_of(app).gateway._router is None
    decision = services_of(app).gateway.decide(request(DEEP_PROMPT), "s")
    assert decision.endpoint.name == "openai/gpt-4o-mini" and decision.route_name is None
    assert metrics.decisions == []


# -------------------------------------------------------------- the same, through the API


def route(client, content=FAST_PROMPT, headers=None, **extra):
    return client.post("/routing/v1/chat/completions", json=chat_body(content, **extra),
                       headers=headers or {})


def test_routing_api_pins_like_the_chat_endpoint(client):
    first = route(client, DEEP_PROMPT, {"x-model-affinity": "abc"})
    assert first.get_json()["pinned"] is False and first.headers["x-plano-affinity"] == "new"
    again = route(client, FAST_PROMPT, {"X-MODEL-AFFINITY": "abc"})
    assert again.get_json() == {**again.get_json(), "models": ["openai/gpt-5.2"],
                                "route": "deep_reasoning", "pinned": True,
                                "session_id": "abc"}
    assert again.headers["x-plano-pinned"] == "true"
    assert again.headers["x-plano-route"] == "deep_reasoning"


def test_routing_api_validates_the_body_on_hits_too(client):
    route(client, DEEP_PROMPT, {"x-model-affinity": "abc"})
    bad = client.post("/routing/v1/chat/completions", json={"messages": []},
                      headers={"x-model-affinity": "abc"})
    assert bad.status_code == 400


def test_worker_header_is_opt_in(config):
    raw = make_config_dict(server={"expose_worker_header": True})
    exposed = create_app(config_from_dict(raw)).test_client()
    assert ":" in route(exposed).headers["x-plano-worker"]
    assert "x-plano-worker" not in route(create_app(config).test_client()).headers


def test_healthz_reports_a_failing_cache_as_degraded_with_200(config):
    client = create_app(config, session_cache=FailingCache()).test_client()
    answer = client.get("/healthz")
    assert answer.status_code == 200
    assert answer.get_json()["status"] == "degraded"
    assert answer.get_json()["session_cache"] == {"backend": "failing", "reachable": False}


def test_unexpected_exception_is_a_500_envelope_without_traceback(config):
    class ExplodingCache(FailingCache):
        def get(self, key):
            raise ZeroDivisionError("secret internals")

    client = create_app(config, session_cache=ExplodingCache()).test_client()
    answer = route(client, headers={"x-model-affinity": "s"})
    assert answer.status_code == 500
    assert answer.get_json()["error"]["type"] == "server_error"
    assert "secret internals" not in answer.get_data(as_text=True)
    assert "Traceback" not in answer.get_data(as_text=True)


def test_an_injected_empty_memory_cache_is_used_not_replaced(config):
    cache = MemorySessionCache(100)  # empty, so falsy through __len__
    client = create_app(config, session_cache=cache).test_client()
    route(client, headers={"x-model-affinity": "s"})
    assert cache.get("s") is not None
