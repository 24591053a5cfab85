"""bin/bench --streams: the pure parts (target checks, table); no servers."""

from __future__ import annotations

from benchlib import streams


def row(target, round_name, c, cpu, gap_p99=100.0, rss=30.0, affinity=None):
    return {"target": target, "round": round_name, "concurrency": c, "ok": c,
            "failures": {}, "ttfb_p50_ms": 1.0, "ttfb_p99_ms": 2.0, "gap_p50_ms": 50.0,
            "gap_p99_ms": gap_p99, "rss_kb_per_stream": rss, "cpu_ms_per_stream": cpu,
            "affinity": affinity or {}}


def test_targets_hold_when_every_number_is_within_them():
    rows = [row("gateway", "new", 2000, 2.2, 140.0, affinity={"new": 2000}),
            row("gateway", "pinned", 2000, 2.1, 150.0, affinity={"pinned": 2000}),
            row("passthrough", "-", 2000, 2.0, 100.0)]
    lines, held = streams.target_lines(rows, workers=2)
    assert held and all(line.startswith("  [ok]") for line in lines)
    assert any("1.10x passthrough" in line for line in lines)


def test_each_missed_target_is_flagged():
    rows = [row("gateway", "new", 2000, 2.3, 151.0, rss=61.0,
                affinity={"new": 1990, "unavailable": 10}),
            row("passthrough", "-", 2000, 2.0, 100.0)]
    lines, held = streams.target_lines(rows, workers=2)
    assert not held
    missed = [line for line in lines if "MISSED" in line]
    assert len(missed) == 4
    assert any("10 unavailable" in line for line in missed)


def test_table_shows_affinity_counts_and_failures():
    failed = row("gateway", "new", 10, 1.0, affinity={"new": 9, "unavailable": 1})
    failed["failures"] = {"HTTP 502": 1}
    text = "\n".join(streams.table_lines([failed]))
    assert "new=9, unavailable=1" in text and "FAILED {'HTTP 502': 1}" in text


def test_stream_body_asks_the_mock_for_one_event_per_word():
    body = streams.stream_body(3)
    assert body["stream"] is True and body["mock_fault"]["content"] == "w0 w1 w2"
