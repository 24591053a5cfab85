"""Shared session cache in Redis: standalone, Cluster or Sentinel (SPEC §6).

Plano's layout: key ``key_prefix + logical key``, value compact JSON
``{"model_name":"openai/gpt-5.2","route_name":"deep_reasoning"}``, TTL set once by
``SET key value NX EX ttl`` and never extended, unless ``session_ttl_mode`` is ``sliding``:
then a hit is ``GETEX key EX ttl``, which renews it. A hit is one round trip (GET or GETEX),
a miss two (GET, SET NX; a lost race adds the winner's GET). Single-key commands only, no MULTI,
so Redis Cluster works unchanged. A session's usage totals (SPEC §19) are one hash written
by one script call (HINCRBY / HINCRBYFLOAT per field, HSET of the budget's state, EXPIRE),
which touches that one key; a worker's flush pipelines one such call per session, so it too
runs on Cluster.

Replacing a stale pin (one naming a model no longer configured) is a compare-and-set in
one round trip: a Lua script (EVALSHA, falling back to EVAL when the server does not have
it cached) that overwrites the key only while it still names the stale model, so two
requests replacing the same stale pin cannot overwrite each other's fresh one. It touches
one key, so it runs on Redis Cluster too.

Fail open: every redis-py failure becomes :class:`SessionCacheError` (the gateway routes
without affinity), and a :class:`CircuitBreaker` stops calling a Redis that keeps failing
until a probe succeeds. Clients have short timeouts and one immediate retry of a failed
connection, so one command waits at most about twice ``timeout_ms``. Building a client never
connects, so the gateway starts while Redis is down; ``RedisCluster`` discovers the topology
in its constructor, so it is built on first use instead.

Pool: bounded and blocking, sized by ``pool_size``, by default gunicorn's
``worker_connections`` (:mod:`app.pools`): a request holds one connection for one command,
so a pool of that size never makes a request wait. Waiting for a pooled connection is local
congestion, not a Redis failure: it never counts toward the breaker (only refused, reset or
timed-out connections and commands do). With a smaller ``pool_size`` a request waits up to
:func:`pool_wait_seconds` (ten times ``timeout_ms``, at least 1 s) and is then served
without affinity (outcome ``error``, logged as local pool exhaustion), the breaker untouched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.connection import BlockingConnectionPool, parse_url
from redis.exceptions import (
    MaxConnectionsError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
)
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from app.config import SessionCacheConfig
from app.errors import InvalidBindingError, SessionCacheError, SessionCacheSkippedError
from app.pools import worker_connections
from app.session_cache.base import SessionBinding, SessionCache, StoredPin
from app.session_cache.breaker import CLOSED, CircuitBreaker

logger = logging.getLogger(__name__)

#: The only errors retried (once, at once): a refused, dropped or timed-out connection.
RETRY_ERRORS = (redis.ConnectionError, redis.TimeoutError)
#: What a redis-py call may raise when the backend fails (cluster errors are not RedisError).
_BACKEND_ERRORS = (RedisError, RedisClusterException, OSError)
#: ``ttl()`` of a key without expiry (Redis ``TTL`` -1); this backend never writes one.
NO_EXPIRY = -1
#: :meth:`RedisSessionCache.sample_pins`: keys asked per SCAN step, and at most this many steps.
SAMPLE_SCAN_COUNT = 200
SAMPLE_SCAN_STEPS = 10
#: redis-py's message when ``BlockingConnectionPool`` found no free connection in time.
_POOL_WAIT_MESSAGE = "No connection available."

#: KEYS[1] = key; ARGV = stale model name, new value, ttl. Stores the new value when the key
#: is absent or still names the stale model; returns 1 when it stored, else the value now
#: stored (left untouched: another writer's fresh pin, or a value that is not a binding).
#: A key of another type answers the same WRONGTYPE error a GET would.
REPLACE_STALE_SCRIPT = """
local current = redis.pcall('GET', KEYS[1])
if type(current) == 'table' and current.err then
  return redis.error_reply(current.err)
