"""The load generator of ``bin/bench``: :class:`devkit.load.Load` in a timed run.

One kept-alive connection per unit of concurrency, asyncio in the ``bin/bench`` process
itself. ``bin/bench`` prints its ceiling (the mock measured directly with it) and flags rows
that come close to it: there the generator, not the server, may be the limit.
"""

from __future__ import annotations

import itertools

from benchlib.loadgen import RESPONSE_TIMEOUT_S, LoadSpec
from benchlib.report import LoadResult, summarize_latencies
from devkit.load import Load, PlannedRequest


def _planner(spec: LoadSpec, run: str):
    """``request_for(index)``: the spec's body with its session header, if any."""
    if spec.sessions == "pool":
        planned = [PlannedRequest(spec.body, spec.headers(session)) for session in spec.pool]
        return lambda index: planned[index % len(planned)]
    if spec.sessions == "unique":
        return lambda index: PlannedRequest(
            spec.body, spec.headers(f"{spec.unique_prefix}-{run}-{index}"))
    plain = PlannedRequest(spec.body, spec.headers())
    return lambda index: plain


class PythonGenerator:
    """Threads of keep-alive HTTP/1.1 connections (:mod:`devkit.load`), in this process."""

    name = "python"
    _runs = itertools.count()  # a fresh set of unique sessions per run

    def version(self) -> str:
        """Describes the generator."""
        return "python generator (devkit.load)"

    def run(self, spec: LoadSpec, concurrency: int, duration: float) -> LoadResult:
        """Load ``spec`` with ``concurrency`` connections for ``duration`` seconds."""
        run = str(next(self._runs))
        load = Load(f"http://{spec.host}:{spec.port}{spec.path}", None, concurrency,
                    _planner(spec, run), timeout=RESPONSE_TIMEOUT_S, duration=duration,
                    keep_body=False)
        result = load.run(timeout=duration + RESPONSE_TIMEOUT_S + 5)
        errors = {"non_2xx": 0, "connect": 0, "read": 0, "write": 0, "timeout": 0}
        expect = {name.lower(): value for name, value in spec.expect.items()}
        matched = 0
        for outcome in result.outcomes:
            kind = outcome.error_kind or (None if outcome.ok else "non_2xx")
            if kind:
                errors[kind] += 1
            if expect and all(outcome.headers.get(k) == v for k, v in expect.items()):
                matched += 1
        latencies = [o.latency * 1000.0 for o in result.outcomes if o.status != 0]
        return summarize_latencies(latencies, duration, errors, matched if expect else None)
