"""Responses *custom* tools on interfaces that only know JSON-schema tools.

A custom tool (free-form text input, e.g. Codex's ``apply_patch``) is offered to Chat
Completions and Anthropic models as a function taking ``{"input": string}``; the model's
call is unwrapped back to the raw input on the way to the client, and a client's earlier
``custom_tool_call`` is wrapped the same way in the history.
"""

from __future__ import annotations

import json


def wrapper_schema() -> dict:
    """The JSON schema of a wrapped custom tool."""
    return {"type": "object", "properties": {"input": {"type": "string"}},
            "required": ["input"]}


def custom_tool_names(tools) -> set:
    """Names of the custom tools among ``tools``."""
    return {tool.name for tool in tools if tool.kind == "custom"}


def wrap_custom_input(raw: str) -> str:
    """A custom call's raw input as the JSON arguments of its wrapper function."""
    return json.dumps({"input": raw}, ensure_ascii=False)


def unwrap_custom_input(arguments) -> str:
    """The raw input inside wrapper arguments (JSON text or an already-decoded object);
    anything unexpected is passed on as text rather than lost."""
    value = arguments
    if isinstance(arguments, str):
        try:
            value = json.loads(arguments)
        except ValueError:
            return arguments
    if isinstance(value, dict) and isinstance(value.get("input"), str):
        return value["input"]
    return arguments if isinstance(arguments, str) else json.dumps(arguments)
