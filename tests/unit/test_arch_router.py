"""The LLM router (SPEC §5): prompt, request, answer repair, and the call's failure modes."""

from __future__ import annotations

import json
import re

import pytest

from app.config import RouteConfig
from app.errors import RouterError, UpstreamConnectionError, UpstreamError, UpstreamTimeoutError
from app.router.arch import (
    ArchRouter,
    build_routing_prompt,
    build_routing_request,
    parse_route_answer,
    routes_json,
)
from devkit.configs import ROUTES

DEEP = RouteConfig(ROUTES[0]["name"], ROUTES[0]["description"], tuple(ROUTES[0]["models"]))
FAST = RouteConfig(ROUTES[1]["name"], ROUTES[1]["description"], tuple(ROUTES[1]["models"]),
                   keywords=("hi",))
ROUTES = (DEEP, FAST)
NAMES = ("deep_reasoning", "fast_responses")


def user(content):
    return {"role": "user", "content": content}


def assistant(content):
    return {"role": "assistant", "content": content}


def section(prompt, tag):
    match = re.search(rf"<{tag}>\n(.*?)\n</{tag}>", prompt, re.DOTALL)
    assert match, f"no <{tag}> section"
    return match.group(1)


def conversation(prompt):
    return json.loads(section(prompt, "conversation"))


def answer(content):
    return {"id": "x", "choices": [{"index": 0,
                                    "message": {"role": "assistant", "content": content}}]}


class FakeClient:
    """Records calls; answers with ``response`` or raises ``error``."""

    def __init__(self, response=None, error=None):
        self.response = response
        self.error = error
        self.calls = []

    def complete_json(self, payload, *, timeout, headers=None):
        self.calls.append({"payload": payload, "timeout": timeout, "headers": headers})
        if self.error is not None:
            raise self.error
        return self.response


def make_router(client, timeout=5.0):
    return ArchRouter(ROUTES, client, "Arch-Router", timeout)


# --------------------------------------------------------------------------- prompt

def test_routes_are_a_compact_json_array_of_name_and_description():
    prompt = build_routing_prompt(ROUTES, [user("hi")])
    text = section(prompt, "routes")
    assert text == routes_json(ROUTES)
    assert ": " not in text.replace(DEEP.description, "").replace(FAST.description, "")
    assert json.loads(text) == [{"name": r.name, "description": r.description}
                                for r in ROUTES]


def test_conversation_is_compact_json_of_role_and_content():
    prompt = build_routing_prompt(ROUTES, [user("hi"), assistant("Hello!"), user("poem")])
    text = section(prompt, "conversation")
    assert text == '[{"role":"user","content":"hi"},{"role":"assistant","content":"Hello!"},' \
                   '{"role":"user","content":"poem"}]'


def test_prompt_states_task_and_answer_format():
    prompt = build_routing_prompt(ROUTES, [user("hi")])
    assert prompt.startswith("You are a helpful assistant designed to find the best suited "
                             "route.")
    assert '{"route": "<name>"}' in prompt
    assert '{"route": "other"}' in prompt
    assert prompt.index("</routes>") < prompt.index("<conversation>")
    assert prompt.index("</conversation>") < prompt.index("Follow these instructions")


