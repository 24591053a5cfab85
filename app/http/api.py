"""HTTP endpoints: chat completions (SPEC §4), Messages and Responses (§12), routing only
(§7), health and metrics (§10).

The only module (with ``create_app``) that touches ``flask.request`` and ``current_app``:
it reads headers and body, hands plain values to the gateway and the relay, and turns
their results into responses with the ``x-plano-*`` headers. Every request also gets a
request id (the client's ``x-request-id`` or a new one, echoed back), is counted in the
metrics and, once its answer is finished (a stream at its end), logged as one JSON line.
"""

from __future__ import annotations

import math
import re
import socket
import time
import uuid
from typing import Callable, NamedTuple

from flask import Blueprint, Response, g, json, request
from werkzeug.exceptions import NotFound

from app.affinity import CHAT_COMPLETIONS, MESSAGES, RESPONSES, SessionContext, request_session
from app.affinity.budget import activity_fields
from app.client_apis import messages as messages_api
from app.client_apis import responses as responses_api
from app.config import ModelEndpoint
from app.errors import (
    AuthenticationError,
    GatewayError,
    InvalidRequestError,
    RequestTimeoutError,
    error_response,
)
from app.http.auth import credential_fingerprint, passthrough_key, presented_keys
from app.http.request_body import read_within
from app.http.request_headers import RequestHeaders
from app.http.request_log import REQUEST_ID, REQUEST_ID_HEADER, RequestRecord, request_id_from
from app.pipeline.attempt import attempt_for, failover_headers, should_repin
from app.pipeline.decide import Decision, estimated_tokens, session_key
from app.pipeline.parse import (
    ROUTES_FIELD,
    ChatRequest,
    is_route_name,
    parse_chat_request,
    parse_json_object,
    parse_request_routes,
    validate_affinity_value,
)
from app.services import Services, current_services
from app.usage.accounting import CACHE_HEADER, RequestAccounting, cache_off

AFFINITY_HEADER = "X-Model-Affinity"
#: Plano's per-request routing-budget cap (SPEC §20), a percentage 0-100.
SWITCH_PCT_HEADER = "x-plano-max-switch-spend-pct"
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")

bp = Blueprint("gateway", __name__)


def _session_and_tenant(svc: Services, headers: RequestHeaders
                        ) -> tuple[str | None, str | None]:
    session_id = validate_affinity_value(headers.get(AFFINITY_HEADER), AFFINITY_HEADER)
    tenant_header = svc.config.routing.session_cache.tenant_header
    tenant = None
    if tenant_header:
        tenant = validate_affinity_value(headers.get(tenant_header), tenant_header,
                                         allow_colon=False)
    return session_id, tenant


def _max_switch_spend_pct(headers: RequestHeaders) -> float | None:
    """The request's ``x-plano-max-switch-spend-pct`` (SPEC §20): ``None`` when absent; a
    value that is not a number from 0 to 100 is a 400 (SPEC §8)."""
    raw = headers.get(SWITCH_PCT_HEADER)
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 100.0:  # NaN fails too
        raise InvalidRequestError(f"{SWITCH_PCT_HEADER} must be a number from 0 to 100 "
                                  "(percent)", param=SWITCH_PCT_HEADER,
                                  code="invalid_max_switch_spend_pct")
    return value


