"""The routing budget in the decide stage (SPEC §20): where it judges, what it records, what
a request sees (headers, span attributes, metrics); a memory cache on a fake clock and a
router the test steers."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app import create_app
from app.affinity import budget
from app.config import config_from_dict
from app.errors import SessionCacheError
from app.pipeline.decide import Gateway
from app.pipeline.parse import ChatRequest
from app.services import services_of
from app.session_cache.memory import MemorySessionCache
from app.usage.recorder import USAGE_KEY_PREFIX
from tests.support.configs import make_config_dict
from tests.support.fake_provider import fake_providers
from tests.support.fakes import RecordingMetrics
from tests.unit.test_affinity_modes_gateway import FakeClock, SteeredRouter

DEEP, FAST = "openai/gpt-5.2", "openai/gpt-4o-mini"
CHAT = "/v1/chat/completions"


class RecordingSwitches(RecordingMetrics):
    def __init__(self):
        super().__init__()
        self.switches: list[tuple] = []

    def switch_decision(self, decision, reason):
        self.switches.append((decision, reason))


class UnreadableTotals(MemorySessionCache):
    """Pins and turn records work; reading usage totals fails like a Redis timeout."""

    def usage(self, key):
        raise SessionCacheError("redis HGETALL failed: TimeoutError")


def make_config(pct: float | None = 0, **budget_keys):
    routing = {"session_ttl_seconds": 600}
    if pct is not None:
        routing["routing_budget"] = {"max_switch_spend_pct": pct, **budget_keys}
    return config_from_dict(make_config_dict(
        routing=routing, prompt_caching={"warm_window_seconds": 300}))


def seed_warm(cache, key: str, clock, *, model=FAST, baseline=0.0, tokens=100_000,
              idle=10.0) -> None:
    """The session's totals as the gateway writes them: warm on ``model`` since 60 s."""
    bound_at = clock.now - 60
    fields = {budget.F_BOUND_AT: bound_at, budget.F_BASELINE: baseline,
              budget.F_SPEND: 0.0, budget.F_DEFAULT + model: bound_at,
              **budget.activity_fields(model, tokens, clock.now - idle)}
    cache.add_usage(USAGE_KEY_PREFIX + key, {"requests": 1}, 600, replace=fields)


def request(text="Explain quantum entanglement in detail") -> ChatRequest:
    messages = [{"role": "user", "content": text}]
    return ChatRequest(body={"messages": messages}, messages=messages, model=None,
                       stream=False)


@pytest.fixture
def clock():
    return FakeClock()


def gateway_for(config, cache, clock, route="deep_reasoning", metrics=None):
    router = SteeredRouter(config.routing_preferences, route)
    return Gateway(config, cache, router, metrics=metrics or RecordingSwitches(),
                   clock=clock), router


def test_a_warm_session_over_the_cap_is_retained_and_its_turn_records_the_kept_model(clock):
    cache = MemorySessionCache(100, clock=clock)
    metrics = RecordingSwitches()
    config = make_config(0)
    gateway, _ = gateway_for(config, cache, clock, metrics=metrics)
    seed_warm(cache, "s1", clock)
    decision = gateway.decide(request(), "s1", implicit=True, user_turn=True)
    assert decision.endpoint.name == FAST and decision.budget
    assert (decision.switch.decision, decision.switch.reason) == ("retained", "over_cap")
    assert metrics.switches == [("retained", "over_cap")]
    # The tool loop of this turn reuses the retained model, not the router's.
    continuation = gateway.decide(request(), "s1", implicit=True, user_turn=False)
    assert continuation.endpoint.name == FAST and continuation.routing_skipped
    assert continuation.switch is None


def test_the_request_cap_lets_a_session_with_enough_baseline_switch(clock):
    cache = MemorySessionCache(100, clock=clock)
    gateway, _ = gateway_for(make_config(0), cache, clock)
    # 100k tokens: deep costs 1.75 - mini's cached 0.075 = $0.1675; baseline $0.20.
    seed_warm(cache, "s1", clock, baseline=0.2)
    assert gateway.decide(request(), "s1", implicit=True).switch.reason == "over_cap"
    seed_warm(cache, "s2", clock, baseline=0.2)
    decision = gateway.decide(request(), "s2", implicit=True, max_switch_spend_pct=100)
    assert decision.endpoint.name == DEEP
    assert (decision.switch.reason, decision.switch.spend_usd) == (
        "within_cap", pytest.approx(0.1675))


