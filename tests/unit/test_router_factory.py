"""create_router (SPEC §3 routing, §5): which router a configuration gets."""

from __future__ import annotations

from app.config import config_from_dict
from app.router import create_router
from app.router.arch import ArchRouter
from app.router.embedded import EmbeddedRouter
from tests.support.configs import BASE_CONFIG

PROVIDERS = [{"model": "openai/gpt-4o-mini", "default": True}, {"model": "openai/gpt-5.2"}]
ROUTES = BASE_CONFIG["routing_preferences"]


class FakeClient:
    """Answers every routing call with ``fast_responses`` and records it."""

    def __init__(self):
        self.calls = []

    def complete_json(self, payload, *, timeout, headers=None):
        self.calls.append((payload, timeout))
        return {"choices": [{"message": {"content": '{"route": "fast_responses"}'}}]}


def make_config(routes=ROUTES, routing=None):
    raw = {"model_providers": PROVIDERS, "routing_preferences": routes}
    if routing is not None:
        raw["routing"] = routing
    return config_from_dict(raw, environ={})


def test_no_routes_gives_no_router():
    assert create_router(make_config(routes=[]), {}) is None


def test_no_routes_gives_no_router_without_a_routing_model():
    assert create_router(make_config(routes=[]), {}) is None


def test_a_routing_model_without_routes_gives_an_llm_router_for_request_routes():
    config = make_config(routes=[], routing={"model": "openai/gpt-4o-mini"})
    router = create_router(config, {"openai/gpt-4o-mini": object()})
    assert isinstance(router, ArchRouter) and router.routes == ()


def test_routes_without_routing_model_give_the_embedded_router():
    router = create_router(make_config(), {})
    assert isinstance(router, EmbeddedRouter)
    assert router.kind == "embedded"
    assert [route.name for route in router.routes] == ["deep_reasoning", "fast_responses"]


def test_routing_model_gives_the_llm_router_with_its_client_model_id_and_timeout():
    clients = {"openai/gpt-4o-mini": FakeClient(), "openai/gpt-5.2": FakeClient()}
    config = make_config(routing={"model": "openai/gpt-4o-mini", "timeout_ms": 1500})
    router = create_router(config, clients)
    assert isinstance(router, ArchRouter)
    assert router.kind == "llm"
    route = router.select_route([{"role": "user", "content": "hi"}])
    assert route.name == "fast_responses"
    assert not clients["openai/gpt-5.2"].calls
    payload, timeout = clients["openai/gpt-4o-mini"].calls[0]
    assert payload["model"] == "gpt-4o-mini"
    assert timeout == 1.5


def test_routing_model_routes_are_the_configured_ones():
    clients = {"openai/gpt-4o-mini": FakeClient()}
    router = create_router(make_config(routing={"model": "openai/gpt-4o-mini"}), clients)
    assert router.routes == make_config().routing_preferences
    assert router.timeout_seconds == 5.0
