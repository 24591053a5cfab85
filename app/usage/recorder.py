"""What one answer's usage becomes (SPEC §19): metrics, span attributes, log fields and the
session's totals.

:meth:`UsageRecorder.observe` runs when the provider call ends (the relay's release: the
last upstream byte read), costs a few dictionary lookups and counter increments, and never
raises into the request. :meth:`UsageRecorder.write_session` is called when the WSGI server
closes the answer, after its last byte reached the client: it only adds the answer's
numbers to this worker's pending totals of the session (a few additions). A background
flush (every :data:`FLUSH_SECONDS`, and at exit) writes every pending session's totals in
one round trip (:meth:`app.session_cache.base.SessionCache.add_usage_batch`: on Redis one
script call per session, in one pipeline): never on a request's latency path, and one
write per busy session per second instead of one per request. Measured on 2 cores against
a real Redis, 64 sessions: one pipeline of HINCRBY/EXPIRE per session cost 73 µs of
worker CPU per session, one pipeline of them all 34 µs, one script call each in one
pipeline 6 µs. A failing cache is logged, counted
(``plano_session_cache_events_total{outcome="store_error"}``) and skipped.

Counting, the same in metrics, log fields and session totals: ``input`` tokens are the
prompt tokens billed at the full price (cache reads and writes excluded), so input +
cache_read + cache_write is the whole prompt. The one exception is the OpenTelemetry
attribute ``gen_ai.usage.input_tokens``, which by its semantic conventions counts the whole
prompt, cached tokens included.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from typing import NamedTuple

from app.observability.metric_labels import served_model_label
from app.observability.metrics import Metrics
from app.session_cache.base import USAGE_KEY_PREFIX
from app.usage.prices import Prices
from app.usage.tokens import Usage

log = logging.getLogger(__name__)

#: How often a worker writes its sessions' pending totals (seconds).
FLUSH_SECONDS = 1.0
#: Sessions pending at most before a flush is due at once (bounded memory).
MAX_PENDING_SESSIONS = 10_000

ATTR_INPUT = "gen_ai.usage.input_tokens"
ATTR_OUTPUT = "gen_ai.usage.output_tokens"
ATTR_CACHE_READ = "plano.usage.cache_read_tokens"
ATTR_CACHE_WRITE = "plano.usage.cache_write_tokens"
ATTR_COST = "plano.usage.cost_usd"


class UsageRecord(NamedTuple):
    """One answer's usage, priced: the served model (its metric label) and the USD cost
    (``None``: the model has no price). A named tuple: made once per answer on the request
    path, where a frozen dataclass's constructor costs several times as much."""

    model: str
    usage: Usage
    cost_usd: float | None

    def span_attributes(self) -> dict:
        """Attributes for the provider call's client span."""
        usage = self.usage
        attributes = {ATTR_INPUT: usage.prompt, ATTR_OUTPUT: usage.output,
                      ATTR_CACHE_READ: usage.cache_read, ATTR_CACHE_WRITE: usage.cache_write}
        if self.cost_usd is not None:
            attributes[ATTR_COST] = self.cost_usd
        return attributes

    def log_fields(self) -> dict:
        """Fields for the access log line."""
        usage = self.usage
        return {"input_tokens": usage.input, "cache_read_tokens": usage.cache_read,
                "cache_write_tokens": usage.cache_write, "output_tokens": usage.output,
                "cost_usd": None if self.cost_usd is None else round(self.cost_usd, 8)}


#: A session's usage totals (SPEC §19), in the order a worker keeps them pending.
SESSION_FIELDS = ("requests", "input_tokens", "cache_read_tokens", "cache_write_tokens",
                  "output_tokens", "cache_hits", "switches", "unpriced_requests", "cost_usd")


def _increments(pending: list) -> dict:
    """A session's pending totals as the fields to add (zeros are not sent)."""
    return {name: amount for name, amount in zip(SESSION_FIELDS, pending, strict=True)
            if amount}