end
if current then
  local ok, pin = pcall(cjson.decode, current)
  if not (ok and type(pin) == 'table' and pin.model_name == ARGV[1]) then
    return current
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""
_REPLACE_STALE_SHA = hashlib.sha1(REPLACE_STALE_SCRIPT.encode()).hexdigest()

#: KEYS[1] = a usage totals hash; ARGV = ttl, the number of increments, then field/amount
#: pairs: the increments (HINCRBYFLOAT for an amount written as a float, with a point or an
#: exponent; HINCRBY else), then fields to set (HSET). Then EXPIRE. One command per session
#: however many fields change: a pipeline of HINCRBYs cost a flush five times the CPU.
ADD_USAGE_SCRIPT = """
local key = KEYS[1]
local last_increment = 2 + 2 * tonumber(ARGV[2])
for i = 3, last_increment, 2 do
  if string.find(ARGV[i + 1], '[.eE]') then
    redis.call('HINCRBYFLOAT', key, ARGV[i], ARGV[i + 1])
  else
    redis.call('HINCRBY', key, ARGV[i], ARGV[i + 1])
  end
end
for i = last_increment + 1, #ARGV, 2 do
  redis.call('HSET', key, ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', key, ARGV[1])
return 1
"""
_ADD_USAGE_SHA = hashlib.sha1(ADD_USAGE_SCRIPT.encode()).hexdigest()


def pool_wait_seconds(timeout_ms: int) -> float:
    """How long a request waits for a pooled Redis connection before giving up on affinity.

    Only reached with a ``pool_size`` below the worker's concurrency; generous, because the
    wait is local congestion (the event loop is busy), not a sign that Redis is down.
    """
    return max(1.0, 10 * timeout_ms / 1000)


class PoolWaitPool(BlockingConnectionPool):
    """A ``BlockingConnectionPool`` whose wait timeout raises ``MaxConnectionsError``.

    redis-py raises a plain ``ConnectionError`` there, indistinguishable by type from a
    refused connection; Redis Cluster would even re-discover the topology over it.
    ``MaxConnectionsError`` (a ``ConnectionError``) is what redis-py itself uses for
    client-side exhaustion, and its cluster client passes it on without treating the
    node as failed.
    """

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().get_connection(*args, **kwargs)
        except MaxConnectionsError:
            raise
        except redis.ConnectionError as exc:
            if str(exc) == _POOL_WAIT_MESSAGE:
                raise MaxConnectionsError(_POOL_WAIT_MESSAGE) from None
            raise


def is_pool_wait(exc: BaseException) -> bool:
    """Whether ``exc`` means "no pooled connection free in time" (local, not Redis)."""
    return isinstance(exc, MaxConnectionsError) or (
        isinstance(exc, redis.ConnectionError) and str(exc) == _POOL_WAIT_MESSAGE)


