"""bin/bench's pure parts: percentiles, rows, overhead, targets, the table and the JSON."""

from __future__ import annotations

import json
import math

import pytest

from benchlib import report
from benchlib.report import LoadResult, Row


def result(rps: float = 1000.0, p50: float = 1.0, p99: float = 2.0, mean: float | None = None,
           errors: dict | None = None, matched: int | None = None,
           duration: float = 5.0) -> LoadResult:
    requests = int(rps * duration)
    return LoadResult(requests=requests, duration_s=duration, p50_ms=p50, p99_ms=p99,
                      mean_ms=p50 if mean is None else mean, max_ms=p99 * 2,
                      errors=errors or {}, matched=matched)


# --------------------------------------------------------------------------- percentiles

def test_percentile_uses_nearest_rank():
    values = list(range(1, 101))  # 1..100
    assert report.percentile(values, 50) == 50
    assert report.percentile(values, 99) == 99
    assert report.percentile(values, 100) == 100
    assert report.percentile([7.0], 99) == 7.0


def test_percentile_of_small_sample_takes_the_upper_value():
    assert report.percentile([1.0, 2.0], 50) == 1.0
    assert report.percentile([1.0, 2.0], 99) == 2.0


def test_percentile_of_nothing_is_nan_and_bad_pct_is_refused():
    assert math.isnan(report.percentile([], 50))
    with pytest.raises(ValueError):
        report.percentile([1.0], 0)


def test_summarize_latencies_sorts_and_counts():
    summary = report.summarize_latencies([3.0, 1.0, 2.0, 10.0], duration_s=2.0,
                                         errors={"non_2xx": 1, "read": 2}, matched=3)
    assert summary.requests == 4
    assert summary.rps == 2.0
    assert summary.p50_ms == 2.0
    assert summary.p99_ms == 10.0
    assert summary.mean_ms == 4.0
    assert summary.max_ms == 10.0
    assert summary.error_count == 3
    assert summary.errors == {"non_2xx": 1, "connect": 0, "read": 2, "write": 0, "timeout": 0}
    assert summary.matched == 3


def test_summarize_no_latencies_gives_zero_requests():
    summary = report.summarize_latencies([], duration_s=1.0)
    assert summary.requests == 0 and summary.rps == 0.0 and math.isnan(summary.p50_ms)


# --------------------------------------------------------------------------- derive

def rows_for_run() -> list[Row]:
    return [
        Row("direct", 1, result(rps=10000, p50=0.10, mean=0.12)),
        Row("direct", 32, result(rps=12000, p50=2.5)),
        Row("passthrough", 1, result(rps=900, p50=1.00)),
        Row("passthrough", 32, result(rps=2000, p50=15.0)),
        Row("pinned_redis", 1, result(rps=700, p50=1.30, mean=1.42, matched=3500),
            check="pinned"),
        Row("pinned_redis", 32, result(rps=1850, p50=17.0, matched=9250), check="pinned"),
        Row("stream_redis", 1, result(rps=500, p50=2.35, matched=2500), check="pinned"),
    ]


def test_overhead_is_p50_over_direct_at_concurrency_one_only():
    rows = {(r.scenario, r.concurrency): r for r in report.derive(rows_for_run())}
    assert rows["pinned_redis", 1].overhead_ms == pytest.approx(1.20)
    assert rows["pinned_redis", 1].overhead_mean_ms == pytest.approx(1.30)
    assert rows["passthrough", 1].overhead_ms == pytest.approx(0.90)
    assert rows["pinned_redis", 32].overhead_ms is None
    assert rows["direct", 1].overhead_ms is None


def test_percent_of_passthrough_at_the_same_concurrency():
    rows = {(r.scenario, r.concurrency): r for r in report.derive(rows_for_run())}
    assert rows["pinned_redis", 32].pct_of_passthrough == pytest.approx(92.5)
    assert rows["pinned_redis", 1].pct_of_passthrough == pytest.approx(700 / 900 * 100)
    assert rows["passthrough", 32].pct_of_passthrough is None
    assert rows["direct", 32].pct_of_passthrough is None


def test_rows_without_direct_or_passthrough_have_no_derived_figures():
    (row,) = report.derive([Row("pinned_redis", 1, result(matched=5000), check="pinned")])
    assert row.overhead_ms is None and row.pct_of_passthrough is None and row.flags == []


