"""Coming from Plano (SPEC §13, §14), end to end: every catalogue prefix reaches its documented
path with host-only base URLs, wildcards and passthrough auth work through real gunicorn,
and Plano's own sample configs start (or are refused) under the real ``bin/serve``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests

from app.config.catalogue import VENDORS
from devkit import ROOT
from devkit.ports import free_port
from devkit.processes import Process, http_ok, wait_until
from devkit.stubs import scratch_dir
from tests.support.configs import chat_body

pytestmark = pytest.mark.integration

PLANO_CONFIGS = Path(__file__).resolve().parents[1] / "data" / "plano_configs"
KEY = "sk-upstream-key-0001"

#: prefix -> (the path the mock must see with a host-only base_url, the key header).
EXPECTED = {
    "openai": ("/v1/chat/completions", "authorization"),
    "anthropic": ("/v1/messages", "x-api-key"),
    "deepseek": ("/v1/chat/completions", "authorization"),
    "mistral": ("/v1/chat/completions", "authorization"),
    "groq": ("/openai/v1/chat/completions", "authorization"),
    "gemini": ("/v1beta/openai/chat/completions", "authorization"),
    "together_ai": ("/v1/chat/completions", "authorization"),
    "xai": ("/v1/chat/completions", "authorization"),
    "moonshotai": ("/v1/chat/completions", "authorization"),
    "zhipu": ("/api/paas/v4/chat/completions", "authorization"),
    "xiaomi": ("/v1/chat/completions", "authorization"),
    "qwen": ("/compatible-mode/v1/chat/completions", "authorization"),
    "ollama": ("/v1/chat/completions", "authorization"),
    "azure_openai": ("/openai/deployments/m-azure_openai/chat/completions", "api-key"),
    "plano": ("/v1/chat/completions", "authorization"),
    "arch": ("/v1/chat/completions", "authorization"),
}


def send(gateway, model: str, **headers) -> requests.Response:
    return requests.post(gateway.chat_url, json=chat_body("hi", model=model), timeout=20,
                         headers=headers)


def upstream_call(mock) -> dict:
    [call] = [r for r in mock.requests() if r["path"] != "/v1/traces"]
    return call


@pytest.fixture(scope="module")
def catalogue_gateway(mock_llm):
    """One gateway with a model of every catalogue prefix, all on the mock, host only."""
    from devkit.gateway import Gateway

    providers = [{"model": f"{vendor}/m-{vendor}", "base_url": mock_llm.url,
                  "access_key": KEY} for vendor in VENDORS]
    providers += [
        {"model": "openai/*", "base_url": mock_llm.url, "access_key": "sk-wildcard-key-0002"},
        {"model": "openai/gpt-concrete", "base_url": mock_llm.url,
         "access_key": "sk-concrete-key-0003"},
        {"model": "openai/gpt-passthrough", "base_url": mock_llm.url,
         "access_key": "sk-ignored-key-0004", "passthrough_auth": True},
    ]
    providers[0]["default"] = True
    config = {"listeners": [{"name": "l", "type": "model", "timeout": "10s"}],
              "model_providers": providers}
    with Gateway(config, workers=1) as gateway:
        yield gateway


def test_the_catalogue_covers_every_prefix_this_test_checks():
    assert set(EXPECTED) == set(VENDORS)


@pytest.mark.parametrize("vendor", sorted(EXPECTED))
def test_host_only_base_url_reaches_the_vendors_documented_path(catalogue_gateway, mock_llm,
                                                                vendor):
    mock_llm.clear()
    answer = send(catalogue_gateway, f"{vendor}/m-{vendor}")
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == f"{vendor}/m-{vendor}"
    call = upstream_call(mock_llm)
    path, key_header = EXPECTED[vendor]
    assert call["path"] == path
    headers = {name.lower(): value for name, value in call["headers"].items()}
    assert headers[key_header] == (f"Bearer {KEY}" if key_header == "authorization" else KEY)
    if vendor == "azure_openai":
        assert call["query"] == {"api-version": "2024-10-21"}
    if vendor == "anthropic":
        assert headers["anthropic-version"] == "2023-06-01"


def test_wildcard_admits_any_model_id_and_a_concrete_entry_wins(catalogue_gateway, mock_llm):
    mock_llm.clear()
    answer = send(catalogue_gateway, "openai/gpt-brand-new")
    assert answer.status_code == 200 and answer.json()["model"] == "openai/gpt-brand-new"
    call = upstream_call(mock_llm)
    assert call["body"]["model"] == "gpt-brand-new"
    assert call["headers"]["authorization"] == "Bearer sk-wildcard-key-0002"
    mock_llm.clear()
    send(catalogue_gateway, "openai/gpt-concrete")
    assert upstream_call(mock_llm)["headers"]["authorization"] == \
        "Bearer sk-concrete-key-0003"


def test_passthrough_auth_forwards_the_client_key_only_to_its_provider(catalogue_gateway,
                                                                      mock_llm):
    client_key = "sk-client-virtual-key-0005"
    mock_llm.clear()
    send(catalogue_gateway, "openai/gpt-passthrough", Authorization=f"Bearer {client_key}")
    assert upstream_call(mock_llm)["headers"]["authorization"] == f"Bearer {client_key}"
    mock_llm.clear()
    send(catalogue_gateway, "openai/gpt-concrete", Authorization=f"Bearer {client_key}")
    headers = upstream_call(mock_llm)["headers"]
    assert headers["authorization"] == "Bearer sk-concrete-key-0003"
    assert client_key not in str(headers)
    assert client_key not in catalogue_gateway.log_tail(400)


# ----------------------------------------------------------- Plano's configs, bin/serve


def serve(config: Path, port: int) -> Process:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PLANO_")},
           "OPENAI_API_KEY": "sk-test-openai", "ANTHROPIC_API_KEY": "sk-test-anthropic",
           "PLANO_WORKERS": "1"}
    log = scratch_dir() / f"serve-{config.stem}.log"
    return Process(f"serve-{config.stem}", [str(ROOT / "bin" / "serve"), "--config",
                                            str(config), "--host", "127.0.0.1", "--port",
                                            str(port)], log_path=log, env=env).start()


def route(port: int, text: str) -> dict:
    answer = requests.post(f"http://127.0.0.1:{port}/routing/v1/chat/completions",
                           json=chat_body(text), timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.mark.parametrize("name", ["preference_based_routing.yaml",
                                  "model_routing_service.yaml", "claude_code_router.yaml"])
def test_plano_sample_config_starts_under_bin_serve_and_routes(name):
    port = free_port()
    process = serve(PLANO_CONFIGS / name, port)
    try:
        wait_until(lambda: http_ok(port, "/healthz"), 60, f"{name} /healthz",
                   alive=process.check_alive)
        generation = route(port, "Generate new boilerplate code for a REST handler function")
        if name == "model_routing_service.yaml":
            assert generation["route"] == "code_generation"
            # Ranked: the route's first model, then its fallback (SPEC §15).
            assert generation["models"] == ["anthropic/claude-sonnet-4-6", "openai/gpt-4o"]
        else:
            assert generation["route"] == "code generation"
        if name == "preference_based_routing.yaml":
            assert generation["models"] == ["anthropic/claude-sonnet-4-6"]
            understanding = route(port, "Explain this existing code snippet and help me "
                                        "understand the library")
            assert (understanding["route"], understanding["models"]) == (
                "code understanding", ["openai/gpt-4o"])
            log = process.log_path.read_text(errors="replace")
            assert log.count('"event": "config_migrated"') == 1  # the master only
    finally:
        process.stop()