class RedisSessionCache(SessionCache):
    """Session pins in Redis behind a fail-open circuit breaker.

    ``client`` is anything with redis-py's ``get/getex/set/delete/ttl/ping/close`` (a
    ``redis.Redis``, a ``RedisCluster``, a ``fakeredis.FakeRedis``); tests inject one, and
    :func:`create_redis_session_cache` builds one from the configuration. ``address`` names
    the server in messages and must not hold credentials. ``also_close`` are further
    clients to close with this one (the Sentinel connections).
    """

    backend_name = "redis"

    def __init__(self, client: Any, *, key_prefix: str = "plano:affinity:",
                 breaker: CircuitBreaker | None = None, address: str = "redis",
                 also_close: Iterable[Any] = ()):
        self.client = client
        self.key_prefix = key_prefix
        self.breaker = breaker or CircuitBreaker(failure_threshold=3, cooldown_seconds=2.0)
        self.address = address
        self._also_close = tuple(also_close)

    def get(self, key: str) -> SessionBinding | None:
        """One GET; ``None`` when absent, :class:`InvalidBindingError` when not a binding."""
        full_key = self.key_prefix + key
        raw = self._call("GET", full_key, self.client.get, full_key)
        return None if raw is None else _decode(raw, full_key)

    def get_renewing(self, key: str, ttl_seconds: int) -> SessionBinding | None:
        """One ``GETEX key EX ttl`` (Redis >= 6.2): the sliding-TTL hit, still one round trip.

        A single-key command, so it runs on Redis Cluster unchanged. Redis renews the TTL of
        whatever string is stored; a value that is not a binding keeps its bytes and raises
        :class:`InvalidBindingError` as ``get`` does.
        """
        if int(ttl_seconds) < 1:
            raise ValueError("ttl_seconds must be at least 1")
        full_key = self.key_prefix + key
        raw = self._call("GETEX", full_key, self.client.getex, full_key, ex=int(ttl_seconds))
        return None if raw is None else _decode(raw, full_key)

    def put(self, key: str, binding: SessionBinding, ttl_seconds: int) -> None:
        """One ``SET key value EX ttl``: last writer wins (turn records, never pins)."""
        if int(ttl_seconds) < 1:
            raise ValueError("ttl_seconds must be at least 1")
        full_key = self.key_prefix + key
        self._call("SET", full_key, self.client.set, full_key, _encode(binding),
                   ex=int(ttl_seconds))

    def put_if_absent(self, key: str, binding: SessionBinding,
                      ttl_seconds: int) -> SessionBinding:
        """``SET NX EX``; when the key exists, GET and return the stored winner.

        A key that expires or is deleted between the two is retried once with SET NX.
        A stored value that is not a binding raises :class:`InvalidBindingError` and is
        left as it is.
        """
        if int(ttl_seconds) < 1:
            raise ValueError("ttl_seconds must be at least 1")
        full_key = self.key_prefix + key
        value = _encode(binding)
        for _ in range(2):
            if self._call("SET", full_key, self.client.set, full_key, value,
                          nx=True, ex=int(ttl_seconds)):
                return binding
            raw = self._call("GET", full_key, self.client.get, full_key)
            if raw is not None:
                return _decode(raw, full_key)
        raise SessionCacheError(f"redis key {full_key!r} vanished twice between SET NX and GET")

    def replace_stale(self, key: str, stale_model: str, binding: SessionBinding,
                      ttl_seconds: int) -> SessionBinding:
        """One script call: store ``binding`` if the key is absent or names ``stale_model``.

        Returns ``binding`` itself when stored, else the binding stored now (another
        request's fresh pin); a stored value that is not a binding raises
        :class:`InvalidBindingError` and is left as it is.
        """
        if int(ttl_seconds) < 1:
            raise ValueError("ttl_seconds must be at least 1")
        full_key = self.key_prefix + key
        args = (stale_model, _encode(binding), int(ttl_seconds))
        result = self._call("EVALSHA", full_key, self._eval_replace, full_key, *args)
        if result == 1:
            return binding
        return _decode(result, full_key)

    def _eval_replace(self, full_key: str, *args: Any) -> Any:
        """EVALSHA, or EVAL (which also caches the script) when the server lacks it."""
        try:
            return self.client.evalsha(_REPLACE_STALE_SHA, 1, full_key, *args)
        except NoScriptError:
            return self.client.eval(REPLACE_STALE_SCRIPT, 1, full_key, *args)

    def delete(self, key: str) -> bool:
        """DEL the key (of whatever type); ``True`` when one was removed."""
        full_key = self.key_prefix + key
        return bool(self._call("DEL", full_key, self.client.delete, full_key))

    def ttl(self, key: str) -> int | None:
        """Redis ``TTL``: seconds left, ``None`` when absent.

        A key without expiry (written by hand; this backend always sets one) returns
        :data:`NO_EXPIRY` (-1), as ``redis-cli TTL`` shows it, rather than a made-up number.
        """
        full_key = self.key_prefix + key
        seconds = int(self._call("TTL", full_key, self.client.ttl, full_key))
        return None if seconds == -2 else seconds

    def add_usage(self, key: str, increments: Mapping[str, int | float],
                  ttl_seconds: int, replace: Mapping[str, int | float] | None = None) -> None:
        """One script call on the hash ``key_prefix + key`` (:data:`ADD_USAGE_SCRIPT`): the
        increments, the fields of ``replace``, then EXPIRE ttl. Not a transaction with other
        writers: totals only ever grow, so concurrent increments add up; replaced fields
        are last writer wins."""
        self.add_usage_batch({key: increments}, ttl_seconds, {key: replace} if replace else None)

    def add_usage_batch(self, batch: Mapping[str, Mapping[str, int | float]],
                        ttl_seconds: int,
                        replace: Mapping[str, Mapping[str, int | float]] | None = None
                        ) -> None:
        """One pipelined round trip: one script call per hash (one key per command, so it
        runs on Cluster). A server without the script cached gets it by EVAL, once. Keys of
        another type are left alone and reported (:class:`InvalidBindingError`) after the
        others were written."""
        if int(ttl_seconds) < 1:
            raise ValueError("ttl_seconds must be at least 1")
        calls = [(self.key_prefix + key, increments, (replace or {}).get(key))
                 for key, increments in batch.items()]
        if calls:
            self._call("EVALSHA", None, self._write_usage, calls, int(ttl_seconds),
                       _best_effort=True)

    def _write_usage(self, calls: list[tuple], ttl_seconds: int) -> None:
        """Write ``calls`` (full key, increments, replace) in one pipeline; report keys of
        another type after the others were written, raise any other error."""
        pipe = self.client.pipeline(transaction=False)
        if isinstance(pipe, ClusterPipeline):
            results = _usage_by_commands(pipe, calls, ttl_seconds)
        else:
            results = _usage_by_script(pipe, calls, ttl_seconds)
        wrong_type = []
        for (full_key, _, _), result in zip(calls, results, strict=True):
            if isinstance(result, ResponseError) and "WRONGTYPE" in str(result):
                wrong_type.append(full_key)
            elif isinstance(result, Exception):
                raise result
        if wrong_type:
            raise InvalidBindingError(
                f"redis key {wrong_type[0]!r} holds another Redis type (WRONGTYPE)"
                + (f", and {len(wrong_type) - 1} more" if len(wrong_type) > 1 else ""))

    def usage(self, key: str) -> dict[str, int | float] | None:
        """HGETALL of the totals hash; ``None`` when absent."""
        full_key = self.key_prefix + key
        raw = self._call("HGETALL", full_key, self.client.hgetall, full_key)
        if not raw:
            return None
        return {_text(name): _number(value) for name, value in raw.items()}

    def ping(self) -> bool:
        """PING within the socket timeout, for /healthz; never raises.

        ``False`` without calling Redis while the breaker is open; after the cool-down a
        ping is the half-open probe like any other call.
        """
        try:
            return bool(self._call("PING", None, self.client.ping))
        except SessionCacheError:
            return False

    def sample_pins(self, limit: int, skip_prefixes: tuple[str, ...] = ()
                    ) -> list[StoredPin] | None:
        """Up to ``limit`` pins found by at most :data:`SAMPLE_SCAN_STEPS` ``SCAN`` steps
        (``MATCH key_prefix*``), then their values and TTLs in one pipelined round trip.

        For an operator's page, never the request path. ``None`` on Redis Cluster (a SCAN
        per node would be needed; the client is built lazily for the request path).
        """
        if not hasattr(self.client, "scan") or not hasattr(self.client, "pipeline"):
            return None
        keys = self._scan_keys(limit, tuple(self.key_prefix + p for p in skip_prefixes))
        if not keys:
            return []

        def fetch() -> list:
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.get(key)
                pipe.ttl(key)
            return pipe.execute(raise_on_error=False)

        replies = self._call("PIPELINE", None, fetch)
        pins = []
        for index, full_key in enumerate(keys):
            raw, ttl = replies[2 * index], replies[2 * index + 1]
            if raw is None or isinstance(raw, Exception) or isinstance(ttl, Exception):
                continue  # expired meanwhile, or another Redis type (WRONGTYPE)
            try:
                binding = _decode(raw, full_key)
            except InvalidBindingError:
                continue
            pins.append(StoredPin(full_key[len(self.key_prefix):], binding,
                                  None if int(ttl) < 0 else int(ttl)))
        return pins

    def _scan_keys(self, limit: int, skip: tuple[str, ...]) -> list[str]:
        """Keys under the prefix, not under ``skip``: at most ``limit``, bounded SCAN work."""
        keys: list[str] = []
        cursor = 0
        for _ in range(SAMPLE_SCAN_STEPS):
            cursor, batch = self._call("SCAN", None, self.client.scan, cursor,
                                       match=_glob_escape(self.key_prefix) + "*",
                                       count=SAMPLE_SCAN_COUNT)
            for key in batch:
                key = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
                if not key.startswith(skip) and key not in keys:
                    keys.append(key)
            if len(keys) >= limit or int(cursor) == 0:
                break
        return keys[:limit]

    def close(self) -> None:
        """Disconnect every pooled connection."""
        for client in (self.client, *self._also_close):
            try:
                client.close()
            except _BACKEND_ERRORS as exc:
                logger.debug("closing session cache redis client: %s", exc)

    def _call(self, command: str, key: str | None, fn: Callable[..., Any], *args: Any,
              _best_effort: bool = False, **kwargs: Any) -> Any:
        """Run one Redis command behind the breaker; translate every failure.

        ``_best_effort`` (the usage totals, SPEC §19): only while the breaker is closed,
        never as its half-open probe, and its outcome is not reported to the breaker, so
        accounting under load can never open the breaker and cost sessions their pins.
        """
        if _best_effort:
            if self.breaker.state != CLOSED:
                raise SessionCacheSkippedError(
                    f"redis at {self.address} skipped: cooling down after repeated failures")
            try:
                return fn(*args, **kwargs)
            except ResponseError as exc:
                if "WRONGTYPE" in str(exc):
                    raise InvalidBindingError(
                        f"redis key {key!r} holds another Redis type (WRONGTYPE)") from None
                raise SessionCacheError(_failure_message(command, exc)) from exc
            except _BACKEND_ERRORS as exc:
                raise SessionCacheError(_failure_message(command, exc)) from exc
        if not self.breaker.allow():
            raise SessionCacheSkippedError(
                f"redis at {self.address} skipped: cooling down after repeated failures")
        try:
            result = fn(*args, **kwargs)
        except redis.ConnectionError as exc:
            if is_pool_wait(exc):
                # Local congestion: Redis was not even asked, so the breaker learns nothing.
                raise SessionCacheError(
                    f"redis {command} skipped: no pooled connection free within the wait "
                    f"(local pool exhausted; raise routing.session_cache.pool_size)") from None
            self._record_failure(command, exc)
            raise SessionCacheError(_failure_message(command, exc)) from exc
        except ResponseError as exc:
            if "WRONGTYPE" in str(exc):
                # Redis answered, so this is not a backend failure: the key is just unusable.
                self._record_success()
                raise InvalidBindingError(
                    f"redis key {key!r} holds another Redis type (WRONGTYPE)") from None
            self._record_failure(command, exc)
            raise SessionCacheError(_failure_message(command, exc)) from exc
        except _BACKEND_ERRORS as exc:
            self._record_failure(command, exc)
            raise SessionCacheError(_failure_message(command, exc)) from exc
        self._record_success()
        return result

    def _record_success(self) -> None:
        if self.breaker.record_success():
            logger.info("session cache redis at %s answers again; affinity restored",
                        self.address)

    def _record_failure(self, command: str, exc: BaseException) -> None:
        if self.breaker.record_failure():
            logger.warning("session cache redis at %s failed %d times in a row (last: %s); "
                           "not calling it for %.1fs", self.address,
                           self.breaker.consecutive_failures, _failure_message(command, exc),
                           self.breaker.cooldown_seconds)