def test_errors_and_short_checks_are_flagged():
    rows = report.derive([
        Row("pinned_redis", 1, result(rps=100, errors={"non_2xx": 3, "timeout": 1},
                                      matched=500), check="pinned"),
        Row("pinned_memory", 1, result(rps=100, matched=499), check="pinned"),
        Row("miss_redis", 1, LoadResult(0, 5.0, math.nan, math.nan, math.nan, math.nan)),
    ])
    assert rows[0].flags == ["ERRORS (non_2xx 3, timeout 1)"]
    assert rows[1].flags == ["pinned only 499/500"]
    assert rows[2].flags == ["NO RESPONSES"]
    assert all(row.failed for row in rows)
    assert not Row("pinned_memory", 1, result(rps=100, matched=500), check="pinned").failed


def test_rows_close_to_the_generator_ceiling_are_flagged():
    rows = report.derive([Row("direct", 32, result(rps=5000)),
                          Row("passthrough", 32, result(rps=4500)),
                          Row("pinned_redis", 32, result(rps=1000))],
                         generator_ceiling_rps=5000)
    assert rows[0].flags == []
    assert rows[1].flags == ["near load-generator ceiling"]
    assert rows[2].flags == []


# --------------------------------------------------------------------------- targets

def test_targets_are_evaluated_from_the_rows():
    evaluated = {t.name: t for t in report.targets(report.derive(rows_for_run()), 32)}
    share = evaluated["pinned_redis req/s vs passthrough at c=32"]
    assert share.value == pytest.approx(92.5) and share.met is True
    overhead = evaluated["pinned_redis overhead over direct at c=1"]
    assert overhead.value == pytest.approx(1.2) and overhead.met is True
    stream = evaluated["stream_redis overhead over direct at c=1"]
    assert stream.value == pytest.approx(2.25) and stream.met is False


def test_unmeasured_targets_say_so():
    evaluated = report.targets([], 32)
    assert len(evaluated) == 8 and all(t.met is None for t in evaluated)
    assert all(line.endswith("not measured") for line in report.target_lines(evaluated))


def test_target_lines_state_value_limit_and_verdict():
    lines = report.target_lines(report.targets(report.derive(rows_for_run()), 32))
    assert lines[0] == ("  pinned_redis req/s vs passthrough at c=32: 92.50 % "
                        "(target >= 90 %) MET")
    assert ("  stream_redis overhead over direct at c=1: 2.25 ms "
            "(target <= 2 ms) MISSED") in lines


# --------------------------------------------------------------------------- table

