"""A request's own ``routing_preferences`` (Plano's routing API, SPEC §14): they replace the
configured routes for that request only, never reach the provider, and a pin wins."""

from __future__ import annotations

import pytest

from app import create_app
from app.config import config_from_dict
from app.session_cache.memory import MemorySessionCache
from tests.support.configs import DEEP_PROMPT, chat_body, make_config_dict
from tests.support.fake_provider import fake_providers

#: One route that a greeting matches, served by the model the configured routes never pick
#: for a greeting.
GREETING_TO_DEEP = [{"name": "hello_route", "description": "greetings, hello, hi",
                     "models": ["openai/gpt-5.2"]}]


@pytest.fixture
def gateway(config):
    providers = fake_providers(config)
    client = create_app(config, providers=providers,
                        session_cache=MemorySessionCache(100)).test_client()
    return client, providers


def test_request_routes_replace_the_configured_ones_for_that_request(gateway):
    client, _ = gateway
    own = client.post("/routing/v1/chat/completions",
                      json=chat_body("hi", routing_preferences=GREETING_TO_DEEP))
    assert own.get_json()["models"] == ["openai/gpt-5.2"]
    assert own.get_json()["route"] == "hello_route"
    configured = client.post("/routing/v1/chat/completions", json=chat_body("hi"))
    assert configured.get_json()["route"] == "fast_responses"


def test_request_routes_are_stripped_before_forwarding(gateway):
    client, providers = gateway
    answer = client.post("/v1/chat/completions",
                         json=chat_body("hi", routing_preferences=GREETING_TO_DEEP))
    assert answer.status_code == 200 and answer.get_json()["model"] == "openai/gpt-5.2"
    [sent] = providers["openai/gpt-5.2"].sent
    assert "routing_preferences" not in sent["body"]


def test_request_routes_are_ignored_on_a_pinned_hit(gateway):
    client, _ = gateway
    session = {"x-model-affinity": "s1"}
    client.post("/routing/v1/chat/completions", json=chat_body("hi"), headers=session)
    pinned = client.post("/routing/v1/chat/completions", headers=session,
                         json=chat_body("hi", routing_preferences=GREETING_TO_DEEP))
    assert pinned.get_json()["models"] == ["openai/gpt-4o-mini"]
    assert pinned.get_json()["pinned"] is True


def test_request_route_models_resolve_like_a_request_model():
    config = config_from_dict(make_config_dict(routing_preferences=[]))
    client = create_app(config, providers=fake_providers(config)).test_client()
    routes = [{"name": "deep", "description": "quantum entanglement equations physics",
               "models": ["gpt-5.2"]}]
    answer = client.post("/routing/v1/chat/completions",
                         json=chat_body(DEEP_PROMPT, routing_preferences=routes))
    assert answer.get_json()["models"] == ["openai/gpt-5.2"]


def test_request_route_naming_an_unknown_model_is_a_400(gateway):
    client, _ = gateway
    routes = [{"name": "r", "description": "greetings", "models": ["openai/nope"]}]
    answer = client.post("/v1/chat/completions",
                         json=chat_body("hi", routing_preferences=routes))
    assert answer.status_code == 400
    assert answer.get_json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("routes", [[], "fast", [{"name": "r", "description": "d"}],
                                    [{"name": "r", "description": "d", "models": [1]}]])
def test_malformed_request_routes_are_a_400(gateway, routes):
    client, _ = gateway
    answer = client.post("/v1/chat/completions",
                         json=chat_body("hi", routing_preferences=routes))
    assert answer.status_code == 400
    assert answer.get_json()["error"]["code"] == "invalid_routing_preferences"