def _decision_headers(decision: Decision, context: SessionContext | None = None) -> dict:
    """The ``x-plano-*`` answer headers of a decision (SPEC §4, §16).

    ``x-plano-session-id`` and ``x-plano-session-source``: the request's session id and
    where it came from (SPEC §18): ``header`` (``X-Model-Affinity``), ``agent`` (an agent's
    session header, scoped by its lane: ``<id>:<lane>``) or ``implicit`` (derived from the
    conversation, reported even when no mode uses it; send it back as ``X-Model-Affinity``
    to pin explicitly); ``x-plano-routing: skipped``: turn-level routing reused the turn's
    model.
    """
    headers = {}
    if decision.pinned:
        headers["x-plano-pinned"] = "true"
    if decision.route_name is not None and is_route_name(decision.route_name):
        # Checked again: a pin written before route names were checked (or by an older
        # replica sharing Redis) must not turn every request of its session into a 500.
        headers["x-plano-route"] = decision.route_name
    if decision.affinity is not None:
        headers["x-plano-affinity"] = decision.affinity
    if context is not None and context.reported_id is not None:
        headers["x-plano-session-id"] = context.reported_id
        headers["x-plano-session-source"] = context.source
    if decision.routing_skipped:
        headers["x-plano-routing"] = "skipped"
    if decision.switch is not None and decision.switch.decision is not None:
        headers["x-plano-switch"] = decision.switch.decision
    return headers


def _authenticate_client(svc: Services, headers: RequestHeaders) -> None:
    """With ``server.api_keys`` set, a valid key is required, as ``Authorization: Bearer``
    or ``x-api-key`` (what the anthropic SDK and Claude Code send) on every API: with
    ``passthrough_auth`` the provider key goes in the other one (SPEC §8).

    The client's key is only compared here; it is never forwarded, logged or echoed.
    """
    if not svc.client_keys:
        return
    if not any(svc.client_keys.matches(key) for key in presented_keys(headers)):
        raise AuthenticationError(
            "missing or invalid API key (Authorization: Bearer <key> or x-api-key: <key>)")


def _parse_with(adapter) -> Callable[[bytes], ChatRequest]:
    """A body parser for a client-API adapter (Messages, Responses): validated, the
    conversation normalised for the routers, request routes taken out (SPEC §14)."""
    def parse(raw: bytes) -> ChatRequest:
        body = parse_json_object(raw)
        routes = (parse_request_routes(body.pop(ROUTES_FIELD)) if ROUTES_FIELD in body
                  else None)
        adapter.validate(body)
        return ChatRequest(body=body, messages=adapter.router_messages(body),
                           model=body.get("model"), stream=body.get("stream") is True,
                           routes=routes)
    return parse


#: Per client API: its body parser. Routers get the conversation normalised to
#: ``[{"role", "content"}]`` turns from any of the three shapes.
_PARSERS = {"chat": parse_chat_request, "messages": _parse_with(messages_api),
            "responses": _parse_with(responses_api)}


#: Per client API: the shape name of :mod:`app.affinity` (turns and implicit session ids).
_SHAPES = {"chat": CHAT_COMPLETIONS, "messages": MESSAGES, "responses": RESPONSES}


class Incoming(NamedTuple):
    """One API request once decided: what forwarding it needs, read once. Flask's
    ``request`` and ``g`` are context-local proxies, each use a lookup of its own (about
    as costly as a dictionary lookup through Werkzeug's headers): the request path resolves
    them once, here."""

    parsed: ChatRequest
    session_id: str | None
    decision: Decision
    context: SessionContext
    headers: RequestHeaders
    record: RequestRecord
    cache_off: bool


