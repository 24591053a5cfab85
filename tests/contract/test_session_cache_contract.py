"""The session-cache contract (``app.session_cache.base``), checked on every backend.

flask-caching's ``GenericCacheTests`` pattern: :class:`GenericSessionCacheTests` holds every
behaviour test; each backend class only says how to make a cache, how to reach its raw
storage (Redis backends) and how time passes for it. Backends: memory (fake clock),
fakeredis, a real redis-server and a real 3-master Redis Cluster, both started here.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import fakeredis
import pytest

from app.config import SessionCacheConfig
from app.errors import InvalidBindingError
from app.session_cache.base import SessionBinding, SessionCache
from app.session_cache.memory import MemorySessionCache
from app.session_cache.redis_cache import RedisSessionCache, create_redis_session_cache
from devkit.processes import wait_until
from devkit.redis_servers import RedisCluster
from tests.support.fakes import FakeClock
from tests.support.servers import require_redis_server

PREFIX = "plano:affinity:"
DEEP = SessionBinding("openai/gpt-5.2", "deep_reasoning")
FAST = SessionBinding("openai/gpt-4o-mini", "fast_responses")
UNROUTED = SessionBinding("openai/gpt-4o-mini", None)


class GenericSessionCacheTests:
    """Every behaviour of the contract; subclasses provide the backend hooks below."""

    def make_cache(self) -> SessionCache:
        """A fresh, empty cache using the ``plano:affinity:`` prefix."""
        raise NotImplementedError

    def raw_client(self):
        """A redis-py client on the backend's storage (bytes), or skip (memory)."""
        pytest.skip("the memory backend stores objects, not Redis values")

    def age(self, key: str, seconds: float) -> None:
        """Make the binding under the logical ``key`` ``seconds`` older."""
        raw = self.raw_client()
        remaining_ms = raw.pttl(PREFIX + key)
        assert remaining_ms > seconds * 1000, "age() beyond the TTL; use expire_now"
        raw.pexpire(PREFIX + key, int(remaining_ms - seconds * 1000))

    def expire_now(self, key: str) -> None:
        """Let the TTL of ``key`` run out at once: 1 ms left on the raw key, then gone."""
        raw = self.raw_client()
        raw.pexpire(PREFIX + key, 1)
        wait_until(lambda: not raw.exists(PREFIX + key), 3, f"{key!r} to expire",
                   interval=0.001)

    @pytest.fixture
    def cache(self):
        cache = self.make_cache()
        yield cache
        cache.close()

    # -- lookups and first writer wins

    def test_miss_returns_none(self, cache):
        assert cache.get("never-pinned") is None
        assert cache.ttl("never-pinned") is None

    def test_put_stores_and_get_returns_the_binding(self, cache):
        assert cache.put_if_absent("s1", DEEP, ttl_seconds=60) == DEEP
        assert cache.get("s1") == DEEP

    def test_first_writer_wins(self, cache):
        assert cache.put_if_absent("s1", DEEP, ttl_seconds=60) == DEEP
        assert cache.put_if_absent("s1", FAST, ttl_seconds=60) == DEEP
        assert cache.get("s1") == DEEP

    def test_only_the_storing_call_gets_its_own_object_back(self, cache):
        mine = SessionBinding("openai/gpt-5.2", "deep_reasoning")
        equal_but_later = SessionBinding("openai/gpt-5.2", "deep_reasoning")
        assert cache.put_if_absent("s1", mine, ttl_seconds=60) is mine
        winner = cache.put_if_absent("s1", equal_but_later, ttl_seconds=60)
        assert winner == equal_but_later and winner is not equal_but_later

    def test_null_route_name_round_trips(self, cache):
        cache.put_if_absent("s1", UNROUTED, ttl_seconds=60)
        assert cache.get("s1") == UNROUTED
        assert cache.get("s1").route_name is None

    def test_concurrent_first_writers_all_get_the_same_winner(self, cache):
        writers = 20
        barrier = threading.Barrier(writers)

        def write(i: int) -> SessionBinding:
            barrier.wait(timeout=5)
            return cache.put_if_absent("race", SessionBinding(f"p/model-{i}"), ttl_seconds=60)

        with ThreadPoolExecutor(max_workers=writers) as pool:
            winners = list(pool.map(write, range(writers)))
        assert len(set(winners)) == 1
        assert cache.get("race") == winners[0]

    def test_tenants_are_isolated(self, cache):
        cache.put_if_absent("t1:s", DEEP, ttl_seconds=60)
        assert cache.get("t2:s") is None
        assert cache.put_if_absent("t2:s", FAST, ttl_seconds=60) == FAST
        assert cache.get("t1:s") == DEEP
        assert cache.get("t2:s") == FAST

    def test_delete_removes_only_that_binding(self, cache):
        cache.put_if_absent("s1", DEEP, ttl_seconds=60)
        cache.put_if_absent("s2", FAST, ttl_seconds=60)
        assert cache.delete("s1") is True
        assert cache.delete("s1") is False
        assert cache.get("s1") is None
        assert cache.get("s2") == FAST
        assert cache.put_if_absent("s1", FAST, ttl_seconds=60) == FAST

    def test_delete_of_an_expired_binding_returns_false(self, cache):
        cache.put_if_absent("s1", DEEP, ttl_seconds=1)
        self.expire_now("s1")
        assert cache.delete("s1") is False

    # -- replacing a stale pin (compare-and-set)

    def test_replace_stale_overwrites_a_pin_to_the_stale_model_with_a_fresh_ttl(self, cache):
        stale = SessionBinding("openai/retired", "old")
        cache.put_if_absent("s1", stale, ttl_seconds=60)
        self.age("s1", 30)
        mine = SessionBinding("openai/gpt-5.2", "deep_reasoning")
        assert cache.replace_stale("s1", "openai/retired", mine, ttl_seconds=60) is mine
        assert cache.get("s1") == DEEP
        assert cache.ttl("s1") > 30

    def test_replace_stale_keeps_another_writers_fresh_pin(self, cache):
        cache.put_if_absent("s1", SessionBinding("openai/retired"), ttl_seconds=60)
        first = SessionBinding("openai/gpt-5.2", "deep_reasoning")
        assert cache.replace_stale("s1", "openai/retired", first, ttl_seconds=60) is first
        # A second request that also read the stale pin must not replace the fresh one.
        second = SessionBinding("openai/gpt-4o-mini", "fast_responses")
        winner = cache.replace_stale("s1", "openai/retired", second, ttl_seconds=60)
        assert winner == DEEP and winner is not second
        assert cache.get("s1") == DEEP

    def test_replace_stale_stores_when_the_pin_is_gone(self, cache):
        mine = SessionBinding("openai/gpt-4o-mini", None)
        assert cache.replace_stale("s1", "openai/retired", mine, ttl_seconds=60) is mine
        assert cache.get("s1") == UNROUTED
        assert 0 < cache.ttl("s1") <= 60

    def test_replace_stale_never_overwrites_a_value_that_is_not_a_binding(self, cache):
        raw = self.raw_client()
        raw.set(PREFIX + "s1", b"not json", ex=60)
        with pytest.raises(InvalidBindingError):
            cache.replace_stale("s1", "openai/retired", DEEP, ttl_seconds=60)
        assert raw.get(PREFIX + "s1") == b"not json"
        raw.delete(PREFIX + "s1")
        raw.rpush(PREFIX + "s1", b"a")
        with pytest.raises(InvalidBindingError):
            cache.replace_stale("s1", "openai/retired", DEEP, ttl_seconds=60)
        assert raw.lrange(PREFIX + "s1", 0, -1) == [b"a"]

    # -- TTL

    def test_ttl_is_set_at_pinning(self, cache):
        cache.put_if_absent("s1", DEEP, ttl_seconds=60)
        assert 0 < cache.ttl("s1") <= 60

    def test_binding_expires_after_ttl_and_is_pinned_afresh(self, cache):
        cache.put_if_absent("s1", DEEP, ttl_seconds=60)
        assert cache.get("s1") == DEEP
        self.expire_now("s1")
        assert cache.get("s1") is None
        assert cache.ttl("s1") is None
        assert cache.put_if_absent("s1", FAST, ttl_seconds=60) == FAST

    def test_hits_do_not_extend_the_ttl(self, cache):
        cache.put_if_absent("s1", DEEP, ttl_seconds=60)
        self.age("s1", 30)
        assert cache.get("s1") == DEEP
        assert cache.put_if_absent("s1", FAST, ttl_seconds=60) == DEEP
        assert cache.ttl("s1") <= 30

    # -- sliding TTL (routing.session_ttl_mode: sliding) and turn records

    def test_get_renewing_restarts_the_ttl(self, cache):
        cache.put_if_absent("s1", DEEP, ttl_seconds=60)
        self.age("s1", 50)
        assert cache.ttl("s1") <= 10
        assert cache.get_renewing("s1", ttl_seconds=60) == DEEP
        assert cache.ttl("s1") > 50
        # Renewed again and again, the binding outlives its first TTL.
        self.age("s1", 55)
        assert cache.get_renewing("s1", ttl_seconds=60) == DEEP
        self.age("s1", 55)
        assert cache.get("s1") == DEEP

    def test_get_renewing_misses_without_storing(self, cache):
        assert cache.get_renewing("never-pinned", ttl_seconds=60) is None
        assert cache.ttl("never-pinned") is None
        assert cache.put_if_absent("never-pinned", FAST, ttl_seconds=60) == FAST

    def test_get_renewing_does_not_revive_an_expired_binding(self, cache):
        cache.put_if_absent("s1", DEEP, ttl_seconds=60)
        self.expire_now("s1")
        assert cache.get_renewing("s1", ttl_seconds=60) is None
        assert cache.get("s1") is None

    def test_get_still_never_renews(self, cache):
        cache.put_if_absent("s1", DEEP, ttl_seconds=60)
        cache.get_renewing("s1", ttl_seconds=60)
        self.age("s1", 30)
        assert cache.get("s1") == DEEP
        assert cache.ttl("s1") <= 30

    def test_put_overwrites_with_a_fresh_ttl(self, cache):
        cache.put("turn:s1", DEEP, ttl_seconds=60)
        assert cache.get("turn:s1") == DEEP
        self.age("turn:s1", 30)
        cache.put("turn:s1", FAST, ttl_seconds=60)
        assert cache.get("turn:s1") == FAST
        assert cache.ttl("turn:s1") > 30

    def test_get_renewing_leaves_an_undecodable_value_as_it_is(self, cache):
        raw = self.raw_client()
        raw.set(PREFIX + "s1", b"not json", ex=60)
        with pytest.raises(InvalidBindingError):
            cache.get_renewing("s1", ttl_seconds=60)
        assert raw.get(PREFIX + "s1") == b"not json"
        raw.delete(PREFIX + "s1")
        raw.rpush(PREFIX + "s1", b"a")
        with pytest.raises(InvalidBindingError):
            cache.get_renewing("s1", ttl_seconds=60)
        assert raw.lrange(PREFIX + "s1", 0, -1) == [b"a"]

    # -- per-session usage totals (SPEC §19)

    def test_usage_totals_add_up_per_field_and_keep_ints_as_ints(self, cache):
        assert cache.usage("usage:s1") is None
        cache.add_usage("usage:s1", {"requests": 1, "input_tokens": 100,
                                     "cost_usd": 0.25}, ttl_seconds=60)
        cache.add_usage("usage:s1", {"requests": 1, "input_tokens": 50, "cache_hits": 1,
                                     "cost_usd": 0.5}, ttl_seconds=60)
        totals = cache.usage("usage:s1")
        assert totals["requests"] == 2 and isinstance(totals["requests"], int)
        assert totals["input_tokens"] == 150 and totals["cache_hits"] == 1
        assert totals["cost_usd"] == pytest.approx(0.75)
        assert cache.usage("usage:other") is None

    def test_usage_totals_expire_with_their_ttl(self, cache):
        cache.add_usage("usage:s1", {"requests": 1}, ttl_seconds=60)
        self.expire_now("usage:s1")
        assert cache.usage("usage:s1") is None
        cache.add_usage("usage:s1", {"requests": 1}, ttl_seconds=60)
        assert cache.usage("usage:s1") == {"requests": 1}

    def test_usage_totals_leave_the_pin_alone(self, cache):
        cache.put_if_absent("s1", DEEP, ttl_seconds=600)
        cache.add_usage("usage:s1", {"requests": 3}, ttl_seconds=60)
        assert cache.get("s1") == DEEP
        assert cache.ttl("s1") > 60

    def test_a_batch_adds_every_sessions_totals_at_once(self, cache):
        cache.add_usage("usage:s1", {"requests": 1, "cost_usd": 0.5}, ttl_seconds=60)
        cache.add_usage_batch({"usage:s1": {"requests": 2, "cost_usd": 1e-05},
                               "usage:s2": {"requests": 1, "output_tokens": 4}},
                              ttl_seconds=60)
        assert cache.usage("usage:s1") == {"requests": 3, "cost_usd": pytest.approx(0.50001)}
        assert cache.usage("usage:s2") == {"requests": 1, "output_tokens": 4}
        cache.add_usage_batch({}, ttl_seconds=60)  # nothing pending: nothing to write

    def test_replaced_fields_are_set_beside_the_increments(self, cache):
        cache.add_usage("usage:s1", {"requests": 1}, ttl_seconds=60,
                        replace={"last_prompt_tokens": 900, "warm_since": 12.5})
        cache.add_usage("usage:s1", {}, ttl_seconds=60, replace={"last_prompt_tokens": 40})
        assert cache.usage("usage:s1") == {"requests": 1, "last_prompt_tokens": 40,
                                           "warm_since": 12.5}

    # -- exact Redis layout and foreign values (Redis backends only)

    def test_usage_totals_are_a_redis_hash_beside_the_pin(self, cache):
        raw = self.raw_client()
        cache.put_if_absent("my-session-abc", DEEP, ttl_seconds=600)
        cache.add_usage("usage:my-session-abc", {"requests": 1, "output_tokens": 7,
                                                 "cost_usd": 0.001}, ttl_seconds=600)
        key = "plano:affinity:usage:my-session-abc"
        assert raw.type(key) == b"hash"
        assert raw.hget(key, "output_tokens") == b"7"
        assert 0 < raw.ttl(key) <= 600
        assert raw.get("plano:affinity:my-session-abc") == \
            b'{"model_name":"openai/gpt-5.2","route_name":"deep_reasoning"}'

    def test_usage_totals_under_a_key_of_another_type_are_invalid(self, cache):
        raw = self.raw_client()
        raw.set(PREFIX + "usage:s1", b"text", ex=60)
        with pytest.raises(InvalidBindingError):
            cache.add_usage("usage:s1", {"requests": 1}, ttl_seconds=60)
        assert raw.get(PREFIX + "usage:s1") == b"text"

    def test_a_batch_writes_the_others_and_then_reports_a_key_of_another_type(self, cache):
        raw = self.raw_client()
        raw.set(PREFIX + "usage:s1", b"text", ex=60)
        with pytest.raises(InvalidBindingError):
            cache.add_usage_batch({"usage:s1": {"requests": 1}, "usage:s2": {"requests": 1}},
                                  ttl_seconds=60)
        assert raw.get(PREFIX + "usage:s1") == b"text"
        assert cache.usage("usage:s2") == {"requests": 1}

    def test_usage_totals_are_written_after_the_server_lost_its_scripts(self, cache):
        raw = self.raw_client()
        cache.add_usage("usage:s1", {"requests": 1}, ttl_seconds=60)
        raw.script_flush()  # a restarted or failed-over Redis has no scripts cached
        cache.add_usage_batch({"usage:s1": {"requests": 1}, "usage:s2": {"requests": 2}},
                              ttl_seconds=60)
        assert cache.usage("usage:s1") == {"requests": 2}
        assert cache.usage("usage:s2") == {"requests": 2}

    def test_exact_key_and_value_layout(self, cache):
        raw = self.raw_client()
        cache.put_if_absent("my-session-abc", DEEP, ttl_seconds=600)
        key = "plano:affinity:my-session-abc"
        assert raw.get(key) == b'{"model_name":"openai/gpt-5.2","route_name":"deep_reasoning"}'
        assert raw.type(key) == b"string"
        assert 0 < raw.ttl(key) <= 600
        cache.put_if_absent("unrouted", UNROUTED, ttl_seconds=600)
        assert raw.get(PREFIX + "unrouted") == \
            b'{"model_name":"openai/gpt-4o-mini","route_name":null}'

    def test_value_written_by_another_gateway_is_a_hit(self, cache):
        raw = self.raw_client()
        raw.set(PREFIX + "s1", b'{"model_name":"openai/gpt-5.2","route_name":null}', ex=60)
        assert cache.get("s1") == SessionBinding("openai/gpt-5.2", None)
        assert cache.put_if_absent("s1", FAST, ttl_seconds=60) == \
            SessionBinding("openai/gpt-5.2", None)

    @pytest.mark.parametrize("value", [
        b"not json", b"\xff\xfe", b"[1, 2]", b'"openai/gpt-5.2"', b"{}",
        b'{"route_name":"deep_reasoning"}', b'{"model_name":5}', b'{"model_name":""}',
        b'{"model_name":"openai/gpt-5.2","route_name":7}',
    ], ids=["text", "bad-utf8", "array", "string", "empty", "no-model", "model-int",
            "model-empty", "route-int"])
    def test_undecodable_value_is_invalid_and_never_overwritten(self, cache, value):
        raw = self.raw_client()
        raw.set(PREFIX + "s1", value, ex=60)
        with pytest.raises(InvalidBindingError) as info:
            cache.get("s1")
        assert info.value.outcome == "invalid"
        with pytest.raises(InvalidBindingError):
            cache.put_if_absent("s1", DEEP, ttl_seconds=60)
        assert raw.get(PREFIX + "s1") == value

    def test_wrong_type_key_is_invalid_and_left_alone(self, cache):
        raw = self.raw_client()
        raw.rpush(PREFIX + "s1", b"a", b"b")
        with pytest.raises(InvalidBindingError):
            cache.get("s1")
        with pytest.raises(InvalidBindingError):
            cache.put_if_absent("s1", DEEP, ttl_seconds=60)
        assert raw.type(PREFIX + "s1") == b"list"
        assert raw.lrange(PREFIX + "s1", 0, -1) == [b"a", b"b"]


