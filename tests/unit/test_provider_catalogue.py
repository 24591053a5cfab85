"""The provider catalogue (SPEC §13): every listed prefix's endpoint, Plano's base-URL rule,
wildcards, bare model ids, refused prefixes."""

from __future__ import annotations

import pytest

from app.config import config_from_dict
from app.config.catalogue import UNSUPPORTED_VENDORS, VENDORS
from app.errors import ConfigError

#: (model, base_url or None) -> the URL a chat client's request goes to, for every prefix.
CATALOGUE_URLS = [
    ("openai/gpt-4o", None, "https://api.openai.com/v1/chat/completions"),
    ("anthropic/claude-sonnet-4-6", None, "https://api.anthropic.com/v1/messages"),
    ("deepseek/deepseek-chat", None, "https://api.deepseek.com/v1/chat/completions"),
    ("mistral/mistral-large-latest", None, "https://api.mistral.ai/v1/chat/completions"),
    ("groq/llama-4-scout", None, "https://api.groq.com/openai/v1/chat/completions"),
    ("gemini/gemini-3-pro", None,
     "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions"),
    ("together_ai/meta-llama/Llama-2-7b-chat-hf", None,
     "https://api.together.xyz/v1/chat/completions"),
    ("xai/grok-beta", None, "https://api.x.ai/v1/chat/completions"),
    ("moonshotai/kimi-k2-0905-preview", None, "https://api.moonshot.ai/v1/chat/completions"),
    ("zhipu/glm-4.6", None, "https://open.bigmodel.cn/api/paas/v4/chat/completions"),
    ("xiaomi/mimo-v2-pro", None, "https://api.xiaomimimo.com/v1/chat/completions"),
    ("qwen/qwen3", "https://dashscope.aliyuncs.com",
     "https://dashscope.aliyuncs.com/compatible-mode/v1/chat/completions"),
    ("ollama/llama3.1", None, "http://localhost:11434/v1/chat/completions"),
    ("ollama/llama3.1", "http://localhost:11434", "http://localhost:11434/v1/chat/completions"),
    ("ollama/llama3.1", "http://localhost:8080", "http://localhost:8080/v1/chat/completions"),
    ("azure_openai/gpt-4o", "https://acme.openai.azure.com",
     "https://acme.openai.azure.com/openai/deployments/gpt-4o/chat/completions"
     "?api-version=2024-10-21"),
    ("azure_openai/gpt-4", "https://acme.openai.azure.com/custom/deployment/path",
     "https://acme.openai.azure.com/custom/deployment/path/chat/completions"
     "?api-version=2024-10-21"),
    ("plano/Arch-Router", "http://router.internal:8000",
     "http://router.internal:8000/v1/chat/completions"),
    ("arch/Arch-Router", "http://router.internal:8000/v1",
     "http://router.internal:8000/v1/chat/completions"),
    ("zhipu/glm-4.6", "https://api.z.ai", "https://api.z.ai/api/paas/v4/chat/completions"),
    ("zhipu/glm-4.6", "https://api.z.ai/api/coding/paas/v4",
     "https://api.z.ai/api/coding/paas/v4/chat/completions"),
    ("openai/gpt-4o", "https://proxy.company.com/ai-gateway/openai",
     "https://proxy.company.com/ai-gateway/openai/chat/completions"),
    ("openai/gpt-4o", "https://api.openai.com/v1", "https://api.openai.com/v1/chat/completions"),
]


def config_with(*providers: dict):
    return config_from_dict({"model_providers": list(providers)}, environ={})


def api_url(endpoint) -> str:
    return endpoint.url("/messages" if endpoint.interface == "anthropic"
                        else "/chat/completions")


@pytest.mark.parametrize(("model", "base_url", "url"), CATALOGUE_URLS)
def test_catalogue_entry_resolves_to_the_documented_endpoint(model, base_url, url):
    entry = {"model": model, **({"base_url": base_url} if base_url else {})}
    assert api_url(config_with(entry).model_providers[0]) == url


def test_every_catalogue_prefix_is_covered_by_the_url_table():
    assert {model.split("/")[0] for model, _, _ in CATALOGUE_URLS} == set(VENDORS)


@pytest.mark.parametrize(("vendor", "auth"), [("openai", "bearer"), ("groq", "bearer"),
                                              ("anthropic", "x-api-key")])
