"""Config rules: validation, every problem listed with its dotted path, env expansion."""

from __future__ import annotations

import pytest

from app.config import config_from_dict, expand_env, load_config
from app.config.schema import parse_duration
from app.errors import ConfigError
from tests.support.configs import make_config_dict


def problems_of(raw: dict, environ=None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(raw, environ=environ or {})
    return caught.value.problems


def test_base_config_is_valid_and_precomputes_lookups(config):
    assert config.default_endpoint.name == "openai/gpt-4o-mini"
    assert config.endpoints_by_name["openai/gpt-5.2"].model_id == "gpt-5.2"
    assert config.resolve_model("fast-model").name == "openai/gpt-4o-mini"
    assert config.resolve_model("nope") is None
    assert config.model_listener.timeout_seconds == 5.0


def test_config_is_immutable(config):
    with pytest.raises(AttributeError):
        config.routing = None
    with pytest.raises(TypeError):
        config.model_aliases["x"] = "y"


def test_unknown_keys_are_reported_with_their_path():
    raw = make_config_dict(routing={"session_cache": {"typo": 1}}, extra_section={})
    assert problems_of(raw) == ["extra_section: Unknown field.",
                                "routing.session_cache.typo: Unknown field."]


def test_every_problem_is_reported_at_once():
    raw = make_config_dict(
        model_aliases={"a": {"target": "openai/missing"}},
        routing_preferences=[{"name": "r", "description": "d", "models": ["x/unknown"]}],
        routing={"session_ttl_seconds": 0, "session_cache": {"type": "redis"}},
        server={"max_body_bytes": "lots"})
    found = problems_of(raw)
    assert "model_aliases.a.target: unknown model 'openai/missing'" in found
    assert "routing_preferences.0.models.0: unknown model 'x/unknown'" in found
    assert any(p.startswith("routing.session_ttl_seconds:") for p in found)
    assert any(p.startswith("server.max_body_bytes:") for p in found)


def test_redis_cache_needs_a_url_with_a_redis_scheme():
    assert problems_of(make_config_dict(routing={"session_cache": {"type": "redis"}})) == [
        "routing.session_cache.url: required when type is redis"]
    found = problems_of(make_config_dict(
        routing={"session_cache": {"type": "redis", "url": "http://localhost"}}))
    assert found == ["routing.session_cache.url: must start with redis://, rediss:// or unix://"]


def test_sentinel_mode_needs_sentinels_and_master_name():
    found = problems_of(make_config_dict(
        routing={"session_cache": {"type": "redis", "mode": "sentinel"}}))
    assert found == ["routing.session_cache.sentinels: required when mode is sentinel"]
    found = problems_of(make_config_dict(routing={"session_cache": {
        "type": "redis", "mode": "sentinel", "sentinels": ["h1:26379"]}}))
    assert found == ["routing.session_cache.master_name: required when mode is sentinel"]


def test_provider_model_must_name_provider_and_id_and_unknown_vendor_needs_an_interface():
    raw = make_config_dict(model_providers=[
        {"model": "gpt-4o"}, {"model": "local/llama"},
        {"model": "vllm/m", "provider_interface": "openai"}])
    raw["routing_preferences"], raw["model_aliases"] = [], {}
    found = problems_of(raw)
    assert "model_providers.0.model: must be '<provider>/<model id>' or '<provider>/*'" in found
    assert ("model_providers.1.provider_interface: required for provider 'local', which is "
            "not in the catalogue (openai or anthropic, with a base_url)") in found
    assert "model_providers.2.base_url: required for provider 'vllm'" in found


def test_at_most_one_default_endpoint():
    raw = make_config_dict(model_providers=[
        {"model": "openai/a", "default": True}, {"model": "openai/b", "default": True}])
    assert "model_providers: at most one provider may be the default" in problems_of(raw)


def test_first_provider_is_default_when_none_is_marked():
    raw = make_config_dict(model_providers=[{"model": "openai/a"}, {"model": "openai/b"}])
    raw["routing_preferences"], raw["model_aliases"] = [], {}
    assert config_from_dict(raw).default_endpoint.name == "openai/a"


def test_routing_model_must_be_a_configured_provider():
    found = problems_of(make_config_dict(routing={"model": "openai/router"}))
    assert found == ["routing.model: routing model 'openai/router' names no configured model "
                     "(add it to model_providers)"]


def test_route_name_other_is_reserved():
    raw = make_config_dict(routing_preferences=[
        {"name": "other", "description": "d", "models": ["openai/gpt-5.2"]}])
    assert problems_of(raw) == [
        "routing_preferences.0.name: 'other' is reserved for 'no match'"]


def test_env_expansion_with_defaults_and_unset_secret_means_absent():
    raw = make_config_dict(
        model_providers=[{"model": "openai/a", "access_key": "${KEY}", "default": True}],
        routing={"session_ttl_seconds": "${TTL:-42}",
                 "session_cache": {"type": "${CACHE:-memory}"}})
    raw["routing_preferences"], raw["model_aliases"] = [], {}
    config = config_from_dict(raw, environ={})
    assert config.model_providers[0].access_key is None
    assert config.routing.session_ttl_seconds == 42
    config = config_from_dict(raw, environ={"KEY": "sk-x", "TTL": "7", "CACHE": "memory"})
    assert config.model_providers[0].access_key == "sk-x"
    assert config.routing.session_ttl_seconds == 7


def test_expand_env_substitutes_inside_strings_and_lists():
    assert expand_env({"a": ["x-${A}-${B:-b}"]}, {"A": "1"}) == {"a": ["x-1-b"]}


def test_secrets_do_not_appear_in_repr(config):
    assert "sk-test-secret-key" not in repr(config)


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("500ms", 0.5), ("2m", 120), (5, 5)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-1s", "0", True])
def test_bad_durations_are_rejected(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_load_config_reports_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "missing.yaml")
    assert caught.value.problems[0].startswith("(file): cannot read")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_providers: [\n")
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    assert caught.value.problems[0].startswith("(yaml): not valid YAML at line")


def test_shipped_configs_are_valid():
    online = load_config("config/config.yaml", environ={})
    offline = load_config("config/offline.yaml", environ={})
    assert [p.name for p in online.model_providers] == [p.name for p in offline.model_providers]
    assert online.routing.model == "openai/gpt-4o-mini" and offline.routing.model is None
    assert [r.name for r in offline.routing_preferences] == ["deep_reasoning", "fast_responses",
                                                             "code_generation"]
    claude = offline.endpoints_by_name["anthropic/claude-sonnet-4-6"]
    assert claude.interface == "anthropic" and claude.max_tokens == 4096
    assert offline.resolve_model("claude-sonnet-4-6") is claude   # bare id, as Claude Code
    assert online.endpoints_by_name["openai/gpt-5.2"].responses_native


def test_plano_config_env_var_chooses_the_file(tmp_path):
    chosen = load_config(environ={"PLANO_CONFIG": "config/offline.yaml"})
    assert chosen.routing.model is None
