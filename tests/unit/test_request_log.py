"""Structured logs (SPEC §10, §8): one JSON line per request, warnings with their cause,
request ids, and never a secret in any log line."""

from __future__ import annotations

import json
import logging
import os

import pytest

from app import create_app
from app.config import config_from_dict
from app.http.request_log import (
    ACCESS_LOGGER,
    REQUEST_ID,
    JsonFormatter,
    lean_log_records,
    request_id_from,
)
from app.pipeline.relay import relayed_headers
from tests.support.configs import DEEP_PROMPT, FAST_PROMPT, chat_body, make_config_dict
from tests.support.fake_provider import fake_providers
from tests.support.fakes import FailingCache

CHAT = "/v1/chat/completions"
CLIENT_SECRET = "sk-client-secret"
PROVIDER_SECRET = "sk-test-secret-key"  # the access_key of every provider in the base config


@pytest.fixture
def client(config):
    return create_app(config, providers=fake_providers(config)).test_client()


def access_lines(caplog) -> list[dict]:
    return [record.plano for record in caplog.records if record.name == ACCESS_LOGGER]


def test_one_line_per_request_with_the_decision(client, caplog):
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    first = client.post(CHAT, json=chat_body(DEEP_PROMPT),
                        headers={"X-Model-Affinity": "log-1", "x-org-id": "acme"})
    first.close()
    second = client.post(CHAT, json=chat_body(FAST_PROMPT),
                         headers={"X-Model-Affinity": "log-1", "x-request-id": "req-42"})
    second.close()
    new, pinned = access_lines(caplog)
    assert new["request_id"] == first.headers["x-request-id"]
    assert len(new["request_id"]) == 32
    assert new["session_id"] == "log-1"
    assert new["pinned"] is False and new["affinity"] == "new"
    assert new["route"] == "deep_reasoning" and new["model"] == "openai/gpt-5.2"
    assert new["status"] == 200 and new["method"] == "POST" and new["path"] == CHAT
    assert new["duration_ms"] >= new["upstream_ms"] >= 0
    assert pinned["request_id"] == "req-42" == second.headers["x-request-id"]
    assert pinned["pinned"] is True and pinned["affinity"] == "pinned"


def test_tenant_is_logged_when_configured(caplog):
    config = config_from_dict(make_config_dict(
        routing={"session_cache": {"tenant_header": "x-org-id"}}))
    client = create_app(config, providers=fake_providers(config)).test_client()
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    client.post(CHAT, json=chat_body(), headers={"X-Model-Affinity": "t-1",
                                                 "x-org-id": "acme"}).close()
    assert access_lines(caplog)[0]["tenant"] == "acme"


def test_stream_is_logged_at_its_end(client, caplog):
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    response = client.post(CHAT, json=chat_body(stream=True))
    assert access_lines(caplog) == []
    assert b"[DONE]" in response.get_data()
    response.close()
    (line,) = access_lines(caplog)
    assert line["status"] == 200 and line["upstream_ms"] is not None


def test_rejected_request_is_logged_with_its_status(client, caplog):
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    response = client.post(CHAT, data=b"{not json", content_type="application/json")
    response.close()
    (line,) = access_lines(caplog)
    assert line["status"] == 400 and line["model"] is None
    assert response.headers["x-request-id"] == line["request_id"]


@pytest.mark.parametrize("incoming", ["", "has space", "x" * 129, "caf\u00e9"])
def test_unusable_request_ids_are_replaced(incoming):
    replaced = request_id_from(incoming)
    assert replaced != incoming and len(replaced) == 32


def test_provider_request_id_is_relayed_under_its_own_name(config, caplog):
    providers = fake_providers(config, headers={"x-request-id": "up-1",
                                                "x-ratelimit-remaining-requests": "9"})
    client = create_app(config, providers=providers).test_client()
    response = client.post(CHAT, json=chat_body(), headers={"x-request-id": "ours"})
    response.close()
    assert response.headers["x-request-id"] == "ours"
    assert response.headers["x-upstream-request-id"] == "up-1"
    assert response.headers["x-ratelimit-remaining-requests"] == "9"
    assert relayed_headers({"X-Request-Id": "a"}) == {"x-upstream-request-id": "a"}


