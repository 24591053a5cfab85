"""Structured logs: one JSON line per request, and the JSON formatter for every log line.

The ``plano.access`` logger gets one line per request when the answer is finished, a
stream at its last chunk (``api`` registers :meth:`RequestRecord.write` with
``Response.call_on_close``), for example::

    {"ts": "2026-01-01T12:00:00.123Z", "level": "INFO", "logger": "plano.access",
     "msg": "request", "request_id": "...", "method": "POST",
     "path": "/v1/chat/completions", "status": 200, "duration_ms": 12.3,
     "upstream_ms": 10.1, "session_id": "s-1", "tenant": null, "pinned": true,
     "affinity": "pinned", "route": "fast_responses", "model": "openai/gpt-4o-mini",
     "trace_id": "..."}

Only values the gateway decided or validated are logged: never a header value other than
the request id and the affinity/tenant ids (which are validated printable ASCII), never a
body, so neither a provider key nor the client's ``Authorization`` can reach a log line.

:class:`JsonFormatter` renders any record as one JSON object per line (``config/
gunicorn.conf.py`` installs it for the app's and gunicorn's loggers); it adds the current
request id (:data:`REQUEST_ID`) so a router or cache warning can be matched with its
request line. This module imports nothing beyond the standard library: gunicorn's master
loads it to configure logging.
"""

from __future__ import annotations

import contextvars
import datetime
import functools
import json
import logging
import os
import random
import re
import time

ACCESS_LOGGER = "plano.access"
REQUEST_ID_HEADER = "x-request-id"
#: The request being served by this greenlet (set by ``api`` at the start of a request).
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("plano_request_id",
                                                                        default=None)

#: The access line's encoder, made once (``json.dumps`` with options makes one per call).
_LINE_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_REQUEST_ID_PATTERN = re.compile(r"^[\x21-\x7e]{1,128}$")
_access_log = logging.getLogger(ACCESS_LOGGER)
# LogRecord attributes that are not "extra" fields.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime"}


def request_id_from(incoming: str | None) -> str:
    """The client's ``x-request-id`` when it is 1-128 printable ASCII characters without
    spaces, else a new random id (32 hex digits).

    New ids need to be unique, not unguessable: ``random`` (reseeded in every forked
    worker) is ten times cheaper than ``uuid4``'s ``os.urandom`` on the request path.
    """
    if incoming and _REQUEST_ID_PATTERN.match(incoming):
        return incoming
    return f"{random.getrandbits(128):032x}"


class RequestRecord:
    """What one request's log line says, filled in as the request goes."""

    __slots__ = ("request_id", "method", "path", "started", "status", "session_id",
                 "tenant", "pinned", "affinity", "route", "model", "answer", "trace_id",
                 "failover_from")

    def __init__(self, request_id: str, method: str, path: str):
        self.request_id = request_id
        self.method = method
        self.path = path
        self.started = time.perf_counter()
        self.status: int | None = None
        self.session_id: str | None = None
        self.tenant: str | None = None
        self.pinned = False
        self.affinity: str | None = None
        self.route: str | None = None
        self.model: str | None = None
        #: The relay's answer; its ``upstream_seconds`` is read when the line is written
        #: (a stream sets it at its end).
        self.answer = None
        self.trace_id: str | None = None
        #: The model that failed (or was skipped as down) when a fallback answered.
        self.failover_from: str | None = None

    def fields(self) -> dict:
        """The log line's fields, durations in milliseconds."""
        upstream = getattr(self.answer, "upstream_seconds", None)
        fields = {"request_id": self.request_id, "method": self.method, "path": self.path,
                  "status": self.status,
                  "duration_ms": round((time.perf_counter() - self.started) * 1000.0, 3),
                  "upstream_ms": None if upstream is None else round(upstream * 1000.0, 3),
                  "session_id": self.session_id, "tenant": self.tenant,
                  "pinned": self.pinned,
                  "affinity": self.affinity, "route": self.route, "model": self.model,
                  "trace_id": self.trace_id}
        if self.failover_from is not None:
            fields["failover_from"] = self.failover_from
        usage = getattr(getattr(self.answer, "meter", None), "record", None)
        if usage is not None:  # tokens by kind and cost (SPEC §19)
            fields.update(usage.log_fields())
        return fields

    def write(self) -> None:
        """Log the line (called once, when the response is closed)."""
        if _access_log.isEnabledFor(logging.INFO):
            _access_log.info("request", extra={"plano": self.fields()})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the request id, extra fields.

    ``extra={"plano": {...}}`` fields are merged at the top level (the access line); other
    ``extra`` values are added under their own names; an exception becomes ``exc``.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": _timestamp(record.created), "level": record.levelname,
                 "logger": record.name, "msg": record.getMessage()}
        fields = record.__dict__.get("plano")
        if isinstance(fields, dict) and not record.exc_info:
            # The access line (once per request): its fields are all there is.
            entry.update(fields)
            return _LINE_ENCODER.encode(entry)
        if isinstance(fields, dict):
            entry.update(fields)
        else:
            request_id = REQUEST_ID.get()
            if request_id is not None:
                entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and key != "plano" and key not in entry:
                entry[key] = value
        if record.levelno >= logging.WARNING:
            entry["pid"] = os.getpid()  # not record.process: see lean_log_records
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str, separators=(",", ":"))


def lean_log_records() -> None:
    """Skip what :class:`JsonFormatter` never writes when a log record is made: the
    caller's file, line and function (a walk up the stack), the thread, the process and
    the multiprocessing name (the logging HOWTO's "Optimization" settings). Called by
    ``config/gunicorn.conf.py``: every request's access line is a record."""
    logging._srcfile = None  # noqa: SLF001 - the HOWTO's documented switch
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def _timestamp(created: float) -> str:
    """ISO 8601 UTC with milliseconds; the date-time part is formatted once per second."""
    second = int(created)
    return f"{_second_prefix(second)}{int((created - second) * 1000):03d}Z"


@functools.lru_cache(maxsize=4)
def _second_prefix(second: int) -> str:
    moment = datetime.datetime.fromtimestamp(second, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.")
