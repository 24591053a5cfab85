"""Test doubles shared by the tests: a hand-moved clock, failing caches, recording metrics."""

from __future__ import annotations

from app.errors import SessionCacheError
from app.observability.metrics import Metrics
from app.session_cache.base import SessionCache


class FailingCache(SessionCache):
    """Every call fails like an unreachable backend; ``ping`` says so."""

    def __init__(self, error=None, backend_name: str = "failing"):
        self.error = error or SessionCacheError(
            "redis GET failed: ConnectionError: connection refused")
        self.backend_name = backend_name
        self.calls = 0

    def get(self, key, *more):
        self.calls += 1
        raise self.error

    get_renewing = put = put_if_absent = replace_stale = delete = ttl = get

    def ping(self):
        return False


class RecordingMetrics(Metrics):
    """Keeps every session-cache outcome, router decision and admin call."""

    def __init__(self):
        self.cache_events: list[str] = []
        self.decisions: list[tuple] = []
        self.admin: list[tuple[str, int]] = []

    def session_cache_event(self, backend, outcome):
        self.cache_events.append(outcome)

    def router_decision(self, route, model, fallback, seconds):
        self.decisions.append((route, model, fallback))

    def admin_request(self, action, status):
        self.admin.append((action, status))


class FakeClock:
    """A monotonic clock the test moves by hand (``clock=`` of caches and breakers)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
