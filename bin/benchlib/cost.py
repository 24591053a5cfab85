"""``bin/bench --cost``: what affinity is worth in dollars (SPEC §20), measured offline.

The same agent sessions are replayed through a real gateway (gunicorn, gevent workers, a
real redis-server as session cache) in front of the bundled mock, whose MOCK prompt cache
bills a prefix the same model saw within its warm window as cache reads, under four
policies:

* ``no_affinity``: every request routed on its own (no session);
* ``pinned``: ``X-Model-Affinity`` per session: it stays on its first turn's model;
* ``turn_level``: ``routing.route_on_user_only`` (implicit sessions): user turns routed,
  tool rounds stay on their turn's model;
* ``turn_level_budget_20``: the same with ``routing.routing_budget: {max_switch_spend_pct:
  20}``.

A session (Anthropic Messages, like Claude Code) is a long system prompt and tools, then user
turns, each a tool loop of a few rounds whose results grow the context. Prompts route to
three models (the embedded router: code generation -> Claude Sonnet, code understanding ->
GPT-4o, anything else -> GPT-4o mini). Some tool rounds carry a Claude Code-like
``<system-reminder>`` next to the tool result: a harness envelope the gateway's routers do
not see (SPEC §18), so without affinity a tool round is routed on its turn's prompt too.
Between turns there are idle gaps inside the warm window, and one per session beyond it.

Time is scaled down so a run takes about a minute: the mock's cache and the gateway's
``prompt_caching.warm_window_seconds`` are :data:`WARM_SECONDS` instead of the providers'
300, and the gaps scale with it. Costs are the gateway's own (``plano_cost_usd_total``, the
shipped genai-prices table), read from ``/metrics`` of the policy's gateway.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests

from devkit.configs import merge
from devkit.gateway import Gateway
from devkit.redis_servers import RedisServer
from devkit.stubs import Stub

SONNET = "anthropic/claude-sonnet-4-5"
GPT4O = "openai/gpt-4o"
MINI = "openai/gpt-4o-mini"
WARM_SECONDS = 2
POLICIES = ("no_affinity", "pinned", "turn_level", "turn_level_budget_20")
ROUTES = [
    {"name": "code_generation", "description": "generating new code snippets, functions, "
     "or boilerplate based on user prompts or requirements", "models": [SONNET]},
    {"name": "code_understanding", "description": "understand and explain existing code "
     "snippets, functions, or libraries", "models": [GPT4O]},
]
#: User prompts by the route the embedded router gives them.
PROMPTS = {
    "generation": ["Generate new boilerplate code for a REST handler function",
                   "Write a new function that generates the config parser code",
                   "Generate code snippets for the retry helper functions"],
    "understanding": ["Explain this existing code snippet and help me understand the library",
                      "Help me understand the existing functions in this library",
                      "Explain what these existing code snippets do"],
    "other": ["ok thanks, carry on", "sounds good, go ahead", "fine by me"],
}
#: Harness text next to some tool results (an envelope: stripped before routing, SPEC §18).
REMINDERS = [
    "<system-reminder>The user opened an existing file; explain and understand the "
    "library functions before editing.</system-reminder>",
    "<system-reminder>Todo list updated.</system-reminder>",
]
WORDS = ("alpha beta gamma delta parse token stream buffer handler index value result "
         "error module config retry socket").split()


@dataclass
class Size:
    """How much to replay."""

    sessions: int
    turns: int
    tool_rounds: int
    concurrency: int


SMALL = Size(sessions=8, turns=4, tool_rounds=3, concurrency=8)
LARGE = Size(sessions=32, turns=6, tool_rounds=4, concurrency=16)


@dataclass
class Step:
    """One request of a session: its new messages, and the idle gap before it."""

    messages: list
    gap: float = 0.0
    user_turn: bool = False


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def make_sessions(size: Size, seed: int = 20) -> list[list[Step]]:
    """The sessions to replay (deterministic for a seed); each a list of steps."""
    rng = random.Random(seed)
    sessions = []
    for index in range(size.sessions):
        steps = []
        kinds = [rng.choice(("generation", "generation", "understanding", "other"))
                 for _ in range(size.turns)]
        long_gap_turn = rng.randrange(1, size.turns) if size.turns > 1 else -1
        for turn, kind in enumerate(kinds):
            gap = 0.0
            if turn:
                gap = WARM_SECONDS * (1.3 if turn == long_gap_turn else 0.25)
            prompt = f"{rng.choice(PROMPTS[kind])} (session {index}, turn {turn})"
            steps.append(Step([{"role": "user", "content": prompt}], gap, True))
            for call in range(rng.randint(max(1, size.tool_rounds - 1), size.tool_rounds)):
                call_id = f"toolu_{index}_{turn}_{call}"
                result = [{"type": "tool_result", "tool_use_id": call_id,
                           "content": _text(rng, rng.randint(150, 400))}]
                if rng.random() < 0.4:
                    result.append({"type": "text", "text": rng.choice(REMINDERS)})
                steps.append(Step([
                    {"role": "assistant", "content": [
                        {"type": "tool_use", "id": call_id, "name": "read_file",
                         "input": {"path": f"src/file_{call}.py"}}]},
                    {"role": "user", "content": result}], 0.0))
            steps.append(Step([{"role": "assistant", "content": "Done: " + _text(rng, 40)}],
                              -1))  # the answer to the turn: history only, no request
        sessions.append(steps)
    return sessions


def policy_config(policy: str, mock_url: str, redis_url: str, key_prefix: str) -> dict:
    """The gateway config of one policy: the three models on the mock, Redis, caching."""
    routing: dict = {"session_ttl_seconds": 3600,
                     "session_cache": {"type": "redis", "url": redis_url,
                                       "key_prefix": key_prefix}}
    if policy.startswith("turn_level"):
        routing["route_on_user_only"] = True
    if policy == "turn_level_budget_20":
        routing["routing_budget"] = {"max_switch_spend_pct": 20}
    return merge({
        "version": "v0.4.0",
        "listeners": [{"name": "model_listener", "type": "model", "address": "127.0.0.1",
                       "port": 12000, "timeout": "30s"}],
        "model_providers": [
            {"model": MINI, "base_url": mock_url, "access_key": "sk-bench", "default": True},
            {"model": GPT4O, "base_url": mock_url, "access_key": "sk-bench"},
            {"model": SONNET, "base_url": mock_url, "access_key": "sk-bench"}],
        "routing_preferences": ROUTES,
        "prompt_caching": {"enabled": True, "min_prefix_tokens": 256,
                           "warm_window_seconds": WARM_SECONDS},
    }, {"routing": routing})


@dataclass
class PolicyResult:
    """What one policy's replay measured."""

    policy: str
    requests: int = 0
    errors: int = 0
    switches: list = field(default_factory=list)
    cost_usd: float = 0.0
    tokens: dict = field(default_factory=dict)
    seconds: float = 0.0

    def row(self) -> dict:
        """The numbers reported for this policy."""
        prompt = sum(self.tokens.get(k, 0) for k in ("input", "cache_read", "cache_write"))
        return {"policy": self.policy, "cost_usd": round(self.cost_usd, 6),
                "cache_read_share": round(self.tokens.get("cache_read", 0) / prompt, 4)
                if prompt else 0.0,
                "switches_per_session": round(sum(self.switches) / len(self.switches), 2)
                if self.switches else 0.0,
                "requests": self.requests, "errors": self.errors,
                "tokens": self.tokens, "seconds": round(self.seconds, 1)}