def test_system_developer_and_tool_messages_are_dropped():
    messages = [{"role": "system", "content": "be terse"},
                {"role": "developer", "content": "dev rules"},
                user("weather in Paris?"),
                {"role": "assistant", "content": None,
                 "tool_calls": [{"id": "c1", "type": "function",
                                 "function": {"name": "weather", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
                assistant("It is sunny."),
                user("thanks")]
    assert conversation(build_routing_prompt(ROUTES, messages)) == [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": "It is sunny."},
        {"role": "user", "content": "thanks"}]


def test_content_parts_are_flattened_to_text():
    content = [{"type": "text", "text": "describe"},
               {"type": "image_url", "image_url": {"url": "data:..."}},
               {"type": "text", "text": "this image"}]
    assert conversation(build_routing_prompt(ROUTES, [user(content)])) == [
        {"role": "user", "content": "describe\nthis image"}]


def test_newest_messages_are_kept_and_oldest_dropped_within_budget():
    messages = [user("a" * 40), assistant("b" * 40), user("c" * 40), assistant("d" * 40),
                user("e" * 40)]  # 10 estimated tokens each
    kept = conversation(build_routing_prompt(ROUTES, messages, token_budget=30))
    assert [turn["content"][0] for turn in kept] == ["c", "d", "e"]


def test_a_message_that_does_not_fit_drops_everything_older():
    messages = [user("a" * 4), assistant("b" * 400), user("c" * 40)]
    kept = conversation(build_routing_prompt(ROUTES, messages, token_budget=30))
    assert kept == [{"role": "user", "content": "c" * 40}]


def test_token_estimate_rounds_up():
    # 41 chars -> 11 tokens; with 10 for the newest, 21 exceeds a budget of 20.
    messages = [user("a" * 41), user("b" * 40)]
    kept = conversation(build_routing_prompt(ROUTES, messages, token_budget=20))
    assert kept == [{"role": "user", "content": "b" * 40}]


def test_oversized_newest_user_message_is_kept_truncated_to_budget():
    messages = [user("old question"), user("x" * 1000)]
    kept = conversation(build_routing_prompt(ROUTES, messages, token_budget=10))
    assert kept == [{"role": "user", "content": "x" * 40}]


def test_newest_user_message_is_kept_even_after_a_long_assistant_turn():
    messages = [user("question"), assistant("y" * 1000)]
    kept = conversation(build_routing_prompt(ROUTES, messages, token_budget=10))
    assert kept == [{"role": "user", "content": "question"}]


def test_default_budget_is_about_2048_tokens():
    messages = [user("o" * 5000), user("n" * 5000), user("latest")]  # 1250 tokens each
    kept = conversation(build_routing_prompt(ROUTES, messages))
    assert [turn["content"][0] for turn in kept] == ["n", "l"]


def test_non_ascii_text_is_kept_readable():
    prompt = build_routing_prompt(ROUTES, [user("Erkläre die Gleichungen")])
    assert "Erkläre" in prompt


def test_router_precomputes_the_same_prompt_as_the_pure_function():
    client = FakeClient(answer('{"route": "fast_responses"}'))
    messages = [user("hi")]
    make_router(client).select_route(messages)
    sent = client.calls[0]["payload"]["messages"][0]["content"]
    assert sent == build_routing_prompt(ROUTES, messages)


# --------------------------------------------------------------------------- request

def test_request_is_one_user_message_at_low_temperature():
    assert build_routing_request("PROMPT", "gpt-4o-mini") == {
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "PROMPT"}],
        "temperature": 0.01, "stream": False}


# --------------------------------------------------------------------------- parse

@pytest.mark.parametrize("text", [
    '{"route": "deep_reasoning"}',
    '  {"route":"deep_reasoning"}\n',
    '```json\n{"route": "deep_reasoning"}\n```',
    '```\n{"route": "deep_reasoning"}\n```',
    "{'route': 'deep_reasoning'}",
    '{"route": "deep_reasoning",}',
    'The best route is {"route": "deep_reasoning"} because it needs math.',
])
def test_answer_variants_are_parsed(text):
    assert parse_route_answer(text, NAMES) == "deep_reasoning"


def test_fenced_single_quoted_answer_is_parsed():
    assert parse_route_answer("```json\n{'route': 'fast_responses'}\n```", NAMES) \
        == "fast_responses"


def test_first_object_with_a_route_key_wins():
    text = 'Input {"name": "x"} gives {"route": "fast_responses"} then {"route": "other"}'
    assert parse_route_answer(text, NAMES) == "fast_responses"


@pytest.mark.parametrize("text", [
    '{"route": "other"}', "{'route': 'other'}", '{"route": ""}', '{"route": null}'])
def test_other_or_empty_route_is_no_match(text):
    assert parse_route_answer(text, NAMES) is None


def test_unknown_route_name_is_no_match():
    assert parse_route_answer('{"route": "creative_writing"}', NAMES) is None


@pytest.mark.parametrize("text", [
    "", "   ", "deep_reasoning", "I cannot decide.", '{"name": "deep_reasoning"}',
    "{route: deep_reasoning}", '{"route": 3}', "```json\n```"])
def test_garbage_answer_raises_router_error(text):
    with pytest.raises(RouterError):
        parse_route_answer(text, NAMES)


def test_garbage_quoted_in_error_is_truncated():
    with pytest.raises(RouterError) as caught:
        parse_route_answer("z" * 5000, NAMES)
    assert len(str(caught.value)) < 300


# --------------------------------------------------------------------------- ArchRouter

def test_router_returns_the_named_route():
    client = FakeClient(answer('{"route": "deep_reasoning"}'))
    assert make_router(client).select_route([user("prove it")]) is DEEP


def test_router_returns_none_for_other():
    client = FakeClient(answer('{"route": "other"}'))
    assert make_router(client).select_route([user("xyzzy")]) is None


def test_router_sends_the_routing_request_once_with_its_timeout():
    client = FakeClient(answer('{"route": "fast_responses"}'))
    make_router(client, timeout=1.5).select_route([user("hi")])
    assert len(client.calls) == 1
    call = client.calls[0]
    assert call["timeout"] == 1.5
    assert call["payload"]["model"] == "Arch-Router"
    assert call["payload"]["temperature"] == 0.01
    assert call["payload"]["stream"] is False


def test_router_passes_no_headers_when_none_given():
    client = FakeClient(answer('{"route": "fast_responses"}'))
    make_router(client).select_route([user("hi")])
    assert client.calls[0]["headers"] is None


@pytest.mark.parametrize("error", [
    UpstreamTimeoutError("provider openai/gpt-4o-mini timed out"),
    UpstreamConnectionError("provider openai/gpt-4o-mini could not be reached"),
    UpstreamError("provider openai/gpt-4o-mini answered HTTP 500", status=502),
])
def test_upstream_failure_becomes_router_error_without_retry(error):
    client = FakeClient(error=error)
    with pytest.raises(RouterError) as caught:
        make_router(client).select_route([user("hi")])
    assert len(client.calls) == 1
    assert caught.value.__cause__ is error


def test_upstream_timeout_becomes_router_error():
    client = FakeClient(error=UpstreamTimeoutError("provider x timed out"))
    with pytest.raises(RouterError, match="upstream_timeout"):
        make_router(client).select_route([user("hi")])


def test_long_upstream_message_is_truncated_in_router_error():
    client = FakeClient(error=UpstreamError("e" * 5000))
    with pytest.raises(RouterError) as caught:
        make_router(client).select_route([user("hi")])
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize("response", [
    {}, {"choices": []}, {"choices": None}, {"choices": [{}]},
    {"choices": [{"message": None}]}, {"choices": [{"message": {"content": None}}]},
    {"choices": [{"message": {"content": ["a"]}}]}, [], "text",
])
def test_response_without_text_choice_becomes_router_error(response):
    with pytest.raises(RouterError):
        make_router(FakeClient(response)).select_route([user("hi")])


def test_garbage_content_becomes_router_error():
    client = FakeClient(answer("I think the second one, probably."))
    with pytest.raises(RouterError):
        make_router(client).select_route([user("hi")])


def test_unknown_route_in_answer_is_no_match():
    client = FakeClient(answer('{"route": "image_generation"}'))
    assert make_router(client).select_route([user("draw a cat")]) is None


def test_router_kind_is_llm():
    assert make_router(FakeClient()).kind == "llm"
