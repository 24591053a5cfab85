"""A fail-open circuit breaker for the session cache's backend (SPEC §6).

When Redis is down or slow every request would otherwise wait for a connect or socket
timeout before routing without affinity. After ``failure_threshold`` consecutive failures
the breaker *opens*: for ``cooldown_seconds`` callers are told at once that the backend is
unavailable, without touching it. After the cool-down one call, the *half-open probe*, is
let through; its success closes the breaker, its failure re-opens it for another cool-down.

The breaker only keeps counters and timestamps. Callers ask :meth:`CircuitBreaker.allow`
before the backend call and report the result with :meth:`record_success` /
:meth:`record_failure`; the backend call itself never runs under the breaker's lock, so a
slow Redis never blocks other greenlets on it (under gevent the lock is greenlet-aware and
nothing inside it yields).
"""

from __future__ import annotations

import threading
import time
from typing import Callable

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker:
    """Consecutive-failure circuit breaker with a single half-open probe.

    A probe that never reports back (its greenlet was killed mid-call) would keep the
    breaker half-open forever; so a probe that has not reported within ``cooldown_seconds``
    is considered lost and the next caller becomes the new probe.
    """

    def __init__(self, failure_threshold: int, cooldown_seconds: float,
                 clock: Callable[[], float] = time.monotonic):
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if cooldown_seconds < 0:
            raise ValueError("cooldown_seconds must not be negative")
        self.failure_threshold = failure_threshold
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_started_at = 0.0

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open`` (an open breaker past its cool-down still
        reads ``open`` until a caller takes the probe)."""
        return self._state

    @property
    def consecutive_failures(self) -> int:
        """Failures since the last success (for logs and tests)."""
        return self._failures

    def allow(self) -> bool:
        """Whether the caller may call the backend now.

        ``True`` when closed, or when this caller becomes the half-open probe; the caller
        must then report the outcome. ``False`` during the cool-down and while another
        caller's probe is in flight.
        """
        if self._state == CLOSED:  # the common case, read without the lock (a read racing
            return True            # an opening lets one more call through, as a slower
                                   # caller would)
        with self._lock:
            if self._state == CLOSED:
                return True
            now = self._clock()
            if self._state == OPEN:
                if now - self._opened_at < self.cooldown_seconds:
                    return False
            elif now - self._probe_started_at < self.cooldown_seconds:
                return False  # half-open: someone else's probe is still in flight
            self._state = HALF_OPEN
            self._probe_started_at = now
            return True

    def record_success(self) -> bool:
        """The backend answered: close the breaker and forget past failures.

        Any answer is fresh evidence that the backend works, so a late success from a call
        that started before the breaker opened closes it too. Returns ``True`` when this
        closed an open or half-open breaker (worth a log line).
        """
        if self._state == CLOSED and not self._failures:
            return False  # nothing to change: the common case takes no lock
        with self._lock:
            reopened = self._state != CLOSED
            self._state = CLOSED
            self._failures = 0
            return reopened

    def record_failure(self) -> bool:
        """The backend failed: count it; open at the threshold, re-open a failed probe.

        Failures reported while already open (calls that were in flight when it opened)
        do not push the end of the cool-down further out. Returns ``True`` when this
        failure opened a closed breaker (a re-opened probe is not news).
        """
        with self._lock:
            self._failures += 1
            if self._state == HALF_OPEN:
                self._state = OPEN
                self._opened_at = self._clock()
            elif self._state == CLOSED and self._failures >= self.failure_threshold:
                self._state = OPEN
                self._opened_at = self._clock()
                return True
            return False

    def __repr__(self) -> str:
        return (f"<CircuitBreaker {self._state} failures={self._failures}/"
                f"{self.failure_threshold} cooldown={self.cooldown_seconds}s>")