_SAMPLE = re.compile(r'^(plano_cost_usd_total|plano_tokens_total)\{([^}]*)\}\s+(\S+)$')


def read_costs(metrics_text: str) -> tuple[float, dict]:
    """Total USD and tokens by kind from a ``/metrics`` page."""
    cost, tokens = 0.0, {}
    for line in metrics_text.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        value = float(match.group(3))
        if match.group(1) == "plano_cost_usd_total":
            cost += value
        else:
            kind = re.search(r'kind="([^"]+)"', match.group(2)).group(1)
            tokens[kind] = tokens.get(kind, 0) + int(value)
    return cost, tokens


class Progress:
    """One progress line, rewritten in place (at most every half second, and at the end)."""

    def __init__(self, total: int, echo):
        self.total, self.done, self.requests = total, 0, 0
        self.lock = threading.Lock()
        self.echo = echo
        self.shown = 0.0

    def step(self, policy: str, session_done: bool = False) -> None:
        with self.lock:
            if session_done:
                self.done += 1
            else:
                self.requests += 1
            now = time.monotonic()
            if now - self.shown >= 0.5 or self.done == self.total:
                self.shown = now
                self.echo(f"\r  {policy:22s} sessions {self.done}/{self.total}, "
                          f"requests {self.requests}   ")


