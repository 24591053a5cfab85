"""Accept what real clients send on ``/v1/messages`` (SPEC §18): system messages inside
``messages``, newer roles, block types and fields; refusals in Anthropic's own wording."""

from __future__ import annotations

import json

import pytest

from app import create_app
from app.client_apis import messages as messages_api
from app.config import config_from_dict
from app.conversation import UntranslatableError
from app.pipeline.plan import Target, plan_call
from app.router.base import latest_user_text
from app.session_cache.memory import MemorySessionCache
from tests.support.agent_requests import CLAUDE_CODE_OPENAI, captured
from tests.support.configs import make_config_dict
from tests.support.fake_provider import fake_providers

ANTHROPIC = Target("anthropic/claude-sonnet-4-6", "claude-sonnet-4-6", "anthropic",
                   "anthropic")
OPENAI = Target("openai/gpt-5.2", "gpt-5.2", "openai", "openai")


def body_of(call) -> dict:
    return json.loads(call.body)


def with_system_message(**extra) -> dict:
    return {"model": "x", "max_tokens": 64, "system": "You are Claude Code.", "messages": [
        {"role": "user", "content": "Fix the failing test"},
        {"role": "system", "content": [{"type": "text", "text": "# Environment\ncwd: /w"}]},
        {"role": "assistant", "content": "Looking."},
        {"role": "system", "content": "Tools changed: Bash is gone."},
        {"role": "user", "content": "go on"}], **extra}


def test_system_messages_reach_chat_upstreams_at_their_place():
    body = with_system_message()
    messages_api.validate(body)
    call = plan_call("messages", body, OPENAI)
    assert [(m["role"], m["content"]) for m in body_of(call)["messages"]] == [
        ("system", "You are Claude Code."), ("user", "Fix the failing test"),
        ("system", "# Environment\ncwd: /w"), ("assistant", "Looking."),
        ("system", "Tools changed: Bash is gone."), ("user", "go on")]
    assert call.dropped == []


def test_anthropic_upstreams_get_the_body_as_sent():
    body = with_system_message(speculative_field={"a": 1})
    body["messages"].append({"role": "critic", "content": [{"type": "hologram", "x": 1}]})
    messages_api.validate(body)
    call = plan_call("messages", body, ANTHROPIC)
    assert call.passthrough
    assert body_of(call) == {**body, "model": "claude-sonnet-4-6"}


def test_newer_roles_blocks_and_fields_are_dropped_and_listed_when_translated():
    body = with_system_message(speculative_field=True, **{"bad\r\nname": 1})
    body["messages"][0]["content"] = [{"type": "text", "text": "Fix it"},
                                      {"type": "hologram", "data": "..."}]
    body["messages"].insert(2, {"role": "critic", "content": "nope"})
    messages_api.validate(body)
    call = plan_call("messages", body, OPENAI)
    assert call.dropped == ["hologram", "role:critic", "speculative_field", "unknown"]
    sent = body_of(call)["messages"]
    assert sent[1] == {"role": "user", "content": "Fix it"}
    assert all(m["content"] != "nope" for m in sent)


def test_non_text_content_of_a_system_message_is_dropped_and_listed():
    body = with_system_message()
    body["messages"][1]["content"].append({"type": "image", "source": {
        "type": "url", "url": "https://x.test/a.png"}})
    call = plan_call("messages", body, OPENAI)
    assert call.dropped == ["system_message_non_text"]
    assert body_of(call)["messages"][2] == {"role": "system", "content": "# Environment\ncwd: /w"}


def test_content_that_cannot_be_carried_is_still_refused():
    body = with_system_message()
    body["messages"][0]["content"] = [{"type": "document", "source": {
        "type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}]
    with pytest.raises(UntranslatableError, match="'document'"):
        plan_call("messages", body, OPENAI)
    body["messages"][0]["content"] = [{"type": "web_search_tool_result", "content": []}]
    with pytest.raises(UntranslatableError, match="web_search_tool_result"):
        plan_call("messages", body, OPENAI)


def test_routers_never_take_a_system_message_for_user_text():
    body = {"max_tokens": 8, "messages": [
        {"role": "user", "content": "hi"},
        {"role": "system", "content": "Explain quantum entanglement in detail."}]}
    assert latest_user_text(messages_api.router_messages(body)) == "hi"


# --------------------------------------------------------------------------- through the app

@pytest.fixture
def client_and_providers():
    config = config_from_dict(make_config_dict())
    providers = fake_providers(config)
    app = create_app(config, session_cache=MemorySessionCache(100), providers=providers)
    return app.test_client(), providers


def test_claude_codes_request_with_a_system_message_is_served(client_and_providers):
    client, providers = client_and_providers
    record = captured(CLAUDE_CODE_OPENAI)[0]
    body = dict(record["body"], stream=False)
    answer = client.post("/v1/messages?beta=true", json=body, headers={
        "anthropic-beta": record["headers"]["anthropic-beta"]})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json()["type"] == "message"
    sent = providers["openai/gpt-4o-mini"].sent[-1]["body"]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "system"]
    assert sent[2]["content"].startswith("# Environment")
    dropped = answer.headers["x-plano-dropped"].split(",")
    assert {"metadata", "thinking", "context_management", "output_config",
            "cache_control"} <= set(dropped)


@pytest.mark.parametrize("body, message", [
    ({"messages": [{"role": "user", "content": "x"}]}, "max_tokens: Field required"),
    ({"max_tokens": "5", "messages": [{"role": "user", "content": "x"}]},
     "max_tokens: Input should be a valid integer"),
    ({"max_tokens": 0, "messages": [{"role": "user", "content": "x"}]},
     "max_tokens: Input should be greater than or equal to 1"),
    ({"max_tokens": 5}, "messages: Field required"),
    ({"max_tokens": 5, "messages": {}}, "messages: Input should be a valid list"),
    ({"max_tokens": 5, "messages": []}, "messages: at least one message is required"),
    ({"max_tokens": 5, "messages": [{"content": "x"}]}, "messages.0.role: Field required"),
    ({"max_tokens": 5, "messages": [{"role": 3, "content": "x"}]},
     "messages.0.role: Input should be a valid string"),
    ({"max_tokens": 5, "messages": ["x"]},
     "messages.0: Input should be a valid dictionary or object to extract fields from"),
    ({"max_tokens": 5, "model": 7, "messages": [{"role": "user", "content": "x"}]},
     "model: Input should be a valid string"),
    ({"max_tokens": 5, "stream": "yes", "messages": [{"role": "user", "content": "x"}]},
     "stream: Input should be a valid boolean"),
])
def test_refusals_use_anthropics_wording(client_and_providers, body, message):
    client, _ = client_and_providers
    answer = client.post("/v1/messages", json=body)
    assert answer.status_code == 400
    assert answer.get_json() == {"type": "error", "error": {
        "type": "invalid_request_error", "message": message, "code": "invalid_request"}}


def test_a_body_over_the_limit_is_refused_in_anthropics_words():
    config = config_from_dict(make_config_dict(server={"max_body_bytes": 1024}))
    client = create_app(config, session_cache=MemorySessionCache(10)).test_client()
    answer = client.post("/v1/messages", data=b"x" * 2048, content_type="application/json")
    assert answer.status_code == 413
    assert answer.get_json()["error"] == {"type": "request_too_large",
                                          "message": "Request exceeds the maximum size",
                                          "code": "request_too_large"}
