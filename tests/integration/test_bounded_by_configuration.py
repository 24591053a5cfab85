"""SPEC §8 "Bounded by configuration, not by clients": one regression test per finding of
the wave-2 review (issue 22), against the real app in-process and the real mock upstream
over loopback (so what reaches the provider, path and headers included, is what the mock
recorded).

The configuration has a wildcard entry per interface that puts the model id in the body
(``openai/*``) and in the URL path (``azure_openai/*``), a ``passthrough_auth`` model that is
the first model of a route, and client keys (``server.api_keys``).
"""

from __future__ import annotations

import pytest

from app import create_app
from app.config import config_from_dict
from app.services import services_of
from tests.support.configs import DEEP_PROMPT, FAST_PROMPT, chat_body, gateway_config

pytestmark = pytest.mark.integration

GATEWAY_KEY = "gw-client-key-hardening-0001"
WILDCARD_KEY = "sk-wildcard-provider-key-0002"
AZURE_KEY = "sk-azure-provider-key-0003"
PASS_MODEL = "openai/gpt-pass"
DEEP_MODEL = "openai/gpt-5.2"
FAST_MODEL = "openai/gpt-4o-mini"
CHAT = "/v1/chat/completions"
#: Matches no route: the requested model serves it.
NO_ROUTE_PROMPT = "xyzzy plugh"


@pytest.fixture(scope="module")
def bounded_config(mock_llm) -> dict:
    raw = gateway_config(mock_llm, server={"api_keys": [GATEWAY_KEY]},
                         routing={"failover": {"cooldown_seconds": 600}})
    raw["model_providers"] += [
        {"model": "openai/*", "base_url": mock_llm.base_url, "access_key": WILDCARD_KEY},
        {"model": "azure_openai/*", "base_url": mock_llm.url, "access_key": AZURE_KEY},
        {"model": PASS_MODEL, "base_url": mock_llm.base_url, "passthrough_auth": True},
    ]
    raw["routing_preferences"][0]["models"] = [PASS_MODEL, DEEP_MODEL]
    return raw


@pytest.fixture(scope="module")
def app(bounded_config):
    app = create_app(config_from_dict(bounded_config))
    yield app
    services_of(app).session_cache.close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def upstream(mock_llm):
    """The mock's record, emptied before the test: ``upstream()`` lists what reached it."""
    mock_llm.clear()
    return lambda: [call for call in mock_llm.requests() if call["path"] != "/v1/traces"]


def post(client, body: dict, path: str = CHAT, key: str | None = GATEWAY_KEY, **headers):
    if key is not None:
        headers.setdefault("Authorization", f"Bearer {key}")
    return client.post(path, json=body, headers=headers)


def metrics_text(client) -> str:
    """``/metrics`` as text (scraped twice: a first scrape adds the series counting
    scrapes)."""
    client.get("/metrics")
    answer = client.get("/metrics")
    assert answer.status_code == 200
    return answer.get_data(as_text=True)


# ------------------------------------------------------------- metric labels and marks


def test_made_up_wildcard_models_share_their_wildcard_metric_label(client, upstream):
    first = post(client, chat_body(NO_ROUTE_PROMPT, model="openai/made-up-0"))
    assert first.status_code == 200, first.get_data(as_text=True)
    before = metrics_text(client).count("\n")
    for index in range(1, 60):
        body = chat_body(NO_ROUTE_PROMPT, model=f"openai/made-up-{index}")
        assert post(client, body).status_code == 200
    after = metrics_text(client)
    assert after.count("\n") == before
    assert "made-up" not in after
    assert 'model="openai/*"' in after


def test_failing_made_up_models_leave_a_bounded_number_of_health_marks(app, client, upstream):
    health = services_of(app).failover.health
    for index in range(300):
        body = chat_body(NO_ROUTE_PROMPT, model=f"openai/failing-{index}",
                         mock_fault={"status": 500})
        assert post(client, body).status_code == 500
    assert len(health) <= 256
    assert not health.is_down("openai/failing-0")


# ------------------------------------------------------------- request-body route names


def routes_body(name: str, prompt: str = DEEP_PROMPT) -> dict:
    return chat_body(prompt, routing_preferences=[
        {"name": name, "description": "complex reasoning, mathematics with equations, "
         "detailed technical explanations", "models": [DEEP_MODEL]}])


@pytest.mark.parametrize("name", ["line\nbreak", "tab\there", "é-accent", "x" * 129, "nul\x00"],
                         ids=["newline", "tab", "non-ascii", "129-chars", "nul"])
def test_request_route_names_are_checked_before_anything_goes_upstream(app, client, upstream,
                                                                       name):
    answer = post(client, routes_body(name), **{"X-Model-Affinity": f"routes-{len(name)}"})
    assert answer.status_code == 400, answer.get_data(as_text=True)
    error = answer.get_json()["error"]
    assert error["code"] == "invalid_routing_preferences"
    assert error["param"] == "routing_preferences.0.name"
    assert upstream() == []
    assert services_of(app).session_cache.get(f"routes-{len(name)}") is None


def test_a_request_route_name_of_128_printable_characters_is_served(client, upstream):
    answer = post(client, routes_body("r" * 127 + "~"))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.headers["x-plano-route"] == "r" * 127 + "~"