def create_redis_session_cache(cfg: SessionCacheConfig, *,
                               probe: bool = True) -> RedisSessionCache:
    """The Redis session cache described by ``cfg`` (``mode`` standalone/cluster/sentinel).

    Building never connects. With ``probe`` (the default) one PING follows, so an
    unreachable Redis is reported in the log at start-up instead of on the first request;
    the cache is returned either way and starts working as soon as Redis answers.
    """
    address = _redacted_address(cfg)
    also_close: tuple[Any, ...] = ()
    if cfg.mode == "cluster":
        client: Any = _LazyClient(lambda: _build_cluster(cfg))
    elif cfg.mode == "sentinel":
        client, also_close = _build_sentinel_master(cfg)
    elif cfg.mode == "standalone":
        client = redis.Redis.from_pool(PoolWaitPool.from_url(
            cfg.url, max_connections=pool_size(cfg), timeout=pool_wait_seconds(cfg.timeout_ms),
            **_connection_kwargs(cfg), **_tls_kwargs(cfg)))
    else:
        raise ValueError(f"unknown session_cache.mode {cfg.mode!r}")
    cache = RedisSessionCache(
        client, key_prefix=cfg.key_prefix, address=address, also_close=also_close,
        breaker=CircuitBreaker(cfg.failure_threshold, cfg.cooldown_seconds))
    if probe and not cache.ping():
        logger.warning("session cache redis unreachable at %s; serving without affinity "
                       "until it answers", address)
    return cache


