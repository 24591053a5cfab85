"""The real gateway for tests and ``bin/bench``: gunicorn with gevent workers on a free
loopback port, its config written to a file, stopped by its own pid."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import requests

from devkit import HOST, ROOT, VENV_BIN
from devkit.configs import write_config
from devkit.ports import Listener, free_port
from devkit.processes import Process, children, http_ok, wait_until
from devkit.stubs import scratch_dir

#: One ``plano_prompt_cache_requests_total`` sample: answers whose usage was counted.
_USAGE_ANSWERS = re.compile(r"^plano_prompt_cache_requests_total\{[^}]*\}\s+(\S+)$", re.M)

#: Left out of the gateway's environment: it gets its own settings, tracing stays off unless
#: the config asks, and each gunicorn makes its own metrics directory.
_OWN_PREFIXES = ("PLANO_", "OTEL_", "PROMETHEUS_", "GUNICORN_")


class Gateway(Listener):
    """``gunicorn -c config/gunicorn.conf.py app.wsgi:app`` with ``config`` (a dict).

    The listener's host and port come from ``PLANO_HOST``/``PLANO_PORT``; ``env`` adds or
    overrides variables (e.g. ``PLANO_EXPOSE_WORKER``). With ``config=None`` it is plain
    ``gunicorn --bind HOST:PORT GUNICORN_ARGS APP`` instead (the bench's passthrough app).
    """

    def __init__(self, config: dict | None, workers: int = 2, env: dict | None = None, *,
                 name: str = "gateway", log_dir: Path | None = None,
                 app: str = "app.wsgi:app", gunicorn_args: tuple[str, ...] = ()):
        self.config = config
        self.workers = workers
        self.name = name
        self.dir = log_dir or scratch_dir()
        self.log_path = self.dir / f"{name}.log"
        self.env = env or {}
        self.app = app
        self.gunicorn_args = gunicorn_args
        self.port = 0
        self.process: Process | None = None

    @property
    def chat_url(self) -> str:
        return f"{self.url}/v1/chat/completions"

    @property
    def config_path(self) -> Path:
        """The gateway config file (``PLANO_CONFIG``)."""
        return self.dir / f"{self.name}.yaml"

    def write_config(self, config: dict | str) -> None:
        """Replace the config file (a dict as YAML, or raw text): takes effect on SIGHUP."""
        if isinstance(config, str):
            self.config_path.write_text(config)
        else:
            write_config(config, self.config_path)

    def start(self, port: int | None = None, wait: bool = True) -> Gateway:
        """Start on ``port`` (default: the previous one, else a free one)."""
        self.port = port or self.port or free_port()
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(_OWN_PREFIXES)}
        argv = [str(VENV_BIN / "gunicorn"), "--no-control-socket", *self.gunicorn_args]
        if self.config is None:
            argv += ["--bind", f"{HOST}:{self.port}"]
        else:
            config_path = write_config(self.config, self.config_path)
            env.update(PLANO_CONFIG=str(config_path), PLANO_HOST=HOST,
                       PLANO_PORT=str(self.port), PLANO_WORKERS=str(self.workers),
                       PLANO_GRACEFUL_TIMEOUT="2")
            argv += ["-c", str(ROOT / "config" / "gunicorn.conf.py")]
        env.update(self.env)
        argv.append(self.app)
        self.process = Process(self.name, argv, log_path=self.log_path, env=env).start()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60.0, all_workers: bool = False) -> None:
        """Wait for ``/healthz``; with ``all_workers``, also for every worker to serve."""
        alive = self.process.check_alive
        wait_until(lambda: http_ok(self.port, "/healthz"), timeout, f"{self.name} /healthz",
                   alive=alive)
        if not all_workers:
            return
        wait_until(lambda: len(self.worker_pids()) >= self.workers, timeout,
                   f"{self.name}: {self.workers} workers", alive=alive)
        # A booted worker may still import the app: answers on fresh connections (spread
        # over the workers by the kernel), a few in a row, show they all serve.
        streak = [0]

        def serving() -> bool:
            streak[0] = streak[0] + 1 if http_ok(self.port, "/healthz") else 0
            return streak[0] >= 4 * self.workers

        wait_until(serving, timeout, f"{self.name}: every worker serving", alive=alive,
                   interval=0)

    def metrics_counting(self, answers: int, timeout: float = 10.0) -> str:
        """The ``/metrics`` text once it counts the usage of at least ``answers`` answers
        (or at ``timeout``): each worker adds its answers' usage to the counters within a
        second (coalesced per worker, SPEC §19), so a scrape right after the traffic may
        not show another worker's last answers yet."""
        deadline = time.monotonic() + timeout
        while True:
            text = requests.get(f"{self.url}/metrics", timeout=10).text
            counted = sum(float(value) for value in _USAGE_ANSWERS.findall(text))
            if counted >= answers or time.monotonic() > deadline:
                return text
            time.sleep(0.1)

    def worker_pids(self) -> list[int]:
        """Pids of the gunicorn workers (children of the master)."""
        return children(self.process.pid if self.process else None)

    def pids(self) -> list[int]:
        """The workers (what serves requests; for CPU time and profiles)."""
        return self.worker_pids()

    def log_tail(self, lines: int = 40) -> str:
        return self.process.log_tail(lines) if self.process else ""

    def stop(self) -> int | None:
        """SIGTERM (graceful), SIGKILL after 10 s; the master's exit status."""
        return self.process.stop() if self.process else None

    def __enter__(self) -> Gateway:
        return self.start() if self.process is None else self

    def __exit__(self, *exc_info) -> None:
        self.stop()
