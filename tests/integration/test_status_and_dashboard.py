"""Seeing it (SPEC §21), end to end: a real gateway (gunicorn, two gevent workers adding up
their metrics, pins in a real redis-server) gets known traffic; then ``/status`` is loaded
in a real headless Chromium and its numbers are read off the page, and every metric the
Grafana dashboard's panels query is looked for in the gateway's ``/metrics``.

Chromium comes from the OS packages (``.ci/run`` installs it); without it these browser
tests skip with the install command, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from devkit import browser
from devkit.configs import DEEP_MODEL, FAST_MODEL
from devkit.gateway import Gateway
from tests.support.configs import (
    DEEP_PROMPT,
    FAST_PROMPT,
    chat_body,
    gateway_config,
    redis_cache,
)
from tests.support.pages import page_fields
from tests.support.promql import metric_names, panel_queries

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "docker" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "plano.json"
ADMIN_TOKEN = "status-admin-token-0123456789"
#: The usage series of SPEC §19: shown as measured only once the gateway exports them.
USAGE_SERIES = ("plano_tokens_total", "plano_cost_usd_total",
                "plano_prompt_cache_requests_total")


def require_chromium() -> None:
    """Skip without Chromium, except under CI=true where that is a failure."""
    if browser.find_chromium() is None:
        message = f"no Chromium on PATH: install it ({browser.INSTALL_HINT})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def gateway(mock_llm, shared_redis):
    """deep_reasoning = gpt-5.2 then gpt-4o-mini; fast_responses = gpt-4o-mini."""
    prefix = f"plano:status-{time.time_ns()}:"
    raw = gateway_config(
        mock_llm, cache=redis_cache(shared_redis, key_prefix=prefix),
        admin={"token": ADMIN_TOKEN},
        routing_preferences=[
            {"name": "deep_reasoning", "description": "complex reasoning, mathematics with "
             "equations, detailed technical explanations", "models": [DEEP_MODEL, FAST_MODEL]},
            {"name": "fast_responses", "description": "short answers, greetings, simple "
             "questions, quick creative snippets", "models": [FAST_MODEL]}])
    with Gateway(raw, workers=2) as running:
        running.wait_ready(all_workers=True)
        yield running


@pytest.fixture(scope="module")
def traffic(gateway) -> list[str]:
    """Three sessions of four rounds, alternating prompts (the first round pins): sessions
    1 and 3 start deep (gpt-5.2), session 2 fast (gpt-4o-mini). Then one request without a
    session whose deep model answers 503: gpt-4o-mini serves it (a failover)."""
    sessions = [f"status-session-{index}" for index in (1, 2, 3)]
    for index, session in enumerate(sessions):
        prompts = (DEEP_PROMPT, FAST_PROMPT) if index != 1 else (FAST_PROMPT, DEEP_PROMPT)
        for round_ in range(4):
            answer = requests.post(gateway.chat_url, json=chat_body(prompts[round_ % 2]),
                                   headers={"X-Model-Affinity": session}, timeout=10)
            assert answer.status_code == 200, answer.text
    failing = chat_body(DEEP_PROMPT, mock_fault={"models": {"gpt-5.2": {"status": 503}}})
    answer = requests.post(gateway.chat_url, json=failing, timeout=10)
    assert answer.headers.get("x-plano-failover-from") == DEEP_MODEL, answer.headers
    # Each worker counts its answers' usage within a second: the page and /metrics then
    # agree whichever worker serves them.
    gateway.metrics_counting(13)
    return sessions


def status_url(gateway) -> str:
    """The page's URL with Basic credentials in its user-info part (see devkit.browser)."""
    return f"http://admin:{ADMIN_TOKEN}@127.0.0.1:{gateway.port}/status"


def exported_samples(gateway) -> set[str]:
    """Every sample name in the gateway's ``/metrics`` (histograms: _bucket, _sum, _count)."""
    text = requests.get(f"{gateway.url}/metrics", timeout=10).text
    return {sample.name for family in text_string_to_metric_families(text)
            for sample in family.samples}


# --------------------------------------------------------------------------- the page


