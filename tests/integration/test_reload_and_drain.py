"""Zero-downtime config reload (SIGHUP) and drain (SIGTERM) under real gunicorn (SPEC §17).

Real gunicorn with gevent workers in front of the bundled mock upstream, whose streams are
slowed (``--chunk-delay-ms``) so that streams are really in flight when a signal arrives.
The load is bounded (a few hundred requests, half of them streaming, on loopback) and each
request opens its own connection, so the kernel hands requests to old and new workers alike.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest
import requests
import yaml

from devkit import ROOT
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
    try:
        wait_until(replaced, 30, "the old workers to be replaced")
    except TimeoutError:
        raise TimeoutError(f"old workers {sorted(old)}, now {gateway.worker_pids()}:\n"
                           f"{gateway.log_tail(60)}") from None


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


def requests_counted(gateway) -> float:
    """``plano_requests_total`` summed over its labels, from one scrape."""
    text = requests.get(f"{gateway.url}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("plano_requests_total{"))


def test_counters_survive_a_reload_in_the_operators_metrics_directory(slow_mock,
                                                                      start_gateway,
                                                                      tmp_path):
    gateway = start_gateway(gateway_config(slow_mock), workers=2,
                            env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    for _ in range(10):
        assert routed_model(gateway, "fast-model").status_code == 200
    before = requests_counted(gateway)
    assert before >= 10
    old_workers = set(gateway.worker_pids())
    gateway.process.signal(signal.SIGHUP)
    wait_for_new_workers(gateway, old_workers, 2)
    assert requests_counted(gateway) >= before


RELOADS_IN_ONE_MASTER = """
import json, os, runpy, sys, yaml
path = os.environ["PLANO_CONFIG"]
config = yaml.safe_load(open(path))
seen = []
for index in range(7):
    # The first two loads see the same file: the second reuses the active snapshot.
    config["routing"]["session_ttl_seconds"] = 100 + max(index, 1)
    open(path, "w").write(yaml.safe_dump(config))
    runpy.run_path(sys.argv[1])  # what gunicorn does at start and on each SIGHUP
    seen.append(os.environ["PLANO_CONFIG_ACTIVE"])
print(json.dumps({"seen": seen, "left": sorted(os.listdir(os.path.dirname(seen[-1])))}))
"""


def test_config_snapshots_outlive_the_reload_that_replaced_them(slow_mock, tmp_path):
    """A worker forked before a reload may still be loading the app from the previous
    snapshot (and gunicorn halts the master when a worker cannot boot), so a reload keeps
    the last few snapshots; an unchanged file reuses the active one."""
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(gateway_config(slow_mock)))
    env = {**os.environ, "PLANO_CONFIG": str(config_path), "TMPDIR": str(tmp_path)}
    for name in ("PLANO_CONFIG_ACTIVE", "PLANO_CONFIG_SNAPSHOTS", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name, None)
    result = subprocess.run([sys.executable, "-c", RELOADS_IN_ONE_MASTER,
                             str(ROOT / "config" / "gunicorn.conf.py")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    seen = outcome["seen"]
    assert seen[0] == seen[1]  # unchanged file: same snapshot
    assert len(set(seen)) == 6
    # The active snapshot and the three before it are still there; older ones are gone.
    assert outcome["left"] == sorted(os.path.basename(p) for p in list(dict.fromkeys(seen))[-4:])
    assert not any(tmp_path.glob("plano-config-*"))  # removed when the "master" exited


def listening_sockets(port: int) -> set[str]:
    """Inodes of the TCP sockets listening on ``port`` on 127.0.0.1 (``/proc/net/tcp``)."""
    inodes = set()
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.split(":")[1], 16) == port:
                inodes.add(inode)
    return inodes


@pytest.mark.parametrize(("reuse_port", "listeners"), [(None, 1), ("1", 2)])
def test_reuse_port_gives_each_worker_its_own_listener(slow_mock, start_gateway, reuse_port,
                                                       listeners):
    env = {"PLANO_REUSE_PORT": reuse_port} if reuse_port else {}
    gateway = start_gateway(gateway_config(slow_mock), workers=2, env=env)
    wait_until(lambda: len(gateway.worker_pids()) == 2, 30, "two workers")
    # Default: the master's one socket, shared by the workers; PLANO_REUSE_PORT=1: one per
    # worker, and the kernel spreads new connections over them.
    wait_until(lambda: len(listening_sockets(gateway.port)) == listeners, 30,
               f"{listeners} listening socket(s)")
    for _ in range(8):  # fresh connections: all answered, whichever worker listens
        assert routed_model(gateway, "openai/gpt-4o-mini").status_code == 200
