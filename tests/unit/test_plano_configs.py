"""Plano configs load as they are (SPEC §14): migrations, `$VAR`, refusals by path."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from app.config import RoutingBudgetConfig, config_from_dict, load_config
from app.config.check import main as check_main
from app.errors import ConfigError

PLANO_CONFIGS = Path(__file__).resolve().parents[1] / "data" / "plano_configs"
KEYS = {"OPENAI_API_KEY": "sk-openai-test", "ANTHROPIC_API_KEY": "sk-ant-test"}


def load(name: str):
    return load_config(PLANO_CONFIGS / name, environ=KEYS)


def problems_of(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(raw, environ={})
    return caught.value.problems


def test_v030_per_provider_routes_are_migrated_with_one_warning():
    config = load("preference_based_routing.yaml")
    assert [(r.name, r.models) for r in config.routing_preferences] == [
        ("code understanding", ("openai/gpt-4o",)),
        ("code generation", ("anthropic/claude-sonnet-4-6",))]
    assert len(config.warnings) == 1 and "v0.3.0" in config.warnings[0]
    assert config.endpoint("anthropic/claude-sonnet-4-6").interface == "anthropic"


def test_route_named_by_several_providers_gets_them_all_in_declaration_order():
    config = config_from_dict({"model_providers": [
        {"model": "openai/a", "routing_preferences": [{"name": "r", "description": "d"}]},
        {"model": "openai/b"},
        {"model": "openai/c", "routing_preferences": [{"name": "r", "description": "d"}]}]},
        environ={})
    assert [(r.name, r.models) for r in config.routing_preferences] == [
        ("r", ("openai/a", "openai/c"))]


def test_v040_ranked_models_load_unchanged():
    config = load("model_routing_service.yaml")
    assert config.routes_by_name["code_generation"].models == (
        "anthropic/claude-sonnet-4-6", "openai/gpt-4o")
    assert config.warnings == ()


def test_claude_code_router_config_resolves_bare_alias_and_host_only_ollama():
    config = load("claude_code_router.yaml")
    assert config.model_aliases["arch.claude.code.small.fast"] == "anthropic/claude-haiku-4-5"
    assert config.endpoint("ollama/llama3.1").url("/chat/completions") == \
        "http://localhost:11434/v1/chat/completions"
    assert config.routing.route_on_user_only is True
    assert config.default_endpoint.name == "anthropic/claude-sonnet-4-6"


def test_dollar_var_is_expanded_as_a_whole_value_and_inside_a_string():
    config = load("model_routing_service.yaml")
    assert config.endpoint("openai/gpt-4o").access_key == "sk-openai-test"
    raw = {"model_providers": [{"model": "openai/m", "base_url": "http://$HOST:8000/v1"}]}
    assert config_from_dict(raw, environ={"HOST": "example.internal"}).endpoint(
        "openai/m").base_url == "http://example.internal:8000/v1"


def test_routing_budget_loads_with_plano_keys_and_turns_turn_level_routing_on():
    config = load("routing_budget.yaml")
    # model_metrics_sources (type: cost) is served from the price table (SPEC §19);
    # routing.routing_budget (SPEC §20) as Plano's demo writes it, defaults filled in.
    assert config.routing.routing_budget == RoutingBudgetConfig(
        max_switch_spend_pct=20, replenish_on_rebind=True, cache_read_discount=0.1,
        record_counterfactual=True)
    assert config.routing.turn_routing and not config.routing.route_on_user_only


@pytest.mark.parametrize("block, problem", [
    ({}, "routing.routing_budget.max_switch_spend_pct"),
    ({"max_switch_spend_pct": 101}, "routing.routing_budget.max_switch_spend_pct"),
    ({"max_switch_spend_pct": -1}, "routing.routing_budget.max_switch_spend_pct"),
    ({"max_switch_spend_pct": 20, "cache_read_discount": 1.5},
     "routing.routing_budget.cache_read_discount"),
    ({"max_switch_spend_pct": 20, "max_switch_spend": 3},
     "routing.routing_budget.max_switch_spend"),
])
def test_routing_budget_is_checked_against_plano_bounds(block, problem):
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"model_providers": [{"model": "openai/gpt-4o", "access_key": "k"}],
                          "routing": {"routing_budget": block}})
    assert any(line.startswith(problem) for line in caught.value.problems), \
        caught.value.problems


def test_cost_metrics_source_and_prompt_caching_start_with_one_warning():
    config = config_from_dict({
        "model_providers": [{"model": "openai/gpt-4o", "access_key": "k"}],
        "model_metrics_sources": [{"type": "cost", "provider": "models.dev",
                                   "refresh_interval": 86400}],
        "prompt_caching": {"enabled": True, "min_prefix_tokens": 2048}})
    assert config.prompt_caching.enabled and config.prompt_caching.min_prefix_tokens == 2048
    assert config.prompt_caching.prompt_cache_key and config.prompt_caching.inject_cache_control
    assert [w for w in config.warnings if w.startswith("model_metrics_sources:")]


def test_a_metrics_source_other_than_cost_is_refused_by_path():
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"model_providers": [{"model": "openai/gpt-4o", "access_key": "k"}],
                          "model_metrics_sources": [{"type": "latency"}]})
    assert caught.value.problems == [
        "model_metrics_sources.0.type: 'latency' not supported by this gateway (only 'cost')"]


def test_llm_providers_and_v01_listener_map_are_accepted():
    config = config_from_dict({
        "version": "v0.1",
        "listeners": {"egress_traffic": {"address": "0.0.0.0", "port": 12001,
                                         "message_format": "openai", "timeout": "10s"}},
        "llm_providers": [{"model": "openai/gpt-4o", "default": True}]}, environ={})
    listener = config.model_listener
    assert (listener.port, listener.timeout_seconds) == (12001, 10.0)
    assert config.default_endpoint.name == "openai/gpt-4o"


def test_llm_providers_and_model_providers_together_are_refused():
    found = problems_of({"llm_providers": [{"model": "openai/a"}],
                         "model_providers": [{"model": "openai/b"}]})
    assert found[0].startswith("llm_providers: give either llm_providers")


def test_plano_features_outside_the_gateway_are_refused_by_dotted_path():
    found = problems_of({
        "model_providers": [{"model": "openai/a", "http_host": "x"}],
        "prompt_targets": [], "agents": [], "endpoints": {}, "prompt_guards": {},
        "ratelimits": [], "state_storage": {"type": "memory"},
        "listeners": [{"name": "l", "type": "model", "router": "plano_orchestrator_v1"},
                      {"name": "p", "type": "prompt"}],
        "overrides": {"optimize_context_window": True},
        "tracing": {"opentracing_grpc_endpoint": "http://x:4317", "trace_arch_internal": True}})
    assert found == sorted([
        "agents: not supported by this gateway",
        "endpoints: not supported by this gateway",
        "listeners.0.router: not supported by this gateway",
        "listeners.1.type: 'prompt' listeners are not supported by this gateway",
        "model_providers.0.http_host: not supported by this gateway",
        "overrides.optimize_context_window: not supported by this gateway",
        "prompt_guards: not supported by this gateway",
        "prompt_targets: not supported by this gateway",
        "ratelimits: not supported by this gateway",
        "state_storage: not supported by this gateway",
        "tracing.opentracing_grpc_endpoint: not supported by this gateway"])


def test_overrides_llm_routing_model_names_the_routing_model():
    config = config_from_dict({
        "model_providers": [{"model": "openai/gpt-4o-mini"}, {"model": "plano/Arch-Router",
                                                              "base_url": "http://r:8000"}],
        "overrides": {"llm_routing_model": "Arch-Router"}}, environ={})
    assert config.routing.model == "plano/Arch-Router"


def test_a_routing_model_that_names_no_configured_provider_is_refused_by_name():
    found = problems_of({"model_providers": [{"model": "openai/gpt-4o-mini"}],
                         "overrides": {"llm_routing_model": "Plano-Orchestrator"}})
    assert found == ["routing.model: routing model 'Plano-Orchestrator' names no configured "
                     "model (add it to model_providers)"]


def test_ambiguous_bare_alias_target_is_refused():
    found = problems_of({"model_providers": [{"model": "openai/same"},
                                             {"model": "groq/same"}],
                         "model_aliases": {"fast": {"target": "same"}}})
    assert found == ["model_aliases.fast.target: ambiguous model 'same': openai/same, "
                     "groq/same"]


def test_listener_max_retries_is_read():
    config = config_from_dict({"listeners": [{"name": "l", "type": "model",
                                              "max_retries": 2}],
                               "model_providers": [{"model": "openai/a"}]}, environ={})
    assert config.model_listener.max_retries == 2


def test_check_prints_endpoints_and_key_sources_never_keys():
    out = io.StringIO()
    assert check_main(["--config", str(PLANO_CONFIGS / "model_routing_service.yaml")],
                      out=out, environ=KEYS) == 0
    text = out.getvalue()
    assert "POST https://api.anthropic.com/v1/messages" in text
    assert "key: env ANTHROPIC_API_KEY (set), sent as x-api-key" in text
    assert "sk-ant-test" not in text and "sk-openai-test" not in text


def test_check_lists_every_problem_and_fails(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text((PLANO_CONFIGS / "routing_budget.yaml").read_text().replace(
        "max_switch_spend_pct: 20", "max_switch_spend_pct: 150") + "\nagents: []\n")
    out = io.StringIO()
    assert check_main(["--config", str(config)], out=out, environ={}) == 1
    assert "agents: not supported by this gateway" in out.getvalue()
    assert "routing.routing_budget.max_switch_spend_pct" in out.getvalue()