def test_status_page_in_a_real_browser_shows_the_routes_pins_and_failover(gateway, traffic):
    require_chromium()
    fields = page_fields(browser.dump_dom(status_url(gateway)))

    assert fields[f"route:deep_reasoning:{DEEP_MODEL}:requests"] == "8"
    assert fields[f"route:deep_reasoning:{DEEP_MODEL}:pinned"] == "75 % (6 of 8)"
    assert fields[f"route:deep_reasoning:{FAST_MODEL}:requests"] == "1"
    assert fields[f"route:fast_responses:{FAST_MODEL}:pinned"] == "75 % (3 of 4)"
    assert fields["requests"] == "13"
    assert fields["pinned"] == "69 %"
    assert fields["failovers"] == "1"
    assert fields[f"model:{DEEP_MODEL}:failovers"] == "1 / 0"
    assert fields[f"model:{FAST_MODEL}:failovers"] == "0 / 1"
    assert fields["cache-reachable"] == "redis reachable"
    assert [fields[f"pin:{session}"] for session in traffic] == [DEEP_MODEL, FAST_MODEL,
                                                                  DEEP_MODEL]
    assert fields["config-source"] == str(gateway.config_path)
    assert "workers added up" in fields["scope"]
    exported = exported_samples(gateway)
    for series, kind in zip(USAGE_SERIES, ("tokens", "cost", "prompt-cache"), strict=True):
        cell = fields[f"model:{DEEP_MODEL}:{kind}"]
        assert (cell == "not measured yet") == (series not in exported), (series, cell)


def test_status_page_asks_for_credentials_and_keeps_the_token_out_of_urls(gateway):
    answer = requests.get(f"{gateway.url}/status", timeout=10)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith('Basic realm="plano status"')
    assert requests.get(f"{gateway.url}/status?token={ADMIN_TOKEN}",
                        timeout=10).status_code == 401
    assert requests.get(f"{gateway.url}/status", auth=("anyone", ADMIN_TOKEN),
                        timeout=10).status_code == 200


def test_status_page_renders_at_phone_width(gateway, traffic, tmp_path):
    require_chromium()
    shot = browser.screenshot(status_url(gateway), tmp_path / "phone.png", width=390,
                              height=1600)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- the dashboard


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_metrics() -> set[str]:
    return {name for _, expr in panel_queries(dashboard()) for name in metric_names(expr)}


def test_promql_metric_names_are_read_from_the_expression():
    expr = ('histogram_quantile(0.95, sum by (le, model) (rate(plano_upstream_duration_'
            'seconds_bucket{model=~"openai/.*", route!="x"}[$__rate_interval]))) / on (model) '
            'group_left sum without (kind) (plano_tokens_total offset 5m) > bool 0 '
            'and ignoring(le) up')
    assert metric_names(expr) == {"plano_upstream_duration_seconds_bucket",
                                  "plano_tokens_total", "up"}


def test_dashboard_is_provisioned_with_the_datasource_its_panels_name():
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 30
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" /
                                  "prometheus.yml").read_text())["datasources"]
    (prometheus,) = datasources
    assert prometheus["type"] == "prometheus" and prometheus["url"] == "http://prometheus:9090"
    queries = list(panel_queries(board))
    assert len(queries) >= 10
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == prometheus["uid"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == prometheus["uid"], panel["title"]
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" /
                                "plano.yml").read_text())["providers"]
    compose = yaml.safe_load((REPO / "docker" / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{providers[0]['options']['path']}:ro" in mounts
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts


def test_dashboard_covers_what_spec_21_names():
    names = dashboard_metrics()
    assert {"plano_model_requests_total", "plano_failovers_total",
            "plano_session_cache_events_total", "plano_upstream_duration_seconds_bucket",
            *USAGE_SERIES} <= names


def test_every_dashboard_panel_queries_metrics_a_running_gateway_exports(gateway, traffic):
    exported = exported_samples(gateway)
    missing = {(title, name) for title, expr in panel_queries(dashboard())
               for name in metric_names(expr) if name not in exported}
    assert not missing, f"panels query metrics the gateway does not export: {sorted(missing)}"