def _decide(svc: Services, api: str = "chat") -> Incoming:
    the_request = request._get_current_object()  # the proxy resolved once
    state = g._get_current_object()
    headers = RequestHeaders(the_request.environ)
    _authenticate_client(svc, headers)
    try:
        body = read_within(lambda: the_request.get_data(cache=False),
                           svc.config.server.body_read_timeout_seconds, svc.gevent_sockets)
    except RequestTimeoutError:
        # The rest of the body may still trickle in: never read it as a next request.
        state.plano_close_connection = True
        raise
    chat = _PARSERS[api](body)
    session_id, tenant = _session_and_tenant(svc, headers)
    switch_pct = _max_switch_spend_pct(headers)
    # X-Plano-Cache: off (SPEC §19): no cache hints, and no implicit affinity either.
    no_cache = cache_off(headers.get(CACHE_HEADER))
    context = request_session(chat.body, _SHAPES[api], headers,
                              explicit_id=session_id, tenant=tenant, model=chat.model,
                              config=svc.config, metrics=svc.metrics,
                              implicit_allowed=not no_cache)
    decision = svc.gateway.decide(chat, context.session_id, tenant,
                                  implicit=context.implicit, user_turn=context.user_turn,
                                  agent=context.agent, max_switch_spend_pct=switch_pct)
    record: RequestRecord = state.plano_record
    record.session_id = context.session_id
    record.tenant = tenant
    record.pinned = decision.pinned
    record.affinity = decision.affinity
    record.route = decision.route_name
    record.model = decision.endpoint.name
    if svc.tracing is not None:
        svc.tracing.annotate_request(
            session_id=context.session_id, pinned=decision.pinned, affinity=decision.affinity,
            route=decision.route_name, model=decision.endpoint.name, requested=chat.model,
            implicit_session=context.implicit,
            routing_skipped=decision.routing_skipped
            if svc.config.routing.turn_routing else None,
            session_source=context.source)
        if decision.switch is not None:
            svc.tracing.annotate_switch(decision.switch)
    return Incoming(chat, session_id, decision, context, headers, record, no_cache)


@bp.post("/v1/chat/completions")
def chat_completions():
    """Route, pin and forward one chat-completions request."""
    svc = current_services()
    return _forward("chat", svc, _decide(svc))


def _passthrough_auth(endpoint: ModelEndpoint, headers: RequestHeaders,
                      svc: Services) -> dict | None:
    """With ``passthrough_auth`` (SPEC §13): the client's own key, in the header the
    provider expects (``Authorization: Bearer``, ``x-api-key``, ``api-key``), instead of
    ``access_key``; never the gateway's client key (:func:`app.http.auth.passthrough_key`). The
    only case in which a client's key leaves the gateway; it is never logged (neither the
    access log nor the spans record request headers)."""
    if not endpoint.passthrough_auth:
        return None
    key = passthrough_key(headers, svc.client_keys)
    if not key:
        return None  # forwarded without credentials: the provider answers 401
    if endpoint.auth == "bearer":
        return {"Authorization": f"Bearer {key}"}
    return {endpoint.auth: key}


def _passthrough_credential(svc: Services, headers: RequestHeaders,
                            candidates) -> str | None:
    """The fingerprint of the key a ``passthrough_auth`` candidate would get (its health
    marks are per credential, SPEC §8); ``None`` when no candidate forwards a client key."""
    if not any(endpoint.passthrough_auth for endpoint in candidates):
        return None
    return credential_fingerprint(passthrough_key(headers, svc.client_keys))


def _answer_response(answer, headers: dict, record: RequestRecord) -> Response:
    record.answer = answer
    headers.update(answer.headers)
    if answer.mimetype == "text/event-stream":
        g.plano_stream = answer.body  # released by _release_discarded_stream if never sent
        headers["Cache-Control"] = "no-cache"
        headers["X-Accel-Buffering"] = "no"  # nginx must not buffer a stream
    return Response(answer.body, status=answer.status, headers=headers,
                    mimetype=answer.mimetype)


@bp.post("/v1/messages")
def messages():
    """Route, pin and forward one Anthropic Messages request (SPEC §12)."""
    svc = current_services()
    return _forward("messages", svc, _decide(svc, "messages"))


@bp.post("/v1/responses")
def responses():
    """Route, pin and forward one OpenAI Responses request (SPEC §12)."""
    svc = current_services()
    return _forward("responses", svc, _decide(svc, "responses"))


