"""The attempt chain: one request tried on its route's ranked models (SPEC §15).

:meth:`Failover.run` calls an ``attempt(endpoint, read_timeout)`` callable per try and
decides after each whether to relay its answer or try again. No byte has reached the
client while the chain runs (the caller sends nothing until it returns), so trying again is
safe; a stream whose first event arrived is relayed as it is and never retried, whatever
happens to it later (the attempt reads that first event before it returns:
:func:`app.pipeline.attempt.first_bytes_read`).

A try *fails* (and the next is made) on: connection refused or reset, a timeout, HTTP 429,
500, 502, 503, 504 or 529. The listener's ``max_retries`` retries the same model first;
then the next candidate is tried, up to ``max_attempts`` models, all within the listener
timeout (each try's read timeout is what is left of it). A 429 or 503 with ``Retry-After``
marks the model down for min(Retry-After, cooldown) and moves on at once: never slept on,
never retried within the request. Anything else (a success, another 4xx, a stream) is the
answer. When every try failed, the last failure is relayed.

Health (:class:`app.pipeline.model_health.ModelHealth`): a model marked down is skipped (when every
candidate is down, the first is tried anyway); each failure and success is recorded. A
``passthrough_auth`` model answers with the client's own key, so its marks are kept per
credential (``credential``: a fingerprint of that key, :func:`app.http.auth.
credential_fingerprint`): one user's rate limit does not fail everyone else over (SPEC §8).
No Flask, no HTTP here: the caller supplies ``attempt``.
"""

from __future__ import annotations

import email.utils
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from app.config import FailoverConfig, ModelEndpoint
from app.errors import (
    GatewayError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamStreamError,
    UpstreamTimeoutError,
)
from app.observability.metrics import Metrics
from app.pipeline.model_health import ModelHealth
from app.pipeline.relay import Answer

log = logging.getLogger(__name__)

#: HTTP statuses that make the chain try again (SPEC §15); 529: Anthropic's "overloaded".
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 529})
#: Statuses whose ``Retry-After`` marks the model down instead of retrying it.
RETRY_AFTER_STATUSES = frozenset({429, 503})

#: A try is not started with less than this left of the listener timeout.
MIN_ATTEMPT_SECONDS = 0.05

Attempt = Callable[[ModelEndpoint, float], Answer]


@dataclass(slots=True)
class FailoverResult:
    """What the chain ends with: an answer to relay, or an error to render (never both).

    ``served``: the model whose answer (or error) is relayed. ``failed_from``: the first
    model that failed or was skipped as down, when another one was tried after it.
    """

    served: ModelEndpoint
    answer: Answer | None = None
    error: GatewayError | None = None
    failed_from: str | None = None
    reasons: list[str] = field(default_factory=list)

    @property
    def failed_over(self) -> bool:
        """Whether a model other than the decided one produced the result."""
        return self.failed_from is not None


def retry_after_seconds(headers: dict) -> float | None:
    """The ``Retry-After`` of an answer's relayed headers in seconds (delta or HTTP date),
    ``None`` when absent or unreadable."""
    value = None
    for name, header in headers.items():
        if name.lower() == "retry-after":
            value = header.strip()
            break
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def failure_reason(answer: Answer | None, error: GatewayError | None) -> str | None:
    """Why a try counts as failed (``connection``, ``timeout``, ``stream``,
    ``http_<status>``), or ``None`` when its outcome is to be relayed as it is. ``stream``:
    a stream that ended, or reported an error, before its first event reached the client
    (SPEC §18)."""
    if error is not None:
        if isinstance(error, UpstreamTimeoutError):
            return "timeout"
        if isinstance(error, UpstreamStreamError):
            return "stream"
        if isinstance(error, UpstreamConnectionError):
            return "connection"
        return None
    if answer.status in RETRY_STATUSES and isinstance(answer.body, (bytes, bytearray)):
        return f"http_{answer.status}"
    return None


def health_key(endpoint: ModelEndpoint, credential: str | None) -> str:
    """The name ``endpoint``'s health marks are kept under: the model's name, and for a
    ``passthrough_auth`` model with a client credential, the model per credential."""
    if credential is None or not endpoint.passthrough_auth:
        return endpoint.name
    return f"{endpoint.name}#{credential}"


