"""Every error class of the gateway, and how client-visible ones are rendered (SPEC §8).

Two families:

* :class:`GatewayError` and its subclasses are answers: each carries its HTTP status, the
  broad OpenAI ``type`` and a specific ``code``. :func:`register_error_handlers` makes Flask
  answer every failure (ours, werkzeug's 404/405/413, anything unexpected) with the envelope
  ``{"error": {"message", "type", "param", "code"}}`` and never with a traceback.
* Internal failures that never reach a client as such: :class:`ConfigError` (start-up),
  :class:`SessionCacheError` and its kinds (the gateway serves without affinity),
  :class:`RouterError` (the gateway serves the fallback model).

Flask is imported only inside the functions that build responses: the gunicorn master
imports this module (through the config) before gevent patches a worker.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask, Response

log = logging.getLogger(__name__)


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` lists every ``path: message``."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        super().__init__(f"invalid configuration{where}:\n  " + "\n  ".join(problems))


class SessionCacheError(Exception):
    """The session cache's backend failed: serve without affinity, do not fail the request.

    ``outcome`` names the failure for metrics (``error``, ``skipped`` during a cool-down,
    ``invalid`` for an undecodable value).
    """

    outcome = "error"


class SessionCacheSkippedError(SessionCacheError):
    """The backend is in its cool-down after repeated failures; it was not called."""

    outcome = "skipped"


class InvalidBindingError(SessionCacheError):
    """A value is stored under the key but is not a binding; it is left untouched."""

    outcome = "invalid"


class RouterError(Exception):
    """The router could not decide (timeout, HTTP error, unparseable answer)."""


class GatewayError(Exception):
    """Root of every error the gateway turns into an HTTP answer."""

    status = 500
    error_type = "server_error"
    code: str | None = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 status: int | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def envelope(self) -> dict:
        """The OpenAI error body for this error."""
        return error_envelope(self.message, self.error_type, self.param, self.code)


class InvalidRequestError(GatewayError):
    """The client sent something we cannot serve (400 unless told otherwise)."""

    status = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class ModelNotFoundError(InvalidRequestError):
    """The requested model is neither a configured provider nor an alias."""

    code = "model_not_found"


class InvalidAffinityIdError(InvalidRequestError):
    """An X-Model-Affinity or tenant header value we refuse to turn into a key."""

    code = "invalid_affinity_id"


class AuthenticationError(GatewayError):
    """Missing or wrong credentials (401)."""

    status = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDeniedError(GatewayError):
    """Credentials present but not allowed (403)."""

    status = 403
    error_type = "authentication_error"
    code = "forbidden"


class NotFoundError(GatewayError):
    """A resource (admin session, path) that does not exist (404)."""

    status = 404
    error_type = "invalid_request_error"
    code = "not_found"


class RequestTimeoutError(GatewayError):
    """The client did not send its whole body in time (408)."""

    status = 408
    error_type = "invalid_request_error"
    code = "request_timeout"


class SessionCacheUnreachableError(GatewayError):
    """An admin call needed the session cache and could not ask it (503): the pin may or
    may not exist."""

    status = 503
    error_type = "server_error"
    code = "session_cache_unavailable"


class UpstreamError(GatewayError):
    """The provider answered with an error, failed to connect (502) or timed out (504)."""

    status = 502
    error_type = "upstream_error"
    code = "upstream_error"


class UpstreamConnectionError(UpstreamError):
    """The provider could not be reached."""

    status = 502
    code = "upstream_unreachable"


class UpstreamTimeoutError(UpstreamError):
    """The provider did not answer within the listener's timeout."""

    status = 504
    code = "upstream_timeout"


class UpstreamStreamError(UpstreamError):
    """An upstream stream that did not end as an answer (SPEC §18): it ended without its
    terminal event, or carried an in-band error. Before the first event reached the client
    it is a failover-able failure (SPEC §15), after it an in-band error. ``reason``: the
    ``plano_upstream_stream_errors_total`` label."""

    code = "upstream_stream_error"

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def error_envelope(message: str, error_type: str, param: str | None = None,
                   code: str | None = None) -> dict:
    """Build the SPEC §8 envelope."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


#: Paths answering errors in Anthropic's shape (SPEC §12), so its SDK raises the right class
#: (``/v1/messages/...`` included: Claude Code also asks ``/v1/messages/count_tokens``).
ANTHROPIC_ERROR_PATHS = ("/v1/messages", "/routing/v1/messages")
_ANTHROPIC_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                          403: "permission_error", 404: "not_found_error",
                          408: "timeout_error", 413: "request_too_large",
                          429: "rate_limit_error", 529: "overloaded_error"}


def anthropic_error_type(status: int) -> str:
    """Anthropic's error ``type`` for an HTTP status."""
    if status in _ANTHROPIC_ERROR_TYPES:
        return _ANTHROPIC_ERROR_TYPES[status]
    return "invalid_request_error" if status < 500 else "api_error"


def anthropic_error_body(status: int, message: str, code: str | None) -> dict:
    """Anthropic's error shape, with our specific ``code`` alongside its ``type``."""
    return {"type": "error", "error": {"type": anthropic_error_type(status),
                                       "message": message, "code": code}}


def error_response(error: GatewayError, headers: dict | None = None,
                   anthropic: bool = False) -> Response:
    """A JSON response for ``error`` (compact, one allocation); ``anthropic``: in the
    Messages API's error shape instead of the §8 envelope."""
    from flask import Response

    payload = (anthropic_error_body(error.status, error.message, error.code) if anthropic
               else error.envelope())
    body = json.dumps(payload, separators=(",", ":"))
    response = Response(body, status=error.status, mimetype="application/json")
    if headers:
        response.headers.update(headers)
    return response


_HTTP_ERROR_CODES = {
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
}
#: On ``/v1/messages``: the Anthropic API's own wording for the same refusal (SPEC §18).
_ANTHROPIC_HTTP_WORDING = {413: "Request exceeds the maximum size"}


def register_error_handlers(app: Flask) -> None:
    """Answer every error, expected or not, with the JSON envelope."""
    from flask import request
    from werkzeug.exceptions import HTTPException

    def anthropic() -> bool:
        path = request.path
        return path.startswith(ANTHROPIC_ERROR_PATHS) and (
            path.endswith("/messages") or path.startswith("/v1/messages/"))

    @app.errorhandler(GatewayError)
    def _gateway_error(error: GatewayError):
        return error_response(error, anthropic=anthropic())

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException):
        error_type, code = _HTTP_ERROR_CODES.get(
            error.code or 500,
            ("invalid_request_error" if (error.code or 500) < 500 else "server_error",
             (error.name or "error").lower().replace(" ", "_")))
        as_anthropic = anthropic()
        message = error.description or error.name or "error"
        if as_anthropic:
            message = _ANTHROPIC_HTTP_WORDING.get(error.code, message)
        gateway_error = GatewayError(message, code=code, status=error.code or 500)
        gateway_error.error_type = error_type
        response = error_response(gateway_error, anthropic=as_anthropic)
        if error.code == 405 and getattr(error, "valid_methods", None):
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):
        # The only broad handler: log the type and our own traceback, answer without either.
        log.error("unhandled error: %s", type(error).__name__, exc_info=error)
        return error_response(GatewayError("internal server error"), anthropic=anthropic())
