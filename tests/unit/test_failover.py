"""The pure parts of failover (SPEC §15): the attempt chain with fake attempts, the health
marks on a fake clock, Retry-After parsing, the ranked candidates and the compare-and-set
repin, the config keys, and one provider span per attempt (in-memory exporter)."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from app import create_app
from app.config import FailoverConfig, ModelEndpoint, config_from_dict
from app.errors import (
    ConfigError,
    GatewayError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamTimeoutError,
)
from app.observability.metrics import Metrics
from app.pipeline.decide import Decision, Gateway
from app.pipeline.failover import Failover, retry_after_seconds
from app.pipeline.model_health import ModelHealth
from app.pipeline.relay import Answer
from app.session_cache.base import SessionBinding
from app.session_cache.memory import MemorySessionCache
from tests.support.configs import DEEP_PROMPT, chat_body, make_config_dict
from tests.support.fake_provider import FakeProviderClient, fake_providers
from tests.support.fakes import FailingCache, FakeClock

A, B, C = (ModelEndpoint(f"openai/{name}", "openai", name, "http://x/v1")
           for name in ("a", "b", "c"))
OK = Answer(200, {}, b'{"ok":true}')


class CountingMetrics(Metrics):
    def __init__(self):
        self.failovers: list[tuple[str, str, str]] = []

    def failover(self, from_model, to_model, reason):
        self.failovers.append((from_model, to_model, reason))


def scripted(outcomes: dict):
    """An attempt that answers per model from a list (an exception is raised); records."""
    calls = []

    def attempt(endpoint, read_timeout):
        calls.append((endpoint.name, read_timeout))
        outcome = outcomes[endpoint.name].pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome
    attempt.calls = calls
    return attempt


def failing(status: int, **headers) -> Answer:
    return Answer(status, headers, b'{"error":{"message":"x"}}')


def chain(clock=None, retries=0, max_attempts=None, threshold=3, cooldown=10.0,
          timeout=30.0, metrics=None):
    clock = clock or FakeClock()
    health = ModelHealth(threshold, cooldown, clock=clock)
    return Failover(FailoverConfig(max_attempts=max_attempts), timeout_seconds=timeout,
                    max_retries=retries, health=health, metrics=metrics, clock=clock)


# --------------------------------------------------------------------------- the chain


@pytest.mark.parametrize("failure", [failing(429), failing(500), failing(502), failing(503),
                                     failing(504), failing(529),
                                     UpstreamConnectionError("refused"),
                                     UpstreamTimeoutError("no head")])
def test_failure_kinds_move_to_the_next_candidate(failure):
    metrics = CountingMetrics()
    attempt = scripted({A.name: [failure], B.name: [OK]})
    result = chain(metrics=metrics).run((A, B), attempt)

    assert result.answer is OK and result.served is B
    assert result.failed_from == A.name
    reason = (f"http_{failure.status}" if isinstance(failure, Answer) else
              "timeout" if isinstance(failure, UpstreamTimeoutError) else "connection")
    assert metrics.failovers == [(A.name, B.name, reason)]


@pytest.mark.parametrize("status", [400, 401, 404, 413, 422])
def test_other_4xx_is_the_answer(status):
    attempt = scripted({A.name: [failing(status)], B.name: [OK]})
    result = chain().run((A, B), attempt)
    assert result.answer.status == status and result.failed_from is None
    assert [name for name, _ in attempt.calls] == [A.name]


def test_a_stream_that_started_is_the_answer():
    stream = Answer(200, {}, iter([b"data: x\n\n"]), "text/event-stream")
    attempt = scripted({A.name: [stream], B.name: [OK]})
    assert chain().run((A, B), attempt).answer is stream


def test_every_candidate_failing_keeps_the_last_failure():
    last = UpstreamConnectionError("c down")
    attempt = scripted({A.name: [failing(503)], B.name: [failing(502)], C.name: [last]})
    result = chain().run((A, B, C), attempt)
    assert result.error is last and result.served is C and result.failed_from == A.name


def test_other_upstream_errors_are_relayed_at_once():
    bad = UpstreamError("not a JSON object")
    attempt = scripted({A.name: [bad], B.name: [OK]})
    assert chain().run((A, B), attempt).error is bad


def test_max_retries_retries_the_same_model_first():
    attempt = scripted({A.name: [failing(502), OK]})
    result = chain(retries=1).run((A, B), attempt)
    assert result.answer is OK and result.served is A and result.failed_from is None
    assert [name for name, _ in attempt.calls] == [A.name, A.name]


def test_retry_after_is_never_retried_nor_slept_on():
    clock = FakeClock()
    metrics = CountingMetrics()
    failover = chain(clock, retries=5, cooldown=10.0, metrics=metrics)
    attempt = scripted({A.name: [failing(429, **{"Retry-After": "4"})], B.name: [OK, OK]})
    result = failover.run((A, B), attempt)

    assert result.served is B
    assert [name for name, _ in attempt.calls] == [A.name, B.name]
    assert clock() == 1000.0  # nobody waited
    assert metrics.failovers == [(A.name, B.name, "retry_after")]
    # Down for min(Retry-After, cooldown) = 4 s: skipped, then tried again.
    assert failover.run((A, B), attempt).served is B
    assert metrics.failovers[-1] == (A.name, B.name, "down")
    clock.advance(4)
    assert failover.health.available(A.name)


def test_max_attempts_bounds_the_models_tried():
    attempt = scripted({A.name: [failing(503)], B.name: [failing(503)], C.name: [OK]})
    result = chain(max_attempts=2).run((A, B, C), attempt)
    assert result.answer.status == 503 and result.served is B


def test_the_chain_stays_within_the_listener_timeout():
    clock = FakeClock()

    def slow(endpoint, read_timeout):
        clock.advance(read_timeout)
        raise UpstreamTimeoutError("no head")
    result = chain(clock, timeout=30.0).run((A, B), slow)
    assert isinstance(result.error, UpstreamTimeoutError) and result.served is A


def test_read_timeout_is_what_is_left_of_the_budget():
    clock = FakeClock()

    def attempt(endpoint, read_timeout):
        attempt.timeouts.append(read_timeout)
        clock.advance(12)
        if endpoint is A:
            raise UpstreamConnectionError("reset")
        return OK
    attempt.timeouts = []
    chain(clock, timeout=30.0).run((A, B), attempt)
    assert attempt.timeouts == [30.0, 18.0]


def test_a_fallback_that_cannot_take_the_request_is_skipped():
    def attempt(endpoint, read_timeout):
        if endpoint is A:
            raise UpstreamConnectionError("reset")
        if endpoint is B:
            raise GatewayError("web_search cannot go to an Anthropic model")
        return OK
    assert chain().run((A, B, C), attempt).served is C


def test_a_fallback_that_cannot_take_the_request_keeps_the_last_failure():
    def attempt(endpoint, read_timeout):
        attempt.calls.append(endpoint.name)
        if endpoint is A:
            return failing(503)
        raise GatewayError("untranslatable for B")
    attempt.calls = []
    result = chain().run((A, B), attempt)
    assert result.answer.status == 503 and result.served is A
    assert attempt.calls == [A.name, B.name]


def test_the_decided_model_refusing_the_request_raises():
    def attempt(endpoint, read_timeout):
        raise GatewayError("untranslatable")
    with pytest.raises(GatewayError):
        chain().run((A, B), attempt)


# --------------------------------------------------------------------------- health


def test_three_failures_mark_down_then_one_probe():
    clock = FakeClock()
    health = ModelHealth(3, 10.0, clock=clock)
    assert not health.record_failure("m") and not health.record_failure("m")
    assert health.record_failure("m")
    assert not health.available("m") and health.is_down("m")
    clock.advance(10)
    assert health.available("m")          # the probe
    assert not health.available("m")      # the others wait for it
    health.record_success("m")
    assert health.available("m") and not health.is_down("m")


def test_a_success_resets_the_count():
    health = ModelHealth(3, 10.0, clock=FakeClock())
    health.record_failure("m")
    health.record_failure("m")
    health.record_success("m")
    assert not health.record_failure("m")


def test_a_pinned_model_that_is_down_is_skipped_at_once():
    failover = chain()
    for _ in range(3):
        failover.health.record_failure(A.name)
    attempt = scripted({B.name: [OK]})
    result = failover.run((A, B), attempt)
    assert result.served is B and result.failed_from == A.name
    assert [name for name, _ in attempt.calls] == [B.name]


def test_every_candidate_down_tries_the_decided_model_anyway():
    failover = chain()
    for model in (A, B):
        for _ in range(3):
            failover.health.record_failure(model.name)
    attempt = scripted({A.name: [OK]})
    result = failover.run((A, B), attempt)
    assert result.served is A and result.answer is OK and result.failed_from is None


@pytest.mark.parametrize(("value", "seconds"), [("7", 7.0), ("1.5", 1.5), ("-3", 0.0),
                                                ("soon", None), ("", None)])
def test_retry_after_values(value, seconds):
    assert retry_after_seconds({"retry-after": value}) == seconds


def test_retry_after_http_date_is_in_the_future_or_zero():
    assert retry_after_seconds({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0


# --------------------------------------------------------------------------- gateway


def routed_config(**failover):
    return config_from_dict(make_config_dict(
        routing_preferences=[{"name": "deep_reasoning", "description": "complex reasoning, "
                              "mathematics with equations, detailed technical explanations",
                              "models": ["openai/gpt-5.2", "openai/gpt-4o-mini"]}],
        routing={"failover": failover}))


def test_candidates_are_the_decided_model_then_its_route():
    config = routed_config()
    gateway = Gateway(config, MemorySessionCache(100), None)
    deep, fast = config.endpoint("openai/gpt-5.2"), config.endpoint("openai/gpt-4o-mini")
    assert gateway.candidates(Decision(deep, "deep_reasoning", False, None)) == (deep, fast)
    assert gateway.candidates(Decision(fast, "deep_reasoning", True, "pinned")) == (fast, deep)
    assert gateway.candidates(Decision(fast, None, False, None)) == (fast,)


def test_repin_is_a_compare_and_set():
    cache = MemorySessionCache(100)
    gateway = Gateway(routed_config(), cache, None)
    cache.put_if_absent("s", SessionBinding("openai/gpt-5.2", "deep_reasoning"), 60)
    assert gateway.repin("s", "openai/gpt-5.2", "deep_reasoning", "openai/gpt-4o-mini")
    assert cache.get("s").model_name == "openai/gpt-4o-mini"
    # The pin no longer names the failed model: left alone.
    assert not gateway.repin("s", "openai/gpt-5.2", "deep_reasoning", "openai/other")
    assert cache.get("s").model_name == "openai/gpt-4o-mini"


def test_repin_on_a_failing_cache_is_skipped_not_raised():
    cache = FailingCache()
    assert not Gateway(routed_config(), cache, None).repin(
        "s", "openai/gpt-5.2", "deep_reasoning", "openai/gpt-4o-mini")
    assert cache.calls == 1


def test_failover_keys_and_their_defaults():
    assert routed_config().routing.failover == FailoverConfig(None, False, 3, 10.0)
    custom = routed_config(max_attempts=2, repin=True, failure_threshold=5,
                           cooldown_seconds=30)
    assert custom.routing.failover == FailoverConfig(2, True, 5, 30.0)
    with pytest.raises(ConfigError):
        routed_config(max_attempts=0)
    with pytest.raises(ConfigError):
        routed_config(retries=2)


# --------------------------------------------------------------------------- spans


def test_one_provider_span_per_attempt():
    config = routed_config()
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    providers = fake_providers(config)
    providers["openai/gpt-5.2"] = FakeProviderClient("gpt-5.2", fail=True)
    client = create_app(config, providers=providers,
                        tracer_provider=tracer_provider).test_client()

    response = client.post("/v1/chat/completions", json=chat_body(DEEP_PROMPT))
    assert response.status_code == 200
    assert response.headers["x-plano-failover-from"] == "openai/gpt-5.2"
    assert response.get_json()["model"] == "openai/gpt-4o-mini"
    client_spans = [span for span in exporter.get_finished_spans()
                    if span.kind is SpanKind.CLIENT]
    assert [span.name for span in client_spans] == ["chat gpt-5.2", "chat gpt-4o-mini"]
    tracer_provider.shutdown()


def test_the_access_line_names_the_model_that_served_and_the_one_that_failed(caplog):
    import logging

    from app.http.request_log import ACCESS_LOGGER

    config = routed_config()
    providers = fake_providers(config)
    providers["openai/gpt-5.2"] = FakeProviderClient("gpt-5.2", fail=True)
    client = create_app(config, providers=providers).test_client()
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    response = client.post("/v1/chat/completions", json=chat_body(DEEP_PROMPT),
                           headers={"X-Model-Affinity": "log-failover"})
    response.close()
    assert response.headers["x-plano-affinity"] == "failover"
    (line,) = [record.plano for record in caplog.records if record.name == ACCESS_LOGGER]
    assert line["model"] == "openai/gpt-4o-mini" and line["affinity"] == "failover"
    assert line["failover_from"] == "openai/gpt-5.2"