# --------------------------------------------------------------------------- backends


class TestMemorySessionCache(GenericSessionCacheTests):
    """The per-process LRU; time is a fake clock."""

    @pytest.fixture(autouse=True)
    def _clock(self):
        self.clock = FakeClock()

    def make_cache(self) -> SessionCache:
        return MemorySessionCache(max_entries=1000, clock=self.clock)

    def age(self, key: str, seconds: float) -> None:
        self.clock.advance(seconds)

    def expire_now(self, key: str) -> None:
        self.clock.advance(60.0)


class TestFakeRedisSessionCache(GenericSessionCacheTests):
    """RedisSessionCache on fakeredis (one explicit FakeServer per test)."""

    @pytest.fixture(autouse=True)
    def _server(self):
        self.server = fakeredis.FakeServer()
        self.raw = fakeredis.FakeRedis(server=self.server)
        yield
        self.raw.close()

    def make_cache(self) -> SessionCache:
        return RedisSessionCache(fakeredis.FakeRedis(server=self.server), key_prefix=PREFIX)

    def raw_client(self):
        return self.raw


@pytest.fixture(scope="session")
def redis_cluster():
    """A real 3-master Redis Cluster started for this test session."""
    require_redis_server()
    with RedisCluster() as cluster:
        yield cluster


