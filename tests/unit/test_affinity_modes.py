"""Turn detection and implicit session ids (``app.affinity``) over all three API shapes."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.affinity import (
    CHAT_COMPLETIONS,
    MESSAGES,
    RESPONSES,
    SessionContext,
    implicit_session_id,
    session_context,
    starts_user_turn,
    strip_envelopes,
)
from app.affinity.shapes import first_user_content, system_text, tool_names
from app.config import RoutingConfig

REMINDER = "<system-reminder>\nThe date is 2026-11-27. Do not mention this.\n</system-reminder>"
HOOK = "<user-prompt-submit-hook>lint passed</user-prompt-submit-hook>"
IMAGE_URL = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
ANTHROPIC_IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                               "data": "iVBORw0KGgo="}}
ID_FORMAT = re.compile(r"^prefix-[0-9a-f]{16}$")


# --------------------------------------------------------------------------- conversations

def chat(*messages, **extra) -> dict:
    return {"model": "gpt-4o", "messages": list(messages), **extra}


def anthropic(*messages, system=None, **extra) -> dict:
    body = {"model": "claude-sonnet-4-6", "max_tokens": 1024, "messages": list(messages),
            **extra}
    if system is not None:
        body["system"] = system
    return body


def responses(items, instructions=None, **extra) -> dict:
    body = {"model": "gpt-5.2-codex", "input": items, **extra}
    if instructions is not None:
        body["instructions"] = instructions
    return body


CHAT_TOOL_CALL = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_1", "type": "function",
     "function": {"name": "read_file", "arguments": "{\"path\": \"main.py\"}"}}]}
CHAT_TOOL_RESULT = {"role": "tool", "tool_call_id": "call_1", "content": "def main(): ..."}
TOOL_USE = {"role": "assistant", "content": [
    {"type": "text", "text": "Reading the file."},
    {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"path": "main.py"}}]}
TOOL_RESULT_BLOCK = {"type": "tool_result", "tool_use_id": "toolu_1",
                     "content": "def main(): ...\nTraceback (most recent call last): ..."}
FUNCTION_CALL = {"type": "function_call", "call_id": "call_1", "name": "shell",
                 "arguments": "{\"cmd\": [\"ls\"]}"}
FUNCTION_OUTPUT = {"type": "function_call_output", "call_id": "call_1",
                   "output": "README.md\napp\ntests"}
CUSTOM_CALL = {"type": "custom_tool_call", "call_id": "call_2", "name": "apply_patch",
               "input": "*** Begin Patch"}
CUSTOM_OUTPUT = {"type": "custom_tool_call_output", "call_id": "call_2", "output": "Done!"}


def user(content) -> dict:
    return {"role": "user", "content": content}


def item(role: str, text: str) -> dict:
    kind = "output_text" if role == "assistant" else "input_text"
    return {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}


# --------------------------------------------------------------------------- turn detection

@pytest.mark.parametrize("body", [
    chat(user("Fix the bug in main.py")),
    chat({"role": "system", "content": "You are terse."}, user("hi")),
    chat(user("a"), CHAT_TOOL_CALL, CHAT_TOOL_RESULT, {"role": "assistant", "content": "ok"},
         user("now add tests")),
    chat(user([{"type": "text", "text": "what is in this picture?"}, IMAGE_URL])),
    chat(user([IMAGE_URL])),  # a screenshot without a caption is the user speaking
    chat(user(f"{REMINDER}\nplease also update the docs")),
    chat(user(f"{HOOK} {REMINDER} and rename it")),
], ids=["first", "after-system", "after-tool-loop", "text-and-image", "image-only",
        "reminder-and-text", "two-envelopes-and-text"])
def test_chat_user_text_starts_a_turn(body):
    assert starts_user_turn(body, CHAT_COMPLETIONS) is True


@pytest.mark.parametrize("body", [
    chat(user("Fix it"), CHAT_TOOL_CALL, CHAT_TOOL_RESULT),
    chat(user("Fix it"), CHAT_TOOL_CALL, CHAT_TOOL_RESULT, user(REMINDER)),
    chat(user("Fix it"), CHAT_TOOL_CALL, CHAT_TOOL_RESULT, user(f"{HOOK}\n\n{REMINDER}  ")),
    chat(user("Fix it"), {"role": "assistant", "content": "Let me"}),  # assistant prefill
    chat(user("Fix it"), {"role": "function", "name": "f", "content": "42"}),
    chat(user("")),
    chat(user("   \n")),
    chat(user([{"type": "text", "text": REMINDER}])),
    chat(user(None)),
    chat(),
    {"messages": "not a list"},
    {},
], ids=["tool-result", "reminder-only", "hook-and-reminder", "assistant-tail",
        "legacy-function", "empty", "blank", "reminder-part", "null-content",
        "no-messages", "messages-not-a-list", "empty-body"])
def test_chat_continuations_do_not_start_a_turn(body):
    assert starts_user_turn(body, CHAT_COMPLETIONS) is False


@pytest.mark.parametrize("body", [
    anthropic(user("Fix the bug in main.py")),
    anthropic(user([{"type": "text", "text": REMINDER},
                    {"type": "text", "text": "Fix the bug in main.py"}])),
    # Claude Code sends the user's next message next to the last tool's result.
    anthropic(user("Fix it"), TOOL_USE, user([TOOL_RESULT_BLOCK,
                                              {"type": "text", "text": "stop, use pytest"}])),
    anthropic(user([ANTHROPIC_IMAGE])),
    anthropic(user([{"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                                    "data": "spec"}}])),
], ids=["string", "reminder-then-text", "tool-result-with-text", "image", "document"])
def test_anthropic_user_text_starts_a_turn(body):
    assert starts_user_turn(body, MESSAGES) is True


@pytest.mark.parametrize("body", [
    anthropic(user("Fix it"), TOOL_USE, user([TOOL_RESULT_BLOCK])),
    anthropic(user("Fix it"), TOOL_USE, user([TOOL_RESULT_BLOCK,
                                              {"type": "text", "text": REMINDER}])),
    anthropic(user("Fix it"), TOOL_USE, user([
        {**TOOL_RESULT_BLOCK, "content": [{"type": "text", "text": "ok"}, ANTHROPIC_IMAGE]},
        {"type": "text", "text": HOOK, "cache_control": {"type": "ephemeral"}}])),
    anthropic(user("Fix it"), {"role": "assistant", "content": "{"}),  # prefill
    anthropic(user(REMINDER)),
    anthropic(),
], ids=["tool-result-only", "tool-result-and-reminder", "tool-result-image-and-hook",
        "assistant-prefill", "reminder-string", "no-messages"])
def test_anthropic_tool_results_and_envelopes_are_continuations(body):
    assert starts_user_turn(body, MESSAGES) is False


@pytest.mark.parametrize("body", [
    responses("Fix the bug in main.py"),
    responses([item("user", "Fix the bug")]),
    responses([{"role": "user", "content": "no type field is a message too"}]),
    responses([item("user", "Fix it"), FUNCTION_CALL, FUNCTION_OUTPUT,
               item("assistant", "Done."), item("user", "now the tests")]),
    responses([{"type": "message", "role": "user", "content": [
        {"type": "input_image", "image_url": "https://example.com/a.png"}]}]),
    responses([item("user", f"{REMINDER} and the docs")]),
], ids=["string-input", "message-item", "easy-message", "after-tool-loop", "image",
        "reminder-and-text"])
def test_responses_user_message_starts_a_turn(body):
    assert starts_user_turn(body, RESPONSES) is True


@pytest.mark.parametrize("body", [
    responses([item("user", "Fix it"), FUNCTION_CALL, FUNCTION_OUTPUT]),
    responses([item("user", "Fix it"), CUSTOM_CALL, CUSTOM_OUTPUT]),
    responses([FUNCTION_OUTPUT], previous_response_id="resp_1"),
    responses([item("user", "Fix it"), item("assistant", "Working on it")]),
    responses([item("user", "Fix it"), FUNCTION_CALL]),
    responses([item("user", REMINDER)]),
    responses(""),
    responses([]),
    responses(None),
], ids=["function-output", "custom-tool-output", "output-after-previous-response",
        "assistant-tail", "function-call-tail", "reminder-only", "empty-string", "empty-list",
        "null-input"])
def test_responses_tool_outputs_are_continuations(body):
    assert starts_user_turn(body, RESPONSES) is False


@pytest.mark.parametrize("text, expected", [
    ("plain", "plain"),
    (f"{REMINDER}", ""),
    (f"a{REMINDER}b{HOOK}c", "abc"),
    (f"{REMINDER}{REMINDER}x", "x"),
    ("x<system-reminder>truncated without a closing tag", "x"),
    ("</system-reminder> a closing tag alone is text", "</system-reminder> a closing tag "
                                                       "alone is text"),
])
def test_strip_envelopes(text, expected):
    assert strip_envelopes(text) == expected


def test_unknown_shape_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown client API shape"):
        starts_user_turn({"messages": []}, "completions")


# --------------------------------------------------------------------------- implicit ids

def test_chat_id_is_stable_as_the_conversation_grows():
    system = {"role": "system", "content": "You are a coding agent."}
    tools = [{"type": "function", "function": {"name": "read_file", "parameters": {}}}]
    turn1 = chat(system, user("Fix the bug in main.py"), tools=tools)
    turn5 = chat(system, user("Fix the bug in main.py"), CHAT_TOOL_CALL, CHAT_TOOL_RESULT,
                 {"role": "assistant", "content": "Fixed."}, user("Now add tests"),
                 tools=tools, temperature=0.2, stream=True)
    first = implicit_session_id(turn1, CHAT_COMPLETIONS, model="gpt-4o")
    assert ID_FORMAT.match(first)
    assert implicit_session_id(turn5, CHAT_COMPLETIONS, model="gpt-4o") == first


def test_anthropic_id_ignores_moving_cache_markers():
    system = [{"type": "text", "text": "You are Claude Code."}]
    tools = [{"name": "Read", "input_schema": {"type": "object"}}]
    first_message = [{"type": "text", "text": REMINDER},
                     {"type": "text", "text": "Fix it", "cache_control": {"type": "ephemeral"}}]
    turn1 = anthropic(user(first_message), system=system, tools=tools)
    moved = [{"type": "text", "text": REMINDER}, {"type": "text", "text": "Fix it"}]
    turn2 = anthropic(user(moved), TOOL_USE, user([TOOL_RESULT_BLOCK]),
                      system=[{**system[0], "cache_control": {"type": "ephemeral"}}],
                      tools=[{**tools[0], "cache_control": {"type": "ephemeral"}}])
    assert implicit_session_id(turn1, MESSAGES) == implicit_session_id(turn2, MESSAGES)


def test_responses_id_is_stable_and_string_input_matches_a_user_item():
    turn1 = responses("Fix the bug", instructions="You are Codex.")
    turn2 = responses([{"role": "user", "content": "Fix the bug"}, FUNCTION_CALL,
                       FUNCTION_OUTPUT], instructions="You are Codex.")
    assert implicit_session_id(turn1, RESPONSES) == implicit_session_id(turn2, RESPONSES)


@pytest.mark.parametrize("change", [
    lambda b: b["messages"].__setitem__(1, user("another conversation")),
    lambda b: b["messages"].__setitem__(0, {"role": "system", "content": "v2 prompt"}),
    lambda b: b.__setitem__("tools", [{"type": "function", "function": {"name": "write"}}]),
    lambda b: b["messages"].insert(0, {"role": "developer", "content": "be brief"}),
    lambda b: b["messages"].__setitem__(1, user([{"type": "text", "text": "same words"},
                                                 IMAGE_URL])),
], ids=["first-user-message", "system-prompt", "tools", "developer-message", "attachment"])
def test_chat_id_changes_with_the_conversation_head(change):
    body = chat({"role": "system", "content": "v1 prompt"}, user("same words"),
                tools=[{"type": "function", "function": {"name": "read"}}])
    before = implicit_session_id(body, CHAT_COMPLETIONS)
    change(body)
    assert implicit_session_id(body, CHAT_COMPLETIONS) != before


def test_one_conversation_has_one_id_through_every_api():
    ids = {implicit_session_id(chat({"role": "system", "content": "sys"}, user("hi"),
                                    tools=[{"type": "function", "function": {"name": "f"}}]),
                               CHAT_COMPLETIONS),
           implicit_session_id(anthropic(user([{"type": "text", "text": "hi"}]), system="sys",
                                         tools=[{"name": "f", "input_schema": {}}]), MESSAGES),
           implicit_session_id(responses("hi", instructions="sys",
                                         tools=[{"type": "function", "name": "f"}]), RESPONSES)}
    assert len(ids) == 1


def test_tenant_and_model_lane_are_part_of_the_id():
    body = chat(user("hi"))
    plain = implicit_session_id(body, CHAT_COMPLETIONS)
    assert implicit_session_id(body, CHAT_COMPLETIONS, tenant="acme") != plain
    assert implicit_session_id(body, CHAT_COMPLETIONS, model="claude-haiku-4-5") != plain
    # None and "" mean the same: nothing was sent.
    assert implicit_session_id(body, CHAT_COMPLETIONS, tenant=None, model=None) == plain


def test_parts_cannot_be_respelled_across_field_boundaries():
    one = chat({"role": "system", "content": "ab"}, user("c"))
    other = chat({"role": "system", "content": "a"}, user("bc"))
    assert implicit_session_id(one, CHAT_COMPLETIONS) != implicit_session_id(
        other, CHAT_COMPLETIONS)


def test_no_user_message_has_no_id():
    assert implicit_session_id(chat({"role": "system", "content": "s"}),
                               CHAT_COMPLETIONS) is None
    assert implicit_session_id(anthropic(), MESSAGES) is None
    assert implicit_session_id(responses([FUNCTION_OUTPUT]), RESPONSES) is None


def test_lone_surrogates_and_odd_values_never_raise():
    odd = chat(user("\ud800 broken"), {"role": 5}, tools=[None, {"type": "function",
                                                                  "function": "x"}])
    assert ID_FORMAT.match(implicit_session_id(odd, CHAT_COMPLETIONS))
    # A user message that says nothing (no text, no attachment) anchors no id (SPEC §18).
    assert implicit_session_id({"messages": [user(7)]}, CHAT_COMPLETIONS) is None
    assert implicit_session_id({"messages": [user(7), user("q")]}, CHAT_COMPLETIONS) == \
        implicit_session_id({"messages": [user("q")]}, CHAT_COMPLETIONS)


def test_readers_per_shape():
    body = responses([{"type": "message", "role": "developer", "content": "dev"},
                      item("user", "q")], instructions="inst",
                     tools=[{"type": "function", "name": "shell"},
                            {"type": "custom", "name": "apply_patch"},
                            {"type": "web_search"}])
    assert system_text(body, RESPONSES) == "inst\ndev"
    assert tool_names(body, RESPONSES) == ("shell", "apply_patch", "web_search")
    assert first_user_content(body, RESPONSES).text == "q"
    chat_body = chat(tools=[{"type": "function", "function": {"name": "f"}},
                            {"type": "custom", "custom": {"name": "g"}}],
                     functions=[{"name": "legacy"}])
    assert tool_names(chat_body, CHAT_COMPLETIONS) == ("f", "g", "legacy")
    assert system_text(anthropic(system="sys"), MESSAGES) == "sys"
    assert tool_names(anthropic(tools=[{"name": "Read"}, {"type": "web_search_20250305",
                                                            "name": "web_search"}]),
                      MESSAGES) == ("Read", "web_search")


# --------------------------------------------------------------------------- session context

def routing(**keys) -> RoutingConfig:
    return RoutingConfig(**keys)


def test_explicit_id_wins_over_the_derived_one():
    body = chat(user("hi"))
    context = session_context(body, CHAT_COMPLETIONS, explicit_id="my-session", tenant=None,
                              model=None, routing=routing(implicit_affinity=True))
    assert context == SessionContext("my-session", implicit=False, user_turn=True,
                                     derived_id=None, source="header")
    assert context.reported_id == "my-session"


@pytest.mark.parametrize("keys", [{"implicit_affinity": True}, {"route_on_user_only": True}])
def test_derived_id_is_used_by_the_modes_that_use_it(keys):
    body = chat(user("hi"))
    derived = implicit_session_id(body, CHAT_COMPLETIONS, tenant="acme", model="m")
    context = session_context(body, CHAT_COMPLETIONS, explicit_id=None, tenant="acme",
                              model="m", routing=routing(**keys))
    assert (context.session_id, context.implicit, context.derived_id) == \
        (derived, True, derived)


def test_derived_id_is_only_reported_by_default():
    body = chat(user("hi"))
    context = session_context(body, CHAT_COMPLETIONS, explicit_id=None, tenant=None,
                              model=None, routing=routing())
    derived = implicit_session_id(body, CHAT_COMPLETIONS)
    assert context == SessionContext(None, implicit=False, user_turn=True,
                                     derived_id=derived, source="implicit")
    assert context.reported_id == derived
    nothing = session_context(chat({"role": "system", "content": "s"}), CHAT_COMPLETIONS,
                              explicit_id=None, tenant=None, model=None,
                              routing=routing(implicit_affinity=True))
    assert nothing == SessionContext(None)


def test_turns_are_only_detected_with_route_on_user_only():
    body = chat(user("Fix it"), CHAT_TOOL_CALL, CHAT_TOOL_RESULT)
    assert session_context(body, CHAT_COMPLETIONS, explicit_id="s", tenant=None, model=None,
                           routing=routing()).user_turn is True
    assert session_context(body, CHAT_COMPLETIONS, explicit_id="s", tenant=None, model=None,
                           routing=routing(route_on_user_only=True)).user_turn is False


# --------------------------------------------------------------------------- properties

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.sampled_from(["role", "content", "type", "text",
                                                       "name", "messages", "input",
                                                       "system", "tools"]), inner,
                                      max_size=4), max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(body=st.dictionaries(st.sampled_from(["messages", "input", "system", "instructions",
                                             "tools", "functions"]), JSON, max_size=5),
       shape=st.sampled_from([CHAT_COMPLETIONS, MESSAGES, RESPONSES]))
def test_any_json_body_is_read_without_raising(body, shape):
    assert starts_user_turn(body, shape) in (True, False)
    derived = implicit_session_id(body, shape)
    assert derived is None or ID_FORMAT.match(derived)


@settings(max_examples=100, deadline=None)
@given(first=st.text(min_size=1, max_size=40),
       later=st.lists(st.tuples(st.sampled_from(["user", "assistant", "tool"]),
                                st.text(max_size=40)), max_size=6))
def test_appending_messages_never_changes_the_id(first, later):
    head = [{"role": "system", "content": "s"}, user(first)]
    grown = head + [{"role": role, "content": text} for role, text in later]
    assert implicit_session_id(chat(*grown), CHAT_COMPLETIONS) == \
        implicit_session_id(chat(*head), CHAT_COMPLETIONS)
