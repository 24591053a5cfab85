"""``GET /status`` (SPEC §21) through Flask's test client, and the parts under it: the read
view of the health marks, the pin samples of both session-cache backends, the per-route
request counter and its configuration-bound labels. The page in a real browser is
``tests/integration/test_status_browser.py``."""

from __future__ import annotations

import base64
import hashlib
import re

import fakeredis
import pytest
import redis

from app import create_app
from app.config import config_from_dict
from app.http.status import basic_password
from app.http.status_view import SessionsView, build_status
from app.observability.prometheus_metrics import PrometheusMetrics
from app.pipeline.model_health import ModelHealth
from app.services import services_of
from app.session_cache.base import SessionBinding
from app.session_cache.memory import MemorySessionCache
from app.session_cache.redis_cache import RedisSessionCache
from tests.support.configs import DEEP_PROMPT, FAST_PROMPT, chat_body, make_config_dict
from tests.support.fakes import FailingCache
from tests.support.pages import page_fields

ADMIN_TOKEN = "admin-token-0123456789"
DEEP, FAST = "openai/gpt-5.2", "openai/gpt-4o-mini"


def basic(password: str, user: str = "admin") -> dict:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def make_app(cache=None, **sections):
    sections.setdefault("admin", {"token": ADMIN_TOKEN})
    return create_app(config_from_dict(make_config_dict(**sections)), session_cache=cache)


def field(page: str, name: str) -> str:
    """The text of the element with ``data-field="name"``."""
    fields = page_fields(page)
    assert name in fields, f"no data-field {name!r} on the page"
    return fields[name]


@pytest.fixture
def cache():
    return MemorySessionCache(100)


@pytest.fixture
def app(cache):
    return make_app(cache)


@pytest.fixture
def client(app):
    return app.test_client()


# --------------------------------------------------------------------------- authentication


def test_status_without_credentials_asks_the_browser_for_basic_auth(client):
    answer = client.get("/status")
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith('Basic realm="plano status"')
    assert answer.get_json()["error"]["code"] == "missing_token"


def test_status_takes_the_admin_token_as_basic_password_with_any_user(client):
    for user in ("admin", "someone", ""):
        answer = client.get("/status", headers=basic(ADMIN_TOKEN, user))
        assert answer.status_code == 200
        assert answer.mimetype == "text/html"
        assert answer.headers["Cache-Control"] == "no-store"


def test_wrong_basic_password_asks_again_and_never_echoes_it(client):
    answer = client.get("/status", headers=basic("not-the-token-at-all"))
    assert answer.status_code == 401
    assert "WWW-Authenticate" in answer.headers
    assert answer.get_json()["error"]["code"] == "invalid_token"
    assert b"not-the-token" not in answer.data


def test_bearer_token_works_and_a_wrong_one_is_forbidden(client):
    assert client.get("/status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
                      ).status_code == 200
    wrong = client.get("/status", headers={"Authorization": "Bearer nope-nope-nope-nope"})
    assert wrong.status_code == 403
    assert wrong.get_json()["error"]["code"] == "invalid_token"


def test_token_in_the_query_string_is_not_accepted(client):
    assert client.get(f"/status?token={ADMIN_TOKEN}").status_code == 401


def test_status_does_not_exist_without_an_admin_token(cache):
    app = create_app(config_from_dict(make_config_dict()), session_cache=cache)
    assert app.test_client().get("/status", headers=basic(ADMIN_TOKEN)).status_code == 404


@pytest.mark.parametrize("header", [None, "", "Basic", "Basic !!!", "Bearer x",
                                    "Basic " + base64.b64encode(b"no-colon").decode(),
                                    "Basic " + base64.b64encode(b"user:").decode(),
                                    "Basic " + base64.b64encode(b"\xff:\xfe").decode()])
def test_basic_password_is_none_for_anything_but_a_user_colon_password(header):
    assert basic_password(header) is None


def test_basic_password_keeps_colons_in_the_password():
    raw = base64.b64encode(b"u:pa:ss").decode()
    assert basic_password(f"basic {raw}") == "pa:ss"


# --------------------------------------------------------------------------- the page


def test_page_counts_requests_and_pinned_share_per_route_and_model(client):
    for session in ("s1", "s2", "s3"):
        for prompt in (DEEP_PROMPT, FAST_PROMPT, DEEP_PROMPT):
            client.post("/routing/v1/chat/completions", json=chat_body(prompt),
                        headers={"X-Model-Affinity": session})
    client.post("/routing/v1/chat/completions", json=chat_body(FAST_PROMPT))
    page = client.get("/status", headers=basic(ADMIN_TOKEN)).get_data(as_text=True)

    # Three sessions pinned on their first (deep) request, then pinned twice each; one
    # request without a session routed to the fast route.
    assert field(page, "route:deep_reasoning:requests") == "9"
    assert field(page, f"route:deep_reasoning:{DEEP}:pinned") == "67 % (6 of 9)"
    assert field(page, f"route:fast_responses:{FAST}:requests") == "1"
    assert field(page, "requests") == "10"
    assert field(page, "pinned") == "60 %"
    assert field(page, f"model:{DEEP}:requests") == "9"
    assert field(page, "session-hits") == "67 % (6 of 9)"  # the first of each session missed
    for session in ("s1", "s2", "s3"):
        assert field(page, f"pin:{session}") == DEEP
    assert '<meta http-equiv="refresh"' in page
    assert "<script" not in page


