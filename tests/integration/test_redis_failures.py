"""Redis trouble degrades the session cache, never the request, and heals by itself (§6).

Each test gets its own redis-server (``redis_server`` from the integration conftest: it may
be killed, paused or restarted), with a short socket timeout and cool-down so the whole
module stays fast. Timing assertions compare against the configured socket timeout: they
check behaviour ("did not wait for Redis"), not speed. The first tests build clients only
and open no socket.
"""

from __future__ import annotations

import logging
import time

import pytest
import redis

from app.config import SessionCacheConfig
from app.errors import InvalidBindingError, SessionCacheError, SessionCacheSkippedError
from app.session_cache.base import SessionBinding
from app.session_cache.redis_cache import create_redis_session_cache, pool_wait_seconds
from devkit.ports import free_port
from devkit.processes import wait_until
from devkit.redis_servers import RedisSentinel, RedisServer
from tests.support.servers import require_redis_server

TIMEOUT_MS = 200
COOLDOWN = 0.5
DEEP = SessionBinding("openai/gpt-5.2", "deep_reasoning")


def config(url: str, **overrides) -> SessionCacheConfig:
    """A Redis cache config with a short timeout, threshold 3 and a short cool-down."""
    settings = dict(type="redis", url=url, timeout_ms=TIMEOUT_MS, failure_threshold=3,
                    cooldown_seconds=COOLDOWN)
    settings.update(overrides)
    return SessionCacheConfig(**settings)


@pytest.fixture
def cache_for():
    """Builds caches from config and closes them after the test."""
    made = []

    def build(cfg: SessionCacheConfig, **kwargs):
        made.append(create_redis_session_cache(cfg, **kwargs))
        return made[-1]

    yield build
    for cache in made:
        cache.close()


def fail_until_open(cache) -> None:
    for _ in range(cache.breaker.failure_threshold):
        with pytest.raises(SessionCacheError) as info:
            cache.get("s1")
        assert info.value.outcome == "error"
    assert cache.breaker.state == "open"


# --------------------------------------------------------------------------- building


def test_rediss_url_with_ca_file_builds_tls_connections(cache_for, tmp_path):
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("not read until a connection is made\n")
    cache = cache_for(config("rediss://:s3cret@redis.example:6380/2", tls_ca_file=str(ca_file),
                             pool_size=7), probe=False)
    pool = cache.client.connection_pool
    assert pool.connection_class.__name__ == "SSLConnection"
    assert pool.connection_kwargs["ssl_ca_certs"] == str(ca_file)
    assert pool.connection_kwargs["host"] == "redis.example"
    assert pool.connection_kwargs["db"] == 2
    assert pool.connection_kwargs["socket_timeout"] == TIMEOUT_MS / 1000
    assert pool.connection_kwargs["socket_connect_timeout"] == TIMEOUT_MS / 1000
    assert pool.max_connections == 7 and pool.timeout == pool_wait_seconds(TIMEOUT_MS)
    assert pool._connections == []  # nothing connected
    assert "s3cret" not in repr(cache.address)


def test_pool_is_sized_from_worker_connections_by_default(cache_for, monkeypatch):
    monkeypatch.setenv("PLANO_WORKER_CONNECTIONS", "1234")
    cache = cache_for(config("redis://127.0.0.1:6390/0"), probe=False)
    assert cache.client.connection_pool.max_connections == 1234
    monkeypatch.delenv("PLANO_WORKER_CONNECTIONS")
    cache = cache_for(config("redis://127.0.0.1:6390/0"), probe=False)
    assert cache.client.connection_pool.max_connections == 1000


def test_standalone_client_retries_only_failed_connections_and_only_once(cache_for):
    cache = cache_for(config("redis://127.0.0.1:6390/0", pool_size=5), probe=False)
    pool = cache.client.connection_pool
    assert isinstance(pool, redis.BlockingConnectionPool)
    retry = pool.connection_kwargs["retry"]
    assert retry.get_retries() == 1
    assert set(retry._supported_errors) == {redis.ConnectionError, redis.TimeoutError}
    assert pool.connection_kwargs["health_check_interval"] == 0


def test_cluster_client_is_built_on_first_use_not_at_start(cache_for):
    port = free_port()
    cache = cache_for(config(f"redis://127.0.0.1:{port}", mode="cluster"), probe=False)
    with pytest.raises(SessionCacheError) as info:
        cache.get("s1")  # the first use discovers the (absent) cluster and fails
    assert info.value.outcome == "error"


def test_unreachable_redis_at_start_logs_a_redacted_warning(cache_for, caplog):
    port = free_port()
    with caplog.at_level(logging.WARNING, logger="app.session_cache.redis_cache"):
        cache = cache_for(config(f"redis://admin:s3cret@127.0.0.1:{port}/0"))
    assert f"session cache redis unreachable at 127.0.0.1:{port}; serving without " \
           "affinity until it answers" in caplog.text
    with pytest.raises(SessionCacheError) as info:
        cache.get("s1")
    assert "s3cret" not in caplog.text and "s3cret" not in str(info.value)


# --------------------------------------------------------------------------- outages


