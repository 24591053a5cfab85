"""What usage accounting and prompt caching (SPEC §19) cost a pinned chat request, in CPU
microseconds, in-process (no load generator, so the shared machine's noise stays out of it
as far as it can). Run: ``cd bin && PYTHONPATH=.. ../.venv/bin/python -m
benchlib.accounting_cost [REQUESTS] [ROUNDS]``.

The real app (``create_app``, Prometheus metrics, a real redis-server as session cache)
serves pinned ``/v1/chat/completions`` requests through Flask's test client to a canned
in-process provider whose answers carry usage (cached tokens included), in alternating
rounds of three variants:

* ``no_accounting``: the services' usage recorder removed (no usage accounting);
* ``accounting``: usage read, priced, counted, and the session's totals written to Redis
  by the worker's flush (one round trip a second for every session), ``prompt_caching`` off;
* ``accounting_caching``: the same with ``prompt_caching.enabled`` (cache key added).

Each round counts ``time.process_time`` over the requests, the response closed (which runs
the after-the-last-byte session write); the best round of each variant is reported. JSON
answers and streams (a 12-chunk stream with its usage chunk) are measured separately.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

from benchlib.canned import CannedProvider
from devkit.configs import FAST_MODEL, FAST_PROMPT, gateway_config

_USAGE = {"prompt_tokens": 2400, "completion_tokens": 40, "total_tokens": 2440,
          "prompt_tokens_details": {"cached_tokens": 2048}}
_ANSWER = json.dumps({"id": "chatcmpl-bench", "object": "chat.completion", "created": 1,
                      "model": "gpt-4o-mini", "choices": [{"index": 0, "finish_reason": "stop",
                      "message": {"role": "assistant", "content": "canned " * 40}}],
                      "usage": _USAGE}).encode()


def _chunk(delta: dict, finish=None, usage=None, choices=True) -> bytes:
    chunk = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1,
             "model": "gpt-4o-mini",
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if choices
             else [], "usage": usage}
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


_STREAM = [_chunk({"role": "assistant", "content": ""})] + \
    [_chunk({"content": f"word{i} "}) for i in range(10)] + \
    [_chunk({}, "stop"), _chunk({}, usage=_USAGE, choices=False), b"data: [DONE]\n\n"]


def _app(redis_url: str, variant: str):
    from app import create_app
    from app.config import config_from_dict
    from app.observability.prometheus_metrics import PrometheusMetrics
    from app.services import install_services, services_of

    raw = gateway_config(routing={"session_cache": {"type": "redis", "url": redis_url}},
                         prompt_caching={"enabled": variant == "accounting_caching"})
    config = config_from_dict(raw)
    providers = {provider.name: CannedProvider(_ANSWER, _STREAM)
                 for provider in config.model_providers}
    app = create_app(config, providers=providers, tracer_provider=None,
                     metrics=PrometheusMetrics(config, multiproc_dir=""))
    if variant == "no_accounting":
        install_services(app, dataclasses.replace(services_of(app), usage=None))
    return app


def _round(client, count: int, stream: bool) -> float:
    body = {"model": FAST_MODEL, "stream": stream,
            "messages": [{"role": "user", "content": FAST_PROMPT}]}
    headers = {"X-Model-Affinity": "bench-accounting-cost"}
    started = time.process_time()
    for _ in range(count):
        response = client.post("/v1/chat/completions", json=body, headers=headers)
        response.get_data()
        response.close()
    return (time.process_time() - started) / count * 1e6


VARIANTS = ("no_accounting", "accounting", "accounting_caching")


def micro(count: int = 20000) -> dict:
    """CPU µs of the accounting work alone for one request (what the relay and endpoint
    call: plan, meter fed the answer, record, log fields, the answer queued for the metrics
    and its session; and the flush that adds them up into Prometheus counters and session
    totals), without Flask, Redis or the load's noise."""
    from app.config import config_from_dict
    from app.observability.prometheus_metrics import PrometheusMetrics
    from app.pipeline.attempt import target_of
    from app.pipeline.plan import plan_call
    from app.session_cache.memory import MemorySessionCache
    from app.usage.accounting import RequestAccounting
    from app.usage.recorder import UsageRecorder

    result = {}
    for caching in (False, True):
        config = config_from_dict(gateway_config(prompt_caching={"enabled": caching}))
        recorder = UsageRecorder(config, PrometheusMetrics(config, multiproc_dir=""),
                                 MemorySessionCache(1000), flush_seconds=3600)
        endpoint = config.endpoint(FAST_MODEL)
        for stream in (False, True):
            started = time.process_time()
            for index in range(count):
                accounting = RequestAccounting(recorder, config.prompt_caching,
                                               f"s{index % 100}")
                call = plan_call("chat", {"model": "gpt-4o-mini", "messages": [],
                                          "stream": stream}, target_of(endpoint),
                                 hints=accounting.hints(endpoint), stream_usage=True)
                meter = accounting.meter(endpoint, call)
                if stream:
                    for raw in _STREAM:
                        meter.feed(raw)
                        meter.outgoing(raw)
                else:
                    meter.answer(_ANSWER)
                record = meter.finish(None)
                record.log_fields()
                recorder.write_session(accounting.session_key, record, False)
            recorder.flush()  # the queued answers added up: part of each answer's cost
            elapsed = (time.process_time() - started) / count * 1e6
            result[f"{'stream' if stream else 'json'}_caching_{'on' if caching else 'off'}"] = \
                round(elapsed, 1)
    return result


def run(requests_per_round: int = 1000, rounds: int = 7) -> dict:
    """Best-of-``rounds`` CPU µs per pinned request for each variant, JSON and stream."""
    from devkit.redis_servers import RedisServer

    with RedisServer() as server:
        from app.services import services_of

        apps = {name: _app(server.url, name) for name in VARIANTS}
        clients = {name: app.test_client() for name, app in apps.items()}
        result = {}
        for stream in (False, True):
            for client in clients.values():  # pin the session, warm everything up
                _round(client, 200, stream)
            best = {name: float("inf") for name in clients}
            for _ in range(rounds):
                for name, client in clients.items():
                    best[name] = min(best[name], _round(client, requests_per_round, stream))
            result["stream" if stream else "json"] = {k: round(v, 1) for k, v in best.items()}
        for app in apps.values():  # write the pending totals while Redis still runs
            usage = services_of(app).usage
            if usage is not None:
                usage.flush()
    result.update(requests_per_round=requests_per_round, rounds=rounds,
                  accounting_alone_cpu_us=micro())
    return result


def main(argv: list[str]) -> int:
    count = int(argv[0]) if argv else 1000
    rounds = int(argv[1]) if len(argv) > 1 else 7
    result = run(count, rounds)
    for shape in ("json", "stream"):
        figures = result[shape]
        base = figures["no_accounting"]
        print(f"pinned-in-Redis chat request, {shape} (in-process, best of {rounds} x {count}):")
        for name in VARIANTS:
            print(f"  {name:20s} {figures[name]:8.1f} CPU us/request  "
                  f"(+{figures[name] - base:6.1f})")
        print(f"  caching on / off     {figures['accounting_caching'] / figures['accounting']:.3f}")
    print(f"  accounting alone (no Flask, no Redis): {result['accounting_alone_cpu_us']} CPU us")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