def test_usage_families_missing_from_the_metrics_are_not_measured_never_zeros(config):
    # A scrape without the usage families (a gateway whose metrics do not export them):
    # the page says so, and shows no made-up zeros.
    sessions = SessionsView("memory", True, [], None, 20)
    view = build_status(config, "# TYPE plano_requests_total counter\n", aggregated=True,
                        health=[], sessions=sessions, gateway_version="0", worker="1",
                        now=0.0)
    assert set(view.unmeasured) >= {"plano_tokens_total", "plano_cost_usd_total",
                                    "plano_prompt_cache_requests_total"}
    deep = next(model for model in view.models if model.name == DEEP)
    assert deep.tokens is None and deep.cost_usd is None and deep.prompt_cache is None


def test_page_of_a_fresh_gateway_shows_usage_as_measured(client):
    # The gateway exports the usage families from its start (SPEC §19): no "not measured"
    # note; tokens and cache hits are counted (none yet), a cost only once one is known.
    page = client.get("/status", headers=basic(ADMIN_TOKEN)).get_data(as_text=True)
    assert "usage-note" not in page_fields(page)
    assert field(page, f"model:{DEEP}:tokens") != "not measured yet"


def test_page_labels_numbers_of_one_process_when_not_aggregated(client):
    page = client.get("/status", headers=basic(ADMIN_TOKEN)).get_data(as_text=True)
    assert "this process" in field(page, "scope")


def test_page_shows_a_model_marked_down_with_until_when_and_why(app, client):
    health = services_of(app).failover.health
    health.mark_down(DEEP, 5)
    for _ in range(3):
        health.record_failure(FAST)
    page = client.get("/status", headers=basic(ADMIN_TOKEN)).get_data(as_text=True)
    assert field(page, f"health:{DEEP}") == "down"
    assert "Retry-After" in page and "3 failures in a row" in page
    assert re.search(r"until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", page)
    assert "as seen by worker" in page


def test_page_shows_config_source_and_version(tmp_path, cache):
    from app.config import load_config
    from devkit.configs import write_config
    path = write_config(make_config_dict(admin={"token": ADMIN_TOKEN}), tmp_path / "c.yaml")
    app = create_app(load_config(path), session_cache=cache)
    page = app.test_client().get("/status", headers=basic(ADMIN_TOKEN)).get_data(as_text=True)
    assert field(page, "config-source") == str(path)
    assert field(page, "config-version") == "v0.4.0"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert field(page, "config-digest").startswith(digest[:16])


def test_page_reports_an_unreachable_session_cache_and_still_renders():
    app = make_app(FailingCache(backend_name="redis"))
    answer = app.test_client().get("/status", headers=basic(ADMIN_TOKEN))
    assert answer.status_code == 200
    assert field(answer.get_data(as_text=True), "cache-reachable") == "redis unreachable"


def test_usage_series_when_exported_are_shown_per_model(config):
    text = "\n".join([
        "# TYPE plano_tokens_total counter",
        f'plano_tokens_total{{model="{DEEP}",kind="input"}} 1200.0',
        f'plano_tokens_total{{model="{DEEP}",kind="cache_read"}} 800.0',
        f'plano_tokens_total{{model="{DEEP}",kind="output"}} 50.0',
        "# TYPE plano_cost_usd_total counter",
        f'plano_cost_usd_total{{model="{DEEP}"}} 0.0125',
        "# TYPE plano_prompt_cache_requests_total counter",
        f'plano_prompt_cache_requests_total{{model="{DEEP}",outcome="hit"}} 3.0',
        f'plano_prompt_cache_requests_total{{model="{DEEP}",outcome="miss"}} 1.0', ""])
    sessions = SessionsView("memory", True, [], None, 20)
    view = build_status(config, text, aggregated=True, health=[], sessions=sessions,
                        gateway_version="0", worker="1", now=0.0)
    deep = next(model for model in view.models if model.name == DEEP)
    assert deep.tokens == {"input": 1200, "cache_read": 800, "cache_write": 0, "output": 50}
    assert deep.cost_usd == pytest.approx(0.0125)
    assert str(deep.prompt_cache) == "75 % (3 of 4)"
    fast = next(model for model in view.models if model.name == FAST)
    assert fast.cost_usd is None  # no price or nothing spent: never a made-up 0
    assert view.unmeasured == []


# --------------------------------------------------------------------------- health marks


