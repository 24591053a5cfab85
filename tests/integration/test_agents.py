"""The real coding agents through the real gateway (SPEC §18): current Claude Code and Codex
CLIs (``bin/install_agents``), configured with nothing but the gateway's base URL, run a real
three-call tool loop against the MOCK upstream (a tool call, its result, a final answer; the
file the tool writes appears on disk), to an Anthropic-interface and an OpenAI-interface
model, with and without a custom ``X-Model-Affinity`` header; a stream cut mid-answer reaches
each CLI as an error; a router that would move the tool-result calls elsewhere cannot, because
the agent's own session id pins the loop; and with agent sessions off, two conversations in
one workspace get two implicit session ids.

The loop is scripted by ``[mock:tool NAME {args}]`` directives in the prompt (bin/mock_llm.py).
Between each CLI and the gateway sits a transparent logging proxy (``devkit.capture``), so the
gateway's answer headers, which the CLIs do not show, can be checked; what the upstream got
is the mock's own record. Three gateways (2 gevent workers each, Redis session cache) serve
the module: the main one, one with an LLM router, one with agent sessions off. Marker
``agents``: skipped with the reason when the CLIs are not installed, except under CI=true,
where that fails.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest
import requests

from devkit import agents
from devkit.capture import CaptureServer
from devkit.gateway import Gateway
from devkit.processes import wait_until
from tests.support.configs import make_config_dict
from tests.support.routing_llm import RoutingLLM

pytestmark = [pytest.mark.integration, pytest.mark.agents]

CLAUDE_MODEL = "anthropic/claude-sonnet-4-6"
#: What Claude Code is told: the bare id, which the one provider serving it resolves. Told a
#: name that is not Claude's, Claude Code puts a system message in `messages`
#: (tests/data/agents/README.md).
CLAUDE_ID = "claude-sonnet-4-6"
OPENAI_MODEL = "openai/gpt-4o-mini"   # vendor openai: Responses go natively
#: The models of the stream-cut test (their own, so the fault held by the mock hits no other).
#: Claude Code is told Claude names it knows, aliases here, so that this test depends on the
#: stream's handling only (another name adds a system message, see above).
CUT_CLAUDE, CUT_CLAUDE_ALIAS = "anthropic/claude-cut-4", "claude-haiku-4-5"
CUT_OPENAI, CUT_OPENAI_ALIAS = "openai/gpt-cut-4", "claude-sonnet-4-5"
#: (the model the CLI names, the gateway model it resolves to, and per CLI the upstream path
#: the gateway must use: same-shape pass-through or translation).
FAMILIES = {
    "anthropic": {"claude": CLAUDE_ID, "codex": CLAUDE_MODEL, "upstream_id": CLAUDE_ID,
                  "paths": {"claude": "/v1/messages", "codex": "/v1/messages"}},
    "openai": {"claude": OPENAI_MODEL, "codex": OPENAI_MODEL, "upstream_id": "gpt-4o-mini",
               "paths": {"claude": "/v1/chat/completions", "codex": "/v1/responses"}},
}
AFFINITY = "X-Model-Affinity"
ADMIN_TOKEN = "agents-admin-token-0123456789"
#: The header each CLI sends its own session id in (tests/data/agents/README.md).
AGENT_SESSION_HEADER = {"claude": "x-claude-code-session-id", "codex": "session-id"}
API_PATHS = ("/v1/messages", "/v1/responses", "/v1/chat/completions")


@pytest.fixture(scope="module", autouse=True)
def installed():
    """The CLIs are there, else skip saying how to get them (fail under CI=true)."""
    absent = agents.missing()
    if absent:
        message = (f"agent CLIs not installed ({', '.join(absent)} missing from "
                   f"{agents.AGENTS_BIN}): run bin/install_agents")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def gateway(installed, mock_llm, shared_redis):
    """The base routes (an envelope routed as user text would leave the requested model),
    both families, a Claude-named alias as a Claude Code user would write one, Redis pins."""
    raw = make_config_dict(
        model_providers=[
            {"model": OPENAI_MODEL, "base_url": mock_llm.base_url, "default": True},
            {"model": "openai/gpt-5.2", "base_url": mock_llm.base_url},
            {"model": CLAUDE_MODEL, "base_url": mock_llm.base_url},
            {"model": CUT_CLAUDE, "base_url": mock_llm.base_url},
            {"model": CUT_OPENAI, "base_url": mock_llm.base_url}],
        model_aliases={CUT_CLAUDE_ALIAS: {"target": CUT_CLAUDE},
                       CUT_OPENAI_ALIAS: {"target": CUT_OPENAI}},
        routing={"session_ttl_seconds": 300,
                 "session_cache": {"type": "redis", "url": shared_redis.url}},
        admin={"token": ADMIN_TOKEN}, prompt_caching={"enabled": True})
    with Gateway(raw, workers=2) as running:
        yield running


@pytest.fixture
def proxy(gateway):
    """A transparent logging proxy in front of the gateway: the CLI's base URL."""
    with CaptureServer(("127.0.0.1", 0), gateway.url) as server:
        yield server