@pytest.mark.integration
class TestRealRedisSessionCache(GenericSessionCacheTests):
    """RedisSessionCache built from config, on a real redis-server started by the tests."""

    @pytest.fixture(autouse=True)
    def _server(self, shared_redis):
        shared_redis.flushall()
        self.server = shared_redis
        self.raw = shared_redis.client(decode_responses=False)
        yield
        self.raw.close()

    def make_cache(self) -> SessionCache:
        return create_redis_session_cache(SessionCacheConfig(
            type="redis", url=self.server.url, timeout_ms=1000, key_prefix=PREFIX))

    def raw_client(self):
        return self.raw


@pytest.mark.integration
@pytest.mark.redis_cluster
class TestRedisClusterSessionCache(GenericSessionCacheTests):
    """RedisSessionCache in cluster mode on a real 3-master cluster started by the tests."""

    @pytest.fixture(autouse=True)
    def _cluster(self, redis_cluster):
        for node in redis_cluster.nodes:
            node.flushall()
        self.cluster = redis_cluster
        self.raw = redis_cluster.client(decode_responses=False)
        yield
        self.raw.close()

    def make_cache(self) -> SessionCache:
        urls = self.cluster.startup_nodes_urls
        return create_redis_session_cache(SessionCacheConfig(
            type="redis", mode="cluster", url=urls[0], nodes=tuple(urls[1:]),
            timeout_ms=1000, key_prefix=PREFIX))

    def raw_client(self):
        return self.raw


