"""Prices from the shipped genai-prices table, pricing: overrides, null when unknown, and
what the recorder makes of one answer (SPEC §19)."""

from __future__ import annotations

import json

import pytest

from app.config import config_from_dict
from app.errors import SessionCacheError
from app.observability.metrics import Metrics
from app.observability.prometheus_metrics import PrometheusMetrics
from app.session_cache.memory import MemorySessionCache
from app.usage.meter import UsageMeter
from app.usage.prices import TABLE_PATH, Price, Prices, PriceTable
from app.usage.recorder import UsageRecorder
from app.usage.tokens import CHAT, MESSAGES, Usage


def _config(**extra):
    return config_from_dict({"model_providers": [
        {"model": "openai/gpt-4o-mini", "access_key": "k", "default": True},
        {"model": "anthropic/claude-sonnet-4-5", "access_key": "k"},
        {"model": "openai/house-model", "access_key": "k",
         "pricing": {"input": 2.0, "output": 8.0, "cached_input": 0.5}},
        {"model": "ollama/llama3"},
        {"model": "openai/*", "access_key": "k"}], **extra})


def test_the_shipped_table_is_genai_prices_and_prices_catalogue_models():
    table = json.loads(TABLE_PATH.read_text())
    assert table["source"].startswith("genai-prices ")
    prices = PriceTable.bundled()
    assert prices.lookup("openai", "gpt-4o-mini") == Price(0.15, 0.075, 0.15, 0.6)
    sonnet = prices.lookup("anthropic", "claude-sonnet-4-5-20250929")
    assert sonnet.cached_input < sonnet.input < sonnet.cache_write


def test_azure_falls_back_to_openai_prices_and_unknown_vendors_have_none():
    table = PriceTable.bundled()
    assert table.lookup("azure_openai", "gpt-4o") is not None
    assert table.lookup("ollama", "llama3") is None
    assert table.lookup("openai", "no-such-model-xyz") is None


def test_a_pricing_override_wins_and_missing_cache_prices_fall_back_to_input():
    prices = Prices(_config().model_providers)
    assert prices.price("openai/house-model") == Price(2.0, 0.5, 2.0, 8.0)
    cost = prices.cost("openai/house-model", Usage(1_000_000, 1_000_000, 0, 1_000_000))
    assert cost == pytest.approx(10.5)


def test_a_model_without_a_price_costs_none_never_zero():
    prices = Prices(_config().model_providers)
    assert prices.cost("ollama/llama3", Usage(100, 0, 0, 10)) is None
    assert prices.unpriced() == ["ollama/llama3"]


def test_wildcard_admitted_models_are_priced_from_the_table():
    prices = Prices(_config().model_providers)
    assert prices.price("openai/gpt-4o") == PriceTable.bundled().lookup("openai", "gpt-4o")


def test_cost_counts_each_kind_at_its_price():
    price = Price(input=3.0, cached_input=0.3, cache_write=3.75, output=15.0)
    assert price.cost(Usage(1000, 10_000, 2000, 500)) == pytest.approx(
        (1000 * 3 + 10_000 * 0.3 + 2000 * 3.75 + 500 * 15) / 1e6)


def test_pricing_rejects_negative_prices_and_unknown_keys():
    from app.errors import ConfigError
    for pricing in ({"input": -1, "output": 1}, {"input": 1, "output": 1, "cheap": 0},
                    {"input": 1}):
        with pytest.raises(ConfigError):
            config_from_dict({"model_providers": [{"model": "openai/m", "access_key": "k",
                                                   "pricing": pricing}]})


class RecordingMetrics(Metrics):
    def __init__(self):
        self.usages = []
        self.events = []

    def usage(self, model, tokens, cost_usd, cache_hits, cache_misses):
        self.usages.append((model, tokens, cost_usd, cache_hits, cache_misses))

    def session_cache_event(self, backend, outcome):
        self.events.append((backend, outcome))


class Span:
    def __init__(self):
        self.attributes = {}

    def set_attributes(self, attributes):
        self.attributes.update(attributes)