def run(cli: str, proxy: CaptureServer, model: str, prompt: str, folder, **options):
    runner = agents.run_claude if cli == "claude" else agents.run_codex
    return runner(proxy.url, model, prompt, folder, **options)


def loop_prompt(cli: str, tag: str, workspace) -> str:
    """Three model calls: write out.txt with the shell tool, read it back, answer."""
    if cli == "claude":
        steps = [("Bash", {"command": "echo 42 > out.txt", "description": "write out.txt"}),
                 ("Read", {"file_path": str(workspace / "out.txt")})]
    else:
        steps = [("exec_command", {"cmd": "echo 42 > out.txt"}),
                 ("exec_command", {"cmd": "cat out.txt"})]
    directives = " ".join(f"[mock:tool {name} {json.dumps(args)}]" for name, args in steps)
    return f"Do the steps, ticket {tag}. {directives}"


def upstream_calls(mock_llm, tag: str) -> list[dict]:
    """What the mock got for this test's conversation (its tag is in every body)."""
    return [r for r in mock_llm.requests() if tag in json.dumps(r["body"])]


def api_calls(proxy: CaptureServer) -> list[dict]:
    return [r for r in proxy.records if r["path"].split("?")[0] in API_PATHS]


@pytest.mark.parametrize("family", ["anthropic", "openai"])
@pytest.mark.parametrize("with_header", [False, True], ids=["base-url-only", "affinity-header"])
@pytest.mark.parametrize("cli", ["claude", "codex"])
def test_agent_runs_a_three_call_tool_loop_on_one_model(cli, with_header, family, proxy,
                                                        mock_llm, tmp_path):
    """The loop completes, the file appears, all three calls reach the same upstream model,
    and the session the gateway used is the agent's own (or the explicit header), pinned
    at the first call and followed by the next two."""
    tag = uuid.uuid4().hex[:12]
    spec = FAMILIES[family]
    headers = {AFFINITY: f"agent-test-{tag}"} if with_header else None
    result = run(cli, proxy, spec[cli], loop_prompt(cli, tag, tmp_path / "workspace"),
                 tmp_path, headers=headers)
    calls = api_calls(proxy)
    statuses = [(c["status"], c["response_headers"].get("content-type")) for c in calls]
    assert result.returncode == 0, (result.output[-3000:], statuses)
    assert (result.workspace / "out.txt").read_text() == "42\n"
    assert "to tool result" in result.output and "42" in result.output

    upstream = upstream_calls(mock_llm, tag)
    assert len(upstream) == 3, [(u["path"], u["body"].get("model")) for u in upstream]
    assert {(u["path"].split("?")[0], u["body"]["model"]) for u in upstream} == {
        (spec["paths"][cli], spec["upstream_id"])}

    answers = [c["response_headers"] for c in calls]
    seen = [(c["status"], a.get("x-plano-affinity"), a.get("x-plano-session-source"),
             a.get("x-plano-session-id")) for c, a in zip(calls, answers, strict=True)]
    assert [c["status"] for c in calls] == [200, 200, 200], seen
    assert [a.get("x-plano-affinity") for a in answers] == ["new", "pinned", "pinned"], seen
    if with_header:
        expected_id, source = headers[AFFINITY], "header"
        assert all(a.get("x-plano-session-id") == expected_id for a in answers), seen
    else:
        sent = {name.lower(): value for name, value in calls[0]["headers"].items()}
        agent_id, source = sent[AGENT_SESSION_HEADER[cli]], "agent"
        assert all(a.get("x-plano-session-id", "").startswith(agent_id) for a in answers), (
            agent_id, seen)
    assert [a.get("x-plano-session-source") for a in answers] == [source] * 3, seen