def test_table_has_header_rule_and_one_aligned_line_per_row():
    rows = report.derive(rows_for_run())
    lines = report.table_lines(rows)
    assert lines[0].split() == ["scenario", "conc", "req/s", "p50", "ms", "p99", "ms",
                                "errors", "overhead", "ms", "%", "passthru", "cpu", "us/req",
                                "check", "flags"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert len(lines) == 2 + len(rows)
    pinned = next(line for line in lines if line.startswith("pinned_redis") and " 1 " in line)
    assert "700.0" in pinned and "1.30" in pinned and "1.20" in pinned
    assert "pinned 3500/3500" in pinned and pinned.endswith("ok")
    # Right-aligned numbers: every data line has the req/s column ending at the same place.
    ends = {line.index(" ", line.index(line.split()[2])) for line in lines[2:]}
    assert len(ends) == 1


def test_table_shows_the_cpu_per_request_of_the_server_under_test():
    row = Row("pinned_redis", 32, result(matched=5000), check="pinned", target="gateway",
              cpu_us_per_request={"gateway": 812.4, "mock": 95.0, "redis": 20.0})
    line = report.table_lines([row])[2]
    assert " 812 " in line and " 95 " not in line
    assert row.to_dict()["cpu_us_per_request"] == {"gateway": 812.4, "mock": 95.0,
                                                   "redis": 20.0}


def test_cpu_per_request_divides_the_cpu_used_by_the_requests():
    before = {"gateway": 10.0, "mock": 2.0, "redis": 1.0}
    after = {"gateway": 14.0, "mock": 2.5, "gone": 3.0}
    assert report.cpu_per_request(before, after, 5000) == {"gateway": 800.0, "mock": 100.0}
    assert report.cpu_per_request(before, after, 0) == {}


def test_redis_commands_per_request_leave_out_info_and_idle_commands():
    before = {"get": 100, "set": 50, "info": 3, "ping": 7}
    after = {"get": 1100, "set": 1050, "info": 4, "ping": 7}
    per = report.commands_per_request(before, after, 1000)
    assert per == {"GET": 1.0, "SET": 1.0}
    assert report.commands_per_request(before, after, 0) == {}
    row = Row("miss_redis", 32, result(), redis_per_request=per)
    assert report.redis_lines([row, Row("direct", 1, result())]) == [
        "  miss_redis c=32: GET 1.00, SET 1.00"]
    assert row.to_dict()["redis_commands_per_request"] == {"GET": 1.0, "SET": 1.0}


def test_table_shows_dashes_for_missing_values_and_flags_text():
    rows = report.derive([Row("miss_redis", 1, result(errors={"connect": 2}))])
    line = report.table_lines(rows)[2]
    assert " - " in line and line.endswith("ERRORS (connect 2)")


# --------------------------------------------------------------------------- JSON

def test_results_document_round_trips_through_json():
    rows = report.derive(rows_for_run())
    doc = report.results_document(rows, machine={"nproc": 2}, settings={"duration_s": 5},
                                  generator={"name": "wrk"}, extra={"prepin": {}})
    loaded = json.loads(report.dumps(doc))
    assert loaded["machine"] == {"nproc": 2}
    assert loaded["generator"] == {"name": "wrk"}
    assert loaded["prepin"] == {}
    assert [(r["scenario"], r["concurrency"]) for r in loaded["rows"]] == \
        [(r.scenario, r.concurrency) for r in rows]
    pinned = next(r for r in loaded["rows"]
                  if r["scenario"] == "pinned_redis" and r["concurrency"] == 1)
    assert pinned["rps"] == 700.0 and pinned["requests"] == 3500
    assert pinned["p50_ms"] == 1.3 and pinned["overhead_ms"] == 1.2
    assert pinned["errors"] == 0 and pinned["check"] == "pinned"
    assert pinned["check_matched"] == 3500 and pinned["flags"] == []
    met = {t["name"]: t["met"] for t in loaded["targets"]}
    assert met["pinned_redis req/s vs passthrough at c=32"] is True
    assert met["pinned_redis overhead over direct at c=1"] is True
    assert met["stream_redis overhead over direct at c=1"] is False
    assert met["tracing at 100% sampling: req/s lost vs pinned_redis at c=32"] is None


def test_tracing_cost_compares_the_traced_and_plain_pinned_rows():
    rows = [Row("pinned_redis", 32, result(rps=1000)),
            Row("pinned_redis_traced", 32, result(rps=800))]
    tracing = next(t for t in report.targets(report.derive(rows), 32)
                   if t.name.startswith("tracing"))
    assert tracing.value == pytest.approx(20.0) and tracing.met is True


def test_cpu_based_share_compares_worker_cpu_per_request():
    rows = [Row("passthrough", 32, result(rps=500), target="pt",
                cpu_us_per_request={"pt": 1000.0}),
            Row("pinned_redis", 32, result(rps=900), target="gw",
                cpu_us_per_request={"gw": 1250.0})]
    share = next(t for t in report.targets(report.derive(rows), 32)
                 if "CPU/req" in t.name)
    assert share.value == pytest.approx(80.0) and share.met is False


def test_median_rows_pick_the_median_round_and_keep_every_rounds_rps():
    rounds = [Row("pinned_redis", 32, result(rps=rps, p50=p50))
              for rps, p50 in ((900, 30.0), (1200, 20.0), (1000, 25.0))]
    rounds.insert(1, Row("direct", 1, result(rps=20000)))
    chosen = report.median_rows(rounds)
    assert [(r.scenario, r.concurrency) for r in chosen] == [("pinned_redis", 32),
                                                             ("direct", 1)]
    assert chosen[0].result.rps == 1000 and chosen[0].result.p50_ms == 25.0
    assert chosen[0].rounds_rps == [900, 1200, 1000]
    assert chosen[1].rounds_rps == []


def test_nan_becomes_null_in_json():
    row = Row("miss_redis", 1, LoadResult(0, 5.0, math.nan, math.nan, math.nan, math.nan))
    data = json.loads(report.dumps({"rows": [row.to_dict()]}))["rows"][0]
    assert data["p50_ms"] is None and data["requests"] == 0 and data["rps"] == 0.0


def test_traced_gateway_is_compared_with_the_passthrough_traced_the_same_way():
    rows = rows_for_run() + [
        Row("passthrough_traced", 32, result(rps=1600, p50=20.0)),
        Row("pinned_redis_traced", 32, result(rps=1440, p50=22.0, matched=7200),
            check="pinned"),
        Row("pinned_redis_traced_10", 32, result(rps=1665, p50=18.0, matched=8325),
            check="pinned")]
    by_name = {target.name: target for target in report.targets(report.derive(rows), 32)}
    share = by_name["pinned_redis_traced req/s vs passthrough_traced (both 100%) at c=32"]
    assert share.value == pytest.approx(90.0) and share.met
    assert by_name["tracing at 10% sampling: req/s lost vs pinned_redis at c=32"].value == \
        pytest.approx(10.0)
    assert by_name["tracing at 100% sampling: req/s lost vs pinned_redis at c=32"].value == \
        pytest.approx(100 * (1 - 1440 / 1850))
