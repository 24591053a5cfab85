"""What ``bin/bench`` measures: the request-path scenarios, in the order they run.

A scenario names the server it loads (``target``), whether it streams, how it uses
sessions (none; a pool of pre-pinned sessions cycled through; a new session per request)
and which response headers every measured answer must carry (the *check*), so a pinned
scenario that silently stopped being pinned, or an LLM-router miss whose router answer
failed to parse (served unpinned), is flagged instead of looking fast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

# Targets (servers) a scenario can load; see benchlib.servers.
MOCK = "mock"
PASSTHROUGH_APP = "passthrough"
GATEWAY_MEMORY = "gateway-memory"
GATEWAY_REDIS = "gateway-redis"
# The Redis gateway with routing.session_ttl_mode: sliding (a hit is GETEX).
GATEWAY_REDIS_SLIDING = "gateway-redis-sliding"
GATEWAY_LLM = "gateway-llm-router"
GATEWAY_TRACED = "gateway-redis-traced"
# The passthrough instrumented like the gateway, and both at 10% sampling.
GATEWAY_TRACED_10 = "gateway-redis-traced-10"
PASSTHROUGH_TRACED = "passthrough-traced"
PASSTHROUGH_TRACED_10 = "passthrough-traced-10"

#: The route the routing mock answers; the embedded router picks ``fast_responses`` for
#: the bench prompt, so a response routed by the LLM router is recognisable.
LLM_ROUTE = "deep_reasoning"
EMBEDDED_ROUTE = "fast_responses"

CHAT_PATH = "/v1/chat/completions"
PINNED = {"x-plano-pinned": "true"}
SESSION_POOL_SIZE = 64


def chat_body(stream: bool = False) -> bytes:
    """The request body every scenario sends (a typical small chat turn)."""
    body = {"model": "openai/gpt-4o-mini",
            "messages": [{"role": "system", "content": "You are a helpful assistant."},
                         {"role": "user", "content": "hi, say hello in one short sentence"}]}
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Scenario:
    """One measured situation. ``sessions``: ``None``, ``"pool"`` or ``"unique"``."""

    name: str
    description: str
    target: str
    stream: bool = False
    sessions: str | None = None
    expect: dict = field(default_factory=dict)
    check: str | None = None

    @property
    def body(self) -> bytes:
        """The request body of this scenario."""
        return chat_body(self.stream)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("direct", "the mock upstream directly (no gateway)", MOCK),
    Scenario("passthrough", "bare Flask+gunicorn+gevent passthrough (ceiling of the stack)",
             PASSTHROUGH_APP),
    Scenario("no_session", "gateway, no session header (embedded router every request)",
             GATEWAY_MEMORY, expect={"x-plano-route": EMBEDDED_ROUTE}, check="routed"),
    Scenario("pinned_memory", "gateway, pinned hit, memory session cache", GATEWAY_MEMORY,
             sessions="pool", expect=PINNED, check="pinned"),
    Scenario("pinned_redis", "gateway, pinned hit, Redis session cache", GATEWAY_REDIS,
             sessions="pool", expect=PINNED, check="pinned"),
    Scenario("miss_redis", "gateway, new session per request (route + SET NX), Redis",
             GATEWAY_REDIS, sessions="unique", expect={"x-plano-affinity": "new"},
             check="new pin"),
    Scenario("stream_redis", "gateway, streaming (SSE), pinned hit, Redis", GATEWAY_REDIS,
             stream=True, sessions="pool", expect=PINNED, check="pinned"),
    Scenario("llm_miss", "gateway + LLM router (50 ms routing mock), new session per "
             "request, Redis", GATEWAY_LLM, sessions="unique",
             expect={"x-plano-affinity": "new", "x-plano-route": LLM_ROUTE},
             check="routed+new pin"),
    Scenario("llm_pinned", "gateway + LLM router, pinned hit (router skipped), Redis",
             GATEWAY_LLM, sessions="pool", expect={**PINNED, "x-plano-route": LLM_ROUTE},
             check="pinned"),
)

#: Tracing's cost against the passthrough instrumented the same way
#: (FlaskInstrumentor, same provider set-up and sampling), at 100% and 10%. Run with
#: ``--scenarios passthrough_traced,pinned_redis_traced,passthrough_traced_10,``
#: ``pinned_redis_traced_10,passthrough,pinned_redis``.
TRACING_SCENARIOS: tuple[Scenario, ...] = (
    Scenario("passthrough_traced", "passthrough + FlaskInstrumentor, 100% to an OTLP sink",
             PASSTHROUGH_TRACED),
    Scenario("passthrough_traced_10", "passthrough + FlaskInstrumentor, 10% to an OTLP sink",
             PASSTHROUGH_TRACED_10),
    Scenario("pinned_redis_traced_10", "gateway, pinned hit, Redis, tracing 10% to an OTLP "
             "sink", GATEWAY_TRACED_10, sessions="pool", expect=PINNED, check="pinned"),
)

#: Measured only when named in ``--scenarios``: not in the default list, but the target
#: "tracing at 100% sampling costs at most 25% of throughput" compares it with pinned_redis.
EXTRA_SCENARIOS: tuple[Scenario, ...] = (
    Scenario("pinned_redis_traced", "gateway, pinned hit, Redis, tracing 100% to an OTLP "
             "sink", GATEWAY_TRACED, sessions="pool", expect=PINNED, check="pinned"),
    *TRACING_SCENARIOS,
    # A sliding hit renews the TTL and is still one round trip (GETEX); compare
    # with ``--scenarios pinned_redis,pinned_redis_sliding``.
    Scenario("pinned_redis_sliding", "gateway, pinned hit renewing the TTL (session_ttl_mode "
             "sliding: GETEX), Redis", GATEWAY_REDIS_SLIDING, sessions="pool", expect=PINNED,
             check="pinned"),
)

BY_NAME = {scenario.name: scenario for scenario in SCENARIOS + EXTRA_SCENARIOS}


def select(names: str | None) -> list[Scenario]:
    """The scenarios named in a comma list (all of :data:`SCENARIOS` when empty), in order.

    Raises ``ValueError`` naming the unknown ones.
    """
    if not names:
        return list(SCENARIOS)
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in BY_NAME]
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; "
                         f"known: {', '.join(BY_NAME)}")
    return [BY_NAME[name] for name in dict.fromkeys(wanted)]


def session_pool(scenario: Scenario, run_id: str,
                 size: int = SESSION_POOL_SIZE) -> list[str]:
    """Session ids for a pooled scenario, unique to this run."""
    return [f"bench-{scenario.name}-{run_id}-{index:03d}" for index in range(size)]
