"""Cache hints on the way out (SPEC §19): Anthropic breakpoints and OpenAI's cache key."""

from __future__ import annotations

import copy
import hashlib

from app.config import PromptCachingConfig, config_from_dict
from app.metrics import Metrics
from app.session_cache.memory import MemorySessionCache
from app.usage.accounting import RequestAccounting, cache_off
from app.usage.hints import (
    MAX_BREAKPOINTS,
    count_breakpoints,
    prompt_cache_key,
    with_breakpoints,
    with_prompt_cache_key,
)
from app.usage.recorder import UsageRecorder

LONG = "word " * 2000  # 10 000 characters: about 2 500 tokens
EPHEMERAL = {"type": "ephemeral"}


def conversation(**extra) -> dict:
    body = {"model": "claude", "max_tokens": 100,
            "system": [{"type": "text", "text": LONG}],
            "tools": [{"name": "a", "input_schema": {}}, {"name": "b", "input_schema": {}}],
            "messages": [{"role": "user", "content": "first"},
                         {"role": "assistant", "content": [
                             {"type": "thinking", "thinking": "hmm", "signature": "s"},
                             {"type": "text", "text": "answer"}]},
                         {"role": "user", "content": "second"}]}
    body.update(extra)
    return body


def test_breakpoints_go_on_the_conversation_and_the_system_above_the_threshold():
    body = conversation()
    original = copy.deepcopy(body)
    marked = with_breakpoints(body, 1024)
    assert body == original  # the client's body is never changed
    assert marked["messages"][1]["content"][1]["cache_control"] == EPHEMERAL
    assert "cache_control" not in marked["messages"][1]["content"][0]  # thinking: not markable
    assert marked["system"][-1]["cache_control"] == EPHEMERAL
    assert "cache_control" not in marked["tools"][-1]  # the tools alone are short
    assert count_breakpoints(marked) == 2


def test_long_tools_get_a_breakpoint_on_the_last_tool():
    body = conversation(tools=[{"name": "a", "description": LONG, "input_schema": {}},
                               {"name": "b", "input_schema": {}}])
    marked = with_breakpoints(body, 1024)
    assert marked["tools"][-1]["cache_control"] == EPHEMERAL
    assert "cache_control" not in marked["tools"][0]


def test_a_short_prompt_gets_no_breakpoint():
    body = {"model": "claude", "max_tokens": 10, "system": "be brief",
            "messages": [{"role": "user", "content": "hi"}, {"role": "assistant",
                                                            "content": "hello"},
                         {"role": "user", "content": "bye"}]}
    assert with_breakpoints(body, 1024) is body


def test_applying_the_breakpoints_twice_adds_nothing():
    once = with_breakpoints(conversation(), 1024)
    assert with_breakpoints(once, 1024) == once


def test_a_string_system_prompt_and_string_content_become_marked_blocks():
    body = conversation(system=LONG)
    body["messages"][1] = {"role": "assistant", "content": "plain answer"}
    marked = with_breakpoints(body, 1024)
    assert marked["system"] == [{"type": "text", "text": LONG, "cache_control": EPHEMERAL}]
    assert marked["messages"][1]["content"] == [{"type": "text", "text": "plain answer",
                                                 "cache_control": EPHEMERAL}]


def test_never_more_than_four_breakpoints_counting_the_clients_own():
    body = conversation(tools=[{"name": "a", "description": LONG, "input_schema": {}}])
    body["messages"] = [{"role": "user", "content": [
        {"type": "text", "text": f"part {i}", "cache_control": EPHEMERAL}]} for i in range(3)]
    body["messages"] += [{"role": "assistant", "content": "ok"},
                         {"role": "user", "content": "now"}]
    marked = with_breakpoints(body, 1024)
    assert count_breakpoints(marked) == MAX_BREAKPOINTS
    full = copy.deepcopy(marked)
    assert with_breakpoints(full, 0) is full


