"""Pure result handling for ``bin/bench``: percentiles, rows, targets, the table and the JSON.

Nothing here starts a process or opens a socket, so all of it is unit-tested
(``tests/unit/test_bench_report.py``).

Definitions used throughout:

* *requests/s*: completed responses (any status) divided by the measured duration;
* *p50 / p99*: nearest-rank percentiles of per-request latency, from sending the request to
  the last byte of the answer (the whole stream for SSE), in milliseconds;
* *errors*: responses outside 2xx plus connection errors (connect, read, write, timeout);
* *overhead*: a row's p50 at concurrency 1 minus the direct mock's p50 at concurrency 1
  (``overhead_mean_ms`` uses the means). p50 rather than mean because one GC pause or
  scheduler hiccup in a few thousand requests moves a mean but not a median;
* *cpu us/req*: CPU time (user + system) the server under test used during the measured
  run, per completed request (gunicorn: its workers; the direct row: the mock). Contention
  barely moves it, so it is the steadiest figure on a busy machine; the JSON also has the
  mock's, Redis's and the routing mock's share;
* *check*: how many measured responses carried the headers a scenario expects (e.g.
  ``x-plano-pinned: true``); anything short of all of them is flagged.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping, Sequence

DIRECT = "direct"
PASSTHROUGH = "passthrough"
ERROR_KINDS = ("non_2xx", "connect", "read", "write", "timeout")


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending sequence; ``nan`` when it is empty."""
    if not sorted_values:
        return math.nan
    if not 0 < pct <= 100:
        raise ValueError("pct must be in (0, 100]")
    rank = math.ceil(pct / 100 * len(sorted_values))
    return float(sorted_values[max(rank, 1) - 1])


@dataclass
class LoadResult:
    """What one load-generator run measured (latencies in milliseconds)."""

    requests: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: dict = field(default_factory=dict)
    matched: int | None = None  # responses carrying the expected headers (None: no check)

    @property
    def rps(self) -> float:
        """Completed responses per second."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def error_count(self) -> int:
        """Non-2xx answers plus connection-level failures."""
        return sum(int(self.errors.get(kind, 0)) for kind in ERROR_KINDS)


def summarize_latencies(latencies_ms: Iterable[float], duration_s: float,
                        errors: Mapping[str, int] | None = None,
                        matched: int | None = None) -> LoadResult:
    """A :class:`LoadResult` from raw per-request latencies (one per completed response)."""
    values = sorted(latencies_ms)
    count = len(values)
    return LoadResult(
        requests=count, duration_s=duration_s,
        p50_ms=percentile(values, 50), p99_ms=percentile(values, 99),
        mean_ms=sum(values) / count if count else math.nan,
        max_ms=values[-1] if count else math.nan,
        errors={kind: int((errors or {}).get(kind, 0)) for kind in ERROR_KINDS},
        matched=matched)


@dataclass
class Row:
    """One line of the table: a scenario at one concurrency, with derived figures."""

    scenario: str
    concurrency: int
    result: LoadResult
    description: str = ""
    check: str | None = None          # human name of the expectation, e.g. "pinned"
    overhead_ms: float | None = None  # p50 over direct p50, concurrency 1 only
    overhead_mean_ms: float | None = None
    pct_of_passthrough: float | None = None
    flags: list = field(default_factory=list)
    target: str = ""                  # the server under test (a key of cpu_us_per_request)
    #: CPU microseconds per completed request, by server (gunicorn: its workers).
    cpu_us_per_request: dict = field(default_factory=dict)
    #: Redis commands per completed request, by command (GET, SET, ...).
    redis_per_request: dict = field(default_factory=dict)
    #: req/s of every round when the scenario list ran more than once (``--repeat``).
    rounds_rps: list = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """Errors, no responses, or answers without the expected headers."""
        res = self.result
        return bool(res.error_count or not res.requests
                    or (res.matched is not None and res.matched < res.requests))

    @property
    def target_cpu_us(self) -> float | None:
        """CPU per request of the server under test, when measured."""
        return self.cpu_us_per_request.get(self.target)

    def to_dict(self) -> dict:
        """The JSON form: the row's figures flat, errors broken down."""
        res = self.result
        return {
            "scenario": self.scenario, "description": self.description,
            "concurrency": self.concurrency, "requests": res.requests,
            "duration_s": _round(res.duration_s, 3), "rps": _round(res.rps, 1),
            "p50_ms": _round(res.p50_ms, 3), "p99_ms": _round(res.p99_ms, 3),
            "mean_ms": _round(res.mean_ms, 3), "max_ms": _round(res.max_ms, 3),
            "errors": res.error_count, "error_detail": dict(res.errors),
            "check": self.check, "check_matched": res.matched,
            "overhead_ms": _round(self.overhead_ms, 3),
            "overhead_mean_ms": _round(self.overhead_mean_ms, 3),
            "pct_of_passthrough": _round(self.pct_of_passthrough, 1),
            "target": self.target,
            "cpu_us_per_request": {name: _round(us, 1)
                                   for name, us in self.cpu_us_per_request.items()},
            "redis_commands_per_request": {name: _round(n, 3)
                                           for name, n in self.redis_per_request.items()},
            "rounds_rps": [_round(rps, 1) for rps in self.rounds_rps],
            "flags": list(self.flags),
        }


