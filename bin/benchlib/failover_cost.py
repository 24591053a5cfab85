"""``bin/bench --failover-cost``: what the attempt chain (SPEC §15) costs a pinned chat request
that succeeds at once, in CPU microseconds, in-process (no sockets, no load generator, so the
shared machine's noise stays out of it as far as it can).

The real app (``create_app``) serves pinned ``/v1/chat/completions`` requests through Flask's
test client to a canned in-process provider, in alternating rounds: *with the chain* (as
shipped) and *without* (the services' ``failover`` swapped for a direct call of the decided
model: the pre-failover path). Each round counts ``time.process_time`` over ``--requests``
requests; the best round of each variant is reported, and their ratio. The chain's own cost
(:meth:`app.pipeline.failover.Failover.run` around a do-nothing attempt) is measured alone as well.
"""

from __future__ import annotations

import dataclasses
import json
import time

from benchlib.canned import CannedProvider
from devkit.configs import DEEP_MODEL, DEEP_PROMPT, FAST_MODEL, gateway_config

_ANSWER = json.dumps({"id": "chatcmpl-bench", "object": "chat.completion", "created": 1,
                      "model": "gpt-5.2", "choices": [{"index": 0, "finish_reason": "stop",
                      "message": {"role": "assistant", "content": "canned"}}],
                      "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13,
                                "prompt_tokens_details": {"cached_tokens": 0}}}).encode()


class _Direct:
    """The pre-failover path: the decided model, called once."""

    def __init__(self, timeout: float):
        self._timeout = timeout

    def run(self, candidates, attempt, credential=None):
        from app.pipeline.failover import FailoverResult

        return FailoverResult(candidates[0], answer=attempt(candidates[0], self._timeout))


def _app(with_chain: bool):
    from app import create_app
    from app.config import config_from_dict
    from app.observability.metrics import Metrics
    from app.services import install_services, services_of

    raw = gateway_config()
    raw["routing_preferences"][0]["models"] = [DEEP_MODEL, FAST_MODEL]
    config = config_from_dict(raw)
    providers = {provider.name: CannedProvider(_ANSWER) for provider in config.model_providers}
    app = create_app(config, providers=providers, metrics=Metrics(), tracer_provider=None)
    if not with_chain:
        services = services_of(app)
        install_services(app, dataclasses.replace(
            services, failover=_Direct(config.model_listener.timeout_seconds)))
    return app


def _round(client, count: int) -> float:
    body = {"messages": [{"role": "user", "content": DEEP_PROMPT}]}
    headers = {"X-Model-Affinity": "bench-failover-cost"}
    started = time.process_time()
    for _ in range(count):
        response = client.post("/v1/chat/completions", json=body, headers=headers)
        response.close()
    return (time.process_time() - started) / count * 1e6


def _chain_alone(count: int) -> float:
    from app.config import FailoverConfig, ModelEndpoint
    from app.pipeline.failover import Failover
    from app.pipeline.relay import Answer

    failover = Failover(FailoverConfig(), timeout_seconds=30.0)
    endpoint = ModelEndpoint(DEEP_MODEL, "openai", "gpt-5.2", "http://x/v1")
    candidates = (endpoint, ModelEndpoint(FAST_MODEL, "openai", "gpt-4o-mini", "http://x/v1"))
    answer = Answer(200, {}, b"{}")

    def attempt(endpoint, read_timeout):
        return answer
    started = time.process_time()
    for _ in range(count):
        failover.run(candidates, attempt)
    return (time.process_time() - started) / count * 1e6


def run(requests_per_round: int = 2000, rounds: int = 7) -> dict:
    """Best-of-``rounds`` CPU µs per pinned request with and without the chain."""
    clients = {name: _app(with_chain).test_client()
               for name, with_chain in (("with_chain", True), ("without_chain", False))}
    for client in clients.values():  # pin the session, warm everything up
        _round(client, 200)
    best = {name: float("inf") for name in clients}
    for _ in range(rounds):
        for name, client in clients.items():
            best[name] = min(best[name], _round(client, requests_per_round))
    result = {"cpu_us_per_request": {name: round(value, 1) for name, value in best.items()},
              "ratio_with_over_without": round(best["with_chain"] / best["without_chain"], 3),
              "chain_alone_cpu_us": round(_chain_alone(requests_per_round * 10), 2),
              "requests_per_round": requests_per_round, "rounds": rounds}
    return result


def main(requests_per_round: int, rounds: int) -> int:
    """Print the figures (one JSON line and a readable summary)."""
    result = run(requests_per_round, rounds)
    figures = result["cpu_us_per_request"]
    print(f"failover cost, pinned chat request answered at once (in-process, best of "
          f"{rounds} rounds x {requests_per_round}):")
    print(f"  with the attempt chain    {figures['with_chain']:8.1f} CPU us/request")
    print(f"  without (direct call)     {figures['without_chain']:8.1f} CPU us/request")
    print(f"  ratio                     {result['ratio_with_over_without']:8.3f}")
    print(f"  the chain alone           {result['chain_alone_cpu_us']:8.2f} CPU us/call")
    print(json.dumps(result))
    return 0