def _forward(api: str, svc: Services, incoming: Incoming) -> Response:
    """Send the request through the attempt chain (SPEC §15): the decided model, then the
    other models of its route while they fail before answering; relay what answered."""
    decision, context, record = incoming.decision, incoming.context, incoming.record
    headers = _decision_headers(decision, context)
    client_headers = None
    if api == "messages":
        client_headers = {name: value for name in ("anthropic-version", "anthropic-beta")
                          if (value := incoming.headers.get(name))}
    tenant = record.tenant  # read and checked by _decide
    key = session_key(context.session_id, tenant) if context.session_id is not None else None
    accounting = None
    if svc.usage is not None:  # SPEC §19: cache hints and usage meters for each attempt
        accounting = RequestAccounting(svc.usage, svc.config.prompt_caching, key,
                                       incoming.cache_off)
    attempt = attempt_for(api, incoming.parsed.body, decision, svc.relay, client_headers,
                          auth_for=lambda endpoint: _passthrough_auth(
                              endpoint, incoming.headers, svc),
                          accounting=accounting)
    try:
        candidates = svc.gateway.candidates(decision)
        result = svc.failover.run(candidates, attempt, credential=_passthrough_credential(
            svc, incoming.headers, candidates))
    except GatewayError as error:   # untranslatable content (400)
        return error_response(error, headers, anthropic=api == "messages")
    if result.failed_from is not None:
        headers.update(failover_headers(decision, result))
        record.model = result.served.name
        record.failover_from = result.failed_from
        record.affinity = headers.get("x-plano-affinity", record.affinity)
        if should_repin(decision, result, svc.config.routing.failover.repin):
            svc.gateway.repin(key, decision.endpoint.name, decision.route_name,
                              result.served.name)
    if result.error is not None:
        return error_response(result.error, headers, anthropic=api == "messages")
    response = _answer_response(result.answer, headers, record)
    if key is not None and svc.usage is not None:
        # The session's usage totals are written once the answer's last byte is sent.
        switched = result.served.name != decision.endpoint.name or (
            decision.switch is not None and decision.switch.switched)
        response.call_on_close(_session_usage_writer(svc, key, result.answer, switched,
                                                     decision, result.served.name))
    return response


def _session_usage_writer(svc: Services, key: str, answer, switched: bool,
                          decision: Decision, served: str) -> Callable[[], None]:
    """Adds the answer's usage (if it reported any) to the session's totals (SPEC §19),
    with the routing budget's state (SPEC §20) when a budget applies: the turn's judgement
    and the session's activity (who answered, when, on how many prompt tokens)."""
    def write() -> None:
        record = getattr(answer.meter, "record", None)
        if record is not None:
            svc.usage.write_session(key, record, switched)
        fields = _budget_fields(decision, served,
                                record.usage.prompt if record is not None else 0)
        if fields:
            svc.usage.write_budget(key, fields)
    return write


def _budget_fields(decision: Decision, served: str, prompt_tokens: int) -> dict | None:
    """The routing-budget state fields to write for a decision (``None``: no budget)."""
    if not decision.budget:
        return None
    fields = decision.switch.fields() if decision.switch is not None else {}
    if prompt_tokens:
        fields.update(activity_fields(served, prompt_tokens, time.time()))
    return fields or None


@bp.post("/routing/v1/chat/completions")
def routing_only():
    """Decide (and pin) exactly as the chat endpoint would, without calling a provider."""
    return _routing_answer("chat")


@bp.post("/routing/v1/messages")
def routing_only_messages():
    """Decide (and pin) exactly as ``/v1/messages`` would, without calling a provider."""
    return _routing_answer("messages")


@bp.post("/routing/v1/responses")
def routing_only_responses():
    """Decide (and pin) exactly as ``/v1/responses`` would, without calling a provider."""
    return _routing_answer("responses")


def _routing_answer(api: str) -> Response:
    svc = current_services()
    incoming = _decide(svc, api)
    chat, session_id = incoming.parsed, incoming.session_id
    decision, context = incoming.decision, incoming.context
    trace_id = svc.tracing.current_trace_id() if svc.tracing is not None else None
    models = [endpoint.name for endpoint in svc.gateway.candidates(decision)]
    payload = {"models": models, "route": decision.route_name,
               "trace_id": trace_id or _trace_id(), "pinned": decision.pinned}
    if session_id is not None:
        payload["session_id"] = session_id
    response = Response(json.dumps(payload), status=200, mimetype="application/json",
                        headers=_decision_headers(decision, context))
    if decision.budget and svc.usage is not None:
        # No answer will report usage: the decision is the session's activity (as Plano's
        # routing service records it), its size estimated from the request.
        tenant = incoming.record.tenant
        fields = _budget_fields(decision, decision.endpoint.name,
                                max(1, estimated_tokens(chat)))
        response.call_on_close(lambda: svc.usage.write_budget(
            session_key(context.session_id, tenant), fields))
    return response