def test_the_recorder_counts_metrics_span_attributes_log_fields_and_session_totals():
    config = _config()
    metrics, cache = RecordingMetrics(), MemorySessionCache(100)
    recorder = UsageRecorder(config, metrics, cache)
    meter = UsageMeter(recorder, "openai/gpt-4o-mini", CHAT)
    meter.answer(json.dumps({"usage": {"prompt_tokens": 3000, "completion_tokens": 100,
                                       "prompt_tokens_details": {"cached_tokens": 2048}}}
                            ).encode())
    span = Span()
    record = meter.finish(span)
    assert meter.finish(span) is record  # once
    expected_cost = (952 * 0.15 + 2048 * 0.075 + 100 * 0.6) / 1e6
    assert metrics.usages == []  # pending until the flush or a scrape publishes it
    recorder.publish_metrics()
    assert metrics.usages == [("openai/gpt-4o-mini", (952, 2048, 0, 100),
                               pytest.approx(expected_cost), 1, 0)]
    assert span.attributes["gen_ai.usage.input_tokens"] == 3000  # the whole prompt (semconv)
    assert span.attributes["plano.usage.cache_read_tokens"] == 2048
    assert span.attributes["plano.usage.cost_usd"] == pytest.approx(expected_cost)
    assert record.log_fields()["input_tokens"] == 952
    recorder.write_session("s1", record, switched=False)
    recorder.write_session("s1", record, switched=True)
    totals = recorder.session_totals("s1")
    assert totals["requests"] == 2 and totals["cache_hits"] == 2 and totals["switches"] == 1
    assert totals["cache_read_tokens"] == 4096
    assert totals["cost_usd"] == pytest.approx(2 * expected_cost)


def test_an_unpriced_answer_has_no_cost_attribute_and_counts_as_unpriced():
    recorder = UsageRecorder(_config(), RecordingMetrics(), MemorySessionCache(100))
    meter = UsageMeter(recorder, "ollama/llama3", CHAT)
    meter.answer(b'{"usage":{"prompt_tokens":10,"completion_tokens":2}}')
    span = Span()
    record = meter.finish(span)
    assert record.cost_usd is None and "plano.usage.cost_usd" not in span.attributes
    recorder.write_session("s1", record, switched=False)
    totals = recorder.session_totals("s1")
    assert totals["unpriced_requests"] == 1 and "cost_usd" not in totals


def test_wildcard_admitted_models_are_labelled_by_their_wildcard_entry():
    metrics = RecordingMetrics()
    recorder = UsageRecorder(_config(), metrics, MemorySessionCache(100))
    recorder.observe("openai/gpt-4.1-nano-new", Usage(1, 0, 0, 1))
    recorder.publish_metrics()
    assert metrics.usages[0][0] == "openai/*"


def test_a_workers_answers_add_up_per_model_before_they_are_counted():
    metrics = RecordingMetrics()
    recorder = UsageRecorder(_config(), metrics, MemorySessionCache(100), flush_seconds=3600)
    first = recorder.observe("openai/gpt-4o-mini", Usage(10, 2048, 0, 5))
    recorder.observe("openai/gpt-4o-mini", Usage(30, 0, 0, 1))
    recorder.observe("ollama/llama3", Usage(7, 0, 0, 2))
    recorder.flush()
    assert sorted(metrics.usages) == [
        ("ollama/llama3", (7, 0, 0, 2), 0.0, 0, 1),  # unpriced: no cost, not "free"
        ("openai/gpt-4o-mini", (40, 2048, 0, 6),
         pytest.approx(first.cost_usd + (30 * 0.15 + 0.6) / 1e6), 1, 1)]
    recorder.flush()
    assert len(metrics.usages) == 2  # nothing pending: nothing counted


def test_a_failing_session_cache_is_counted_and_never_raises():
    class Broken(MemorySessionCache):
        def add_usage(self, key, increments, ttl_seconds):
            raise SessionCacheError("down")

    metrics = RecordingMetrics()
    recorder = UsageRecorder(_config(), metrics, Broken(10))
    record = recorder.observe("openai/gpt-4o-mini", Usage(1, 0, 0, 1))
    recorder.write_session("s1", record, switched=False)
    assert metrics.events == []  # nothing written yet: pending until the flush
    recorder.flush()
    assert metrics.events == [("memory", "store_error")]


def test_a_meter_without_usage_records_nothing():
    metrics = RecordingMetrics()
    recorder = UsageRecorder(_config(), metrics, MemorySessionCache(10))
    meter = UsageMeter(recorder, "anthropic/claude-sonnet-4-5", MESSAGES)
    meter.feed(b"event: ping\ndata: {}\n\n")
    assert meter.finish() is None
    recorder.flush()
    assert metrics.usages == []