def pool_size(cfg: SessionCacheConfig) -> int:
    """Connections per worker: ``pool_size``, by default ``worker_connections``."""
    return cfg.pool_size or worker_connections()


class _LazyClient:
    """Builds the real client on first use, because building it connects. The build runs
    outside the lock (network I/O); of two concurrent builds the first is kept."""

    def __init__(self, build: Callable[[], Any]):
        self._build = build
        self._client: Any = None
        self._lock = threading.Lock()

    def _get_client(self) -> Any:
        client = self._client
        if client is not None:
            return client
        built = self._build()
        with self._lock:
            if self._client is None:
                self._client, built = built, None
            client = self._client
        if built is not None:
            built.close()
        return client

    # Explicit methods, not __getattr__: the build must happen inside the call, where
    # RedisSessionCache translates its failure, not when the bound method is looked up.
    def get(self, *args: Any) -> Any:
        return self._get_client().get(*args)

    def getex(self, *args: Any, **kwargs: Any) -> Any:
        return self._get_client().getex(*args, **kwargs)

    def set(self, *args: Any, **kwargs: Any) -> Any:
        return self._get_client().set(*args, **kwargs)

    def delete(self, *args: Any) -> Any:
        return self._get_client().delete(*args)

    def ttl(self, *args: Any) -> Any:
        return self._get_client().ttl(*args)

    def ping(self) -> Any:
        return self._get_client().ping()

    def evalsha(self, *args: Any) -> Any:
        return self._get_client().evalsha(*args)

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        return self._get_client().pipeline(*args, **kwargs)

    def hgetall(self, *args: Any) -> Any:
        return self._get_client().hgetall(*args)

    def eval(self, *args: Any) -> Any:
        return self._get_client().eval(*args)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


