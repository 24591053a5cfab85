"""``bin/bench --cost`` (SPEC §20), tiny: the same agent sessions through a real gateway
(gunicorn + redis-server + the mock's prompt cache) under the four policies."""

from __future__ import annotations

import pytest

from benchlib import cost

pytestmark = pytest.mark.integration


def test_the_four_policies_replay_the_same_sessions_and_report_plausible_costs(tmp_path):
    size = cost.Size(sessions=3, turns=3, tool_rounds=3, concurrency=3)
    lines = []
    doc = cost.run(size, tmp_path, workers=1, echo=lines.append)
    rows = {row["policy"]: row for row in doc["rows"]}
    assert list(rows) == list(cost.POLICIES)
    expected = doc["settings"]["requests_per_policy"]
    for name, row in rows.items():
        assert (row["requests"], row["errors"]) == (expected, 0), name
        assert row["cost_usd"] > 0 and 0 < row["cache_read_share"] < 1, name
        assert row["tokens"]["input"] > 0 and row["tokens"]["output"] > 0, name
    # A pinned session never changes model and reads more of its prompt from the cache
    # than sessions without affinity, which change model between turns. (The reminders
    # next to tool results are harness envelopes the router does not see, SPEC §18, so
    # without affinity a tool round is routed on its turn's prompt, as turn-level routing
    # does: equal switches are possible.)
    assert rows["pinned"]["switches_per_session"] == 0
    assert rows["no_affinity"]["switches_per_session"] >= rows["turn_level"][
        "switches_per_session"] >= rows["turn_level_budget_20"]["switches_per_session"]
    assert rows["pinned"]["cache_read_share"] > rows["no_affinity"]["cache_read_share"]
    assert any("sessions 3/3" in line for line in lines)  # the progress line
    table = cost.table_lines(doc["rows"])
    assert len(table) == 5 and all(policy in "\n".join(table) for policy in cost.POLICIES)