class UsageRecorder:
    """Prices usage and records it (one per worker, built by ``create_app``)."""

    def __init__(self, config, metrics: Metrics, session_cache, prices: Prices | None = None,
                 flush_seconds: float = FLUSH_SECONDS):
        self._metrics = metrics
        self._cache = session_cache
        self._ttl = config.routing.session_ttl_seconds
        self._config = config
        self.prices = prices or Prices(config.model_providers)
        self._flush_seconds = flush_seconds
        self._pending: dict[str, list] = {}  # session key -> totals in SESSION_FIELDS order
        #: model label -> [input, cache_read, cache_write, output, cost, hits, misses]
        self._pending_metrics: dict[str, list] = {}
        self._lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._atexit = False

    def label(self, model_name: str) -> str:
        """The metric label of a served model (SPEC §8: its configured entry, ``openai/*``
        for a model a wildcard admitted)."""
        return served_model_label(self._config, model_name)

    def observe(self, model_name: str, usage: Usage) -> UsageRecord:
        """Price ``usage`` of ``model_name`` and add it to this worker's pending metrics
        (counted by the next flush, or at once by :meth:`publish_metrics`)."""
        cost = self.prices.cost(model_name, usage)
        label = self.label(model_name)
        with self._lock:
            counts = self._pending_metrics.get(label)
            if counts is None:
                counts = self._pending_metrics[label] = [0, 0, 0, 0, 0.0, 0, 0]
            counts[0] += usage.input
            counts[1] += usage.cache_read
            counts[2] += usage.cache_write
            counts[3] += usage.output
            if cost:
                counts[4] += cost
            if usage.cache_read:
                counts[5] += 1
            else:
                counts[6] += 1
            flusher = self._flusher_to_start()
        if flusher is not None:
            self._start(flusher)
        return UsageRecord(label, usage, cost)

    def write_session(self, session_key: str, record: UsageRecord, switched: bool) -> None:
        """Add ``record`` to the session's pending totals (written by the next flush): a
        few additions in place, no allocation once the session is pending."""
        usage = record.usage
        cost = record.cost_usd
        with self._lock:
            pending = self._pending.get(session_key)
            if pending is None:
                pending = self._pending[session_key] = [0, 0, 0, 0, 0, 0, 0, 0, 0.0]
            pending[0] += 1
            pending[1] += usage.input
            pending[2] += usage.cache_read
            pending[3] += usage.cache_write
            pending[4] += usage.output
            if usage.cache_read:
                pending[5] += 1
            if switched:
                pending[6] += 1
            if cost is None:
                pending[7] += 1
            else:
                pending[8] += cost
            full = len(self._pending) >= MAX_PENDING_SESSIONS
            flusher = None if full else self._flusher_to_start()
        if full:
            self.flush()
        elif flusher is not None:
            self._start(flusher)

    def _flusher_to_start(self) -> threading.Thread | None:
        """The flush loop to start, when none runs (called with the lock held)."""
        if self._flusher is not None:
            return None
        self._flusher = threading.Thread(target=self._flush_loop, name="plano-usage",
                                         daemon=True)
        return self._flusher

    def _start(self, flusher: threading.Thread) -> None:
        if not self._atexit:
            self._atexit = True
            atexit.register(self.flush)
        flusher.start()

    def publish_metrics(self) -> None:
        """Count this worker's pending usage in the metrics now (before ``/metrics`` or
        the status page is rendered from them)."""
        with self._lock:
            pending, self._pending_metrics = self._pending_metrics, {}
        for label, (input_tokens, cache_read, cache_write, output, cost, hits,
                    misses) in pending.items():
            self._metrics.usage(label, (input_tokens, cache_read, cache_write, output),
                                cost, hits, misses)

    def flush(self) -> None:
        """Count the pending metrics and write every session's pending totals, all
        sessions in one round trip; never raises."""
        self.publish_metrics()
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        batch = {USAGE_KEY_PREFIX + key: _increments(totals) for key, totals in pending.items()}
        try:
            self._cache.add_usage_batch(batch, self._ttl)
        except Exception as error:  # noqa: BLE001 - accounting never fails anything
            self._metrics.session_cache_event(
                getattr(self._cache, "backend_name", "unknown"), "store_error")
            log.warning("session usage not recorded: %s", error,
                        extra={"event": "usage_store_error"})

    def _flush_loop(self) -> None:
        """The worker's flush loop (a greenlet under gevent's patched threading), started
        by the first pending usage, so it runs in the worker, never in the gunicorn
        master; it ends when a flush leaves nothing pending (the next usage restarts it)."""
        while True:
            time.sleep(self._flush_seconds)
            self.flush()
            with self._lock:
                if not self._pending and not self._pending_metrics:
                    self._flusher = None
                    return

    def write_budget(self, session_key: str, fields: dict) -> None:
        """Set the routing budget's state fields (SPEC §20) in the session's totals now, in
        one round trip after the answer (never on its latency path); never raises. Not
        coalesced like the usage: the session's next user turn, on any worker, reads it."""
        try:
            self._cache.add_usage(USAGE_KEY_PREFIX + session_key, {}, self._ttl,
                                  replace=fields)
        except Exception as error:  # noqa: BLE001 - accounting never fails anything
            self._metrics.session_cache_event(
                getattr(self._cache, "backend_name", "unknown"), "store_error")
            log.warning("session budget state not recorded: %s", error,
                        extra={"event": "usage_store_error"})

    def session_totals(self, session_key: str) -> dict | None:
        """The session's totals (admin API), this worker's pending ones written first;
        raises the cache's errors. Other workers' pending totals land within a flush."""
        self.flush()
        return self._cache.usage(USAGE_KEY_PREFIX + session_key)
