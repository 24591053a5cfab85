"""bin/bench end to end, briefly: real mock, passthrough and gateway processes on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ("direct", "passthrough", "pinned_memory")

pytestmark = pytest.mark.integration


def run_bench(tmp_path: Path, *extra: str, scenarios: tuple = SCENARIOS) -> dict:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchlib.cli", "--duration", "1", "--warmup", "0",
         "--concurrency", "2", "--scenarios", ",".join(scenarios), "--json", str(out),
         *extra], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "scenario" in proc.stdout and "wrote" in proc.stdout
    return json.loads(out.read_text())


def assert_clean_rows(doc: dict, scenarios: tuple = SCENARIOS) -> None:
    rows = {row["scenario"]: row for row in doc["rows"]}
    assert set(rows) == set(scenarios)
    for name, row in rows.items():
        assert row["concurrency"] == 2
        assert row["rps"] > 0, name
        assert row["errors"] == 0, (name, row["error_detail"])
    pinned = rows["pinned_memory"]
    assert pinned["check"] == "pinned"
    assert pinned["check_matched"] == pinned["requests"] > 0


def test_bench_measures_direct_passthrough_and_pinned_memory_and_its_ceiling(tmp_path):
    """Clean rows, the settings used, and how fast the generator goes against the mock."""
    doc = run_bench(tmp_path)
    assert_clean_rows(doc)
    assert doc["machine"]["nproc"] >= 1
    assert doc["settings"]["workers"] == 2
    assert doc["generator"]["name"] == "python"
    assert doc["generator"]["ceiling_rps"] > 0


def test_failover_cost_measures_both_paths():
    from benchlib import failover_cost

    result = failover_cost.run(requests_per_round=50, rounds=1)
    figures = result["cpu_us_per_request"]
    assert set(figures) == {"with_chain", "without_chain"}
    assert all(value > 0 for value in figures.values())
    assert result["ratio_with_over_without"] > 0 and result["chain_alone_cpu_us"] > 0
