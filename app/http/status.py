"""``GET /status``: the operator's page in a browser (SPEC §21), behind the admin token.

One server-rendered HTML page (Jinja, no JavaScript) that reloads itself every
``REFRESH_SECONDS``. Mounted with the admin API, only when ``admin.token`` is set.

Authentication: a browser cannot send a Bearer header, so the page also takes HTTP Basic
with the admin token as the password (any user name). Without credentials, or with a wrong
Basic password, it answers 401 with ``WWW-Authenticate: Basic realm="plano status"``, which
makes the browser ask; a wrong Bearer token is 403, as on ``/admin``. The token never goes
in a URL (query strings end up in access logs and browser history). Both answers are the
JSON error envelope (SPEC §8).
"""

from __future__ import annotations

import base64
import binascii
import os
import time

from flask import Blueprint, Response, render_template, request

from app.config.loader import CONFIG_SOURCE_ENV_VAR
from app.errors import (
    AuthenticationError,
    PermissionDeniedError,
    SessionCacheError,
    error_response,
)
from app.http.auth import bearer_token
from app.http.status_view import SessionsView, build_status
from app.observability.prometheus_metrics import multiprocess_dir
from app.services import Services, current_services
from app.session_cache.base import RESERVED_KEY_PREFIXES

status_bp = Blueprint("status", __name__, template_folder="templates")

REFRESH_SECONDS = 10
#: How many pinned sessions the page lists (a bounded sample, SessionCache.sample_pins).
PINS_SHOWN = 20
#: The gateway's own records next to the pins (turn records; usage totals, SPEC §19).
_OWN_KEY_PREFIXES = RESERVED_KEY_PREFIXES
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="plano status", charset="UTF-8"'}


def basic_password(authorization: str | None) -> str | None:
    """The password of an ``Authorization: Basic`` header, else ``None``."""
    if not authorization:
        return None
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, colon, password = decoded.partition(":")
    return password if colon and password else None


@status_bp.before_request
def _authenticate() -> Response | None:
    header = request.headers.get("Authorization")
    keys = current_services().admin_keys
    token = bearer_token(header)
    if token is not None:
        if keys.matches(token):
            return None
        return error_response(PermissionDeniedError("status page: token not accepted",
                                                    code="invalid_token"))
    password = basic_password(header)
    if password is not None and keys.matches(password):
        return None
    message = ("status page: password not accepted" if password is not None else
               "status page: log in with the admin token as password (HTTP Basic) or send "
               "Authorization: Bearer <admin token>")
    code = "invalid_token" if password is not None else "missing_token"
    return error_response(AuthenticationError(message, code=code), _CHALLENGE)


@status_bp.get("/status")
def status() -> Response:
    """The routes, models, sessions and configuration, as this worker sees them."""
    svc = current_services()
    if svc.usage is not None:
        svc.usage.publish_metrics()
    exposition = svc.metrics.exposition()
    text = exposition[0].decode("utf-8") if exposition is not None else None
    health = svc.failover.health.marks() if svc.failover is not None else []
    view = build_status(
        svc.config, text, aggregated=multiprocess_dir() is not None, health=health,
        sessions=_sessions(svc), gateway_version=svc.version, worker=str(os.getpid()),
        now=time.time(), refresh_seconds=REFRESH_SECONDS,
        config_source=os.environ.get(CONFIG_SOURCE_ENV_VAR))
    html = render_template("status.html", view=view)
    return Response(html, status=200, mimetype="text/html",
                    headers={"Cache-Control": "no-store"})


def _sessions(svc: Services) -> SessionsView:
    cache = svc.session_cache
    reachable = cache.ping()
    pins, error = None, None
    try:
        pins = cache.sample_pins(PINS_SHOWN, _OWN_KEY_PREFIXES)
    except SessionCacheError as failure:
        error = f"could not list pins: {failure.outcome}"
    return SessionsView(backend=cache.backend_name, reachable=reachable, pins=pins,
                        pins_error=error, limit=PINS_SHOWN)
