"""Zero-downtime config reload (SIGHUP) and drain (SIGTERM) under real gunicorn (SPEC §17).

Real gunicorn with gevent workers in front of the bundled mock upstream, whose streams are
slowed (``--chunk-delay-ms``) so that streams are really in flight when a signal arrives.
The load is bounded (a few hundred requests, half of them streaming, on loopback) and each
request opens its own connection, so the kernel hands requests to old and new workers alike.
"""

from __future__ import annotations

import json
import signal
import threading

import pytest
import requests

from devkit.load import Load, PlannedRequest
from devkit.processes import wait_until
from devkit.stubs import Stub
from tests.support.configs import FAST_PROMPT, chat_body, gateway_config

pytestmark = pytest.mark.integration

CHUNK_DELAY_MS = 15
#: Words of a streamed answer: one SSE chunk each, CHUNK_DELAY_MS apart.
STREAM_WORDS = " ".join(f"w{index}" for index in range(12))
RELOAD_ALIAS = "reloaded-model"
#: Matches no route, so the requested model (the alias) decides.
UNROUTED_PROMPT = "xyzzy plugh"
REQUESTS = 300


@pytest.fixture(scope="module")
def slow_mock():
    """A mock upstream whose streams take a while (one chunk per CHUNK_DELAY_MS)."""
    mock = Stub("--chunk-delay-ms", str(CHUNK_DELAY_MS)).start()
    yield mock
    mock.stop()


def plan(index: int) -> PlannedRequest:
    """Every other request streams; all of them use the alias every config has."""
    stream = index % 2 == 0
    body = chat_body(FAST_PROMPT, model="fast-model", stream=stream,
                     mock_fault={"content": STREAM_WORDS})
    return PlannedRequest(body, tag="stream" if stream else "json")


def complete(outcome) -> bool:
    """A 2xx answer that is whole: a stream ends with ``[DONE]``, JSON parses."""
    if not outcome.ok:
        return False
    if outcome.tag == "stream":
        return outcome.body.rstrip().endswith(b"data: [DONE]")
    return outcome.json() is not None


def routed_model(gateway, model: str) -> requests.Response:
    return requests.post(f"{gateway.url}/routing/v1/chat/completions", timeout=10,
                         json=chat_body(UNROUTED_PROMPT, model=model),
                         headers={"Connection": "close"})


def wait_for_new_workers(gateway, old: set[int], count: int) -> None:
    """Until the old workers are gone and ``count`` new ones run."""
    def replaced():
        pids = set(gateway.worker_pids())
        return not pids & old and len(pids) == count
    wait_until(replaced, 30, "the old workers to be replaced")


def hup_mid_load(gateway) -> tuple[list, set[int]]:
    """Start the load, SIGHUP the master a third of the way in, return every outcome."""
    old_workers = set(gateway.worker_pids())
    load = Load(gateway.chat_url, count=REQUESTS, concurrency=12, request_for=plan,
                keep_alive=False, timeout=20).start()
    load.wait_completed(REQUESTS // 3, timeout=60)
    gateway.process.signal(signal.SIGHUP)
    result = load.wait(timeout=120)
    return result.outcomes, old_workers


def test_sighup_reloads_the_config_without_failing_a_request(slow_mock, start_gateway):
    config = gateway_config(slow_mock)
    gateway = start_gateway(config, workers=2)
    assert routed_model(gateway, RELOAD_ALIAS).status_code == 400  # not configured yet

    config["model_aliases"][RELOAD_ALIAS] = {"target": "openai/gpt-5.2"}
    gateway.write_config(config)
    outcomes, old_workers = hup_mid_load(gateway)

    assert len(outcomes) == REQUESTS
    incomplete = [(o.status, o.error, o.body[-80:]) for o in outcomes if not complete(o)]
    assert incomplete == []
    assert sum(o.tag == "stream" for o in outcomes) == REQUESTS // 2
    wait_for_new_workers(gateway, old_workers, 2)
    for _ in range(6):  # fresh connections: whichever new worker answers
        answer = routed_model(gateway, RELOAD_ALIAS)
        assert answer.status_code == 200, answer.text
        assert answer.json()["models"] == ["openai/gpt-5.2"]
    assert gateway.process.proc.poll() is None


def test_bad_config_on_sighup_keeps_serving_the_old_one_and_says_why(slow_mock,
                                                                     start_gateway):
    config = gateway_config(slow_mock)
    config["model_aliases"][RELOAD_ALIAS] = {"target": "openai/gpt-5.2"}
    gateway = start_gateway(config, workers=2)
    broken = json.loads(json.dumps(config))
    broken["model_aliases"][RELOAD_ALIAS] = {"target": "openai/not-configured"}
    broken["routing"]["session_ttl_seconds"] = 0
    gateway.write_config(broken)

    outcomes, _ = hup_mid_load(gateway)

    assert [o.status for o in outcomes if not complete(o)] == []
    assert gateway.process.proc.poll() is None

    def rejection():
        for line in gateway.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{") and "config reload rejected" in line:
                return json.loads(line)
        return None
    entry = wait_until(rejection, 10, "the JSON log line of the rejected reload")
    assert entry["level"] == "ERROR" and entry["logger"] == "plano.config"
    assert any(p.startswith("routing.session_ttl_seconds") for p in entry["problems"])
    assert any(p.startswith("model_aliases") for p in entry["problems"])
    assert entry["config_file"] == str(gateway.config_path)
    # Workers started after the rejected reload serve the last good config.
    for _ in range(6):
        answer = routed_model(gateway, RELOAD_ALIAS)
        assert answer.status_code == 200, answer.text
        assert answer.json()["models"] == ["openai/gpt-5.2"]


def test_sigterm_lets_streams_in_flight_finish(slow_mock, start_gateway):
    gateway = start_gateway(gateway_config(slow_mock), workers=2,
                            env={"PLANO_GRACEFUL_TIMEOUT": "20"})
    streams = 16
    opened = threading.Barrier(streams + 1, timeout=30)
    results: list[tuple[int, bytes] | BaseException] = []
    lock = threading.Lock()
    long_stream = " ".join(f"w{index}" for index in range(60))  # ~1 s at 15 ms a chunk

    def stream_one():
        try:
            with requests.post(gateway.chat_url, stream=True, timeout=30,
                               headers={"Connection": "close"},
                               json=chat_body(stream=True,
                                              mock_fault={"content": long_stream})) as answer:
                chunks = answer.iter_content(chunk_size=None)
                first = next(chunks)
                opened.wait()
                body = first + b"".join(chunks)
                outcome = (answer.status_code, body)
        except BaseException as error:  # noqa: BLE001 - recorded for the assertion
            outcome = error
            opened.abort()
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=stream_one, daemon=True) for _ in range(streams)]
    for thread in threads:
        thread.start()
    opened.wait()  # every stream has its first bytes: all are in flight
    gateway.process.signal(signal.SIGTERM)
    for thread in threads:
        thread.join(40)
    assert gateway.process.proc.wait(30) == 0

    assert len(results) == streams
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    assert all(status == 200 for status, _ in results)
    assert all(body.rstrip().endswith(b"data: [DONE]") and b"w59" in body
               for _, body in results)
