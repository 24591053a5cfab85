"""Usage accounting through the real app in-process (SPEC §19): the access log line, the
admin API's totals beside the pin, and ``X-Plano-Cache: off`` turning implicit affinity off."""

from __future__ import annotations

import json
import logging

from app import create_app
from app.config import config_from_dict
from app.request_log import ACCESS_LOGGER
from tests.support.configs import FAST_PROMPT, chat_body, make_config_dict
from tests.support.fake_provider import FakeProviderClient, FakeResponse

ADMIN = "usage-admin-token-0123456789"
USAGE = {"prompt_tokens": 1500, "completion_tokens": 20,
         "prompt_tokens_details": {"cached_tokens": 1024}}


class UsageProvider(FakeProviderClient):
    """The fake provider, its JSON answers reporting usage (cached tokens included)."""

    def post(self, body: bytes, **kwargs) -> FakeResponse:
        response = super().post(body, **kwargs)
        if response.headers["Content-Type"] == "application/json":
            answer = json.loads(response.body)
            answer["usage"] = USAGE
            response.body = json.dumps(answer).encode()
        return response


def _client(**routing):
    config = config_from_dict(make_config_dict(
        admin={"token": ADMIN}, routing={"session_ttl_seconds": 300, **routing}))
    providers = {p.name: UsageProvider(p.model_id) for p in config.model_providers}
    return create_app(config, providers=providers).test_client(), providers


def test_the_access_line_carries_tokens_and_cost_and_the_admin_api_the_totals(caplog):
    client, _ = _client()
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    for _ in range(2):
        response = client.post("/v1/chat/completions", json=chat_body(FAST_PROMPT),
                               headers={"X-Model-Affinity": "acct-1"})
        assert response.status_code == 200
        response.close()  # the session's totals are written when the answer is closed
    line = [r.plano for r in caplog.records if r.name == ACCESS_LOGGER][-1]
    assert (line["input_tokens"], line["cache_read_tokens"], line["output_tokens"]) == (
        476, 1024, 20)
    assert line["cost_usd"] > 0
    shown = client.get("/admin/sessions/acct-1",
                       headers={"Authorization": f"Bearer {ADMIN}"}).get_json()
    assert shown["model_name"] is not None
    assert shown["usage"]["requests"] == 2 and shown["usage"]["cache_read_tokens"] == 2048
    assert shown["usage"]["cache_hits"] == 2 and shown["usage"]["cost_usd"] > 0


def test_a_session_without_usage_shows_usage_null():
    client, _ = _client()
    client.post("/v1/chat/completions", json=chat_body(FAST_PROMPT, stream=True),
                headers={"X-Model-Affinity": "acct-2"}).close()  # the fake stream: no usage
    shown = client.get("/admin/sessions/acct-2",
                       headers={"Authorization": f"Bearer {ADMIN}"}).get_json()
    assert shown["usage"] is None


def test_x_plano_cache_off_turns_implicit_affinity_off_for_that_request():
    client, _ = _client(implicit_affinity=True)
    body = chat_body("a conversation to pin implicitly")
    assert client.post("/v1/chat/completions", json=body).headers[
        "x-plano-affinity"] == "new"
    off = client.post("/v1/chat/completions", json=body, headers={"X-Plano-Cache": "off"})
    assert off.status_code == 200 and "x-plano-affinity" not in off.headers
    assert "x-plano-pinned" not in off.headers


def test_the_provider_span_carries_the_usage_attributes():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    config = config_from_dict(make_config_dict())
    providers = {p.name: UsageProvider(p.model_id) for p in config.model_providers}
    client = create_app(config, providers=providers,
                        tracer_provider=tracer_provider).test_client()
    client.post("/v1/chat/completions", json=chat_body(FAST_PROMPT)).close()
    (span,) = [s for s in exporter.get_finished_spans() if s.name.startswith("chat ")]
    assert span.attributes["gen_ai.usage.input_tokens"] == 1500  # the whole prompt
    assert span.attributes["gen_ai.usage.output_tokens"] == 20
    assert span.attributes["plano.usage.cache_read_tokens"] == 1024
    assert span.attributes["plano.usage.cache_write_tokens"] == 0
    assert span.attributes["plano.usage.cost_usd"] > 0
    tracer_provider.shutdown()


def test_session_ids_with_the_gateways_own_key_prefixes_are_refused():
    client, providers = _client()
    for session in ("usage:victim", "turn:victim"):
        response = client.post("/v1/chat/completions", json=chat_body(FAST_PROMPT),
                               headers={"X-Model-Affinity": session})
        assert response.status_code == 400
        assert response.get_json()["error"]["code"] == "invalid_affinity_id"
    assert all(not p.sent for p in providers.values())
    assert client.post("/v1/chat/completions", json=chat_body(FAST_PROMPT),
                       headers={"X-Model-Affinity": "my-usage:ok"}).status_code == 200