def test_a_header_sets_a_cap_where_none_is_configured_under_turn_level_routing(clock):
    cache = MemorySessionCache(100, clock=clock)
    config = config_from_dict(make_config_dict(routing={"route_on_user_only": True}))
    gateway, _ = gateway_for(config, cache, clock)
    seed_warm(cache, "s1", clock)
    without = gateway.decide(request(), "s1", implicit=True)
    assert without.endpoint.name == DEEP and without.switch is None and not without.budget
    seed_warm(cache, "s2", clock)
    capped = gateway.decide(request(), "s2", implicit=True, max_switch_spend_pct=0)
    assert capped.endpoint.name == FAST and capped.switch.decision == "retained"


def test_a_cold_session_follows_the_router_without_a_judgement(clock):
    cache = MemorySessionCache(100, clock=clock)
    gateway, _ = gateway_for(make_config(0), cache, clock)
    seed_warm(cache, "s1", clock, idle=301)
    decision = gateway.decide(request(), "s1", implicit=True)
    assert decision.endpoint.name == DEEP
    assert decision.switch.decision is None and decision.switch.bound_at == clock.now


def test_unreadable_budget_state_leaves_the_router_decision_and_is_counted(clock):
    cache = UnreadableTotals(100, clock=clock)
    metrics = RecordingSwitches()
    gateway, _ = gateway_for(make_config(0), cache, clock, metrics=metrics)
    decision = gateway.decide(request(), "s1", implicit=True)
    assert decision.endpoint.name == DEEP and decision.switch is None
    assert "error" in metrics.cache_events and metrics.switches == []


def test_an_explicit_pin_still_wins_over_the_budget(clock):
    cache = MemorySessionCache(100, clock=clock)
    gateway, router = gateway_for(make_config(0), cache, clock)
    first = gateway.decide(request(), "pinned-1")  # explicit: pinned on a miss
    assert first.affinity == "new" and first.switch is None
    router.route_name = "fast_responses"
    assert gateway.decide(request("hi"), "pinned-1").endpoint.name == DEEP


# ------------------------------------------------------------------ through the app


@pytest.fixture
def app_client(clock):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    cache = MemorySessionCache(100, clock=clock)
    config = make_config(20, record_counterfactual=True)
    router = SteeredRouter(config.routing_preferences, "fast_responses")
    app = create_app(config, session_cache=cache, router=router, metrics=RecordingSwitches(),
                     providers=fake_providers(config), tracer_provider=provider)
    services_of(app).gateway._clock = clock
    yield app.test_client(), router, cache, exporter
    provider.shutdown()


def test_a_retained_turn_is_seen_in_the_header_and_on_the_span(app_client, clock):
    client, router, cache, exporter = app_client
    body = {"messages": [{"role": "system", "content": "agent"},
                         {"role": "user", "content": "hi"}]}
    first = client.post(CHAT, json=body)
    assert first.status_code == 200 and "x-plano-switch" not in first.headers
    key = first.headers["x-plano-session-id"]
    seed_warm(cache, key, clock)
    router.route_name = "deep_reasoning"
    body["messages"] += [{"role": "assistant", "content": "hello"},
                         {"role": "user", "content": "Explain entanglement in detail"}]
    retained = client.post(CHAT, json=body)
    assert retained.status_code == 200
    assert retained.headers["x-plano-switch"] == "retained"
    assert retained.get_json()["model"] == FAST
    span = [s for s in exporter.get_finished_spans() if s.name == f"POST {CHAT}"][-1]
    assert span.attributes["plano.switch.decision"] == "retained"
    assert span.attributes["plano.switch.cost_in_usd"] > 0
    assert span.attributes["plano.switch.counterfactual_route"] == f"{DEEP} (deep_reasoning)"
    assert span.attributes["plano.cache.warm"] is True
    retained.close()  # the budget's state is written once the answer is closed
    state = budget.BudgetState.from_totals(cache.usage(USAGE_KEY_PREFIX + key))
    assert state.baseline_usd > 0 and state.spend_usd == 0
    assert state.default_model == FAST


def test_a_bad_cap_header_is_refused_before_anything_is_decided(app_client):
    client, router, _, _ = app_client
    answer = client.post(CHAT, json={"messages": [{"role": "user", "content": "hi"}]},
                         headers={"x-plano-max-switch-spend-pct": "150"})
    assert answer.status_code == 400
    assert answer.get_json()["error"]["code"] == "invalid_max_switch_spend_pct"
    assert router.calls == 0


def test_the_switch_decision_series_exist_from_start_with_bounded_labels():
    from app.observability.prometheus_metrics import PrometheusMetrics

    metrics = PrometheusMetrics(make_config(20), multiproc_dir="")
    metrics.switch_decision("retained", "over_cap")
    text = metrics.exposition()[0].decode()
    series = [line for line in text.splitlines()
              if line.startswith("plano_session_switch_decisions_total{")]
    assert len(series) == len(budget.DECISIONS) == 5
    assert 'plano_session_switch_decisions_total{decision="retained",reason="over_cap"} 1.0' \
        in series
