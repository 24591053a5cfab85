"""Hostile names, property-based, against a running gateway (issue 22 item 2, SPEC §8
"Bounded by configuration, not by clients").

Real gunicorn (one gevent worker, so its memory is one process's), the bundled mock as every
provider, and a configuration with the names a client can reach into: wildcard entries that
put the model id in the body (``openai/*``) and in the URL path (``azure_openai/*``), an
Anthropic-interface model, a ``passthrough_auth`` model, turn-level routing (turn records
next to the pins). Hypothesis sends requests of all three client APIs with made-up model
names, request-body routes with made-up names and models, made-up session ids (reserved
prefixes included), tools with made-up names and content of every shape, and asserts per
request:

- no 5xx, no traceback; a refusal is the JSON envelope (either API's shape);
- a request the gateway refused sent nothing upstream (the mock's record is empty; a 4xx
  after an upstream call must be the mock's own answer, relayed);

and over the whole run, measured after a warm-up and again at the end:

- ``/metrics`` grows by at most ``METRIC_LINES_BOUND`` lines (new status codes of
  ``plano_requests_total`` are the only label values a client can add), and every model
  and route label value is one the configuration names (``openai/*``, ``request``, ...);
- the worker's resident memory grows by at most ``RSS_BOUND_BYTES``.

The numbers measured are printed (``HOSTILE NAMES ...``).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devkit.gateway import Gateway
from tests.support.configs import DEEP_PROMPT, FAST_PROMPT, gateway_config

pytestmark = pytest.mark.integration

EXAMPLES = 500
#: The stated bounds: /metrics lines added and worker RSS grown over the whole run.
METRIC_LINES_BOUND = 60
RSS_BOUND_BYTES = 8 * 1024 * 1024
PATHS = {"chat": "/v1/chat/completions", "messages": "/v1/messages",
         "responses": "/v1/responses"}
CONFIGURED = ("openai/gpt-4o-mini", "openai/gpt-5.2", "anthropic/claude-x", "openai/gpt-pass",
              "fast-model")
#: Every label value a model may have: configured entries (wildcards included) and other.
MODEL_LABELS = {"openai/gpt-4o-mini", "openai/gpt-5.2", "anthropic/claude-x",
                "openai/gpt-pass", "openai/*", "azure_openai/*", "other"}
ROUTE_LABELS = {"deep_reasoning", "fast_responses", "other", "request"}
_LABEL = re.compile(r'(model|from_model|to_model|route)="((?:[^"\\]|\\.)*)"')

MEASURED: dict = {}
ANSWERS: Counter = Counter()


@pytest.fixture(scope="module")
def names_gateway(mock_llm):
    raw = gateway_config(mock_llm, routing={"route_on_user_only": True})
    raw["model_providers"] += [
        {"model": "openai/*", "base_url": mock_llm.base_url, "access_key": "sk-wild"},
        {"model": "azure_openai/*", "base_url": mock_llm.url, "access_key": "sk-azure"},
        {"model": "anthropic/claude-x", "base_url": mock_llm.url, "access_key": "sk-ant"},
        {"model": "openai/gpt-pass", "base_url": mock_llm.base_url, "passthrough_auth": True},
    ]
    raw["routing_preferences"][1]["models"].append("anthropic/claude-x")
    with Gateway(raw, workers=1, name="hostile-names") as gateway:
        yield gateway
    print(f"\nHOSTILE NAMES {MEASURED}; answers: {dict(sorted(ANSWERS.items()))}")


# --------------------------------------------------------------------------- strategies

printable = st.characters(min_codepoint=0x20, max_codepoint=0x7e)
#: Names of every kind a client makes up; header-safe ones for the session header.
made_up = st.one_of(
    st.text(max_size=40), st.text(alphabet=printable, min_size=1, max_size=200),
    st.sampled_from(["..", "../../openai/assistants?api-version=1&", "a/b", "a%2fb", "a#b",
                     "a?b", "x\ny", "x\x00y", "\u2028", "é", " ", "*", "turn:abc",
                     "usage:abc"]))
configured = st.sampled_from(CONFIGURED)
wildcard_admitted = made_up.map(lambda name: f"openai/{name}")
# Repeated strategies weigh more: most requests name something that is served.
models = st.one_of(
    configured, configured, wildcard_admitted, wildcard_admitted, wildcard_admitted,
    made_up.map(lambda name: f"azure_openai/{name}"), made_up,
    st.none(), st.integers(), st.lists(st.text(max_size=3), max_size=2))
route_models = st.one_of(configured, configured, wildcard_admitted, made_up)
session_ids = st.one_of(
    st.none(),
    st.text(alphabet=printable, min_size=1, max_size=300).map(str.strip).filter(bool),
    st.sampled_from(["turn:abc", "usage:abc", "turn:", "turnip", "a:b", "x" * 256,
                     "x" * 257]))
route_names = st.text(alphabet=printable, min_size=1, max_size=140) | made_up
#: Routes with made-up names (and models), mostly well-formed otherwise, so the names are
#: what gets them refused or served; then anything at all.
routes = st.one_of(
    st.none(), st.none(), st.none(), st.none(),
    st.lists(st.fixed_dictionaries({
        "name": route_names,
        "description": st.sampled_from(["complex reasoning, mathematics with equations",
                                        "short answers, greetings"]),
        "models": st.lists(route_models, min_size=1, max_size=3)}), min_size=1, max_size=3),
    st.lists(st.fixed_dictionaries({
        "name": made_up | st.integers(), "description": st.text(max_size=30),
        "models": st.lists(models, max_size=3)}), max_size=3))
texts = st.sampled_from([DEEP_PROMPT, FAST_PROMPT, "xyzzy plugh"]) | st.text(max_size=80)
tool_names = made_up | st.integers() | st.none()


def chat_content():
    part = st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"])
                                  | st.text(max_size=8)},
                                 optional={"text": st.text(max_size=40)})
    return texts | st.lists(part, max_size=3)


def block_content():
    block = st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "image", "tool_use", "tool_result", "thinking"])
         | st.text(max_size=8)},
        optional={"text": st.text(max_size=40), "id": made_up, "name": tool_names,
                  "input": st.dictionaries(st.text(max_size=5), st.text(max_size=5),
                                           max_size=2),
                  "tool_use_id": made_up, "content": texts})
    return texts | st.lists(block, max_size=3)


@st.composite
def request_bodies(draw, api: str) -> dict:
    """One body of ``api`` with made-up names and shapes (valid often enough to be
    forwarded, invalid often enough to be refused)."""
    body: dict = {}
    model = draw(models)
    if model is not None:
        body["model"] = model
    text = draw(texts)
    name = draw(tool_names)
    if api == "chat":
        body["messages"] = [{"role": draw(st.sampled_from(["user", "system", "tool", "x"])),
                             "content": draw(chat_content())}, {"role": "user",
                                                               "content": text}]
        if draw(st.booleans()):
            body["tools"] = [{"type": "function", "function": {"name": name}}]
    elif api == "messages":
        body["max_tokens"] = draw(st.sampled_from([16, 16, 16, 0, "x"]))
        body["messages"] = [{"role": draw(st.sampled_from(["user", "assistant"])),
                             "content": draw(block_content())},
                            {"role": "user", "content": text}]
        if draw(st.booleans()):
            body["tools"] = [{"name": name, "input_schema": {"type": "object"}}]
    else:
        body["input"] = draw(texts | st.lists(st.fixed_dictionaries(
            {"type": st.sampled_from(["message", "function_call", "function_call_output",
                                      "reasoning"]) | st.text(max_size=6)},
            optional={"role": st.sampled_from(["user", "assistant"]), "content": texts,
                      "name": tool_names, "call_id": made_up, "arguments": texts,
                      "output": texts}), max_size=3))
        if draw(st.booleans()):
            body["tools"] = [{"type": "function", "name": name}]
    if draw(st.booleans()):
        body["stream"] = True
    chosen = draw(routes)
    if chosen is not None:
        body["routing_preferences"] = chosen
    return body


# --------------------------------------------------------------------------- checks


def metrics_text(gateway: Gateway) -> str:
    answer = requests.get(f"{gateway.url}/metrics", timeout=10)
    assert answer.status_code == 200
    return answer.text


def worker_rss(gateway: Gateway) -> int:
    """The resident memory of the (single) worker, in bytes."""
    (pid,) = gateway.worker_pids()
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def send(gateway: Gateway, api: str, body: dict, session: str | None) -> requests.Response:
    headers = {"Authorization": "Bearer sk-some-users-key", "x-api-key": "sk-other-key"}
    if session is not None:
        headers["X-Model-Affinity"] = session
    return requests.post(f"{gateway.url}{PATHS[api]}", data=json.dumps(body), timeout=30,
                         headers={"Content-Type": "application/json", **headers})


def upstream_calls(mock) -> list[dict]:
    return [call for call in mock.requests() if call["path"] != "/v1/traces"]


def check(answer: requests.Response, calls: list[dict]) -> None:
    """No 5xx; a refusal is an envelope and, unless relayed from the mock, sent nothing."""
    body = answer.content
    ANSWERS[str(answer.status_code)] += 1
    assert answer.status_code < 500, (answer.status_code, body[:300])
    assert b"Traceback" not in body
    if answer.status_code < 400:
        assert calls, "served without an upstream call"
        return
    error = answer.json()["error"]
    assert isinstance(error["message"], str) and isinstance(error["type"], str)
    ANSWERS[f"{answer.status_code} {error.get('code') or error['type']}"] += 1
    if calls:
        assert error["message"].startswith("mock"), ("refused after an upstream call",
                                                    error)
        ANSWERS["relayed from the mock"] += 1


def label_values(text: str) -> Counter:
    found: Counter = Counter()
    for line in text.splitlines():
        if not line.startswith("#"):
            found.update(_LABEL.findall(line))
    return found


def warm_up(gateway: Gateway, mock) -> None:
    """One request per API and outcome the run will see, so that what the run adds to
    ``/metrics`` and memory is growth, not first use."""
    bodies = {
        "chat": {"messages": [{"role": "user", "content": FAST_PROMPT}]},
        "messages": {"max_tokens": 16, "messages": [{"role": "user", "content": DEEP_PROMPT}]},
        "responses": {"input": "xyzzy plugh", "model": "anthropic/claude-x"}}
    for api, body in bodies.items():
        for extra in ({}, {"stream": True}, {"model": "nope/x"}, {"model": "openai/warm"}):
            assert send(gateway, api, {**body, **extra}, "warm-up").status_code < 500
    metrics_text(gateway)


# --------------------------------------------------------------------------- the test


def test_made_up_names_get_no_5xx_send_nothing_when_refused_and_grow_nothing(names_gateway,
                                                                           mock_llm):
    warm_up(names_gateway, mock_llm)
    baseline = metrics_text(names_gateway)
    lines_before, rss_before = baseline.count("\n"), worker_rss(names_gateway)

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=st.data(), api=st.sampled_from(sorted(PATHS)), session=session_ids)
    def one_request(data, api, session):
        body = data.draw(request_bodies(api))
        mock_llm.clear()
        answer = send(names_gateway, api, body, session)
        answer.content  # noqa: B018 - a stream is read to its end before the mock is asked
        check(answer, upstream_calls(mock_llm))
        ANSWERS["examples"] += 1

    one_request()

    text = metrics_text(names_gateway)
    lines, rss = text.count("\n"), worker_rss(names_gateway)
    MEASURED.update(metrics_lines_before=lines_before, metrics_lines_after=lines,
                    rss_before_mib=round(rss_before / 2**20, 1),
                    rss_after_mib=round(rss / 2**20, 1))
    assert lines - lines_before <= METRIC_LINES_BOUND, \
        set(text.splitlines()) - set(baseline.splitlines())
    assert rss - rss_before <= RSS_BOUND_BYTES
    labels = label_values(text)
    models = {value for (name, value) in labels if name != "route"}
    routes = {value for (name, value) in labels if name == "route"}
    assert models <= MODEL_LABELS, models - MODEL_LABELS
    assert routes <= ROUTE_LABELS, routes - ROUTE_LABELS