def test_auth_header_follows_the_vendor(vendor, auth):
    assert config_with({"model": f"{vendor}/m"}).model_providers[0].auth == auth


def test_azure_sends_api_key_and_its_configured_api_version():
    endpoint = config_with({"model": "azure_openai/gpt-4o", "api_version": "2025-01-01",
                            "base_url": "https://acme.openai.azure.com"}).model_providers[0]
    assert endpoint.auth == "api-key"
    assert endpoint.url("/chat/completions").endswith("?api-version=2025-01-01")


@pytest.mark.parametrize("vendor", sorted(UNSUPPORTED_VENDORS))
def test_a_prefix_the_gateway_cannot_speak_is_refused_by_name(vendor):
    with pytest.raises(ConfigError) as caught:
        config_with({"model": f"{vendor}/some-model", "base_url": "https://x.example"})
    [problem] = caught.value.problems
    assert problem.startswith(f"model_providers.0.model: provider '{vendor}' is not "
                              "supported by this gateway")


@pytest.mark.parametrize("vendor", ["azure_openai", "qwen", "plano", "arch"])
def test_vendors_without_a_public_host_need_a_base_url(vendor):
    with pytest.raises(ConfigError) as caught:
        config_with({"model": f"{vendor}/m"})
    assert caught.value.problems == [f"model_providers.0.base_url: required for provider "
                                     f"'{vendor}'"]


def test_unknown_prefix_is_spoken_to_with_its_provider_interface():
    endpoint = config_with({"model": "litellm/claude", "provider_interface": "claude",
                            "base_url": "https://litellm.example.com"}).model_providers[0]
    assert endpoint.interface == "anthropic" and endpoint.auth == "x-api-key"
    assert endpoint.url("/messages") == "https://litellm.example.com/v1/messages"


def test_provider_interface_on_a_catalogue_prefix_is_refused():
    with pytest.raises(ConfigError) as caught:
        config_with({"model": "openai/gpt-4o", "provider_interface": "openai"})
    assert caught.value.problems[0].startswith("model_providers.0.provider_interface: only")


def test_wildcard_admits_any_model_id_and_a_concrete_entry_wins():
    config = config_with({"model": "openai/gpt-4o-mini", "access_key": "k-concrete"},
                         {"model": "openai/*", "access_key": "k-wild",
                          "base_url": "https://proxy.example/v9"})
    admitted = config.resolve_model("openai/gpt-4.1")
    assert (admitted.name, admitted.model_id, admitted.access_key) == (
        "openai/gpt-4.1", "gpt-4.1", "k-wild")
    assert admitted.url("/chat/completions") == "https://proxy.example/v9/chat/completions"
    concrete = config.resolve_model("openai/gpt-4o-mini")
    assert concrete.access_key == "k-concrete"
    assert config.resolve_model("anthropic/claude") is None
    assert config.default_endpoint.name == "openai/gpt-4o-mini"


def test_wildcard_cannot_be_the_default_and_one_concrete_model_is_needed():
    with pytest.raises(ConfigError) as caught:
        config_with({"model": "openai/*", "default": True})
    assert "model_providers.0.default: a wildcard entry cannot be the default" in \
        caught.value.problems


def test_bare_model_id_resolves_when_exactly_one_entry_has_it():
    config = config_with({"model": "anthropic/claude-sonnet-4-6"},
                         {"model": "openai/shared-id"},
                         {"model": "together_ai/shared-id"})
    assert config.resolve_model("claude-sonnet-4-6").name == "anthropic/claude-sonnet-4-6"
    assert config.resolve_model("shared-id") is None  # ambiguous: refused per request


def test_routes_may_name_models_admitted_by_a_wildcard():
    config = config_from_dict({
        "model_providers": [{"model": "anthropic/*"}, {"model": "openai/gpt-4o"}],
        "routing_preferences": [{"name": "code", "description": "code",
                                 "models": ["anthropic/claude-sonnet-4-20250514"]}]},
        environ={})
    assert config.routing_preferences[0].models == ("anthropic/claude-sonnet-4-20250514",)
    assert config.endpoint("anthropic/claude-sonnet-4-20250514").model_id == \
        "claude-sonnet-4-20250514"
