"""Operator endpoints (SPEC §10): ``GET /metrics`` in Prometheus text and ``GET /healthz``.

These run in one process with a private registry per app; the aggregation over gunicorn
workers (multiprocess mode) is asserted in ``tests/integration/test_observability.py``.
"""

from __future__ import annotations

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app import __version__, create_app
from app.config import config_from_dict
from app.observability.metrics import Metrics
from app.observability.prometheus_metrics import CACHE_OUTCOMES, PrometheusMetrics
from app.session_cache.memory import MemorySessionCache
from tests.support.configs import DEEP_PROMPT, FAST_PROMPT, chat_body, make_config_dict
from tests.support.fake_provider import fake_providers
from tests.support.fakes import FailingCache

CHAT = "/v1/chat/completions"


def samples(client) -> dict:
    """``{(name, frozenset(labels)): value}`` from one scrape of ``/metrics``."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict, name: str, **labels) -> float:
    return found[(name, frozenset((key, str(val)) for key, val in labels.items()))]


def post(client, body, session=None):
    headers = {"X-Model-Affinity": session} if session else {}
    response = client.post(CHAT, json=body, headers=headers)
    response.close()
    return response


@pytest.fixture
def client(config):
    return create_app(config, providers=fake_providers(config)).test_client()


def test_cache_events_and_requests_are_counted_by_label(client):
    post(client, chat_body(DEEP_PROMPT), "m-1")
    post(client, chat_body(FAST_PROMPT), "m-1")
    post(client, chat_body(FAST_PROMPT), "m-1")
    post(client, {"messages": []}, "m-1")
    found = samples(client)
    events = "plano_session_cache_events_total"
    assert value(found, events, backend="memory", outcome="miss") == 1
    assert value(found, events, backend="memory", outcome="store") == 1
    assert value(found, events, backend="memory", outcome="hit") == 2
    requests = "plano_requests_total"
    assert value(found, requests, endpoint=CHAT, status=200, pinned="false") == 1
    assert value(found, requests, endpoint=CHAT, status=200, pinned="true") == 2
    assert value(found, requests, endpoint=CHAT, status=400, pinned="false") == 1


def test_label_sets_known_at_start_up_are_exposed_as_zero(client):
    found = samples(client)
    for outcome in CACHE_OUTCOMES:
        assert value(found, "plano_session_cache_events_total", backend="memory",
                     outcome=outcome) == 0
    assert value(found, "plano_router_decisions_total", route="deep_reasoning",
                 model="openai/gpt-5.2", fallback="false") == 0
    assert value(found, "plano_upstream_duration_seconds_count",
                 model="openai/gpt-4o-mini") == 0


def test_router_decisions_and_latencies_are_recorded(client):
    post(client, chat_body(DEEP_PROMPT))
    post(client, chat_body("zzzz qqqq"))
    found = samples(client)
    decisions = "plano_router_decisions_total"
    assert value(found, decisions, route="deep_reasoning", model="openai/gpt-5.2",
                 fallback="false") == 1
    assert value(found, decisions, route="other", model="openai/gpt-4o-mini",
                 fallback="false") == 1
    assert value(found, "plano_router_decision_duration_seconds_count") == 2
    assert value(found, "plano_upstream_duration_seconds_count", model="openai/gpt-5.2") == 1
    assert value(found, "plano_upstream_duration_seconds_count",
                 model="openai/gpt-4o-mini") == 1


def test_router_failure_is_counted_as_fallback():
    config = config_from_dict(make_config_dict(routing={"model": "openai/gpt-4o-mini"}))
    client = create_app(config, providers=fake_providers(config, fail=True)).test_client()
    client.post("/routing/v1/chat/completions", json=chat_body(DEEP_PROMPT))
    assert value(samples(client), "plano_router_decisions_total", route="other",
                 model="openai/gpt-4o-mini", fallback="true") == 1


def test_cache_failures_are_counted_by_outcome(config):
    client = create_app(config, session_cache=FailingCache(backend_name="redis"),
                        providers=fake_providers(config)).test_client()
    assert post(client, chat_body(), "m-2").headers["x-plano-affinity"] == "unavailable"
    found = samples(client)
    assert value(found, "plano_session_cache_events_total", backend="redis",
                 outcome="error") == 1


def test_admin_requests_are_counted(config):
    metrics = PrometheusMetrics(config)
    metrics.admin_request("delete_session", 204)
    body, _ = metrics.exposition()
    assert b'plano_admin_requests_total{action="delete_session",status="204"} 1.0' in body


def test_apps_never_share_or_register_global_metrics(config):
    first = create_app(config, providers=fake_providers(config)).test_client()
    second = create_app(config, providers=fake_providers(config)).test_client()
    post(first, chat_body(), "m-3")
    assert value(samples(first), "plano_session_cache_events_total", backend="memory",
                 outcome="miss") == 1
    assert value(samples(second), "plano_session_cache_events_total", backend="memory",
                 outcome="miss") == 0
    assert not any(name.startswith("plano_") for name in
                   prometheus_client.REGISTRY._names_to_collectors)


def test_metrics_endpoint_is_absent_with_no_op_metrics(config):
    client = create_app(config, metrics=Metrics()).test_client()
    response = client.get("/metrics")
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


def test_healthz_with_a_working_cache(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok",
                             "session_cache": {"backend": "memory", "reachable": True},
                             "version": __version__}


def test_healthz_with_an_unreachable_cache_is_degraded_not_failing(config):
    client = create_app(config, session_cache=FailingCache(backend_name="redis")).test_client()
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "degraded",
                             "session_cache": {"backend": "redis", "reachable": False},
                             "version": __version__}


def test_empty_memory_cache_is_used_as_given(config):
    cache = MemorySessionCache(max_entries=10)
    client = create_app(config, session_cache=cache, providers=fake_providers(config)
                        ).test_client()
    post(client, chat_body(), "m-4")
    assert cache.get("m-4") is not None