def test_cache_failure_is_one_warning_with_its_cause(config, caplog):
    client = create_app(config, session_cache=FailingCache(backend_name="redis"),
                        providers=fake_providers(config)).test_client()
    caplog.set_level(logging.INFO)
    client.post(CHAT, json=chat_body(), headers={"X-Model-Affinity": "w-1",
                                                 "x-request-id": "req-w"}).close()
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].cause.endswith("connection refused")
    assert warnings[0].outcome == "error"
    rendered = json.loads(JsonFormatter().format(warnings[0]))
    assert rendered["request_id"] == "req-w"
    assert rendered["event"] == "session_cache_error"
    assert access_lines(caplog)[0]["affinity"] == "unavailable"


def test_router_failure_is_one_warning_with_its_cause(caplog):
    config = config_from_dict(make_config_dict(routing={"model": "openai/gpt-4o-mini"}))
    client = create_app(config, providers=fake_providers(config, fail=True)).test_client()
    caplog.set_level(logging.INFO)
    client.post("/routing/v1/chat/completions", json=chat_body(DEEP_PROMPT)).close()
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].event == "router_error"
    assert "could not be reached" in warnings[0].cause


def test_secrets_never_reach_a_log_line(config, caplog):
    """Client Authorization and provider keys, on success, provider failure, cache failure
    and router failure: rendered as the JSON lines gunicorn would write."""
    caplog.set_level(logging.DEBUG)
    headers = {"Authorization": f"Bearer {CLIENT_SECRET}", "X-Model-Affinity": "sec-1"}
    ok = create_app(config, providers=fake_providers(config)).test_client()
    failing = create_app(config, session_cache=FailingCache(backend_name="redis"),
                         providers=fake_providers(config, fail=True)).test_client()
    llm_config = config_from_dict(make_config_dict(routing={"model": "openai/gpt-4o-mini"}))
    routing = create_app(llm_config,
                         providers=fake_providers(llm_config, fail=True)).test_client()
    for client in (ok, failing, routing):
        for body in (chat_body(DEEP_PROMPT), chat_body(stream=True), {"messages": "x"}):
            client.post(CHAT, json=body, headers=headers).close()
    formatter = JsonFormatter()
    rendered = "\n".join(formatter.format(record) for record in caplog.records)
    assert len(access_lines(caplog)) == 9
    assert "sec-1" in rendered
    assert CLIENT_SECRET not in rendered and PROVIDER_SECRET not in rendered
    assert CLIENT_SECRET not in caplog.text and PROVIDER_SECRET not in caplog.text


def test_formatter_writes_one_json_object_per_line():
    record = logging.LogRecord("app.pipeline.decide", logging.WARNING, __file__, 1,
                               "router %s failed:\n%s", ("llm", "timeout"), None)
    record.cause = "timeout"
    token = REQUEST_ID.set("req-f")
    try:
        line = JsonFormatter().format(record)
    finally:
        REQUEST_ID.reset(token)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["msg"] == "router llm failed:\ntimeout"
    assert parsed["level"] == "WARNING" and parsed["logger"] == "app.pipeline.decide"
    assert parsed["request_id"] == "req-f" and parsed["cause"] == "timeout"
    assert parsed["ts"].endswith("Z")


def test_lean_log_records_keep_every_field_a_line_writes(monkeypatch):
    for name in ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing"):
        monkeypatch.setattr(logging, name, getattr(logging, name))  # restored afterwards
    lean_log_records()
    logger = logging.getLogger("test.lean")
    record = logger.makeRecord(logger.name, logging.WARNING, "(unknown file)", 0,
                               "cache %s", ("down",), None, extra={"event": "cache_error"})
    assert record.process is None and record.thread is None  # not gathered any more
    parsed = json.loads(JsonFormatter().format(record))
    assert parsed["pid"] == os.getpid() and parsed["event"] == "cache_error"
    assert parsed["msg"] == "cache down"