@bp.get("/healthz")
def healthz():
    """Always 200: a replica without Redis still serves (affinity is an optimisation)."""
    svc = current_services()
    reachable = svc.session_cache.ping()
    payload = {"status": "ok" if reachable else "degraded",
               "session_cache": {"backend": svc.session_cache.backend_name,
                                 "reachable": reachable},
               "version": svc.version}
    return Response(json.dumps(payload), status=200, mimetype="application/json")


def _trace_id() -> str:
    """The incoming ``traceparent``'s trace id, else a fresh random one (32 hex)."""
    match = _TRACEPARENT.match(request.headers.get("traceparent", ""))
    if match and match.group(1) != "0" * 32:
        return match.group(1)
    return uuid.uuid4().hex


@bp.get("/metrics")
def metrics():
    """Prometheus text: every gunicorn worker's numbers added up (multiprocess mode); this
    worker's pending usage counted first (other workers' lands within a second)."""
    svc = current_services()
    if svc.usage is not None:
        svc.usage.publish_metrics()
    exposition = svc.metrics.exposition()
    if exposition is None:
        raise NotFound("metrics are not enabled")
    body, content_type = exposition
    return Response(body, status=200, content_type=content_type)


@bp.before_app_request
def _start_request() -> None:
    the_request = request._get_current_object()  # the proxy resolved once
    request_id = request_id_from(RequestHeaders(the_request.environ).get(REQUEST_ID_HEADER))
    REQUEST_ID.set(request_id)
    g.plano_record = RequestRecord(request_id, the_request.method, the_request.path)


@bp.after_app_request
def _finish_request(response: Response) -> Response:
    svc = current_services()
    the_request = request._get_current_object()  # the proxy resolved once
    state = g._get_current_object()
    record: RequestRecord | None = getattr(state, "plano_record", None)
    if record is None:  # a request that failed before our before_request hook ran
        record = state.plano_record = RequestRecord(request_id_from(None),
                                                    the_request.method, the_request.path)
    rule = the_request.url_rule
    endpoint = rule.rule if rule is not None else "unmatched"
    svc.metrics.request_finished(endpoint, response.status_code, record.pinned)
    if record.model is not None:
        svc.metrics.model_request(record.route, record.model, record.pinned)
    record.status = response.status_code
    if svc.tracing is not None:
        record.trace_id = svc.tracing.current_trace_id()
    response.headers[REQUEST_ID_HEADER] = record.request_id
    if svc.worker_id is not None:
        response.headers["x-plano-worker"] = svc.worker_id
    # Logged when the WSGI server closes the response: after the last byte of a stream.
    response.call_on_close(record.write)
    if getattr(state, "plano_close_connection", False):
        response.call_on_close(_hang_up(the_request.environ.get("gunicorn.socket")))
    return response


@bp.teardown_app_request
def _release_discarded_stream(error: BaseException | None) -> None:
    """Release the upstream of a streamed answer that never reached the WSGI server.

    When a later step fails (an after-request hook raising), Flask answers with an error
    response instead and drops ours un-iterated, so the server never closes it: its
    upstream connection and span would leak. With no error the server owns the answer and
    closes it after the last byte; a teardown must not, the stream is still running.
    """
    stream = g.pop("plano_stream", None)
    if stream is not None and error is not None:
        stream.close()


def _hang_up(sock) -> Callable[[], None]:
    """Shut the client's socket once the answer is sent (gunicorn would otherwise drain the
    unread body, at the client's pace, before the next keep-alive request)."""
    def close() -> None:
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already gone
    return close
