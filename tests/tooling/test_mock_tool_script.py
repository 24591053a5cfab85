"""The MOCK upstream's tool-call scripts (``[mock:tool NAME {args}]``), which drive real
agents' multi-call tool loops (SPEC §18): parsing, and a three-call loop on each of the three
upstream interfaces, streamed and not, against a real mock process on loopback."""
from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import requests

from tests.tooling.test_mock_llm import MOCK, _sse_events, sse_events, start_mock, stop_mock

_spec = importlib.util.spec_from_file_location("mock_llm", MOCK)
mock_llm = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("mock_llm", mock_llm)   # its dataclasses look their module up there
_spec.loader.exec_module(mock_llm)

SCRIPT = ('Make the file. [mock:tool Bash {"command": "echo [42] > out.txt"}] then '
          '[mock:tool Read {"file_path": "out.txt"}]')
SCHEMA = {"type": "object", "properties": {"command": {"type": "string"}}}
TOOLS = ("Agent", "Bash", "Read")


def test_directives_parse_names_and_json_arguments_with_brackets_inside():
    assert mock_llm.directives(SCRIPT) == [("Bash", {"command": "echo [42] > out.txt"}),
                                           ("Read", {"file_path": "out.txt"})]
    assert mock_llm.directives("x [mock:tool] y") == [(None, None)]
    assert mock_llm.directives('[mock:tool apply_patch "*** Begin Patch"]') == [
        ("apply_patch", "*** Begin Patch")]


def test_a_directive_that_is_not_json_then_a_bracket_is_no_step():
    assert mock_llm.directives("[mock:tool Bash {not json}] [mock:tool Bash {} trailing]") == []
    assert mock_llm.directives("no directive here") == []


@pytest.fixture(scope="module")
def mock_url():
    proc, port = start_mock()
    yield f"http://127.0.0.1:{port}"
    stop_mock(proc)


class Chat:
    """A chat-completions conversation with tools, and its answers read back."""
    path = "/v1/chat/completions"

    def __init__(self, text):
        self.body = {"model": "gpt-x", "messages": [{"role": "user", "content": text}],
                     "tools": [{"type": "function", "function": {
                         "name": name, "parameters": SCHEMA}} for name in TOOLS]}

    @staticmethod
    def read(answer: requests.Response, stream: bool):
        """(tool name, arguments JSON, call id) of a tool call, else (None, text, None)."""
        if not stream:
            message = answer.json()["choices"][0]["message"]
            calls = message.get("tool_calls")
            if not calls:
                return None, message["content"], None
            return calls[0]["function"]["name"], calls[0]["function"]["arguments"], calls[0]["id"]
        chunks = [json.loads(e) for e in sse_events(answer.content) if e != "[DONE]"]
        deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
        calls = [d["tool_calls"][0] for d in deltas if d.get("tool_calls")]
        if not calls:
            return None, "".join(d.get("content") or "" for d in deltas), None
        args = "".join(c["function"].get("arguments", "") for c in calls)
        return calls[0]["function"]["name"], args, calls[0]["id"]

    def add_result(self, name, args, call_id, output):
        self.body["messages"] += [
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": call_id, "type": "function",
                "function": {"name": name, "arguments": args}}]},
            {"role": "tool", "tool_call_id": call_id, "content": output}]


class Messages:
    """An Anthropic Messages conversation with tools."""
    path = "/v1/messages"

    def __init__(self, text):
        self.body = {"model": "claude-x", "max_tokens": 100,
                     "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
                     "tools": [{"name": name, "input_schema": SCHEMA} for name in TOOLS]}

    @staticmethod
    def read(answer: requests.Response, stream: bool):
        if not stream:
            block = answer.json()["content"][0]
            if block["type"] != "tool_use":
                return None, block["text"], None
            return block["name"], json.dumps(block["input"]), block["id"]
        events = _sse_events(answer.text)
        starts = [p["content_block"] for n, p in events if n == "content_block_start"]
        deltas = [p["delta"] for n, p in events if n == "content_block_delta"]
        if starts[0]["type"] != "tool_use":
            return None, "".join(d["text"] for d in deltas), None
        return (starts[0]["name"], "".join(d["partial_json"] for d in deltas), starts[0]["id"])

    def add_result(self, name, args, call_id, output):
        self.body["messages"] += [
            {"role": "assistant", "content": [{"type": "tool_use", "id": call_id, "name": name,
                                               "input": json.loads(args)}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call_id,
                                          "content": output}]}]


