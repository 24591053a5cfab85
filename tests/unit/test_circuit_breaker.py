"""CircuitBreaker on a fake clock, alone and around RedisSessionCache (no sockets)."""

from __future__ import annotations

import pytest
import redis

from app.errors import SessionCacheError, SessionCacheSkippedError
from app.session_cache.base import SessionBinding
from app.session_cache.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from app.session_cache.redis_cache import RedisSessionCache
from tests.support.fakes import FakeClock


class FlakyRedis:
    """Stands in for a redis-py client: fails while ``down``, counts every call."""

    def __init__(self) -> None:
        self.down = True
        self.calls = 0

    def _answer(self, value):
        self.calls += 1
        if self.down:
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379.")
        return value

    def get(self, key):
        return self._answer(None)

    def set(self, key, value, nx=False, ex=None):
        return self._answer(True)

    def ping(self):
        return self._answer(True)

    def close(self):
        pass


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def breaker(clock):
    return CircuitBreaker(failure_threshold=3, cooldown_seconds=2.0, clock=clock)


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        assert breaker.allow()
        breaker.record_failure()


def test_opens_after_threshold_consecutive_failures(breaker):
    fail(breaker, 2)
    assert breaker.state == CLOSED
    assert breaker.allow()
    assert breaker.record_failure() is True  # the third one opens it
    assert breaker.state == OPEN
    assert not breaker.allow()


def test_a_success_resets_the_failure_count(breaker):
    fail(breaker, 2)
    breaker.record_success()
    fail(breaker, 2)
    assert breaker.state == CLOSED
    assert breaker.consecutive_failures == 2


def test_refuses_calls_for_the_whole_cooldown(breaker, clock):
    fail(breaker, 3)
    clock.advance(1.99)
    assert not breaker.allow()
    # Failures of calls still in flight when it opened do not extend the cool-down.
    breaker.record_failure()
    clock.advance(0.01)
    assert breaker.allow()


def test_lets_exactly_one_probe_through_after_the_cooldown(breaker, clock):
    fail(breaker, 3)
    clock.advance(2.0)
    assert breaker.allow()
    assert breaker.state == HALF_OPEN
    assert not breaker.allow()
    assert not breaker.allow()


def test_successful_probe_closes_the_breaker(breaker, clock):
    fail(breaker, 3)
    clock.advance(2.0)
    assert breaker.allow()
    assert breaker.record_success() is True
    assert breaker.state == CLOSED
    assert all(breaker.allow() for _ in range(5))
    assert breaker.consecutive_failures == 0


def test_failed_probe_reopens_for_another_cooldown(breaker, clock):
    fail(breaker, 3)
    clock.advance(2.0)
    assert breaker.allow()
    assert breaker.record_failure() is False  # re-opened, not newly opened
    assert breaker.state == OPEN
    clock.advance(1.0)
    assert not breaker.allow()
    clock.advance(1.0)
    assert breaker.allow()


def test_a_lost_probe_is_replaced_after_a_cooldown(breaker, clock):
    fail(breaker, 3)
    clock.advance(2.0)
    assert breaker.allow()  # this probe never reports (its greenlet was killed)
    clock.advance(1.0)
    assert not breaker.allow()
    clock.advance(1.0)
    assert breaker.allow()


@pytest.mark.parametrize("threshold, cooldown", [(0, 1.0), (1, -1.0)])
def test_rejects_nonsense_settings(threshold, cooldown):
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=threshold, cooldown_seconds=cooldown)


def test_redis_cache_skips_redis_during_cooldown_and_recovers_by_itself(breaker, clock):
    client = FlakyRedis()
    cache = RedisSessionCache(client, breaker=breaker)
    for _ in range(3):
        with pytest.raises(SessionCacheError) as info:
            cache.get("s1")
        assert info.value.outcome == "error"
    assert client.calls == 3

    for call in (lambda: cache.get("s1"),
                 lambda: cache.put_if_absent("s1", SessionBinding("p/m"), ttl_seconds=60)):
        with pytest.raises(SessionCacheSkippedError) as info:
            call()
        assert info.value.outcome == "skipped"
    assert cache.ping() is False
    assert client.calls == 3  # Redis was not touched during the cool-down

    client.down = False
    clock.advance(2.0)
    assert cache.ping() is True  # the health check is the half-open probe
    assert client.calls == 4
    assert breaker.state == CLOSED
    assert cache.put_if_absent("s1", SessionBinding("p/m"), ttl_seconds=60) == \
        SessionBinding("p/m")


def test_invalid_values_do_not_count_as_backend_failures(breaker):
    client = FlakyRedis()
    client.down = False
    client.get = lambda key: b"not json"
    cache = RedisSessionCache(client, breaker=breaker)
    for _ in range(5):
        with pytest.raises(SessionCacheError) as info:
            cache.get("s1")
        assert info.value.outcome == "invalid"
    assert breaker.state == CLOSED
    assert breaker.consecutive_failures == 0


@pytest.mark.parametrize("error", [
    redis.ConnectionError("No connection available."),
    redis.exceptions.MaxConnectionsError("No connection available."),
], ids=["blocking-pool-wait", "max-connections"])
def test_waiting_for_a_pooled_connection_never_opens_the_breaker(breaker, error):
    """Local congestion (no free pooled connection in time) is not a Redis failure."""
    client = FlakyRedis()
    client.down = False

    def congested(key):
        raise error
    client.get = congested
    cache = RedisSessionCache(client, breaker=breaker)
    for _ in range(breaker.failure_threshold * 3):
        with pytest.raises(SessionCacheError) as info:
            cache.get("s1")
        assert info.value.outcome == "error"
        assert "pool" in str(info.value)
    assert breaker.state == CLOSED and breaker.consecutive_failures == 0


def test_real_connection_errors_still_open_the_breaker(breaker):
    client = FlakyRedis()  # refuses connections
    cache = RedisSessionCache(client, breaker=breaker)
    for _ in range(breaker.failure_threshold):
        with pytest.raises(SessionCacheError):
            cache.get("s1")
    assert breaker.state == OPEN


def test_an_exhausted_blocking_pool_is_local_congestion_not_an_outage(breaker):
    """The real pool class the factory builds, on fakeredis: every connection is taken."""
    import fakeredis

    from app.session_cache.redis_cache import PoolWaitPool
    pool = PoolWaitPool(connection_class=fakeredis.FakeRedisConnection,
                        server=fakeredis.FakeServer(), max_connections=1, timeout=0.01)
    cache = RedisSessionCache(redis.Redis(connection_pool=pool), breaker=breaker)
    held = pool.get_connection()
    try:
        for _ in range(breaker.failure_threshold + 1):
            with pytest.raises(SessionCacheError):
                cache.get("s1")
        assert breaker.state == CLOSED
    finally:
        pool.release(held)
    assert cache.get("s1") is None  # a free connection again: served normally
    cache.close()