@pytest.mark.integration
def test_cache_created_while_redis_is_down_works_once_it_starts(cache_for, caplog):
    require_redis_server()
    port = free_port()
    with caplog.at_level(logging.WARNING, logger="app.session_cache.redis_cache"):
        cache = cache_for(config(f"redis://127.0.0.1:{port}/0"))
    assert "unreachable" in caplog.text
    with RedisServer(port=port):
        assert cache.get("s1") is None
        assert cache.put_if_absent("s1", DEEP, ttl_seconds=60) == DEEP
        assert cache.ping() is True


@pytest.mark.integration
def test_killed_server_raises_an_error_not_a_miss(redis_server, cache_for):
    cache = cache_for(config(redis_server.url))
    cache.put_if_absent("s1", DEEP, ttl_seconds=60)
    redis_server.kill()
    started = time.monotonic()
    with pytest.raises(SessionCacheError) as info:
        cache.get("s1")
    assert info.value.outcome == "error"
    # Refused at once; the bound only catches retry loops (seconds), not a busy machine.
    assert time.monotonic() - started < 10 * TIMEOUT_MS / 1000


@pytest.mark.integration
def test_after_threshold_failures_calls_are_skipped_without_waiting(redis_server, cache_for):
    cache = cache_for(config(redis_server.url))
    redis_server.kill()
    fail_until_open(cache)
    for call in (lambda: cache.get("s1"),
                 lambda: cache.put_if_absent("s1", DEEP, ttl_seconds=60)):
        started = time.monotonic()
        with pytest.raises(SessionCacheSkippedError):  # the breaker's error: no call
            call()
        assert time.monotonic() - started < 5 * TIMEOUT_MS / 1000
    assert cache.ping() is False


@pytest.mark.integration
def test_recovers_by_itself_after_redis_restarts(redis_server, cache_for):
    cache = cache_for(config(redis_server.url))
    redis_server.kill()
    fail_until_open(cache)
    redis_server.restart()  # same port, empty dataset
    wait_until(lambda: cache.put_if_absent("s1", DEEP, ttl_seconds=60) == DEEP, COOLDOWN + 3,
               "the cache to recover after the cool-down", ignore=(SessionCacheSkippedError,))
    assert cache.breaker.state == "closed"
    assert cache.get("s1") == DEEP


@pytest.mark.integration
def test_dropped_connections_reconnect_without_the_caller_noticing(redis_server, cache_for):
    cache = cache_for(config(redis_server.url))
    cache.put_if_absent("s1", DEEP, ttl_seconds=60)
    assert redis_server.kill_clients() >= 1
    assert cache.get("s1") == DEEP
    assert cache.breaker.consecutive_failures == 0


@pytest.mark.integration
def test_paused_server_times_out_then_works_again(redis_server, cache_for):
    cache = cache_for(config(redis_server.url))
    cache.put_if_absent("s1", DEEP, ttl_seconds=60)
    pause_ms = 1000
    redis_server.pause(pause_ms)
    started = time.monotonic()
    with pytest.raises(SessionCacheError) as info:
        cache.get("s1")
    waited = time.monotonic() - started
    assert info.value.outcome == "error"
    assert "Timeout" in str(info.value)
    assert TIMEOUT_MS / 1000 <= waited < pause_ms / 1000
    admin = redis_server.client(socket_timeout=5)
    try:
        assert admin.ping()  # answered only once the pause is over
    finally:
        admin.close()
    assert cache.get("s1") == DEEP


@pytest.mark.integration
def test_wrong_type_key_is_invalid_and_not_a_backend_failure(redis_server, cache_for):
    cache = cache_for(config(redis_server.url, failure_threshold=1))
    raw = redis_server.client()
    try:
        raw.rpush("plano:affinity:s1", "x")
        for _ in range(3):
            with pytest.raises(InvalidBindingError):
                cache.get("s1")
        assert cache.breaker.state == "closed"
        assert raw.lrange("plano:affinity:s1", 0, -1) == ["x"]
    finally:
        raw.close()


@pytest.mark.integration
def test_unix_socket_url_works(cache_for, tmp_path):
    require_redis_server()
    socket_path = tmp_path / "redis.sock"
    if len(str(socket_path)) > 100:  # sun_path holds ~107 bytes
        pytest.skip(f"temporary path too long for a unix socket: {socket_path}")
    with RedisServer(extra_args=["--unixsocket", str(socket_path), "--unixsocketperm", "700"]):
        cache = cache_for(config(f"unix://{socket_path}"))
        assert cache.put_if_absent("s1", DEEP, ttl_seconds=60) == DEEP
        assert cache.get("s1") == DEEP
        assert cache.ping() is True


@pytest.mark.integration
def test_sentinel_mode_pins_on_the_master(cache_for):
    require_redis_server()
    with RedisSentinel() as sentinel:
        cache = cache_for(SessionCacheConfig(
            type="redis", mode="sentinel", url="redis:///0", timeout_ms=1000,
            sentinels=tuple(sentinel.sentinel_addresses), master_name=sentinel.master_name))
        assert cache.put_if_absent("s1", DEEP, ttl_seconds=60) == DEEP
        raw = sentinel.master.client()
        try:
            assert raw.get("plano:affinity:s1") == \
                '{"model_name":"openai/gpt-5.2","route_name":"deep_reasoning"}'
        finally:
            raw.close()