def test_request_route_names_share_one_metric_label(client, upstream):
    assert post(client, routes_body("request-route-0")).status_code == 200
    before = metrics_text(client).count("\n")
    for index in range(1, 40):
        assert post(client, routes_body(f"request-route-{index}")).status_code == 200
    after = metrics_text(client)
    assert after.count("\n") == before
    assert "request-route" not in after
    assert 'route="request"' in after


# ------------------------------------------------------------- model ids in a URL path


@pytest.mark.parametrize("model_id", [
    "x/../../../openai/assistants?api-version=2024-10-21&", "a/b", "a?b", "a#b", "a%2fb",
    "..", "a..b", "tab\tid", "nul\x00id", "del\x7fid"])
def test_azure_model_ids_that_would_change_the_url_are_refused(client, upstream, model_id):
    answer = post(client, chat_body(NO_ROUTE_PROMPT, model=f"azure_openai/{model_id}"))
    assert answer.status_code == 400, answer.get_data(as_text=True)
    assert answer.get_json()["error"]["code"] == "model_not_found"
    assert upstream() == []


def test_an_azure_deployment_id_goes_into_its_path(client, upstream):
    answer = post(client, chat_body(NO_ROUTE_PROMPT, model="azure_openai/my-deployment.v2_1"))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    [call] = upstream()
    assert call["path"] == "/openai/deployments/my-deployment.v2_1/chat/completions"


def test_azure_model_ids_in_request_routes_are_refused_too(client, upstream):
    body = chat_body(DEEP_PROMPT, routing_preferences=[
        {"name": "r", "description": "complex reasoning",
         "models": ["azure_openai/x/../../openai/assistants"]}])
    answer = post(client, body)
    assert answer.status_code == 400
    assert upstream() == []


# ------------------------------------------------------------- credentials


@pytest.mark.parametrize("path, body", [
    (CHAT, chat_body(NO_ROUTE_PROMPT, model=PASS_MODEL)),
    ("/v1/messages", {"model": PASS_MODEL, "max_tokens": 16,
                      "messages": [{"role": "user", "content": NO_ROUTE_PROMPT}]}),
    ("/v1/responses", {"model": PASS_MODEL, "input": NO_ROUTE_PROMPT}),
], ids=["chat", "messages", "responses"])
def test_the_gateway_key_is_never_forwarded_with_passthrough_auth(client, upstream, path,
                                                                  body):
    provider_key = "sk-users-own-provider-key-0004"
    # The gateway key as Bearer, the provider key as x-api-key ...
    answer = post(client, body, path, **{"x-api-key": provider_key})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    headers = upstream_headers_after(upstream, 1)
    assert headers["authorization"] == f"Bearer {provider_key}"
    assert GATEWAY_KEY not in str(headers)
    # ... or the reverse ...
    answer = post(client, body, path, key=None, **{"x-api-key": GATEWAY_KEY,
                                                   "Authorization": f"Bearer {provider_key}"})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    headers = upstream_headers_after(upstream, 2)
    assert headers["authorization"] == f"Bearer {provider_key}"
    assert GATEWAY_KEY not in str(headers)
    # ... and with the gateway key alone, no credential at all goes upstream.
    answer = post(client, body, path)
    headers = upstream_headers_after(upstream, 3)
    assert "authorization" not in headers and "x-api-key" not in headers
    assert GATEWAY_KEY not in str(headers)


def upstream_headers_after(upstream, count: int) -> dict:
    """The headers of the ``count``-th call the mock recorded in this test."""
    calls = upstream()
    assert len(calls) == count
    return {name.lower(): value for name, value in calls[-1]["headers"].items()}


def test_one_passthrough_users_rate_limit_does_not_fail_over_another_user(client, upstream):
    limited = post(client, chat_body(DEEP_PROMPT, mock_fault={"models": {
        "gpt-pass": {"status": 429, "retry_after": 600}}}),
        **{"x-api-key": "sk-user-a-key-0005"})
    assert limited.status_code == 200
    assert limited.headers["x-plano-failover-from"] == PASS_MODEL
    other = post(client, chat_body(DEEP_PROMPT), **{"x-api-key": "sk-user-b-key-0006"})
    assert other.status_code == 200
    assert "x-plano-failover-from" not in other.headers
    assert other.get_json()["model"] == PASS_MODEL
    again = post(client, chat_body(DEEP_PROMPT), **{"x-api-key": "sk-user-a-key-0005"})
    assert again.headers["x-plano-failover-from"] == PASS_MODEL  # still down for user A


# ------------------------------------------------------------- reserved key prefixes


@pytest.mark.parametrize("session", ["turn:abc", "usage:abc", "turn:", "usage:x:y"])
@pytest.mark.parametrize("path", [CHAT, "/routing/v1/chat/completions"])
def test_explicit_session_ids_may_not_use_the_gateways_own_key_prefixes(app, client, upstream,
                                                                         session, path):
    answer = post(client, chat_body(FAST_PROMPT), path, **{"X-Model-Affinity": session})
    assert answer.status_code == 400
    error = answer.get_json()["error"]
    assert (error["code"], error["param"]) == ("invalid_affinity_id", "X-Model-Affinity")
    assert upstream() == []


def test_session_ids_that_merely_resemble_a_prefix_are_served(client, upstream):
    for session in ("turnip", "usage", "my-turn:1", "Turn:abc"):
        answer = post(client, chat_body(FAST_PROMPT), **{"X-Model-Affinity": session})
        assert answer.status_code == 200, session
