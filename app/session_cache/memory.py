"""Per-process session cache: an LRU dict with a TTL per entry (SPEC §6, §16).

Each gunicorn worker has its own map, so with several workers or replicas a session pinned
in one process is unknown to the others; the demo shows exactly that failure.

All operations are O(1): an ``OrderedDict`` keeps recency order, expiry is checked lazily on
access (an expired entry also leaves when it reaches the LRU end). A ``threading.Lock`` makes
``put_if_absent`` first-writer-wins; under gevent (patched) it is a greenlet-aware lock, and
nothing inside it yields, so it is never held across a switch.

Memory: each entry is a key string, a small tuple and an interned binding; bindings are
shared between sessions pinned to the same (model, route), so a million sessions cost the
keys and the dict slots, not a million binding objects.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable, Mapping

from app.session_cache.base import SessionBinding, SessionCache, StoredPin

#: How many entries :meth:`MemorySessionCache.sample_pins` looks at per pin asked for.
_SAMPLE_SCAN_FACTOR = 20


class MemorySessionCache(SessionCache):
    """LRU bounded by ``max_entries``; TTL set at pinning, renewed only by ``get_renewing``."""

    backend_name = "memory"

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic):
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, SessionBinding]] = OrderedDict()
        self._bindings: dict[SessionBinding, SessionBinding] = {}
        #: Usage totals (SPEC §19): key -> (expiry, {field: number}), LRU like the pins.
        self._usage: OrderedDict[str, tuple[float, dict]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> SessionBinding | None:
        with self._lock:
            entry = self._live_entry(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def get_renewing(self, key: str, ttl_seconds: int) -> SessionBinding | None:
        with self._lock:
            entry = self._live_entry(key)
            if entry is None:
                return None
            self._entries[key] = (self._clock() + ttl_seconds, entry[1])
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: str, binding: SessionBinding, ttl_seconds: int) -> None:
        with self._lock:
            self._store(key, binding, ttl_seconds)

    def put_if_absent(self, key: str, binding: SessionBinding,
                      ttl_seconds: int) -> SessionBinding:
        with self._lock:
            entry = self._live_entry(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry[1]
            self._store(key, binding, ttl_seconds)
            return binding  # the caller's own object: it is the one that stored

    def replace_stale(self, key: str, stale_model: str, binding: SessionBinding,
                      ttl_seconds: int) -> SessionBinding:
        with self._lock:
            entry = self._live_entry(key)
            if entry is not None and entry[1].model_name != stale_model:
                self._entries.move_to_end(key)
                return entry[1]
            self._store(key, binding, ttl_seconds)
            return binding

    def delete(self, key: str) -> bool:
        with self._lock:
            # An expired entry is not stored any more (Redis would say the same), even if
            # lazy expiry has not dropped it yet.
            return self._live_entry(key) is not None and \
                self._entries.pop(key, None) is not None

    def ttl(self, key: str) -> int | None:
        with self._lock:
            entry = self._live_entry(key)
            if entry is None:
                return None
            return max(0, int(entry[0] - self._clock() + 0.999))

    def sample_pins(self, limit: int, skip_prefixes: tuple[str, ...] = ()
                    ) -> list[StoredPin]:
        """The most recently used live pins, newest first (this process's only).

        Looks at no more than ``limit * 20`` entries, under the lock, without yielding.
        """
        now = self._clock()
        found: list[StoredPin] = []
        with self._lock:
            for looked, key in enumerate(reversed(self._entries)):
                if len(found) >= limit or looked >= limit * _SAMPLE_SCAN_FACTOR:
                    break
                expires, binding = self._entries[key]
                if expires > now and not key.startswith(skip_prefixes):
                    found.append(StoredPin(key, binding, max(0, int(expires - now + 0.999))))
        return found

    def add_usage(self, key: str, increments: Mapping[str, int | float],
                  ttl_seconds: int, replace: Mapping[str, int | float] | None = None) -> None:
        with self._lock:
            now = self._clock()
            entry = self._usage.pop(key, None)
            totals = dict(entry[1]) if entry is not None and entry[0] > now else {}
            for name, amount in increments.items():
                totals[name] = totals.get(name, 0) + amount
            totals.update(replace or {})
            self._usage[key] = (now + ttl_seconds, totals)
            while len(self._usage) > self._max_entries:
                self._usage.popitem(last=False)

    def usage(self, key: str) -> dict[str, int | float] | None:
        with self._lock:
            entry = self._usage.get(key)
            if entry is None:
                return None
            if entry[0] <= self._clock():
                del self._usage[key]
                return None
            return dict(entry[1])

    def _store(self, key: str, binding: SessionBinding, ttl_seconds: int) -> None:
        """(Re)place the entry as the most recent one; evict past the bound. Lock held."""
        stored = self._bindings.setdefault(binding, binding)
        self._entries.pop(key, None)
        self._entries[key] = (self._clock() + ttl_seconds, stored)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def _live_entry(self, key: str) -> tuple[float, SessionBinding] | None:
        """The entry under ``key`` unless expired (an expired one is dropped). Lock held."""
        entry = self._entries.get(key)
        if entry is not None and entry[0] <= self._clock():
            del self._entries[key]
            return None
        return entry