class _BlockingSentinelConnectionPool(SentinelConnectionPool, PoolWaitPool):
    """Sentinel master discovery with the same bounded, waiting pool as standalone."""


def _build_cluster(cfg: SessionCacheConfig) -> RedisCluster:
    timeout = cfg.timeout_ms / 1000
    startup_nodes = []
    for node_url in cfg.nodes:
        options = parse_url(node_url)
        startup_nodes.append(ClusterNode(options.get("host", "localhost"),
                                         options.get("port", 6379)))
    # Node connections never retry in redis-py's cluster client; the one retry (after a
    # topology refresh) happens at cluster level.
    return RedisCluster(
        url=cfg.url, startup_nodes=startup_nodes, retry=Retry(NoBackoff(), 1),
        connection_pool_class=PoolWaitPool, max_connections=pool_size(cfg),
        timeout=pool_wait_seconds(cfg.timeout_ms), socket_connect_timeout=timeout,
        socket_timeout=timeout, driver_info=None, protocol=2,
        **_tls_kwargs(cfg))


def _build_sentinel_master(cfg: SessionCacheConfig) -> tuple[redis.Redis, tuple[Any, ...]]:
    """The master's client (password, db and TLS from ``url``) and the Sentinel clients."""
    sentinels = []
    for address in cfg.sentinels:
        host, _, port = address.rpartition(":")
        sentinels.append((host.strip("[]"), int(port)))
    # Without explicit settings the Sentinel connections would get redis-py's defaults:
    # 5 s timeouts and 10 retries with backoff.
    sentinel = Sentinel(sentinels, sentinel_kwargs=_connection_kwargs(cfg))
    kwargs = {"connection_pool_class": _BlockingSentinelConnectionPool,
              "max_connections": pool_size(cfg), "timeout": pool_wait_seconds(cfg.timeout_ms),
              **_connection_kwargs(cfg)}
    if cfg.url:
        options = parse_url(cfg.url)
        kwargs.update({k: options[k] for k in ("username", "password", "db") if k in options})
        if cfg.url.startswith("rediss://"):
            kwargs.update(ssl=True, **_tls_kwargs(cfg))
    return sentinel.master_for(cfg.master_name, **kwargs), tuple(sentinel.sentinels)