def _round(value: float | None, digits: int) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(value, digits)


def median_rows(rows: Sequence[Row]) -> list[Row]:
    """One row per (scenario, concurrency), in first-seen order: the round with the median
    req/s (the lower middle for an even count), its ``rounds_rps`` listing every round."""
    groups: dict[tuple, list[Row]] = {}
    for row in rows:
        groups.setdefault((row.scenario, row.concurrency), []).append(row)
    chosen = []
    for group in groups.values():
        ordered = sorted(group, key=lambda r: r.result.rps)
        row = ordered[(len(ordered) - 1) // 2]
        row.rounds_rps = [r.result.rps for r in group] if len(group) > 1 else []
        chosen.append(row)
    return chosen


def cpu_per_request(before: Mapping[str, float], after: Mapping[str, float],
                    requests: int) -> dict:
    """CPU microseconds per request of each server, from two CPU-seconds snapshots."""
    if not requests:
        return {}
    return {name: (after[name] - before[name]) * 1e6 / requests
            for name in after if name in before}


def commands_per_request(before: Mapping[str, int], after: Mapping[str, int],
                         requests: int) -> dict:
    """Redis commands per request from two ``INFO commandstats`` call counts.

    ``info`` itself (the snapshot's own command) is left out.
    """
    if not requests:
        return {}
    return {name.upper(): (count - before.get(name, 0)) / requests
            for name, count in sorted(after.items())
            if name != "info" and count - before.get(name, 0) > 0}


def redis_lines(rows: Sequence[Row]) -> list[str]:
    """One line per row that used Redis: commands per request (rare ones left out).

    Requests still in flight when a run ends reach Redis but are not counted as responses,
    so at high concurrency the figures read slightly above whole numbers.
    """
    lines = []
    for row in rows:
        if row.redis_per_request:
            commands = ", ".join(f"{name} {count:.2f}"
                                 for name, count in row.redis_per_request.items()
                                 if count >= 0.005)
            lines.append(f"  {row.scenario} c={row.concurrency}: {commands}")
    return lines


def derive(rows: Sequence[Row], generator_ceiling_rps: float | None = None) -> list[Row]:
    """Fill overhead, % of passthrough and flags in place; returns ``rows``.

    ``generator_ceiling_rps``: what the load generator reached against the mock directly;
    a row close to it may be limited by the generator rather than by the server.
    """
    by_key = {(row.scenario, row.concurrency): row for row in rows}
    direct_1 = by_key.get((DIRECT, 1))
    for row in rows:
        res = row.result
        row.flags = []
        if row.concurrency == 1 and direct_1 is not None and row.scenario != DIRECT \
                and res.requests and direct_1.result.requests:
            row.overhead_ms = res.p50_ms - direct_1.result.p50_ms
            row.overhead_mean_ms = res.mean_ms - direct_1.result.mean_ms
        passthrough = by_key.get((PASSTHROUGH, row.concurrency))
        if passthrough is not None and passthrough.result.rps > 0 \
                and row.scenario not in (DIRECT, PASSTHROUGH):
            row.pct_of_passthrough = 100.0 * res.rps / passthrough.result.rps
        if res.requests == 0:
            row.flags.append("NO RESPONSES")
        if res.error_count:
            detail = ", ".join(f"{kind} {count}" for kind, count in res.errors.items() if count)
            row.flags.append(f"ERRORS ({detail})")
        if res.matched is not None and res.requests and res.matched < res.requests:
            row.flags.append(f"{row.check or 'check'} only {res.matched}/{res.requests}")
        if generator_ceiling_rps and row.scenario != DIRECT \
                and res.rps >= 0.8 * generator_ceiling_rps:
            row.flags.append("near load-generator ceiling")
    return list(rows)


@dataclass
class Target:
    """One request-path target evaluated on a run."""

    name: str
    value: float | None
    limit: float
    unit: str
    higher_is_better: bool

    @property
    def met(self) -> bool | None:
        """Whether the value meets the limit; ``None`` when it was not measured."""
        if self.value is None:
            return None
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit

    def to_dict(self) -> dict:
        """The JSON form."""
        return {**asdict(self), "value": _round(self.value, 3), "met": self.met}


def targets(rows: Sequence[Row], concurrency: int = 32) -> list[Target]:
    """The throughput and latency targets that a load run can check."""
    by_key = {(row.scenario, row.concurrency): row for row in rows}

    def pct(scenario: str) -> float | None:
        row = by_key.get((scenario, concurrency))
        return row.pct_of_passthrough if row else None

    def overhead(scenario: str) -> float | None:
        row = by_key.get((scenario, 1))
        return row.overhead_ms if row else None

    def tracing_cost(traced_name: str = "pinned_redis_traced",
                     plain_name: str = "pinned_redis") -> float | None:
        plain = by_key.get((plain_name, concurrency))
        traced = by_key.get((traced_name, concurrency))
        if plain is None or traced is None or not plain.result.rps:
            return None
        return 100.0 * (1 - traced.result.rps / plain.result.rps)

    def traced_share(by_cpu: bool = False) -> float | None:
        """The traced gateway against the passthrough traced the same way."""
        row = by_key.get(("pinned_redis_traced", concurrency))
        base = by_key.get(("passthrough_traced", concurrency))
        if row is None or base is None:
            return None
        if by_cpu:
            if not row.target_cpu_us or not base.target_cpu_us:
                return None
            return 100.0 * base.target_cpu_us / row.target_cpu_us
        return 100.0 * row.result.rps / base.result.rps if base.result.rps else None

    def cpu_share(scenario: str) -> float | None:
        row = by_key.get((scenario, concurrency))
        base = by_key.get((PASSTHROUGH, concurrency))
        if row is None or base is None or not row.target_cpu_us or not base.target_cpu_us:
            return None
        return 100.0 * base.target_cpu_us / row.target_cpu_us

    return [
        Target(f"pinned_redis req/s vs passthrough at c={concurrency}", pct("pinned_redis"),
               90.0, "%", True),
        # What the share would be with both CPU-bound: robust to other load on the machine.
        Target(f"pinned_redis vs passthrough by worker CPU/req at c={concurrency}",
               cpu_share("pinned_redis"), 90.0, "%", True),
        Target("pinned_redis overhead over direct at c=1", overhead("pinned_redis"),
               1.3, "ms", False),
        Target("stream_redis overhead over direct at c=1", overhead("stream_redis"),
               2.0, "ms", False),
        Target(f"tracing at 100% sampling: req/s lost vs pinned_redis at c={concurrency}",
               tracing_cost(), 25.0, "%", False),
        Target(f"tracing at 10% sampling: req/s lost vs pinned_redis at c={concurrency}",
               tracing_cost("pinned_redis_traced_10"), 25.0, "%", False),
        Target(f"pinned_redis_traced req/s vs passthrough_traced (both 100%) at "
               f"c={concurrency}", traced_share(), 90.0, "%", True),
        Target(f"pinned_redis_traced vs passthrough_traced by worker CPU/req at "
               f"c={concurrency}", traced_share(by_cpu=True), 90.0, "%", True),
    ]


def _fmt(value: float | None, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


TABLE_COLUMNS = ("scenario", "conc", "req/s", "p50 ms", "p99 ms", "errors",
                 "overhead ms", "% passthru", "cpu us/req", "check", "flags")


def table_lines(rows: Sequence[Row]) -> list[str]:
    """The result table as aligned text lines (header, rule, one line per row)."""
    cells = [TABLE_COLUMNS]
    for row in rows:
        res = row.result
        check = "-"
        if res.matched is not None:
            check = f"{row.check} {res.matched}/{res.requests}"
        cells.append((row.scenario, str(row.concurrency), _fmt(res.rps, 1),
                      _fmt(res.p50_ms, 2), _fmt(res.p99_ms, 2), str(res.error_count),
                      _fmt(row.overhead_ms, 2), _fmt(row.pct_of_passthrough, 1),
                      _fmt(row.target_cpu_us, 0), check, "; ".join(row.flags) or "ok"))
    widths = [max(len(line[i]) for line in cells) for i in range(len(TABLE_COLUMNS))]
    numeric = {1, 2, 3, 4, 5, 6, 7, 8}
    lines = []
    for index, line in enumerate(cells):
        parts = [cell.rjust(width) if col in numeric else cell.ljust(width)
                 for col, (cell, width) in enumerate(zip(line, widths, strict=True))]
        lines.append("  ".join(parts).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return lines


def target_lines(evaluated: Sequence[Target]) -> list[str]:
    """One line per target: value, limit and MET / MISSED / not measured."""
    lines = []
    for target in evaluated:
        op = ">=" if target.higher_is_better else "<="
        verdict = {True: "MET", False: "MISSED", None: "not measured"}[target.met]
        lines.append(f"  {target.name}: {_fmt(target.value, 2)} {target.unit} "
                     f"(target {op} {target.limit:g} {target.unit}) {verdict}")
    return lines


def results_document(rows: Sequence[Row], *, machine: Mapping, settings: Mapping,
                     generator: Mapping, extra: Mapping | None = None) -> dict:
    """The JSON document ``bin/bench`` writes: machine, settings, rows, targets."""
    concurrencies = sorted({row.concurrency for row in rows})
    top = concurrencies[-1] if concurrencies else 32
    doc = {"machine": dict(machine), "settings": dict(settings),
           "generator": dict(generator), "rows": [row.to_dict() for row in rows],
           "targets": [target.to_dict() for target in targets(rows, top)]}
    if extra:
        doc.update(extra)
    return doc


def dumps(document: Mapping) -> str:
    """The JSON text of a results document (stable key order, indented)."""
    return json.dumps(document, indent=2) + "\n"
