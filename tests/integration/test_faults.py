"""Fault injection under load (SPEC §4, §6): real processes, loopback only.

Each test runs a real gunicorn gateway (gevent workers) against the bundled mock upstream
and a real redis-server of its own, drives a bounded load through it with
:mod:`devkit.load`, injects one fault mid-load and checks what clients saw: status
codes, the ``x-plano-affinity`` header, the models, and latency. The figures (requests
sent, non-2xx count, p50/p99, recovery times) are printed as one ``FAULT ...`` line per
scenario (``pytest -s`` shows them) and written to ``fault_figures.json`` under pytest's
temporary directory.

Redis settings used throughout (``redis_cache``): ``timeout_ms`` 200 (100 for the pause),
``cooldown_seconds`` 0.5, ``failure_threshold`` 3 (the default).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from devkit.load import Load, LoadResult, Outcome, PlannedRequest, summarize
from devkit.ports import free_port
from devkit.processes import wait_until
from devkit.stubs import Stub
from tests.support.configs import DEEP_PROMPT, FAST_PROMPT, chat_body, gateway_config, redis_cache
from tests.support.servers import fresh_post

pytestmark = pytest.mark.integration

KEY_PREFIX = "plano:affinity:"
CONCURRENCY = 16


# --------------------------------------------------------------------------- figures


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    """Collects each scenario's figures; written as JSON when the module is done."""
    collected: dict[str, dict] = {}
    yield collected
    path = tmp_path_factory.mktemp("faults") / "fault_figures.json"
    path.write_text(json.dumps(collected, indent=2, sort_keys=True))
    print(f"\nFAULT figures written to {path}")


def report(figures: dict, name: str, **values) -> None:
    """Print one summary line for ``name`` and keep its figures for the JSON file."""
    figures[name] = values
    print(f"\nFAULT {name}: {json.dumps(values, sort_keys=True)}")


# --------------------------------------------------------------------------- helpers


def affinity(outcome: Outcome) -> str | None:
    """The answer's ``x-plano-affinity``: new, pinned or unavailable."""
    return outcome.headers.get("x-plano-affinity")


def model(outcome: Outcome) -> str | None:
    """The model a JSON answer names (``None`` for an error envelope)."""
    body = outcome.json()
    return body.get("model") if isinstance(body, dict) else None


