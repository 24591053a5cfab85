"""What one answer's usage becomes (SPEC §19): metrics, span attributes, log fields and the
session's totals.

:meth:`UsageRecorder.observe` runs when the provider call ends (the relay's release: the
last upstream byte read): it prices the answer (for the span and the log line) and queues
it for the metrics. :meth:`UsageRecorder.write_session` is called when the WSGI server
closes the answer, after its last byte reached the client, and queues it for its session's
totals. Neither takes a lock or raises into the request. A background flush (every
:data:`FLUSH_SECONDS`, at exit, and for the metrics before a scrape) adds the queued
answers up: one counter increment per model and kind, and every pending session's totals
written in one round trip (:meth:`app.session_cache.base.SessionCache.add_usage_batch`: on
Redis one script call per session, in one pipeline). So nothing is written on a request's
latency path, and a busy session costs one write per second instead of one per request.
Measured on 2 cores against a real Redis, 64 sessions: one pipeline of HINCRBY/EXPIRE per
session cost 73 µs of worker CPU per session, one pipeline of them all 34 µs, one script
call each in one pipeline 6 µs. A failing cache is logged, counted
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
from collections import deque
from typing import NamedTuple

from app.observability.metric_labels import served_model_label
from app.observability.metrics import Metrics
from app.session_cache.base import USAGE_KEY_PREFIX
from app.usage.prices import Prices
from app.usage.tokens import Usage

log = logging.getLogger(__name__)

#: How often a worker writes its sessions' pending totals (seconds).
FLUSH_SECONDS = 1.0
#: Answers queued at most before a flush is due at once (bounded memory).
MAX_PENDING_ANSWERS = 100_000

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


def _increments(totals: list) -> dict:
    """A session's totals (in :data:`SESSION_FIELDS` order) as the fields to add (zeros
    are not sent)."""
    return {name: amount for name, amount in zip(SESSION_FIELDS, totals, strict=True)
            if amount}


def _drain(queue: deque):
    """The items of ``queue``, taken one by one (``popleft`` is atomic: items appended
    meanwhile are taken too, or left for the next drain; none is lost or taken twice)."""
    popleft = queue.popleft
    while True:
        try:
            yield popleft()
        except IndexError:
            return


class UsageRecorder:
    """Prices usage and records it (one per worker, built by ``create_app``).

    An answer only appends to this worker's queues (``deque.append``, atomic, no lock on
    the request path); the flush adds them up per model (metrics) and per session (totals).
    """

    def __init__(self, config, metrics: Metrics, session_cache, prices: Prices | None = None,
                 flush_seconds: float = FLUSH_SECONDS):
        self._metrics = metrics
        self._cache = session_cache
        self._ttl = config.routing.session_ttl_seconds
        self._config = config
        self.prices = prices or Prices(config.model_providers)
        self._flush_seconds = flush_seconds
        #: (model label, usage, cost) of each answer not counted in the metrics yet.
        self._answers: deque = deque()
        #: (session key, usage, cost, switched) of each answer not in its session's totals.
        self._session_answers: deque = deque()
        self._lock = threading.Lock()  # starting the flush loop only
        self._flusher: threading.Thread | None = None
        self._atexit = False

    def label(self, model_name: str) -> str:
        """The metric label of a served model (SPEC §8: its configured entry, ``openai/*``
        for a model a wildcard admitted)."""
        return served_model_label(self._config, model_name)

    def observe(self, model_name: str, usage: Usage) -> UsageRecord:
        """Price ``usage`` of ``model_name``; its metrics are counted by the next flush (or
        at once by :meth:`publish_metrics`)."""
        cost = self.prices.cost(model_name, usage)
        label = self.label(model_name)
        self._answers.append((label, usage, cost))
        if len(self._answers) >= MAX_PENDING_ANSWERS:
            self.publish_metrics()
        elif self._flusher is None:
            self._start_flusher()
        return UsageRecord(label, usage, cost)

    def write_session(self, session_key: str, record: UsageRecord, switched: bool) -> None:
        """Add ``record`` to the session's pending totals (written by the next flush)."""
        self._session_answers.append((session_key, record.usage, record.cost_usd, switched))
        if len(self._session_answers) >= MAX_PENDING_ANSWERS:
            self.flush()
        elif self._flusher is None:
            self._start_flusher()

    def _start_flusher(self) -> None:
        with self._lock:
            if self._flusher is not None:
                return
            self._flusher = threading.Thread(target=self._flush_loop, name="plano-usage",
                                             daemon=True)
            if not self._atexit:
                self._atexit = True
                atexit.register(self.flush)
            self._flusher.start()

    def publish_metrics(self) -> None:
        """Count this worker's pending usage in the metrics now (before ``/metrics`` or
        the status page is rendered from them): one increment per model and kind."""
        sums: dict[str, list] = {}  # label -> [input, cache_read, cache_write, output,
        for label, usage, cost in _drain(self._answers):  # cost, hits, misses]
            counts = sums.get(label)
            if counts is None:
                counts = sums[label] = [0, 0, 0, 0, 0.0, 0, 0]
            counts[0] += usage.input
            counts[1] += usage.cache_read
            counts[2] += usage.cache_write
            counts[3] += usage.output
            if cost:
                counts[4] += cost
            counts[5 if usage.cache_read else 6] += 1
        for label, (input_tokens, cache_read, cache_write, output, cost, hits,
                    misses) in sums.items():
            self._metrics.usage(label, (input_tokens, cache_read, cache_write, output),
                                cost, hits, misses)

    def flush(self) -> None:
        """Count the pending metrics and write every session's pending totals, all
        sessions in one round trip; never raises."""
        self.publish_metrics()
        totals: dict[str, list] = {}  # session key -> totals in SESSION_FIELDS order
        for session_key, usage, cost, switched in _drain(self._session_answers):
            session = totals.get(session_key)
            if session is None:
                session = totals[session_key] = [0, 0, 0, 0, 0, 0, 0, 0, 0.0]
            session[0] += 1
            session[1] += usage.input
            session[2] += usage.cache_read
            session[3] += usage.cache_write
            session[4] += usage.output
            session[5] += bool(usage.cache_read)
            session[6] += switched
            if cost is None:
                session[7] += 1
            else:
                session[8] += cost
        if not totals:
            return
        batch = {USAGE_KEY_PREFIX + key: _increments(values) for key, values in totals.items()}
        try:
            self._cache.add_usage_batch(batch, self._ttl)
        except Exception as error:  # noqa: BLE001 - accounting never fails anything
            self._metrics.session_cache_event(
                getattr(self._cache, "backend_name", "unknown"), "store_error")
            log.warning("session usage not recorded: %s", error,
                        extra={"event": "usage_store_error"})

    def _flush_loop(self) -> None:
        """The worker's flush loop (a greenlet under gevent's patched threading), started
        by the first pending answer, so it runs in the worker, never in the gunicorn
        master; it ends when a flush leaves nothing pending (the next answer restarts it)."""
        while True:
            time.sleep(self._flush_seconds)
            self.flush()
            if not (self._answers or self._session_answers):
                self._flusher = None
                # An answer queued between that test and this line saw a running loop
                # and started none: start one for it.
                if self._answers or self._session_answers:
                    self._start_flusher()
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