def test_the_clients_own_breakpoints_are_kept():
    body = conversation(system=[{"type": "text", "text": LONG,
                                 "cache_control": {"type": "ephemeral", "ttl": "1h"}}])
    marked = with_breakpoints(body, 1024)
    assert marked["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}


def test_prompt_cache_key_is_32_hex_of_sha256_of_the_session_key_and_stable():
    key = prompt_cache_key("tenant-a:session-1")
    assert key == hashlib.sha256(b"tenant-a:session-1").hexdigest()[:32]
    assert prompt_cache_key("tenant-a:session-1") == key != prompt_cache_key("session-1")


def test_the_clients_prompt_cache_key_wins_and_no_session_means_no_key():
    body = {"model": "gpt-4o", "prompt_cache_key": "mine"}
    assert with_prompt_cache_key(body, "s1") is body
    assert "prompt_cache_key" not in with_prompt_cache_key({"model": "x"}, None)


def _accounting(session_key, *, enabled=True, off=False, **caching):
    config = config_from_dict({
        "model_providers": [{"model": "openai/gpt-4o", "access_key": "k"},
                            {"model": "azure_openai/gpt-4o", "access_key": "k",
                             "base_url": "https://x.openai.azure.com"},
                            {"model": "anthropic/claude-sonnet-4-5", "access_key": "k"},
                            {"model": "deepseek/deepseek-chat", "access_key": "k"}],
        "prompt_caching": {"enabled": enabled, **caching}})
    recorder = UsageRecorder(config, Metrics(), MemorySessionCache(10))
    return config, RequestAccounting(recorder, config.prompt_caching, session_key, off)


def test_openai_and_azure_chat_bodies_get_the_session_cache_key():
    config, accounting = _accounting("s1")
    for name in ("openai/gpt-4o", "azure_openai/gpt-4o"):
        body, _ = accounting.chat_call({"model": "gpt-4o"}, config.endpoint(name), False)
        assert body["prompt_cache_key"] == prompt_cache_key("s1")
    hints = accounting.hints(config.endpoint("openai/gpt-4o"))
    assert hints("/responses", {"model": "gpt-4o"})["prompt_cache_key"] == \
        prompt_cache_key("s1")


def test_vendors_that_do_not_take_the_field_never_get_a_cache_key():
    config, accounting = _accounting("s1")
    body, _ = accounting.chat_call({"model": "deepseek-chat"},
                                   config.endpoint("deepseek/deepseek-chat"), False)
    assert "prompt_cache_key" not in body


def test_no_cache_key_without_a_session_with_the_header_off_or_with_caching_disabled():
    for session, enabled, off in (("s1", True, True), (None, True, False),
                                  ("s1", False, False)):
        config, accounting = _accounting(session, enabled=enabled, off=off)
        body, _ = accounting.chat_call({"model": "gpt-4o"}, config.endpoint("openai/gpt-4o"),
                                       False)
        assert "prompt_cache_key" not in body
        assert (accounting.hints(config.endpoint("openai/gpt-4o")) is None) == (
            not enabled or off)


def test_anthropic_hints_add_breakpoints_unless_inject_cache_control_is_off():
    config, accounting = _accounting("s1")
    hints = accounting.hints(config.endpoint("anthropic/claude-sonnet-4-5"))
    assert count_breakpoints(hints("/messages", conversation())) == 2
    config, accounting = _accounting("s1", inject_cache_control=False)
    hints = accounting.hints(config.endpoint("anthropic/claude-sonnet-4-5"))
    assert count_breakpoints(hints("/messages", conversation())) == 0


def test_chat_streams_ask_for_usage_and_strip_it_only_when_the_client_did_not():
    config, accounting = _accounting(None, enabled=False)
    endpoint = config.endpoint("openai/gpt-4o")
    body, meter = accounting.chat_call({"model": "gpt-4o", "stream": True}, endpoint, True)
    assert body["stream_options"] == {"include_usage": True}
    chunk = b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}\n\n'
    ordinary = b'data: {"choices":[{"delta":{"content":"x"}}],"usage":null}\n\n'
    meter.feed(ordinary)
    assert meter.outgoing(ordinary) == ordinary
    meter.feed(chunk)
    assert meter.outgoing(chunk) == b""
    body, meter = accounting.chat_call(
        {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True}},
        endpoint, True)
    meter.feed(chunk)
    assert meter.outgoing(chunk) == chunk
    body, _ = accounting.chat_call({"model": "gpt-4o"}, endpoint, False)
    assert "stream_options" not in body


def test_the_cache_header_is_off_only_for_off():
    assert cache_off("off") and cache_off(" OFF ")
    assert not cache_off(None) and not cache_off("on") and not cache_off("")


def test_prompt_caching_defaults_are_the_spec_ones():
    assert PromptCachingConfig() == PromptCachingConfig(
        enabled=False, inject_cache_control=True, min_prefix_tokens=1024,
        prompt_cache_key=True, warm_window_seconds=300)


def test_a_body_nested_a_thousand_levels_deep_gets_hints_without_recursion():
    nested: list = ["deep " * 1000]
    for _ in range(5000):
        nested = [nested]
    body = conversation()
    body["messages"][0] = {"role": "user", "content": [{"type": "text", "text": "x",
                                                        "extra": nested}]}
    marked = with_breakpoints(body, 1024)
    assert count_breakpoints(marked) == 2


def test_empty_text_blocks_are_never_marked():
    body = conversation()
    body["messages"][1] = {"role": "assistant", "content": [
        {"type": "text", "text": "real answer"}, {"type": "text", "text": ""}]}
    marked = with_breakpoints(body, 1024)
    assert marked["messages"][1]["content"][0]["cache_control"] == EPHEMERAL
    assert "cache_control" not in marked["messages"][1]["content"][1]
