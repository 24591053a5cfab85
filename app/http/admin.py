"""The admin API: inspect and clear session pins (enabled only when ``admin.token`` is set).

``GET /admin/sessions/<id>`` answers the binding and its remaining TTL, and the session's
usage totals beside it (SPEC §19: requests, tokens by kind, cost, cache hits, switches;
``null`` when none were recorded), ``DELETE`` unpins;
the tenant comes from the configured tenant header, as on the chat endpoint. Every call
needs ``Authorization: Bearer <admin.token>``: missing -> 401, wrong -> 403, both as JSON
envelopes. Calls are counted in ``plano_admin_requests_total{action,status}``.
"""

from __future__ import annotations

from flask import Blueprint, Response, json, request

from app.affinity import budget
from app.errors import (
    AuthenticationError,
    GatewayError,
    InvalidBindingError,
    NotFoundError,
    PermissionDeniedError,
    SessionCacheError,
    SessionCacheUnreachableError,
)
from app.http.auth import bearer_token
from app.pipeline.decide import session_key
from app.pipeline.parse import validate_affinity_value
from app.services import current_services

admin_bp = Blueprint("admin", __name__, url_prefix="/admin")

_ACTIONS = {"GET": "get_session", "DELETE": "delete_session"}


@admin_bp.before_request
def _authenticate() -> None:
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        raise AuthenticationError("admin API: missing bearer token", code="missing_token")
    if not current_services().admin_keys.matches(token):
        raise PermissionDeniedError("admin API: token not accepted", code="invalid_token")


@admin_bp.after_request
def _count(response: Response) -> Response:
    action = _ACTIONS.get(request.method, "other")
    current_services().metrics.admin_request(action, response.status_code)
    return response


def _key(session_id: str) -> tuple[str, str | None]:
    svc = current_services()
    # The operator may look at the gateway's own records (``turn:<session>``).
    validate_affinity_value(session_id, "session id", allow_reserved=True)
    tenant_header = svc.config.routing.session_cache.tenant_header
    tenant = None
    if tenant_header:
        tenant = validate_affinity_value(request.headers.get(tenant_header), tenant_header,
                                         allow_colon=False)
    return session_key(session_id, tenant), tenant


@admin_bp.get("/sessions/<path:session_id>")
def get_session(session_id: str):
    """The pin of one session: model, route and seconds left."""
    key, tenant = _key(session_id)
    cache = current_services().session_cache
    try:
        binding = cache.get(key)
        ttl = cache.ttl(key) if binding is not None else None
        usage = _usage_totals(key)
    except InvalidBindingError:
        raise GatewayError(f"session '{session_id}' holds a value that is not a binding "
                           "(DELETE clears it)", code="invalid_binding", status=409) from None
    except SessionCacheError as error:
        raise SessionCacheUnreachableError(f"session cache: {error.outcome}") from None
    if binding is None and usage is None:
        raise NotFoundError(f"session '{session_id}' is not pinned", code="session_not_found")
    payload = {"session_id": session_id, "tenant": tenant,
               "model_name": binding.model_name if binding else None,
               "route_name": binding.route_name if binding else None, "ttl_seconds": ttl,
               "backend": cache.backend_name, "usage": usage}
    return Response(json.dumps(payload), status=200, mimetype="application/json")


#: The per-session totals shown, in order (SPEC §19); missing fields are 0.
_USAGE_FIELDS = ("requests", "input_tokens", "cache_read_tokens", "cache_write_tokens",
                 "output_tokens", "cache_hits", "switches", "unpriced_requests")


def _usage_totals(key: str) -> dict | None:
    """The session's usage totals for the answer; ``cost_usd`` is ``null`` when no answer
    of the session had a price. A failing read shows ``null`` (the pin is still shown)."""
    recorder = current_services().usage
    if recorder is None:
        return None
    try:
        totals = recorder.session_totals(key)
    except (SessionCacheError, NotImplementedError):
        return None
    if totals is None:
        return None
    shown = {name: int(totals.get(name, 0)) for name in _USAGE_FIELDS}
    shown["cost_usd"] = round(totals["cost_usd"], 8) if "cost_usd" in totals else None
    if any(name.startswith(budget.FIELD_PREFIX) for name in totals):
        shown["routing_budget"] = _budget_view(budget.BudgetState.from_totals(totals))
    return shown


def _budget_view(state: budget.BudgetState) -> dict:
    """The routing budget's state of a session (SPEC §20): its current warm episode's
    spend on switching against what never switching would have cost."""
    return {"switch_spend_usd": round(state.spend_usd, 8),
            "baseline_usd": round(state.baseline_usd, 8),
            "model": state.current_model, "default_model": state.default_model,
            "bound_at": state.bound_at or None, "last_used": state.last_used or None}


@admin_bp.delete("/sessions/<path:session_id>")
def delete_session(session_id: str):
    """Unpin one session: its next request is routed afresh."""
    key, tenant = _key(session_id)
    try:
        deleted = current_services().session_cache.delete(key)
    except SessionCacheError as error:
        raise SessionCacheUnreachableError(f"session cache: {error.outcome}") from None
    if not deleted:
        raise NotFoundError(f"session '{session_id}' is not pinned", code="session_not_found")
    payload = {"session_id": session_id, "tenant": tenant, "deleted": True}
    return Response(json.dumps(payload), status=200, mimetype="application/json")