class Failover:
    """Runs attempt chains for one worker (its health marks are the worker's)."""

    def __init__(self, config: FailoverConfig, *, timeout_seconds: float,
                 max_retries: int = 0, health: ModelHealth | None = None,
                 metrics: Metrics | None = None, clock: Callable[[], float] = time.monotonic):
        self._max_models = config.max_attempts
        self._retries = max(0, max_retries)
        self._timeout = timeout_seconds
        self.health = health if health is not None else ModelHealth(
            config.failure_threshold, config.cooldown_seconds)
        self._metrics = metrics or Metrics()
        self._clock = clock

    def run(self, candidates: Sequence[ModelEndpoint], attempt: Attempt,
            credential: str | None = None) -> FailoverResult:
        """Try ``candidates`` (ranked, the decided model first) until one answers.

        ``credential``: the fingerprint of the key the client sent for ``passthrough_auth``
        models (``None``: none sent); their health marks are that credential's.
        """
        deadline = self._clock() + self._timeout
        health = self.health
        limit = self._max_models or len(candidates)
        pending: list[tuple[str, str]] = []  # (model, reason) left, to count on the next try
        result: FailoverResult | None = None
        failed_from = None
        tried = 0
        for endpoint in candidates:
            if tried >= limit:
                break
            if not health.available(health_key(endpoint, credential)):
                pending.append((endpoint.name, "down"))
                failed_from = failed_from or endpoint.name
                continue
            tried += 1
            outcome = self._try_model(endpoint, attempt, deadline, pending,
                                      first=endpoint.name == candidates[0].name,
                                      credential=credential)
            if outcome is None:  # the request cannot go to this fallback: the next one
                continue
            result = outcome
            if result.reasons:
                failed_from = failed_from or endpoint.name
            if not result.reasons:  # an answer (or an error) to relay as it is
                break
            if deadline - self._clock() < MIN_ATTEMPT_SECONDS:
                break
        if result is None:
            # Every candidate is marked down (or none could be planned): try the decided
            # model anyway rather than refuse the request.
            pending.clear()
            result = self._try_model(candidates[0], attempt, deadline, pending, first=True,
                                     credential=credential)
            failed_from = None
        if failed_from == result.served.name:
            failed_from = None
        result.failed_from = failed_from
        return result

    def _try_model(self, endpoint: ModelEndpoint, attempt: Attempt, deadline: float,
                   pending: list[tuple[str, str]], first: bool,
                   credential: str | None = None) -> FailoverResult | None:
        """Up to 1 + ``max_retries`` tries of one model. The result's ``reasons`` are empty
        when its answer is to be relayed as it is."""
        marked = health_key(endpoint, credential)
        for model, reason in pending:
            self._metrics.failover(model, endpoint.name, reason)
        pending.clear()
        result = FailoverResult(endpoint)
        for _ in range(1 + self._retries):
            remaining = deadline - self._clock()
            answer = error = None
            try:
                answer = attempt(endpoint, max(remaining, MIN_ATTEMPT_SECONDS))
            except UpstreamError as raised:
                error = raised
            except GatewayError:
                if first:
                    raise  # the request itself is refused (e.g. untranslatable content)
                log.info("request cannot go to fallback %s; skipping it", endpoint.name,
                         extra={"event": "failover_skip", "model": endpoint.name})
                return None
            reason = failure_reason(answer, error)
            result.answer, result.error = answer, error
            if reason is None:
                result.reasons.clear()
                if answer is not None:
                    self.health.record_success(marked)
                return result
            result.reasons.append(reason)
            wait = retry_after_seconds(answer.headers) if (
                answer is not None and answer.status in RETRY_AFTER_STATUSES) else None
            if wait is not None:
                self.health.mark_down(marked, wait)
                reason = "retry_after"
            elif self.health.record_failure(marked):
                wait = 0.0  # just marked down: not retried either
            log.info("model %s failed (%s)", endpoint.name, reason,
                     extra={"event": "model_failed", "model": endpoint.name,
                            "cause": reason})
            if wait is not None or deadline - self._clock() < MIN_ATTEMPT_SECONDS:
                break
        pending.append((endpoint.name, reason))
        return result