def _connection_kwargs(cfg: SessionCacheConfig) -> dict[str, Any]:
    """Timeouts and one immediate retry of a failed connection (standalone, sentinel).

    A new connection sends nothing before its first command: RESP2 (``protocol=2``, no
    ``HELLO 3`` and no ``CLIENT MAINT_NOTIFICATIONS``, which need RESP3) and no ``CLIENT
    SETINFO`` (``driver_info=None``; redis-py would also look its version up in the package
    metadata each time). Each of those is a round trip per new connection, and a burst of
    first requests opens connections by the hundred. GET and SET answer alike in both.
    """
    timeout = cfg.timeout_ms / 1000
    return {"socket_connect_timeout": timeout, "socket_timeout": timeout,
            "health_check_interval": 0, "driver_info": None, "protocol": 2,
            "retry": Retry(NoBackoff(), 1, supported_errors=RETRY_ERRORS),
            "retry_on_error": list(RETRY_ERRORS)}


def _tls_kwargs(cfg: SessionCacheConfig) -> dict[str, Any]:
    if cfg.tls_ca_file and (cfg.url or "").startswith("rediss://"):
        return {"ssl_ca_certs": cfg.tls_ca_file}
    return {}


def _redacted_address(cfg: SessionCacheConfig) -> str:
    """Where Redis is, for log lines: host:port or socket path, never credentials."""
    if cfg.mode == "sentinel":
        return f"sentinels {','.join(cfg.sentinels)} (master {cfg.master_name})"
    parts = urlsplit(cfg.url or "")
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname}:{parts.port or 6379}"


