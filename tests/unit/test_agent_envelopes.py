"""Harness envelopes are not the user (SPEC §18), on the real first requests of Claude Code
and Codex: implicit session ids skip them, routers never see them, and a turn longer than a
router's budget keeps its end."""

from __future__ import annotations

import json
import re

import pytest

from app.affinity import MESSAGES, RESPONSES, implicit_session_id, starts_user_turn
from app.affinity.envelopes import strip_envelopes, user_text
from app.client_apis import messages as messages_api
from app.client_apis import responses as responses_api
from app.config import RouteConfig
from app.router.arch import CHARS_PER_TOKEN, build_routing_prompt
from app.router.base import latest_user_text
from app.router.embedded import TEXT_BUDGET_CHARS, EmbeddedRouter
from devkit.configs import DEEP_PROMPT, FAST_PROMPT, ROUTES
from tests.support.agent_requests import (
    CLAUDE_CODE,
    CLAUDE_CODE_OPENAI,
    CODEX,
    captured,
    first_body,
    prompt_of,
)

ROUTE_CONFIGS = tuple(RouteConfig(r["name"], r["description"], tuple(r["models"]))
                      for r in ROUTES)
AGENTS = [(CLAUDE_CODE, MESSAGES), (CLAUDE_CODE_OPENAI, MESSAGES), (CODEX, RESPONSES)]
READERS = {MESSAGES: messages_api.router_messages, RESPONSES: responses_api.router_messages}


def conversation_json(prompt: str) -> list:
    match = re.search(r"<conversation>\n(.*?)\n</conversation>", prompt, re.DOTALL)
    assert match, "no <conversation> section"
    return json.loads(match.group(1))


def test_the_captures_are_what_this_file_assumes():
    claude = first_body(CLAUDE_CODE)
    blocks = claude["messages"][0]["content"]
    assert len(json.dumps(blocks)) > 10_000  # about 10 kB of reminders ...
    assert all(b["text"].startswith("<system-reminder>") for b in blocks[:-1])
    assert not blocks[-1]["text"].startswith("<")  # ... and the prompt last
    assert first_body(CLAUDE_CODE_OPENAI)["messages"][1]["role"] == "system"
    codex_users = [i for i in first_body(CODEX)["input"] if i.get("role") == "user"]
    assert codex_users[0]["content"][0]["text"].startswith("<environment_context>")


# --------------------------------------------------------------------------- routers

@pytest.mark.parametrize("agent, shape", AGENTS)
def test_the_embedded_router_routes_a_first_request_on_its_prompt(agent, shape):
    router = EmbeddedRouter(ROUTE_CONFIGS)
    decided = []
    for prompt in (DEEP_PROMPT, FAST_PROMPT):
        messages = READERS[shape](first_body(agent, prompt))
        assert latest_user_text(messages) == prompt  # what is scored: the prompt alone
        decided.append(router.select_route(messages).name)
    assert decided == ["deep_reasoning", "fast_responses"]


@pytest.mark.parametrize("agent, shape", AGENTS)
def test_the_routing_llm_sees_the_prompt_and_no_envelope(agent, shape):
    body = first_body(agent)
    prompt = build_routing_prompt(ROUTE_CONFIGS, READERS[shape](body))
    assert conversation_json(prompt) == [{"role": "user", "content": prompt_of(body)}]
    for marker in ("<system-reminder>", "<environment_context>", "AGENTS.md"):
        assert marker not in prompt


def test_the_tool_result_call_is_routed_on_the_prompt_not_the_reminders():
    first, body = (r["body"] for r in captured(CLAUDE_CODE)[:2])
    prompt = build_routing_prompt(ROUTE_CONFIGS, messages_api.router_messages(body))
    assert conversation_json(prompt)[0] == {"role": "user", "content": prompt_of(first)}
    assert "<system-reminder>" not in prompt