# --------------------------------------------------------------------------- round trips


@pytest.mark.integration
def test_hit_costs_one_command_and_miss_two(shared_redis):
    """Counted by the server (INFO commandstats): hit = GET (sliding: GETEX); miss = GET +
    SET; a turn record = SET; nothing else."""
    shared_redis.flushall()
    admin = shared_redis.client()
    # The creation PING opens the pooled connection, so no handshake lands in the counts.
    cache = create_redis_session_cache(SessionCacheConfig(
        type="redis", url=shared_redis.url, timeout_ms=1000, pool_size=1))

    def commands_during(action) -> dict[str, int]:
        before = admin.info("commandstats")
        action()
        after = admin.info("commandstats")
        diff = {name: stats["calls"] - before.get(name, {}).get("calls", 0)
                for name, stats in after.items() if name != "cmdstat_info"}
        return {name: calls for name, calls in diff.items() if calls}

    def miss() -> None:
        assert cache.get("s1") is None
        assert cache.put_if_absent("s1", DEEP, ttl_seconds=60) == DEEP

    def replace_stale() -> None:
        assert cache.replace_stale("s1", "openai/gpt-5.2", FAST, ttl_seconds=60) == FAST

    fresh = create_redis_session_cache(SessionCacheConfig(
        type="redis", url=shared_redis.url, timeout_ms=1000), probe=False)
    try:
        # A new connection costs no handshake commands (no CLIENT SETINFO).
        assert commands_during(fresh.ping) == {"cmdstat_ping": 1}
        assert commands_during(miss) == {"cmdstat_get": 1, "cmdstat_set": 1}
        assert commands_during(lambda: cache.get("s1")) == {"cmdstat_get": 1}
        # A sliding hit renews the TTL in the same single command.
        sliding_hit = lambda: cache.get_renewing("s1", ttl_seconds=60)  # noqa: E731
        assert commands_during(sliding_hit) == {"cmdstat_getex": 1}
        turn_record = lambda: cache.put("turn:s1", DEEP, ttl_seconds=60)  # noqa: E731
        assert commands_during(turn_record) == {"cmdstat_set": 1}
        lost_race = lambda: cache.put_if_absent("s1", FAST, ttl_seconds=60)  # noqa: E731
        assert commands_during(lost_race) == {"cmdstat_set": 1, "cmdstat_get": 1}
        # The first replacement loads the script (EVALSHA answers NOSCRIPT, EVAL caches
        # it); from then on a replacement is one EVALSHA, whose GET and SET run inside.
        cache.put_if_absent("s2", DEEP, ttl_seconds=60)
        cache.replace_stale("s2", "openai/gpt-5.2", FAST, ttl_seconds=60)
        assert commands_during(replace_stale) == {"cmdstat_evalsha": 1, "cmdstat_get": 1,
                                                  "cmdstat_set": 1}
    finally:
        cache.close()
        fresh.close()
        admin.close()