def _failure_message(command: str, exc: BaseException) -> str:
    """A short cause: redis-py's messages name host and errno, never the password."""
    return f"redis {command} failed: {type(exc).__name__}: {str(exc)[:160]}"


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis glob pattern (``MATCH``)."""
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)


def _usage_by_script(pipe: Any, calls: list[tuple], ttl_seconds: int) -> list:
    """One :data:`ADD_USAGE_SCRIPT` call per hash, by EVALSHA; a server without the script
    cached runs it by EVAL (which caches it for the next flush). One result per call."""
    arguments = [_usage_arguments(ttl_seconds, increments, replace)
                 for _, increments, replace in calls]
    for (full_key, _, _), call_arguments in zip(calls, arguments, strict=True):
        pipe.evalsha(_ADD_USAGE_SHA, 1, full_key, *call_arguments)
    results = pipe.execute(raise_on_error=False)
    missing = [index for index, result in enumerate(results)
               if isinstance(result, NoScriptError)]
    if missing:
        pipe.reset()
        for index in missing:
            pipe.eval(ADD_USAGE_SCRIPT, 1, calls[index][0], *arguments[index])
        for index, result in zip(missing, pipe.execute(raise_on_error=False), strict=True):
            results[index] = result
    return results


def _usage_by_commands(pipe: Any, calls: list[tuple], ttl_seconds: int) -> list:
    """Redis Cluster, whose redis-py pipeline refuses scripts: the same writes as HINCRBY /
    HINCRBYFLOAT / HSET / EXPIRE commands (one pipeline, split by node). One result per
    call: its first error, else ``None``."""
    counts = []
    for full_key, increments, replace in calls:
        for name, amount in increments.items():
            if isinstance(amount, float):
                pipe.hincrbyfloat(full_key, name, amount)
            else:
                pipe.hincrby(full_key, name, int(amount))
        if replace:
            pipe.hset(full_key, mapping={name: repr(value) if isinstance(value, float)
                                         else value for name, value in replace.items()})
        pipe.expire(full_key, ttl_seconds)
        counts.append(len(increments) + bool(replace) + 1)
    replies = pipe.execute(raise_on_error=False)
    results, start = [], 0
    for count in counts:
        errors = [reply for reply in replies[start:start + count] if isinstance(reply, Exception)]
        results.append(errors[0] if errors else None)
        start += count
    return results


def _usage_arguments(ttl_seconds: int, increments: Mapping[str, int | float],
                     replace: Mapping[str, int | float] | None) -> list:
    """:data:`ADD_USAGE_SCRIPT`'s ARGV: floats written with ``repr`` (always a point or an
    exponent, so the script adds them with HINCRBYFLOAT), ints as they are."""
    arguments: list = [ttl_seconds, len(increments)]
    for name, amount in increments.items():
        arguments += (name, repr(float(amount)) if isinstance(amount, float) else int(amount))
    for name, value in (replace or {}).items():
        arguments += (name, repr(value) if isinstance(value, float) else value)
    return arguments


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _number(value: bytes | str) -> int | float:
    """A hash field's number: an int when it is one (HINCRBY), else a float."""
    text = _text(value)
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return 0


def _encode(binding: SessionBinding) -> bytes:
    return json.dumps({"model_name": binding.model_name, "route_name": binding.route_name},
                      separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _decode(raw: bytes | str, full_key: str) -> SessionBinding:
    """The binding stored in ``raw``; :class:`InvalidBindingError` when it is not one."""
    try:
        data = json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        raise InvalidBindingError(f"redis key {full_key!r} holds a value that is not JSON") \
            from None
    if not isinstance(data, dict):
        raise InvalidBindingError(f"redis key {full_key!r} holds JSON that is not an object")
    model_name, route_name = data.get("model_name"), data.get("route_name")
    if not isinstance(model_name, str) or not model_name:
        raise InvalidBindingError(f"redis key {full_key!r} has no string model_name")
    if route_name is not None and not isinstance(route_name, str):
        raise InvalidBindingError(f"redis key {full_key!r} has a non-string route_name")
    return SessionBinding(model_name=model_name, route_name=route_name)