def test_prometheus_exposes_tokens_cost_and_cache_outcomes_by_model():
    config = _config()
    metrics = PrometheusMetrics(config, multiproc_dir="")
    metrics.usage("openai/gpt-4o-mini", (10, 2048, 0, 5), 0.001, 1, 0)
    metrics.usage("ollama/llama3", (10, 0, 0, 5), 0.0, 0, 1)
    text = metrics.exposition()[0].decode()
    assert 'plano_tokens_total{kind="cache_read",model="openai/gpt-4o-mini"} 2048.0' in text
    assert 'plano_cost_usd_total{model="openai/gpt-4o-mini"} 0.001' in text
    assert 'plano_cost_usd_total{model="ollama/llama3"}' not in text  # unknown, not free
    assert ('plano_prompt_cache_requests_total{model="openai/gpt-4o-mini",outcome="hit"} 1.0'
            in text)
    assert ('plano_prompt_cache_requests_total{model="ollama/llama3",outcome="miss"} 1.0'
            in text)


def test_failing_usage_writes_never_open_the_session_caches_circuit_breaker():
    import redis

    from app.session_cache.breaker import CircuitBreaker
    from app.session_cache.redis_cache import RedisSessionCache

    class TimingOut:
        def pipeline(self, transaction=True):
            raise redis.TimeoutError("slow")

    cache = RedisSessionCache(TimingOut(), breaker=CircuitBreaker(1, 60.0))
    recorder = UsageRecorder(_config(), RecordingMetrics(), cache)
    record = recorder.observe("openai/gpt-4o-mini", Usage(1, 0, 0, 1))
    for session in range(5):
        recorder.write_session(f"s{session}", record, switched=False)
    recorder.flush()
    assert cache.breaker.state == "closed"  # pins keep being looked up


def test_a_workers_writes_coalesce_per_session_into_one_round_trip_per_flush():
    class Counting(MemorySessionCache):
        batches: list = []

        def add_usage_batch(self, batch, ttl_seconds):
            self.batches.append(({key: dict(increments) for key, increments in batch.items()},
                                 ttl_seconds))
            super().add_usage_batch(batch, ttl_seconds)

    cache = Counting(100)
    recorder = UsageRecorder(_config(), RecordingMetrics(), cache, flush_seconds=3600)
    record = recorder.observe("openai/gpt-4o-mini", Usage(10, 20, 0, 5))
    for _ in range(3):
        recorder.write_session("s1", record, switched=False)
    recorder.write_session("s2", record, switched=True)
    recorder.flush()
    assert len(cache.batches) == 1  # one round trip for both sessions
    batch, ttl = cache.batches[0]
    assert sorted(batch) == ["usage:s1", "usage:s2"]
    first = batch["usage:s1"]
    assert first["requests"] == 3 and first["cache_read_tokens"] == 60
    assert first["cache_hits"] == 3 and first["cost_usd"] == pytest.approx(3 * record.cost_usd)
    assert "switches" not in first and "cache_write_tokens" not in first  # zeros not sent
    assert batch["usage:s2"]["switches"] == 1
    assert ttl == 600  # the session TTL
    assert cache.usage("usage:s1")["input_tokens"] == 30
    recorder.flush()
    assert len(cache.batches) == 1  # nothing pending: nothing written


def test_the_background_flush_writes_pending_totals_by_itself():
    from devkit.processes import wait_until

    cache = MemorySessionCache(100)
    recorder = UsageRecorder(_config(), RecordingMetrics(), cache, flush_seconds=0.01)
    recorder.write_session("s1", recorder.observe("openai/gpt-4o-mini", Usage(1, 0, 0, 1)),
                           switched=False)
    wait_until(lambda: cache.usage("usage:s1") is not None, 10, "the background flush")
    assert cache.usage("usage:s1")["requests"] == 1


def test_the_flush_loop_ends_when_idle_and_the_next_answer_starts_it_again():
    from devkit.processes import wait_until

    cache, metrics = MemorySessionCache(100), RecordingMetrics()
    recorder = UsageRecorder(_config(), metrics, cache, flush_seconds=0.01)
    recorder.write_session("s1", recorder.observe("openai/gpt-4o-mini", Usage(1, 0, 0, 1)),
                           switched=False)
    wait_until(lambda: recorder._flusher is None, 10, "the idle flush loop to end")
    assert cache.usage("usage:s1")["requests"] == 1 and len(metrics.usages) == 1
    recorder.write_session("s1", recorder.observe("openai/gpt-4o-mini", Usage(1, 0, 0, 1)),
                           switched=True)
    wait_until(lambda: (cache.usage("usage:s1") or {}).get("requests") == 2, 10,
               "the restarted flush loop")
    assert cache.usage("usage:s1")["switches"] == 1 and len(metrics.usages) == 2