def test_a_turn_over_the_routing_llm_budget_keeps_its_end():
    budget = 64
    pasted = "Traceback line of a long log\n" * 200 + "Why does this test fail?"
    prompt = build_routing_prompt(ROUTE_CONFIGS, [{"role": "user", "content": pasted}],
                                  token_budget=budget)
    [turn] = conversation_json(prompt)
    assert turn["content"].endswith("Why does this test fail?")
    assert len(turn["content"]) == budget * CHARS_PER_TOKEN


def test_a_turn_over_the_embedded_budget_is_scored_on_its_end():
    router = EmbeddedRouter(ROUTE_CONFIGS)
    long_turn = DEEP_PROMPT + " " + "lorem " * TEXT_BUDGET_CHARS + FAST_PROMPT
    assert router.select_route([{"role": "user", "content": long_turn}]).name == \
        "fast_responses"


# --------------------------------------------------------------------------- implicit ids

@pytest.mark.parametrize("agent, shape", AGENTS)
def test_two_conversations_in_one_workspace_get_two_ids(agent, shape):
    one = implicit_session_id(first_body(agent, "Add a --verbose flag"), shape)
    other = implicit_session_id(first_body(agent, "Rename the config module"), shape)
    assert one is not None and other is not None and one != other


@pytest.mark.parametrize("agent, shape", AGENTS)
def test_every_call_of_one_conversation_has_one_id(agent, shape):
    bodies = [r["body"] for r in captured(agent)]
    assert len(bodies) >= 2
    assert len({implicit_session_id(body, shape) for body in bodies}) == 1


def test_the_reminders_of_the_first_message_do_not_change_the_id():
    # Claude Code's reminders carry the date and a token count: a later day or another
    # budget is still the same conversation.
    body = first_body(CLAUDE_CODE)
    changed = first_body(CLAUDE_CODE)
    for block in changed["messages"][0]["content"][:-1]:
        block["text"] = block["text"].replace("2026-12-06", "2026-12-07")
    assert implicit_session_id(body, MESSAGES) == implicit_session_id(changed, MESSAGES)


def test_an_environment_context_item_alone_does_not_start_a_user_turn():
    body = first_body(CODEX)
    env_only = dict(body, input=body["input"][:3])  # developer, developer, environment
    assert not starts_user_turn(env_only, RESPONSES)
    assert implicit_session_id(env_only, RESPONSES) is None
    assert starts_user_turn(body, RESPONSES)


# --------------------------------------------------------------------------- envelopes

@pytest.mark.parametrize("text, said", [
    ("<environment_context>\n  <cwd>/w</cwd>\n</environment_context>", ""),
    ("<user_instructions>be terse</user_instructions>\n\nfix it", "fix it"),
    ("# AGENTS.md instructions for /w\n\n<INSTRUCTIONS>\nuse ruff\n</INSTRUCTIONS>", ""),
    ("# AGENTS.md instructions for /w\n\n<INSTRUCTIONS>\nuse ruff\n</INSTRUCTIONS>\nand go",
     "and go"),
    ("<system-reminder>a</system-reminder><user-prompt-submit-hook>b", ""),
    ("plain words", "plain words"),
])
def test_user_text_strips_every_harness_envelope(text, said):
    assert user_text(text) == said
    assert strip_envelopes(text).strip() == said


def test_a_blank_first_message_stays_the_anchor_and_only_an_envelope_one_is_skipped():
    # Found by the appending property (hypothesis): a blank first user message without an
    # envelope was skipped, so appending a message moved the anchor and changed the id.
    def chat(*texts):
        return {"model": "gpt-4o", "messages": [{"role": "user", "content": t} for t in texts]}
    blank = implicit_session_id(chat(" "), "chat_completions")
    assert blank is not None and blank == implicit_session_id(chat(" ", "0"), "chat_completions")
    reminder = "<system-reminder>x</system-reminder>"
    assert implicit_session_id(chat(reminder, "hi"), "chat_completions") == \
        implicit_session_id(chat("hi"), "chat_completions")