def replay(gateway_url: str, policy: str, session: list[Step], index: int, nonce: str,
           progress: Progress, result: PolicyResult) -> None:
    """Send one session's requests in order, its history growing as an agent's does."""
    system = (f"You are a coding agent ({nonce}, {policy}, session {index}). "
              + "Follow the repository conventions and keep changes small. " * 120)
    body = {"model": MINI, "max_tokens": 256, "system": system,
            "tools": [{"name": "read_file", "description": "Read a file",
                       "input_schema": {"type": "object",
                                        "properties": {"path": {"type": "string"}}}}],
            "messages": []}
    headers = {"anthropic-version": "2023-06-01"}
    if policy == "pinned":
        headers["X-Model-Affinity"] = f"bench-cost-{nonce}-{index}"
    served, switches = None, 0
    for step in session:
        body["messages"].extend(step.messages)
        if step.gap < 0:
            continue
        if step.gap:
            time.sleep(step.gap)
        answer = requests.post(f"{gateway_url}/v1/messages", json=body, headers=headers,
                               timeout=60)
        with progress.lock:
            result.requests += 1
        if answer.status_code != 200:
            with progress.lock:
                result.errors += 1
        else:
            model = answer.json().get("model")
            if served is not None and model != served:
                switches += 1
            served = model
        progress.step(policy)
    with progress.lock:
        result.switches.append(switches)
    progress.step(policy, session_done=True)


def run_policy(policy: str, sessions: list[list[Step]], size: Size, mock: Stub, redis_url: str,
               log_dir: Path, workers: int, echo) -> PolicyResult:
    """Start the policy's gateway, replay every session, read its costs, stop it."""
    nonce = f"{time.time_ns():x}"
    config = policy_config(policy, mock.base_url, redis_url, f"bench-cost:{nonce}:")
    result = PolicyResult(policy)
    progress = Progress(len(sessions), echo)
    with Gateway(config, workers=workers, name=f"cost-{policy}", log_dir=log_dir) as gateway:
        started = time.monotonic()
        with ThreadPoolExecutor(size.concurrency) as pool:
            futures = [pool.submit(replay, gateway.url, policy, session, index, nonce,
                                   progress, result)
                       for index, session in enumerate(sessions)]
            for future in futures:
                future.result()
        result.seconds = time.monotonic() - started
        metrics = gateway.metrics_counting(result.requests - result.errors)
    result.cost_usd, result.tokens = read_costs(metrics)
    echo("\n")
    return result


def run(size: Size, log_dir: Path, workers: int = 2, echo=print) -> dict:
    """Replay the sessions under every policy; the results document."""
    sessions = make_sessions(size)
    rows = []
    with Stub("--cache-warm-seconds", str(WARM_SECONDS), name="cost-mock",
              log_dir=log_dir) as mock, RedisServer() as redis_server:
        for policy in POLICIES:
            rows.append(run_policy(policy, sessions, size, mock, redis_server.url, log_dir,
                                   workers, echo).row())
    return {"rows": rows,
            "settings": {"sessions": size.sessions, "turns": size.turns,
                         "tool_rounds": size.tool_rounds, "concurrency": size.concurrency,
                         "warm_seconds": WARM_SECONDS, "workers": workers,
                         "models": {"code_generation": SONNET, "code_understanding": GPT4O,
                                    "default": MINI},
                         "requests_per_policy": sum(1 for s in sessions for step in s
                                                    if step.gap >= 0)}}


def table_lines(rows: list[dict]) -> list[str]:
    """The printed table, with each policy's cost against no affinity."""
    base = next((r["cost_usd"] for r in rows if r["policy"] == "no_affinity"), None)
    lines = [f"{'policy':22s} {'cost USD':>10s} {'vs none':>8s} {'cache-read':>10s} "
             f"{'switches/sess':>13s} {'requests':>8s} {'errors':>6s}"]
    for row in rows:
        versus = (f"{(row['cost_usd'] / base - 1) * 100:+.0f} %" if base else "n/a")
        lines.append(f"{row['policy']:22s} {row['cost_usd']:10.4f} {versus:>8s} "
                     f"{row['cache_read_share'] * 100:9.1f}% {row['switches_per_session']:13.2f} "
                     f"{row['requests']:8d} {row['errors']:6d}")
    return lines


def dumps(doc: dict) -> str:
    return json.dumps(doc, indent=2) + "\n"
