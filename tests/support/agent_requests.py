"""The real first requests of Claude Code and Codex (``tests/data/agents/``, captured by
``bin/devkit/capture.py``; see that directory's README on the CLI branch), and variations of
them: the same workspace, another prompt."""

from __future__ import annotations

import copy
import json
from pathlib import Path

AGENTS_DIR = Path(__file__).resolve().parent.parent / "data" / "agents"
#: Claude Code 2.1.332 with a Claude model name: 8 ``<system-reminder>`` blocks, prompt last.
CLAUDE_CODE = "claude_code_anthropic_model"
#: Claude Code with a non-Anthropic model name: a ``role: "system"`` message in ``messages``.
CLAUDE_CODE_OPENAI = "claude_code_openai_model"
#: Codex 0.171.0: developer items, an ``<environment_context>`` user item, then the prompt.
CODEX = "codex_openai_model"


def captured(name: str) -> list[dict]:
    """Every captured request of ``name`` (``method``, ``path``, ``headers``, ``body``)."""
    with open(AGENTS_DIR / f"{name}.jsonl", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def first_body(name: str, prompt: str | None = None) -> dict:
    """The first request's body; with ``prompt``, the user's prompt replaced (the same
    workspace, another conversation)."""
    body = copy.deepcopy(captured(name)[0]["body"])
    if prompt is not None:
        set_prompt(body, prompt)
    return body


def set_prompt(body: dict, prompt: str) -> None:
    """Replace the user's prompt: the last text of the last user message (Messages) or the
    last user item (Responses)."""
    if "messages" in body:
        user = [m for m in body["messages"] if m["role"] == "user"][-1]
        user["content"][-1]["text"] = prompt
    else:
        user = [i for i in body["input"] if i.get("role") == "user"][-1]
        user["content"][-1]["text"] = prompt


def prompt_of(body: dict) -> str:
    """The user's prompt in a captured first request."""
    if "messages" in body:
        return [m for m in body["messages"] if m["role"] == "user"][-1]["content"][-1]["text"]
    return [i for i in body["input"] if i.get("role") == "user"][-1]["content"][-1]["text"]