def session_plan(run: str, sessions: int = 64, **fault):
    """Request ``i`` goes to session ``i % sessions``; prompts alternate per round, so a
    session that lost its pin would visibly change model."""
    def plan(index: int) -> PlannedRequest:
        session = f"{run}-{index % sessions}"
        prompt = (DEEP_PROMPT, FAST_PROMPT)[(index // sessions + index) % 2]
        body = chat_body(prompt, **({"mock_fault": fault} if fault else {}))
        return PlannedRequest(body, {"X-Model-Affinity": session}, session)
    return plan


def prepin(gateway, run: str, sessions: int) -> dict[str, str]:
    """Pin ``sessions`` sessions (deep for even, fast for odd); session -> pinned model."""
    def plan(index: int) -> PlannedRequest:
        session = f"{run}-{index}"
        prompt = DEEP_PROMPT if index % 2 == 0 else FAST_PROMPT
        return PlannedRequest(chat_body(prompt), {"X-Model-Affinity": session}, session)
    result = Load(gateway.chat_url, sessions, 8, plan).run()
    assert [affinity(outcome) for outcome in result.outcomes] == ["new"] * sessions
    pins = {outcome.tag: model(outcome) for outcome in result.outcomes}
    assert set(pins.values()) == {"openai/gpt-5.2", "openai/gpt-4o-mini"}
    return pins


def stored_pins(server, run: str) -> dict[str, str]:
    """Session -> pinned model, read straight from Redis."""
    client = server.client()
    try:
        return {key[len(KEY_PREFIX):]: json.loads(client.get(key))["model_name"]
                for key in client.scan_iter(match=f"{KEY_PREFIX}{run}-*", count=1000)}
    finally:
        client.close()


def models_by_session(outcomes: list[Outcome]) -> dict[str, set]:
    """Session -> the set of models its answers named."""
    seen: dict[str, set] = {}
    for outcome in outcomes:
        seen.setdefault(outcome.tag, set()).add(model(outcome))
    return seen


def run_until_recovered(load: Load, since: float, quiet_seconds: float = 1.0,
                        timeout: float = 10.0) -> LoadResult:
    """Keep the load going until ``quiet_seconds`` have passed (and >= 100 requests began)
    after the last ``unavailable`` answer to a request begun at or after ``since``; or
    until ``timeout``. Then stop it and return the result."""
    deadline = since + timeout
    while time.monotonic() < deadline and load.completed < load.count:
        after = [o for o in load.outcomes() if o.started >= since]
        last_bad = max((o.started for o in after if affinity(o) == "unavailable"),
                       default=since)
        clean = [o for o in after if o.started > last_bad]
        if len(clean) >= 100 and time.monotonic() - last_bad > quiet_seconds:
            break
        time.sleep(0.05)
    load.stop()
    return load.wait()


def recovery(outcomes: list[Outcome], since: float) -> tuple[float, list[Outcome]]:
    """Seconds from ``since`` to the start of the last ``unavailable`` request begun after
    it (0 when none), and the requests begun after that one."""
    after = [o for o in outcomes if o.started >= since]
    last_bad = max((o.started for o in after if affinity(o) == "unavailable"), default=None)
    if last_bad is None:
        return 0.0, after
    return last_bad - since, [o for o in after if o.started > last_bad]


# --------------------------------------------------------------------------- Redis faults


def test_redis_killed_mid_load_every_request_still_answered(mock_llm, redis_server,
                                                            start_gateway, figures):
    gateway = start_gateway(gateway_config(mock_llm, cache=redis_cache(redis_server)))
    run = f"kill-{time.time_ns()}"
    load = Load(gateway.chat_url, 2000, CONCURRENCY, session_plan(run)).start()
    load.wait_completed(600)
    redis_server.kill()
    killed = time.monotonic()
    result = load.wait()

    assert result.failures == [], result.statuses
    before = [o for o in result.outcomes if o.finished < killed]
    after = result.started_between(killed)
    assert {affinity(o) for o in before} == {"new", "pinned"}
    assert len(after) >= 1000
    assert {affinity(o) for o in after} == {"unavailable"}
    # While pinned, every session kept its model; afterwards they are routed per prompt.
    assert all(len(models) == 1 for models in models_by_session(before).values())
    # The added p99 compares steady states: the first two rounds (connections opening,
    # every session pinning) are left out of "before".
    steady = [o for o in before if o.index >= 2 * 64]
    added_p99 = summarize(after)["p99_ms"] - summarize(steady)["p99_ms"]
    report(figures, "redis_killed_mid_load", sent=len(result.outcomes),
           non_2xx=len(result.failures), before=summarize(steady), after=summarize(after),
           added_p99_ms=round(added_p99, 1))
    # A refused connection costs no timeout: the tail grows by less than a second even on
    # a busy machine (a wait for Redis per request would show as far more).
    assert added_p99 < 1000


def test_redis_restarted_under_load_pins_resume_within_5s(mock_llm, redis_server,
                                                          start_gateway, figures):
    gateway = start_gateway(gateway_config(mock_llm, cache=redis_cache(redis_server)))
    run = f"restart-{time.time_ns()}"
    load = Load(gateway.chat_url, 8000, CONCURRENCY, session_plan(run)).start()
    load.wait_completed(300)
    redis_server.kill()
    load.wait_completed(load.completed + 300)
    restarting = time.monotonic()
    redis_server.restart()  # empty: the pins died with the old process
    restarted = time.monotonic()
    result = run_until_recovered(load, since=restarted)

    assert result.failures == [], result.statuses
    resumed_after, clean = recovery(result.outcomes, restarted)
    assert resumed_after < 5
    assert len(clean) >= 100
    assert {affinity(o) for o in clean} <= {"new", "pinned"}
    assert "pinned" in {affinity(o) for o in clean}
    assert all(len(models) == 1 for models in models_by_session(clean).values())
    report(figures, "redis_restarted_under_load", sent=len(result.outcomes),
           non_2xx=len(result.failures), overall=result.summary(),
           restart_s=round(restarted - restarting, 3),
           pins_resumed_after_s=round(resumed_after, 3),
           after_recovery=summarize(clean))


def test_redis_paused_beyond_the_timeout_latency_stays_bounded(mock_llm, redis_server,
                                                               start_gateway, figures):
    timeout_ms, cooldown, pause_ms = 100, 0.5, 3000
    gateway = start_gateway(gateway_config(mock_llm, cache=redis_cache(
        redis_server, timeout_ms=timeout_ms, cooldown_seconds=cooldown)))
    run = f"pause-{time.time_ns()}"
    pins = prepin(gateway, run, 32)
    load = Load(gateway.chat_url, 8000, CONCURRENCY, session_plan(run, sessions=32)).start()
    load.wait_completed(300)
    paused = time.monotonic()
    redis_server.pause(pause_ms)
    resumed = paused + pause_ms / 1000
    result = run_until_recovered(load, since=resumed)  # waits for the pause to end, too

    assert result.failures == [], result.statuses
    before = [o for o in result.outcomes if o.finished < paused]
    during = result.started_between(paused, resumed)
    assert "unavailable" in {affinity(o) for o in during}
    # Worst case per request: a GET and a SET NX, each waiting for a pooled connection,
    # timing out, reconnecting (the handshake is held too) and timing out once more;
    # plus the request's own time under this load, plus a generous margin for a busy box.
    redis_worst = 2 * 4 * timeout_ms / 1000
    bound = redis_worst + summarize(before)["max_ms"] / 1000 + 0.75
    assert bound < pause_ms / 1000  # so the bound proves that nobody waited for Redis
    assert summarize(during)["max_ms"] / 1000 < bound, summarize(during)
    # The breaker skips Redis during its cool-down: most requests do not wait at all (their
    # median stays within one Redis timeout of the steady state's p99).
    assert summarize(during)["p50_ms"] < summarize(before)["p99_ms"] + timeout_ms
    resumed_after, clean = recovery(result.outcomes, resumed)
    assert resumed_after < 5
    assert {affinity(o) for o in clean} == {"pinned"}
    assert all(model(o) == pins[o.tag] for o in clean)  # the pause lost no pin
    report(figures, "redis_paused_beyond_timeout", sent=len(result.outcomes),
           non_2xx=len(result.failures), timeout_ms=timeout_ms, cooldown_s=cooldown,
           pause_ms=pause_ms, before=summarize(before), during_pause=summarize(during),
           latency_bound_ms=round(bound * 1000, 1),
           pins_resumed_after_pause_s=round(resumed_after, 3))


def test_redis_connections_killed_under_load_reconnect_transparently(
        mock_llm, redis_server, start_gateway, figures):
    gateway = start_gateway(gateway_config(mock_llm, cache=redis_cache(redis_server)))
    run = f"conns-{time.time_ns()}"
    pins = prepin(gateway, run, 32)
    load = Load(gateway.chat_url, 1500, CONCURRENCY, session_plan(run, sessions=32)).start()
    killed = 0
    for fraction in (0.2, 0.4, 0.6, 0.8):
        load.wait_completed(int(1500 * fraction))
        killed += redis_server.kill_clients()
    result = load.wait()

    assert killed >= 4  # every round found the gateway's pooled connections
    assert result.failures == [], result.statuses
    assert {affinity(o) for o in result.outcomes} == {"pinned"}
    assert all(model(o) == pins[o.tag] for o in result.outcomes)
    report(figures, "redis_connections_killed", sent=len(result.outcomes),
           non_2xx=len(result.failures), connections_killed=killed,
           unavailable=sum(affinity(o) == "unavailable" for o in result.outcomes),
           overall=result.summary())


# --------------------------------------------------------------------------- upstream faults


@pytest.fixture
def upstream_gateway(mock_llm, redis_server, start_gateway):
    """A gateway whose provider calls time out after 1 s, pinning in ``redis_server``."""
    raw = gateway_config(mock_llm, cache=redis_cache(redis_server), listeners=[
        {"name": "model_listener", "type": "model", "address": "127.0.0.1", "port": 12000,
         "timeout": "1s"}])
    return start_gateway(raw)


def redis_state(server, run: str) -> dict[str, tuple[str, int]]:
    """Key -> (raw value, TTL) for the run's keys."""
    client = server.client()
    try:
        return {key: (client.get(key), client.ttl(key))
                for key in client.scan_iter(match=f"{KEY_PREFIX}{run}-*", count=1000)}
    finally:
        client.close()


def test_upstream_slower_than_its_timeout_gives_504_and_keeps_the_pin(
        upstream_gateway, redis_server, figures):
    run = f"slow-{time.time_ns()}"
    prepin(upstream_gateway, run, 8)
    stored = redis_state(redis_server, run)
    plan = session_plan(run, sessions=8, latency_ms=2500)
    result = Load(upstream_gateway.chat_url, 32, CONCURRENCY, plan).run()

    assert result.statuses == {504: 32}
    for outcome in result.outcomes:
        assert outcome.json()["error"] == {
            "message": outcome.json()["error"]["message"], "type": "upstream_error",
            "param": None, "code": "upstream_timeout"}
        assert affinity(outcome) == "pinned" and outcome.headers["x-plano-pinned"] == "true"
        assert 1.0 <= outcome.latency < 1.0 + 1.5  # the listener's timeout, not the mock's
    after = redis_state(redis_server, run)
    assert {key: value for key, (value, _) in after.items()} == \
        {key: value for key, (value, _) in stored.items()}
    assert all(after[key][1] <= stored[key][1] for key in stored)  # TTL not extended

    fresh = f"{run}-fresh"
    timed_out = fresh_post(upstream_gateway.chat_url,
                           chat_body(DEEP_PROMPT, mock_fault={"latency_ms": 2500}), fresh)
    assert timed_out.status_code == 504 and timed_out.headers["x-plano-affinity"] == "new"
    assert json.loads(redis_server.client().get(KEY_PREFIX + fresh))["model_name"] == \
        "openai/gpt-5.2"  # a pin made by a request whose provider timed out stays
    report(figures, "upstream_slower_than_timeout", sent=len(result.outcomes) + 1,
           non_2xx=len(result.failures) + 1, statuses=dict(result.statuses),
           listener_timeout_s=1.0, upstream_latency_ms=2500, overall=result.summary(),
           pins_unchanged=len(stored))


FAULTS = [({"status": 429}, 429, "mock_429"), ({"status": 500}, 500, "mock_500"),
          ({"status": 502}, 502, "mock_502"), ({"status": 503}, 503, "mock_503"),
          ({"raw_status": 500}, 500, "upstream_500"),
          ({"raw_status": 503}, 503, "upstream_503")]


def test_upstream_429_and_5xx_are_relayed_under_load(upstream_gateway, redis_server,
                                                     figures):
    run = f"relay-{time.time_ns()}"
    prepin(upstream_gateway, run, 12)
    stored = {key: value for key, (value, _) in redis_state(redis_server, run).items()}

    def plan(index: int) -> PlannedRequest:
        fault = FAULTS[index % len(FAULTS)][0]
        session = f"{run}-{index % 12}"
        return PlannedRequest(chat_body(FAST_PROMPT, mock_fault=fault),
                              {"X-Model-Affinity": session}, session)
    result = Load(upstream_gateway.chat_url, 300, CONCURRENCY, plan).run()

    assert len(result.outcomes) == 300
    for outcome in result.outcomes:
        _, status, code = FAULTS[outcome.index % len(FAULTS)]
        assert outcome.status == status
        error = outcome.json()["error"]
        assert error["code"] == code and set(error) == {"message", "type", "param", "code"}
        if code.startswith("upstream_"):  # a plain-text failure wrapped in our envelope
            assert error["type"] == "upstream_error" and "mock plain failure" in \
                error["message"]
        assert affinity(outcome) == "pinned"
        assert outcome.headers["x-plano-route"] in ("deep_reasoning", "fast_responses")
    assert {key: value for key, (value, _) in redis_state(redis_server, run).items()} == \
        stored
    report(figures, "upstream_429_5xx_relayed", sent=len(result.outcomes),
           non_2xx=len(result.failures), statuses=dict(result.statuses),
           overall=result.summary())


# --------------------------------------------------------------------------- routing LLM


@pytest.fixture(params=["down", "slow", "garbage"])
def routing_llm(request):
    """The routing model's base URL: a closed port, a mock slower than the routing
    timeout, or a mock whose canned answer is not a ``{"route": ...}`` object."""
    if request.param == "down":
        yield request.param, f"http://127.0.0.1:{free_port()}/v1"
        return
    mock = Stub(*(["--latency-ms", "3000"] if request.param == "slow" else [])).start()
    yield request.param, mock.base_url
    mock.stop()


def test_routing_llm_failure_serves_the_fallback_unpinned(mock_llm, redis_server,
                                                          start_gateway, routing_llm, figures):
    kind, router_url = routing_llm
    routing_timeout_ms = 300
    raw = gateway_config(mock_llm, cache=redis_cache(redis_server))
    raw["model_providers"].append({"model": "openai/arch-router", "base_url": router_url})
    raw["routing"].update(model="openai/arch-router", timeout_ms=routing_timeout_ms)
    gateway = start_gateway(raw, workers=1)
    run = f"router-{kind}-{time.time_ns()}"

    def plan(index: int) -> PlannedRequest:
        session = f"{run}-{index % 16}"
        prompt = (DEEP_PROMPT, FAST_PROMPT)[index % 2]
        requested = {"model": "openai/gpt-5.2"} if index % 3 == 0 else {}
        return PlannedRequest(chat_body(prompt, **requested), {"X-Model-Affinity": session},
                              session)
    result = Load(gateway.chat_url, 48, 8, plan).run()

    assert result.failures == [], result.statuses
    for outcome in result.outcomes:
        expected = "openai/gpt-5.2" if outcome.index % 3 == 0 else "openai/gpt-4o-mini"
        assert model(outcome) == expected  # the requested model, else the default
        assert affinity(outcome) == "unavailable"
        assert "x-plano-pinned" not in outcome.headers
        assert "x-plano-route" not in outcome.headers
        assert outcome.latency < routing_timeout_ms / 1000 + 1.5
    client = redis_server.client()
    assert list(client.scan_iter(match=f"{KEY_PREFIX}{run}*")) == []  # nothing pinned
    client.close()
    report(figures, f"routing_llm_{kind}", sent=len(result.outcomes),
           non_2xx=len(result.failures), routing_timeout_ms=routing_timeout_ms,
           pinned_keys=0, overall=result.summary())


# --------------------------------------------------------------------------- worker crash


def process_gone(pid: int) -> bool:
    """Dead: no such process, or a zombie the master has not reaped yet."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return status.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_worker_killed_with_sigkill_under_load_is_replaced_and_pins_survive(
        mock_llm, redis_server, start_gateway, figures):
    raw = gateway_config(mock_llm, cache=redis_cache(redis_server))
    raw["server"] = {"expose_worker_header": True}
    gateway = start_gateway(raw, workers=2)
    run = f"sigkill-{time.time_ns()}"
    pins = prepin(gateway, run, 32)
    old_workers = set(gateway.worker_pids())
    assert len(old_workers) == 2

    # A new connection per request, so the kernel hands requests to either worker.
    load = Load(gateway.chat_url, 1500, CONCURRENCY, session_plan(run, sessions=32),
                keep_alive=False).start()
    load.wait_completed(400)
    victim = min(old_workers)
    killing = time.monotonic()
    os.kill(victim, signal.SIGKILL)  # a worker of the gateway this test started
    wait_until(lambda: process_gone(victim), 5, "the killed worker to die", interval=0.001)
    dead = time.monotonic()
    replacement = wait_until(lambda: set(gateway.worker_pids()) - old_workers, 10,
                             "gunicorn to fork a replacement worker", interval=0.01)
    replaced_after = time.monotonic() - killing
    result = load.wait()

    # Only requests that were in flight on the killed worker may fail, as lost connections.
    failures = result.failures
    assert len(failures) <= CONCURRENCY
    assert all(o.status == 0 and o.started < dead for o in failures), failures
    assert victim not in gateway.worker_pids() and len(gateway.worker_pids()) == 2
    assert replaced_after < 5
    served = [o for o in result.outcomes if o.ok]
    assert {affinity(o) for o in served} == {"pinned"}
    assert all(model(o) == pins[o.tag] for o in served)
    # The new worker serves, and honours the pins made before the crash.
    (new_pid,) = replacement

    def served_by_new_worker():
        answer = fresh_post(gateway.chat_url, chat_body(FAST_PROMPT), f"{run}-0")
        return answer if answer.headers["x-plano-worker"].endswith(f":{new_pid}") else None
    first_answer = wait_until(served_by_new_worker, 10, "the new worker to answer")
    new_worker_ready = time.monotonic() - killing
    assert first_answer.json()["model"] == pins[f"{run}-0"]
    assert first_answer.headers["x-plano-affinity"] == "pinned"
    assert stored_pins(redis_server, run) == pins
    after = [fresh_post(gateway.chat_url, chat_body(DEEP_PROMPT), session)
             for session in sorted(pins)]
    models = zip(sorted(pins), (answer.json()["model"] for answer in after), strict=True)
    assert dict(models) == pins
    report(figures, "worker_sigkill_under_load", sent=len(result.outcomes),
           non_2xx=len(failures), failed_in_flight=len(failures),
           failure_kinds=sorted({o.error for o in failures}),
           replacement_forked_after_s=round(replaced_after, 3),
           replacement_serving_after_s=round(new_worker_ready, 3), overall=result.summary())