def test_health_marks_tell_retry_after_from_consecutive_failures():
    now = [100.0]
    health = ModelHealth(failure_threshold=2, cooldown_seconds=10, clock=lambda: now[0])
    health.mark_down("a", 4)
    health.record_failure("b")
    health.record_failure("b")
    health.record_failure("c")
    marks = {mark.model: mark for mark in health.marks()}
    assert marks["a"].down_for_seconds == 4 and "Retry-After" in marks["a"].reason
    assert marks["b"].down_for_seconds == 10 and marks["b"].reason == "2 failures in a row"
    assert marks["c"].down_for_seconds is None and marks["c"].failures == 1
    now[0] = 105.0
    assert {mark.model for mark in health.marks() if mark.down_for_seconds} == {"b"}
    health.record_success("b")
    assert "b" not in {mark.model for mark in health.marks()}


# --------------------------------------------------------------------------- pin samples


def redis_cache(prefix: str = "plano:affinity:") -> RedisSessionCache:
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    return RedisSessionCache(client, key_prefix=prefix)


@pytest.mark.parametrize("make", [lambda: MemorySessionCache(100), redis_cache],
                         ids=["memory", "redis"])
def test_pin_sample_lists_live_pins_without_the_gateways_own_records(make):
    cache = make()
    for index in range(5):
        cache.put_if_absent(f"s{index}", SessionBinding(DEEP, "deep_reasoning"), 300)
    cache.put("turn:s1", SessionBinding(FAST, "fast_responses"), 300)
    pins = cache.sample_pins(20, ("turn:",))
    assert sorted(pin.key for pin in pins) == [f"s{index}" for index in range(5)]
    assert all(pin.binding == SessionBinding(DEEP, "deep_reasoning") for pin in pins)
    assert all(0 < pin.ttl_seconds <= 300 for pin in pins)
    assert len(cache.sample_pins(2)) == 2


def test_memory_pin_sample_is_newest_first_and_skips_expired_pins():
    now = [0.0]
    cache = MemorySessionCache(100, clock=lambda: now[0])
    cache.put_if_absent("old", SessionBinding(DEEP), 10)
    now[0] = 5.0
    cache.put_if_absent("new", SessionBinding(FAST), 10)
    assert [pin.key for pin in cache.sample_pins(5)] == ["new", "old"]
    now[0] = 12.0
    assert [pin.key for pin in cache.sample_pins(5)] == ["new"]


def test_redis_pin_sample_skips_values_that_are_not_pins_and_other_prefixes():
    cache = redis_cache("app[1]:")
    cache.put_if_absent("good", SessionBinding(DEEP), 300)
    cache.client.set("app[1]:garbage", b"not json")
    cache.client.hset("app[1]:usage:good", "requests", 1)
    cache.client.set("app1:other", b'{"model_name": "x"}')  # matches app[1] as a glob
    assert [pin.key for pin in cache.sample_pins(10)] == ["good"]


# --------------------------------------------------------------------------- the counter


def test_model_request_labels_come_from_the_configuration():
    raw = make_config_dict(model_providers=[
        {"model": FAST, "base_url": "http://127.0.0.1:9/v1", "default": True},
        {"model": DEEP, "base_url": "http://127.0.0.1:9/v1"},
        {"model": "openai/*", "base_url": "http://127.0.0.1:9/v1"}])
    metrics = PrometheusMetrics(config_from_dict(raw), multiproc_dir="")
    metrics.model_request("deep_reasoning", DEEP, True)
    metrics.model_request("a-route-a-client-named", "openai/gpt-4.1-client-chosen", False)
    metrics.model_request(None, FAST, False)
    text = metrics.exposition()[0].decode()
    assert ('plano_model_requests_total{model="openai/gpt-5.2",pinned="true",'
            'route="deep_reasoning"} 1.0') in text
    assert ('plano_model_requests_total{model="openai/*",pinned="false",route="request"} 1.0'
            in text)
    assert ('plano_model_requests_total{model="openai/gpt-4o-mini",pinned="false",'
            'route="other"} 1.0') in text
    assert "client-chosen" not in text and "a-route-a-client-named" not in text


def test_requests_without_a_configured_route_get_rows_of_their_own(config):
    text = "\n".join([
        "# TYPE plano_model_requests_total counter",
        f'plano_model_requests_total{{route="other",model="{FAST}",pinned="false"}} 2.0',
        'plano_model_requests_total{route="request",model="openai/*",pinned="true"} 1.0',
        ""])
    sessions = SessionsView("memory", True, None, None, 20)
    view = build_status(config, text, aggregated=True, health=[], sessions=sessions,
                        gateway_version="0", worker="1", now=0.0)
    extra = {route.name: route for route in view.routes[len(config.routing_preferences):]}
    assert extra["other"].requests == 2 and extra["other"].models[0].rank is None
    assert str(extra["request"].pinned) == "100 % (1 of 1)"
    assert view.requests == 3


def test_redis_cluster_pins_are_not_listed_and_the_page_says_how_to_look_one_up():
    from app.session_cache.redis_cache import _LazyClient

    def unreachable_cluster():
        raise redis.ConnectionError("no cluster node answers")

    cluster = RedisSessionCache(_LazyClient(unreachable_cluster))
    assert cluster.sample_pins(5) is None
    page = make_app(cluster).test_client().get("/status", headers=basic(ADMIN_TOKEN))
    assert "/admin/sessions/" in page.get_data(as_text=True)