@pytest.mark.parametrize("cli, family", [("claude", "anthropic"), ("codex", "openai")])
def test_an_agent_session_shows_its_tokens_cache_reads_and_cost(cli, family, gateway, proxy,
                                                                mock_llm, tmp_path):
    """SPEC §19 with the real CLIs: after a three-call loop the session's totals (admin API)
    count its three answers, their tokens, the cache reads of calls two and three (the MOCK
    prompt cache: the same model saw the prefix) and a cost; /metrics counts the tokens by
    model; every OpenAI call of the loop carried one prompt_cache_key."""
    tag = uuid.uuid4().hex[:12]
    spec = FAMILIES[family]
    result = run(cli, proxy, spec[cli], loop_prompt(cli, tag, tmp_path / "workspace"),
                 tmp_path)
    assert result.returncode == 0, result.output[-3000:]
    session_id = api_calls(proxy)[0]["response_headers"]["x-plano-session-id"]

    def session_totals() -> dict:
        answer = requests.get(f"{gateway.url}/admin/sessions/{session_id}", timeout=5,
                              headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert answer.status_code == 200, answer.text
        return answer.json()["usage"] or {}

    # Each worker adds its answers to the session's totals within a second (coalesced
    # writes, SPEC §19 "never on the latency path"): the loop's calls may span both.
    wait_until(lambda: session_totals().get("requests") == 3, 10, "the loop's 3 answers counted")
    totals = session_totals()
    assert totals["input_tokens"] > 0 and totals["output_tokens"] > 0, totals
    assert totals["cache_read_tokens"] > 0 and totals["cache_hits"] >= 2, totals
    assert totals["cost_usd"] > 0, totals
    scrape = requests.get(f"{gateway.url}/metrics", timeout=5).text
    model = CLAUDE_MODEL if family == "anthropic" else OPENAI_MODEL
    assert f'plano_tokens_total{{kind="cache_read",model="{model}"}}' in scrape or \
        f'plano_tokens_total{{model="{model}",kind="cache_read"}}' in scrape
    if family == "openai":
        keys = [u["body"].get("prompt_cache_key") for u in upstream_calls(mock_llm, tag)]
        assert len(keys) == 3 and len(set(keys)) == 1 and keys[0], keys


@pytest.mark.parametrize("cut", ["break_after", "end_after"])
@pytest.mark.parametrize("family", ["anthropic", "openai"])
@pytest.mark.parametrize("cli", ["claude", "codex"])
def test_a_stream_cut_mid_answer_reaches_the_agent_as_an_error(cli, family, cut, proxy,
                                                               mock_llm, tmp_path):
    """The upstream cuts its stream after a few events of text — the connection lost
    (``break_after``), or the stream ended cleanly without its terminal event
    (``end_after``, which looks finished on the wire): the CLI reports an error and exits
    non-zero instead of taking the truncated text for a finished turn. The CLIs' own
    retries are off for this (Claude Code would otherwise repeat the call without
    streaming, which the mock does not cut, Codex would reconnect), so the one answer the
    gateway relayed is what the CLI judged."""
    tag = uuid.uuid4().hex[:12]
    model, upstream_id = {"anthropic": (CUT_CLAUDE_ALIAS if cli == "claude" else CUT_CLAUDE,
                                        "claude-cut-4"),
                          "openai": (CUT_OPENAI_ALIAS if cli == "claude" else CUT_OPENAI,
                                     "gpt-cut-4")}[family]
    faults = f"{mock_llm.url}/_mock/faults"
    requests.post(faults, json={"model": upstream_id, cut: 5}, timeout=5)
    try:
        if cli == "claude":
            result = run(cli, proxy, model, f"Say something long, ticket {tag}.", tmp_path,
                         env={"CLAUDE_CODE_MAX_RETRIES": "0",
                              "CLAUDE_CODE_DISABLE_NONSTREAMING_FALLBACK": "1"})
        else:
            result = run(cli, proxy, model, f"Say something long, ticket {tag}.", tmp_path,
                         provider={"stream_max_retries": 0, "request_max_retries": 0})
    finally:
        requests.delete(faults, params={"model": upstream_id}, timeout=5)
    upstream = upstream_calls(mock_llm, tag)
    seen = (result.output[-2000:], [c["status"] for c in api_calls(proxy)])
    assert [u["body"].get("stream") for u in upstream] == [True], seen
    assert result.returncode != 0, seen
    assert "error" in result.output.lower(), seen


@pytest.fixture(scope="module")
def implicit_gateway(installed, mock_llm, shared_redis):
    """Agent sessions off (header-only affinity restored), implicit sessions pinned."""
    raw = make_config_dict(
        model_providers=[
            {"model": OPENAI_MODEL, "base_url": mock_llm.base_url, "default": True},
            {"model": "openai/gpt-5.2", "base_url": mock_llm.base_url},
            {"model": CLAUDE_MODEL, "base_url": mock_llm.base_url}],
        routing={"session_ttl_seconds": 300, "implicit_affinity": True,
                 "agent_sessions": {"enabled": False},
                 "session_cache": {"type": "redis", "url": shared_redis.url}})
    with Gateway(raw, workers=2) as running:
        yield running


@pytest.mark.parametrize("cli", ["claude", "codex"])
def test_two_conversations_in_one_workspace_get_two_implicit_sessions(cli, implicit_gateway,
                                                                      tmp_path):
    """With agent sessions off, the id is derived from the conversation; the harness's
    envelopes (Claude Code's reminders, Codex's <environment_context>, the same for every
    conversation in a workspace) are skipped, so each conversation has its own id."""
    model = CLAUDE_ID if cli == "claude" else OPENAI_MODEL
    ids = []
    for prompt in ("Name a colour, ticket one.", "Name a fruit, ticket two."):
        with CaptureServer(("127.0.0.1", 0), implicit_gateway.url) as proxy:
            result = run(cli, proxy, model, prompt, tmp_path)   # same HOME, same workspace
            answers = [c["response_headers"] for c in api_calls(proxy)]
        seen = [(a.get("x-plano-session-source"), a.get("x-plano-session-id")) for a in answers]
        assert result.returncode == 0, (result.output[-2000:], seen)
        assert [source for source, _ in seen] == ["implicit"] * len(seen), seen
        ids.append(seen[0][1])
    assert ids[0] != ids[1], ids


class ShiftingRouter(RoutingLLM):
    """A routing LLM that answers ``first`` to the first call after :meth:`reset`, then
    ``later``: what an LLM router reading a growing tool loop may well do."""

    def __init__(self, first: str, later: str):
        super().__init__(first)
        self.first, self.later = first, later

    def reset(self) -> None:
        with self._lock:
            self.calls = 0

    def _answer(self) -> bytes:
        with self._lock:
            self.route = self.first if self.calls == 0 else self.later
        return super()._answer()


@pytest.fixture(scope="module")
def shifting_router():
    with ShiftingRouter("deep_reasoning", "fast_responses") as llm:
        yield llm


@pytest.fixture(scope="module")
def routed_gateway(installed, mock_llm, shared_redis, shifting_router):
    """The LLM router on :class:`ShiftingRouter`: deep_reasoning -> openai/gpt-5.2 first,
    fast_responses -> openai/gpt-4o-mini after."""
    raw = make_config_dict(
        model_providers=[
            {"model": OPENAI_MODEL, "base_url": mock_llm.base_url, "default": True},
            {"model": "openai/gpt-5.2", "base_url": mock_llm.base_url},
            {"model": CLAUDE_MODEL, "base_url": mock_llm.base_url},
            {"model": "openai/arch-router", "base_url": shifting_router.base_url}],
        routing={"model": "openai/arch-router", "session_ttl_seconds": 300,
                 "session_cache": {"type": "redis", "url": shared_redis.url}})
    with Gateway(raw, workers=2) as running:
        yield running


@pytest.mark.parametrize("with_header", [False, True], ids=["base-url-only", "affinity-header"])
@pytest.mark.parametrize("cli", ["claude", "codex"])
def test_the_session_keeps_a_rerouted_loop_on_one_model(cli, with_header, routed_gateway,
                                                        shifting_router, mock_llm, tmp_path):
    """A router that would send the tool-result calls elsewhere: the session id the agent
    sends (only the base URL configured) pins the loop's first model as an explicit
    X-Model-Affinity does, so the router is asked once and all three calls reach
    openai/gpt-5.2."""
    tag = uuid.uuid4().hex[:12]
    shifting_router.reset()
    model = CLAUDE_ID if cli == "claude" else OPENAI_MODEL
    headers = {AFFINITY: f"agent-test-{tag}"} if with_header else None
    with CaptureServer(("127.0.0.1", 0), routed_gateway.url) as proxy:
        result = run(cli, proxy, model, loop_prompt(cli, tag, tmp_path / "workspace"), tmp_path,
                     headers=headers)
    assert result.returncode == 0, result.output[-2000:]
    assert (result.workspace / "out.txt").read_text() == "42\n"
    upstream = [(u["path"].split("?")[0], u["body"]["model"])
                for u in upstream_calls(mock_llm, tag)]
    path = "/v1/chat/completions" if cli == "claude" else "/v1/responses"
    assert upstream == [(path, "gpt-5.2")] * 3, upstream
    assert shifting_router.calls == 1
