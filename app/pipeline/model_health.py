"""Per-worker health marks of the configured models (SPEC §15).

Each gunicorn worker keeps its own marks (no shared state, no I/O): after
``failure_threshold`` consecutive failures a model is *down* for ``cooldown`` seconds and
the attempt chain skips it; when the cool-down is over, exactly one request is let through
to probe it (the others keep skipping it for another cool-down while the probe runs). A
success clears the mark; a failed probe marks it down again. A 429 or 503 with
``Retry-After`` marks a model down at once, for min(Retry-After, cooldown).

Bounded whatever clients name (SPEC §8): a wildcard entry admits any model id and a
``passthrough_auth`` model has a mark per credential, so the marks are capped at
``max_marks`` (the least recently touched go first) and a mark that has been neither down
nor touched for ``idle_seconds`` (at least the cool-down) is forgotten: its consecutive
failures are that old.

Safe under gevent: every method runs without yielding (plain dict operations).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, NamedTuple

#: Most marks one worker keeps (models a wildcard admits, credentials of passthrough_auth).
MAX_MARKS = 256
#: A mark neither down nor touched for this long is forgotten.
IDLE_SECONDS = 300.0


@dataclass(slots=True)
class _Mark:
    failures: int = 0
    #: Monotonic time until which the model is skipped; ``None``: not down.
    down_until: float | None = None
    #: Monotonic time of the last failure (or down mark) recorded.
    touched: float = 0.0


class HealthMark(NamedTuple):
    """One model's mark as the status page shows it (a copy; changing it changes nothing)."""

    model: str
    #: Consecutive failures so far (a ``Retry-After`` counts as one).
    failures: int
    #: Seconds until the model is tried again; ``None``: not down (failures below threshold).
    down_for_seconds: float | None
    #: Why it is down, in words; ``None`` when it is not.
    reason: str | None


class ModelHealth:
    """Consecutive-failure counts and down marks per model name, for one worker."""

    def __init__(self, failure_threshold: int = 3, cooldown_seconds: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, *, max_marks: int = MAX_MARKS,
                 idle_seconds: float = IDLE_SECONDS):
        self._threshold = failure_threshold
        self._cooldown = cooldown_seconds
        self._clock = clock
        self._max_marks = max(1, max_marks)
        self._idle = max(idle_seconds, cooldown_seconds)
        #: Least recently touched first.
        self._marks: OrderedDict[str, _Mark] = OrderedDict()

    def __len__(self) -> int:
        """How many marks are kept (at most ``max_marks``)."""
        return len(self._marks)

    @property
    def cooldown_seconds(self) -> float:
        """How long a model that reached the threshold is skipped."""
        return self._cooldown

    def available(self, model: str) -> bool:
        """Whether a request may try ``model`` now.

        A model whose cool-down is over answers ``True`` once (that request probes it) and
        is skipped for another cool-down by the others until the probe reports back.
        """
        mark = self._marks.get(model)
        if mark is None or mark.down_until is None:
            return True
        now = self._clock()
        if self._expired(mark, now):
            del self._marks[model]
            return True
        if now < mark.down_until:
            return False
        mark.down_until = now + self._cooldown  # the probe's lease
        return True

    def is_down(self, model: str) -> bool:
        """Whether ``model`` is marked down right now (no probe lease taken)."""
        mark = self._marks.get(model)
        return (mark is not None and mark.down_until is not None
                and self._clock() < mark.down_until)

    def record_success(self, model: str) -> None:
        """``model`` answered: clear its mark."""
        if self._marks:
            self._marks.pop(model, None)

    def record_failure(self, model: str) -> bool:
        """``model`` failed once more; ``True`` when this failure marked it down."""
        now = self._clock()
        mark = self._touch(model, now)
        mark.failures += 1
        if mark.failures >= self._threshold:
            mark.down_until = now + self._cooldown
            return True
        return False

    def mark_down(self, model: str, seconds: float) -> None:
        """Skip ``model`` for min(``seconds``, cooldown) (a ``Retry-After``)."""
        now = self._clock()
        mark = self._touch(model, now)
        mark.failures += 1
        mark.down_until = now + max(0.0, min(seconds, self._cooldown))

    def _touch(self, model: str, now: float) -> _Mark:
        """The mark of ``model`` (a fresh one if none, or if its own had expired), made the
        most recently touched; expired and surplus marks are dropped, oldest first."""
        marks = self._marks
        mark = marks.get(model)
        if mark is None or self._expired(mark, now):
            mark = marks[model] = _Mark()
        marks.move_to_end(model)
        mark.touched = now
        while marks:
            oldest = next(iter(marks.values()))
            if len(marks) <= self._max_marks and not self._expired(oldest, now):
                break
            marks.popitem(last=False)
        return mark

    def _expired(self, mark: _Mark, now: float) -> bool:
        """Neither down nor touched for ``idle_seconds``: forget its failures."""
        if mark.down_until is not None and now < mark.down_until:
            return False
        return now - mark.touched >= self._idle

    def marks(self) -> list[HealthMark]:
        """A read-only copy of every mark, by model name (for ``GET /status``).

        The reason is told from the counts: a model down with fewer failures than the
        threshold can only have been marked by a ``Retry-After``.
        """
        now = self._clock()
        copies = []
        for model, mark in sorted(self._marks.items()):
            down = mark.down_until is not None and now < mark.down_until
            reason = None
            if down:
                reason = (f"{mark.failures} failures in a row" if mark.failures >= self._threshold
                          else "the provider asked to wait (Retry-After)")
            copies.append(HealthMark(model, mark.failures,
                                     mark.down_until - now if down else None, reason))
        return copies