class Responses:
    """An OpenAI Responses conversation with tools."""
    path = "/v1/responses"

    def __init__(self, text):
        self.body = {"model": "gpt-x", "input": [{"type": "message", "role": "user",
                                                  "content": text}],
                     "tools": [{"type": "function", "name": name, "parameters": SCHEMA}
                               for name in TOOLS]}

    @staticmethod
    def read(answer: requests.Response, stream: bool):
        if stream:
            events = _sse_events(answer.text)
            assert events[-1][0] == "response.completed"
            item = [p["item"] for n, p in events if n == "response.output_item.done"][0]
        else:
            item = answer.json()["output"][0]
        if item["type"] != "function_call":
            return None, item["content"][0]["text"], None
        return item["name"], item["arguments"], item["call_id"]

    def add_result(self, name, args, call_id, output):
        self.body["input"] += [
            {"type": "function_call", "call_id": call_id, "name": name, "arguments": args},
            {"type": "function_call_output", "call_id": call_id, "output": output}]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("api", [Chat, Messages, Responses], ids=lambda a: a.__name__)
def test_a_script_drives_a_three_call_tool_loop(mock_url, api, stream):
    """Call 1 answers the directive with the first tool call, call 2 (its result last) with
    the second, call 3 with a final text quoting the last result: an agent's real loop."""
    convo = api(SCRIPT)
    convo.body["stream"] = stream

    def call():
        answer = requests.post(mock_url + convo.path, json=convo.body, timeout=5)
        assert answer.status_code == 200
        return api.read(answer, stream)

    name, args, call_id = call()
    assert (name, json.loads(args)) == ("Bash", {"command": "echo [42] > out.txt"})
    convo.add_result(name, args, call_id, "(no output)")
    name, args, call_id = call()
    assert (name, json.loads(args)) == ("Read", {"file_path": "out.txt"})
    convo.add_result(name, args, call_id, "42")
    name, text, _ = call()
    assert name is None
    assert text.startswith("[mock-llm] canned answer from model") and text.endswith(
        "to tool result: 42")


def test_a_new_user_turn_without_directives_ends_the_script(mock_url):
    convo = Messages(SCRIPT)
    name, args, call_id = Messages.read(
        requests.post(mock_url + convo.path, json=convo.body, timeout=5), False)
    convo.add_result(name, args, call_id, "ok")
    convo.body["messages"].append({"role": "user", "content": "never mind, stop"})
    name, text, _ = Messages.read(
        requests.post(mock_url + convo.path, json=convo.body, timeout=5), False)
    assert name is None and "never mind" in text


def test_a_tool_the_request_does_not_offer_is_answered_in_text(mock_url):
    convo = Responses('[mock:tool exec_command {"cmd": "true"}]')
    name, text, _ = Responses.read(
        requests.post(mock_url + convo.path, json=convo.body, timeout=5), False)
    assert name is None
    assert "tool exec_command is not offered" in text and "Agent, Bash, Read" in text


def test_a_custom_tool_gets_a_string_argument_as_raw_input(mock_url):
    answer = requests.post(f"{mock_url}/v1/responses", timeout=5, json={
        "model": "gpt-x", "input": '[mock:tool apply_patch "*** Begin Patch\\n*** End Patch"]',
        "tools": [{"type": "function", "name": "shell", "parameters": SCHEMA},
                  {"type": "custom", "name": "apply_patch"}]})
    item = answer.json()["output"][0]
    assert item["type"] == "custom_tool_call" and item["name"] == "apply_patch"
    assert item["input"] == "*** Begin Patch\n*** End Patch"
