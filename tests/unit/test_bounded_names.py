"""SPEC §8 "Bounded by configuration, not by clients", piece by piece, without sockets:
metric labels, health marks, wildcard clients, names checked before use, credentials."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.config import FailoverConfig, ModelEndpoint, config_from_dict
from app.config.model import path_safe_model_id
from app.errors import InvalidAffinityIdError, InvalidRequestError
from app.http.auth import KeySet, credential_fingerprint, passthrough_key, presented_keys
from app.observability.metric_labels import route_label, served_model_label
from app.observability.prometheus_metrics import PrometheusMetrics
from app.pipeline.decide import TURN_KEY_PREFIX
from app.pipeline.failover import Failover, health_key
from app.pipeline.model_health import ModelHealth
from app.pipeline.parse import (
    RESERVED_SESSION_PREFIXES,
    parse_request_routes,
    validate_affinity_value,
)
from app.pipeline.relay import Answer
from app.providers import registry
from app.providers.registry import ProviderClients
from tests.support.configs import make_config_dict
from tests.support.fakes import FakeClock


@pytest.fixture
def wildcard_config():
    raw = make_config_dict()
    raw["model_providers"] += [
        {"model": "openai/*", "base_url": "http://127.0.0.1:9/v1", "access_key": "k"},
        {"model": "azure_openai/*", "base_url": "http://127.0.0.1:9", "access_key": "k"}]
    return config_from_dict(raw)


# ------------------------------------------------------------- metric labels


def test_a_wildcard_admitted_model_is_labelled_by_its_wildcard_entry(wildcard_config):
    assert served_model_label(wildcard_config, "openai/gpt-5.2") == "openai/gpt-5.2"
    assert served_model_label(wildcard_config, "openai/made-up\n") == "openai/*"
    assert served_model_label(wildcard_config, "azure_openai/dep") == "azure_openai/*"
    assert served_model_label(wildcard_config, "mistral/x") == "other"
    assert served_model_label(wildcard_config, None) == "other"


def test_request_body_routes_are_labelled_request(wildcard_config):
    assert route_label(wildcard_config, "deep_reasoning") == "deep_reasoning"
    assert route_label(wildcard_config, "my own route") == "request"
    assert route_label(wildcard_config, None) == "other"


def series(metrics: PrometheusMetrics, name: str) -> list[dict]:
    body, _ = metrics.exposition()
    return [sample.labels for family in text_string_to_metric_families(body.decode())
            for sample in family.samples if sample.name == name]


def test_every_model_and_route_label_comes_from_the_configuration(wildcard_config):
    metrics = PrometheusMetrics(wildcard_config, multiproc_dir="")
    for index in range(50):
        metrics.router_decision(f"route-{index}", f"openai/x{index}", False, 0.001)
        metrics.router_skip(f"route-{index}", f"openai/x{index}")
        metrics.upstream_finished(f"openai/x{index}", 0.1)
        metrics.failover(f"openai/x{index}", f"azure_openai/y{index}", "http_503")
    assert {"route": "request", "model": "openai/*", "fallback": "false"} in series(
        metrics, "plano_router_decisions_total")
    assert series(metrics, "plano_router_skips_total") == [
        {"route": "request", "model": "openai/*"}]
    assert {labels["model"] for labels in series(
        metrics, "plano_upstream_duration_seconds_count")} <= {
        provider.name for provider in wildcard_config.model_providers}
    assert series(metrics, "plano_failovers_total") == [
        {"from_model": "openai/*", "to_model": "azure_openai/*", "reason": "http_503"}]
    assert metrics.model_label("openai/x1") == "openai/*"


# ------------------------------------------------------------- health marks


def test_health_marks_are_capped_least_recently_touched_first():
    health = ModelHealth(3, 10.0, clock=FakeClock(), max_marks=4)
    for index in range(10):
        health.record_failure(f"m{index}")
    assert len(health) == 4
    health.mark_down("m9", 5)
    assert health.is_down("m9")


def test_a_down_mark_outlives_the_cap_of_newer_failures_only_while_it_is_newest():
    health = ModelHealth(1, 10.0, clock=FakeClock(), max_marks=2)
    health.record_failure("down")
    health.record_failure("a")
    health.record_failure("b")
    assert len(health) == 2 and not health.is_down("down")


def test_an_idle_mark_is_forgotten_with_its_failures():
    clock = FakeClock()
    health = ModelHealth(3, 10.0, clock=clock, idle_seconds=60)
    health.record_failure("m")
    health.record_failure("m")
    clock.advance(60)
    assert not health.record_failure("m")  # two failures a minute ago no longer count
    health.record_failure("other")
    assert len(health) == 2
    clock.advance(61)
    health.record_failure("fresh")
    assert len(health) == 1


def test_a_down_mark_does_not_expire_before_its_cool_down():
    clock = FakeClock()
    health = ModelHealth(1, 600.0, clock=clock, idle_seconds=60)
    health.record_failure("m")
    clock.advance(300)
    health.record_failure("other")
    assert health.is_down("m") and not health.available("m")


# ------------------------------------------------------------- per-credential health

PASS = ModelEndpoint("openai/pass", "openai", "pass", "http://x/v1", passthrough_auth=True)
SHARED = ModelEndpoint("openai/shared", "openai", "shared", "http://x/v1")
LIMITED = Answer(429, {"Retry-After": "60"}, b'{"error":{"message":"slow down"}}')
OK = Answer(200, {}, b"{}")


def test_passthrough_health_is_kept_per_credential_and_shared_models_per_model():
    assert health_key(PASS, "f1") != health_key(PASS, "f2")
    assert health_key(PASS, None) == "openai/pass"
    assert health_key(SHARED, "f1") == health_key(SHARED, "f2") == "openai/shared"
    failover = Failover(FailoverConfig(cooldown_seconds=60), timeout_seconds=30)
    failover.run((PASS, SHARED), lambda endpoint, _: LIMITED if endpoint is PASS else OK,
                 credential="user-a")
    served = failover.run((PASS, SHARED), lambda endpoint, _: OK, credential="user-b")
    assert served.served is PASS and served.failed_from is None
    again = failover.run((PASS, SHARED), lambda endpoint, _: OK, credential="user-a")
    assert again.served is SHARED and again.failed_from == "openai/pass"


# ------------------------------------------------------------- wildcard clients


def test_wildcard_clients_are_capped_and_expire(wildcard_config, monkeypatch):
    monkeypatch.setattr(registry, "MAX_WILDCARD_CLIENTS", 5)
    clock = FakeClock()
    clients = ProviderClients(wildcard_config, clock=clock)
    for index in range(20):
        assert clients[f"openai/m{index}"].provider.model_id == f"m{index}"
    assert clients.admitted_count == 5
    first = clients["openai/m19"]
    assert clients["openai/m19"] is first
    clock.advance(registry.WILDCARD_CLIENT_IDLE_SECONDS)
    assert clients["openai/m19"] is not first  # idle too long: made again
    assert clients.admitted_count == 1
    clients.close()


# ------------------------------------------------------------- names checked before use


@pytest.mark.parametrize("model_id, safe", [
    ("gpt-4o", True), ("my-deployment.v2_1", True), ("a b", True), ("é", True),
    ("a/b", False), ("a?b", False), ("a#b", False), ("a%2e%2e", False), ("..", False),
    ("a..b", False), ("a\\b", False), ("a\tb", False), ("a\x00", False), ("a\x7f", False),
    ("a\x85", False)])
def test_model_ids_that_could_leave_their_path_segment_are_unsafe(model_id, safe):
    assert path_safe_model_id(model_id) is safe


def test_only_an_entry_with_the_id_in_its_path_refuses_unsafe_ids(wildcard_config):
    assert wildcard_config.resolve_model("azure_openai/a/../b") is None
    assert wildcard_config.resolve_model("azure_openai/dep").url("/x") == \
        "http://127.0.0.1:9/openai/deployments/dep/x?api-version=2024-10-21"
    # In a body, an id is data: OpenAI's own ids (ft:...:..) may hold anything.
    assert wildcard_config.resolve_model("openai/a/b..c").model_id == "a/b..c"


@pytest.mark.parametrize("name", ["", " ", "a\nb", "é", "x" * 129, "\x7f"])
def test_request_route_names_must_be_printable_ascii_of_at_most_128(name):
    with pytest.raises(InvalidRequestError) as raised:
        parse_request_routes([{"name": name, "description": "d", "models": ["m"]}])
    assert raised.value.code == "invalid_routing_preferences"


def test_a_request_route_name_of_128_printable_characters_is_kept():
    (route,) = parse_request_routes([{"name": "n" * 127 + " ", "description": "d",
                                      "models": ["m"]}])
    assert len(route.name) == 128


def test_the_gateways_own_key_prefixes_are_reserved():
    assert TURN_KEY_PREFIX in RESERVED_SESSION_PREFIXES
    for value in ("turn:abc", "usage:abc", "turn:"):
        with pytest.raises(InvalidAffinityIdError):
            validate_affinity_value(value, "X-Model-Affinity")
    assert validate_affinity_value("turnip:abc", "X-Model-Affinity") == "turnip:abc"
    # The admin API reads the gateway's own records by their keys.
    assert validate_affinity_value("turn:abc", "session id", allow_reserved=True) == "turn:abc"


# ------------------------------------------------------------- credentials


def test_the_gateway_key_is_never_the_passthrough_key():
    gateway = KeySet(["gw-key"])
    assert passthrough_key({"Authorization": "Bearer gw-key", "x-api-key": "sk-p"},
                           gateway) == "sk-p"
    assert passthrough_key({"Authorization": "Bearer sk-p", "x-api-key": "gw-key"},
                           gateway) == "sk-p"
    assert passthrough_key({"Authorization": "Bearer gw-key"}, gateway) is None
    assert passthrough_key({"api-key": "gw-key"}, gateway) is None
    # Without client keys, the first presented key is the client's provider key.
    assert passthrough_key({"Authorization": "Bearer a", "x-api-key": "b"}, KeySet(())) == "a"


def test_presented_keys_are_read_in_header_order_without_empty_ones():
    assert presented_keys({"Authorization": "Basic xyz", "x-api-key": " k ",
                           "api-key": ""}) == ["k"]


def test_a_credential_fingerprint_names_a_key_without_holding_it():
    key = "sk-user-secret-0123456789"
    fingerprint = credential_fingerprint(key)
    assert fingerprint == credential_fingerprint(key) != credential_fingerprint(key + "x")
    assert len(fingerprint) == 16 and key[:6] not in fingerprint
    assert credential_fingerprint(None) is None


def test_a_pin_holding_an_unchecked_route_name_is_still_served(config):
    """A pin written by an older replica (route names unchecked) must not make every
    request of its session a 500 until the TTL."""
    from app import create_app
    from app.session_cache.base import SessionBinding
    from app.session_cache.memory import MemorySessionCache
    from tests.support.fake_provider import fake_providers

    cache = MemorySessionCache(100)
    cache.put("old-pin", SessionBinding("openai/gpt-5.2", "line\nbreak"), 60)
    app = create_app(config, session_cache=cache, providers=fake_providers(config))
    answer = app.test_client().post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "hi"}]},
        headers={"X-Model-Affinity": "old-pin"})
    assert answer.status_code == 200
    assert answer.headers["x-plano-pinned"] == "true"
    assert "x-plano-route" not in answer.headers
