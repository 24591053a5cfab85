"""Admin API (inspect and clear pins) and optional client keys (SPEC §8 envelopes)."""

from __future__ import annotations

import pytest

from app import create_app
from app.config import config_from_dict
from app.errors import InvalidBindingError
from app.http.auth import KeySet, bearer_token
from app.session_cache.base import SessionBinding
from app.session_cache.memory import MemorySessionCache
from tests.support.configs import DEEP_PROMPT, chat_body, make_config_dict
from tests.support.fakes import FailingCache, RecordingMetrics

ADMIN_TOKEN = "admin-token-0123456789"
CLIENT_KEY = "sk-client-key-1"


def make_client(cache=None, metrics=None, **sections):
    raw = make_config_dict(**sections)
    raw["routing"]["session_cache"]["tenant_header"] = "x-org-id"
    app = create_app(config_from_dict(raw), session_cache=cache, metrics=metrics)
    return app.test_client()


def admin_headers(token=ADMIN_TOKEN, **extra):
    return {"Authorization": f"Bearer {token}", **extra}


@pytest.fixture
def cache():
    return MemorySessionCache(100)


@pytest.fixture
def metrics():
    return RecordingMetrics()


@pytest.fixture
def admin(cache, metrics):
    return make_client(cache, metrics, admin={"token": ADMIN_TOKEN})


def test_admin_api_does_not_exist_without_a_token(cache):
    client = make_client(cache)
    answer = client.get("/admin/sessions/s1", headers=admin_headers())
    assert answer.status_code == 404 and answer.get_json()["error"]["code"] == "not_found"


def test_admin_token_must_be_long_enough():
    from app.errors import ConfigError
    with pytest.raises(ConfigError) as caught:
        config_from_dict(make_config_dict(admin={"token": "short"}))
    assert caught.value.problems == ["admin.token: must be at least 16 characters"]


def test_get_shows_binding_and_remaining_ttl(admin, cache):
    admin.post("/routing/v1/chat/completions", json=chat_body(DEEP_PROMPT),
               headers={"X-Model-Affinity": "s1", "x-org-id": "acme"})
    answer = admin.get("/admin/sessions/s1", headers=admin_headers(**{"x-org-id": "acme"}))
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["model_name"] == "openai/gpt-5.2" and body["route_name"] == "deep_reasoning"
    assert body["tenant"] == "acme" and 0 < body["ttl_seconds"] <= 300
    other_tenant = admin.get("/admin/sessions/s1", headers=admin_headers(**{"x-org-id": "b"}))
    assert other_tenant.status_code == 404


def test_delete_unpins_and_the_next_request_routes_afresh(admin, cache):
    cache.put_if_absent("s2", SessionBinding("openai/gpt-5.2", "deep_reasoning"), 300)
    assert admin.delete("/admin/sessions/s2", headers=admin_headers()).get_json() == {
        "session_id": "s2", "tenant": None, "deleted": True}
    assert cache.get("s2") is None
    again = admin.delete("/admin/sessions/s2", headers=admin_headers())
    assert again.status_code == 404
    assert again.get_json()["error"]["code"] == "session_not_found"


def test_session_ids_with_slashes_are_addressable(admin, cache):
    cache.put_if_absent("a/b", SessionBinding("openai/gpt-5.2", None), 300)
    assert admin.get("/admin/sessions/a/b", headers=admin_headers()).status_code == 200


@pytest.mark.parametrize("headers, status, code", [
    ({}, 401, "missing_token"),
    ({"Authorization": "Basic abc"}, 401, "missing_token"),
    ({"Authorization": "Bearer wrong-token-0123456789"}, 403, "invalid_token"),
    ({"Authorization": f"Bearer {ADMIN_TOKEN}x"}, 403, "invalid_token"),
])
def test_admin_rejects_missing_and_wrong_tokens(admin, headers, status, code, metrics):
    answer = admin.get("/admin/sessions/s1", headers=headers)
    assert answer.status_code == status
    error = answer.get_json()["error"]
    assert error["code"] == code and set(error) == {"message", "type", "param", "code"}
    assert ADMIN_TOKEN not in answer.get_data(as_text=True)
    assert metrics.admin == [("get_session", status)]


def test_admin_calls_are_counted(admin, metrics):
    admin.get("/admin/sessions/nobody", headers=admin_headers())
    admin.delete("/admin/sessions/nobody", headers=admin_headers())
    assert metrics.admin == [("get_session", 404), ("delete_session", 404)]


def test_admin_validates_session_ids(admin):
    answer = admin.get("/admin/sessions/" + "x" * 300, headers=admin_headers())
    assert answer.status_code == 400
    assert answer.get_json()["error"]["code"] == "invalid_affinity_id"


def test_admin_with_a_failing_cache_is_503(metrics):
    client = make_client(FailingCache(), metrics, admin={"token": ADMIN_TOKEN})
    answer = client.get("/admin/sessions/s", headers=admin_headers())
    assert answer.status_code == 503
    assert answer.get_json()["error"]["code"] == "session_cache_unavailable"


def test_admin_reports_an_undecodable_pin_as_409(metrics):
    client = make_client(FailingCache(InvalidBindingError("bad")), metrics,
                         admin={"token": ADMIN_TOKEN})
    answer = client.get("/admin/sessions/s", headers=admin_headers())
    assert answer.status_code == 409
    assert answer.get_json()["error"]["code"] == "invalid_binding"


# ------------------------------------------------------------------------ client keys


@pytest.fixture
def keyed(cache):
    return make_client(cache, server={"api_keys": f"{CLIENT_KEY}, sk-other-key"})


@pytest.mark.parametrize("authorization", [None, "Bearer nope", "Bearer ", CLIENT_KEY,
                                           f"Basic {CLIENT_KEY}"])
def test_client_keys_refuse_missing_or_wrong_keys(keyed, authorization):
    headers = {"Authorization": authorization} if authorization is not None else {}
    answer = keyed.post("/routing/v1/chat/completions", json=chat_body(), headers=headers)
    assert answer.status_code == 401
    error = answer.get_json()["error"]
    assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"


@pytest.mark.parametrize("key", [CLIENT_KEY, "sk-other-key"])
def test_client_keys_accept_any_configured_key(keyed, key):
    answer = keyed.post("/routing/v1/chat/completions", json=chat_body(),
                        headers={"Authorization": f"bearer {key}"})
    assert answer.status_code == 200


def test_health_and_metrics_need_no_client_key(keyed):
    assert keyed.get("/healthz").status_code == 200


def test_without_client_keys_anyone_may_call(client):
    assert client.post("/routing/v1/chat/completions", json=chat_body()).status_code == 200


def test_key_set_matching():
    keys = KeySet(["a-key", "b-key"])
    assert keys.matches("b-key") and not keys.matches("c-key") and not keys.matches(None)
    assert not KeySet([]) and KeySet(["x"])
    assert bearer_token("Bearer  tok ") == "tok" and bearer_token("Token tok") is None
