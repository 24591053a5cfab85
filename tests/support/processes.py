"""Real processes for integration tests: the mock upstream and gunicorn gateways.

Each is started on a free loopback port, waited for by polling (never a fixed sleep), and
stopped by its own pid. An ``atexit`` hook stops anything a failed test left behind.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml

from tests.support.redis_servers import free_port

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
_RUNNING: set[subprocess.Popen] = set()


def _stop(process: subprocess.Popen, timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    if process.stdout is not None:
        process.stdout.close()
    _RUNNING.discard(process)


@atexit.register
def _stop_all() -> None:
    for process in list(_RUNNING):
        _stop(process, timeout=3)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` until it returns a truthy value; raise after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)


class MockLLM:
    """``bin/mock_llm.py`` on a free port."""

    def __init__(self, *args: str):
        self.args = args
        self.process: subprocess.Popen | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        """What a provider's ``base_url`` should be to reach this mock."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "MockLLM":
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "bin" / "mock_llm.py"), "--port", "0", "--quiet",
             *self.args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        _RUNNING.add(self.process)
        line = self.process.stdout.readline()
        if "listening on http://" not in line:
            _stop(self.process)
            raise RuntimeError(f"mock_llm did not start: {line!r}")
        self.port = int(line.split("listening on http://", 1)[1].split()[0].rsplit(":", 1)[1])
        return self

    def requests(self) -> list[dict]:
        """The requests the mock recorded (newest last)."""
        return requests.get(f"http://127.0.0.1:{self.port}/_mock/requests", timeout=5).json()

    def clear(self) -> None:
        requests.delete(f"http://127.0.0.1:{self.port}/_mock/requests", timeout=5)

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)


class Gateway:
    """The gateway under real gunicorn (gevent workers) with a config written to a file."""

    def __init__(self, config: dict, workers: int = 2, env: dict | None = None):
        self.config = config
        self.workers = workers
        self.env = env or {}
        self.port = 0
        self.process: subprocess.Popen | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="plano-gw-")
        self.log_path = Path(self._dir.name) / "gateway.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def chat_url(self) -> str:
        return f"{self.url}/v1/chat/completions"

    @property
    def config_path(self) -> Path:
        """The gateway config file (``PLANO_CONFIG``)."""
        return Path(self._dir.name) / "config.yaml"

    def write_config(self, config: dict | str) -> None:
        """Replace the config file (a dict as YAML, or raw text): takes effect on SIGHUP."""
        text = config if isinstance(config, str) else yaml.safe_dump(config)
        self.config_path.write_text(text)

    def start(self, port: int | None = None, wait: bool = True) -> "Gateway":
        config_path = self.config_path
        config_path.write_text(yaml.safe_dump(self.config))
        self.port = port or self.port or free_port()
        env = {**os.environ, "PLANO_CONFIG": str(config_path), "PLANO_HOST": "127.0.0.1",
               "PLANO_PORT": str(self.port), "PLANO_WORKERS": str(self.workers),
               "PLANO_GRACEFUL_TIMEOUT": "2", **self.env}
        env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [str(VENV_BIN / "gunicorn"), "-c", str(ROOT / "config" / "gunicorn.conf.py"),
             "app.wsgi:app"], cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        _RUNNING.add(self.process)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited early:\n{self.log_tail()}")
            try:
                return requests.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except requests.RequestException:
                return False
        try:
            wait_until(ready, timeout, "the gateway's /healthz")
        except TimeoutError:
            raise TimeoutError(f"gateway not ready:\n{self.log_tail()}") from None

    def worker_pids(self) -> list[int]:
        """Pids of the gunicorn workers (children of the master)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self._log.close()

    def __enter__(self) -> "Gateway":
        return self.start() if self.process is None else self

    def __exit__(self, *exc_info) -> None:
        self.stop()
        self._dir.cleanup()
