"""HTTP client for one OpenAI-compatible provider (``POST {base_url}/chat/completions``).

Connections come from an :class:`UpstreamPool`: one per upstream origin (scheme, host,
port), shared by every provider on that origin (two models of one API share their
connections), made once at start-up in the gunicorn worker, after gevent patched the socket
module, and sized from ``worker_connections`` (:mod:`app.pools`) so that a request never
opens a connection that the pool then has to discard. Every call has explicit connect and
read timeouts; the read timeout is the listener's ``timeout``. Nothing is retried: a POST
that may have reached the provider is never sent twice.

The URL, headers and settings never change between calls, so each call goes straight to
the origin's urllib3 connection pool (``urlopen``) and the answer is wrapped in a
``requests.Response`` (the type the relay reads: ``iter_content``, ``close``, case-insensitive
headers). ``Session.post`` re-parses the URL, merges environment settings, cookies and hooks
on every call, and even requests' ``HTTPAdapter.send`` looks the pool up, selects proxies
and extracts cookies each time. On loopback, in CPU per call under gevent (one process, best
of 5 x 2000, the same request to the bundled mock): about 520 µs through ``Session.post``,
390 µs through the adapter, 300 µs through the pool directly. TLS is verified against
requests' CA bundle (certifi), as before. Redirects are not followed (an API answer is never
a redirect we want).

Failures map to gateway errors: cannot connect -> :class:`UpstreamConnectionError` (502),
no answer in time -> :class:`UpstreamTimeoutError` (504). An HTTP error status is *not* an
exception here; the caller relays it (:func:`upstream_error_body`), with anything that looks
like a key scrubbed from its message (:func:`scrub_secrets`).
"""

from __future__ import annotations

import json
import re
import time
from typing import Iterable, Iterator, Mapping
from urllib.parse import urlsplit

import requests
import urllib3
from requests.structures import CaseInsensitiveDict
from requests.utils import DEFAULT_CA_BUNDLE_PATH
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from app.config import ModelEndpoint
from app.errors import UpstreamConnectionError, UpstreamError, UpstreamTimeoutError
from app.pools import worker_connections

CONNECT_TIMEOUT_SECONDS = 5.0
ANTHROPIC_VERSION = "2023-06-01"
MAX_ERROR_BODY_CHARS = 500
_READ_CHUNK_BYTES = 64 * 1024


def origin_of(url: str) -> str:
    """``scheme://host:port`` of ``url`` (default ports made explicit): one pool each."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{parts.hostname}:{port}"


class UpstreamPool:
    """Kept-alive connections to one upstream origin, shared by its providers' clients.

    ``size`` bounds the idle connections kept (urllib3 ``maxsize``); it defaults to
    ``worker_connections``, the most requests a worker has in flight, so no connection
    is ever opened only to be discarded. Connections are opened on demand.
    """

    def __init__(self, origin: str, size: int | None = None):
        self.origin = origin
        self.size = size or worker_connections()
        options: dict = {"maxsize": self.size, "block": False, "retries": False}
        if origin.startswith("https://"):
            options["ca_certs"] = DEFAULT_CA_BUNDLE_PATH
        #: urllib3's pool for this origin (``HTTPConnectionPool`` or its HTTPS sibling).
        self.connections = urllib3.connection_from_url(origin, **options)

    def close(self) -> None:
        """Close the pooled connections (idempotent)."""
        self.connections.close()


class ProviderClient:
    """Sends chat-completion bodies to one provider over its origin's pooled connections."""

    def __init__(self, provider: ModelEndpoint, read_timeout_seconds: float,
                 connect_timeout_seconds: float = CONNECT_TIMEOUT_SECONDS,
                 pool: UpstreamPool | None = None, max_body_bytes: int = 64 * 1024 * 1024,
                 max_stream_seconds: float = 900.0):
        self.provider = provider
        # The interface's own path (SPEC §13): Anthropic Messages or Chat Completions.
        self.url = provider.url("/messages" if provider.interface == "anthropic"
                                else "/chat/completions")
        self.read_timeout_seconds = read_timeout_seconds
        # A provider (or whatever answers at base_url) must not make a worker buffer
        # without bound, or hold a stream open for ever.
        self.max_body_bytes = max_body_bytes
        self.max_stream_seconds = max_stream_seconds
        self.connect_timeout_seconds = min(connect_timeout_seconds, read_timeout_seconds)
        self.pool = pool or UpstreamPool(origin_of(self.url))
        #: What provider error messages must never quote (the key, and pieces of it).
        self.secrets: tuple[str, ...] = (provider.access_key,) if provider.access_key else ()
        headers = {"Content-Type": "application/json", "Accept-Encoding": "identity",
                   **dict(provider.headers)}
        if provider.interface == "anthropic":
            headers["anthropic-version"] = ANTHROPIC_VERSION
        if provider.access_key and not provider.passthrough_auth:
            # The catalogue says how: Bearer (most), x-api-key (Anthropic), api-key (Azure).
            if provider.auth == "bearer":
                headers["Authorization"] = f"Bearer {provider.access_key}"
            else:
                headers[provider.auth] = provider.access_key
        # Prepared once: the normalised URL (its path and query go to the pool) and the
        # headers every call starts from.
        template = requests.Request("POST", self.url, headers=headers).prepare()
        self._prepared_url = template.url
        self._target = _request_target(template.url)
        self._headers = template.headers
        #: Other paths of the same provider (``/responses``): (URL, request target),
        #: prepared on first use.
        self._urls: dict[str, tuple[str, str]] = {}

    def post(self, body: bytes, *, headers: Mapping[str, str] | None = None,
             read_timeout_seconds: float | None = None,
             connect_timeout_seconds: float | None = None,
             path: str | None = None) -> requests.Response:
        """POST ``body`` to the interface's URL (or the provider's ``path``, such as
        ``/responses``); the response body is not read yet.

        The caller must close the response (``close()`` or reading it to the end).
        """
        url, target = ((self._prepared_url, self._target) if path is None
                       else self._url_for(path))
        request_headers = CaseInsensitiveDict(self._headers)
        if headers:
            request_headers.update(headers)
        request_headers["Content-Length"] = str(len(body))
        read = read_timeout_seconds or self.read_timeout_seconds
        timeout = urllib3.Timeout(
            connect=connect_timeout_seconds or min(self.connect_timeout_seconds, read),
            read=read)
        try:
            raw = self.pool.connections.urlopen(
                "POST", target, body=body, headers=request_headers, retries=False,
                redirect=False, assert_same_host=False, timeout=timeout,
                preload_content=False, decode_content=False)
        except (ConnectTimeoutError, ReadTimeoutError) as error:
            if isinstance(error, NewConnectionError):  # refused, unreachable, no such host
                raise UpstreamConnectionError(self._describe("could not be reached")) from None
            what = "connect timed out" if isinstance(error, ConnectTimeoutError) else "timed out"
            raise UpstreamTimeoutError(self._describe(what)) from None
        except (ProtocolError, OSError, urllib3.exceptions.SSLError):
            raise UpstreamConnectionError(self._describe("could not be reached")) from None
        except HTTPError as error:
            raise UpstreamConnectionError(self._describe(
                f"request failed ({type(error).__name__})")) from None
        return _as_response(raw, url)

    def _url_for(self, path: str) -> tuple[str, str]:
        prepared = self._urls.get(path)
        if prepared is None:
            url = requests.Request("POST", self.provider.url(path)).prepare().url
            prepared = self._urls[path] = (url, _request_target(url))
        return prepared

    def read_body(self, response: requests.Response, deadline: float) -> bytes:
        """Read a whole (non-streaming) body, giving up at ``deadline`` (monotonic)."""
        chunks = []
        size = 0
        try:
            for chunk in response.iter_content(_READ_CHUNK_BYTES):
                chunks.append(chunk)
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise UpstreamError(self._describe(
                        f"answered more than {self.max_body_bytes} bytes"))
                if time.monotonic() > deadline:
                    raise UpstreamTimeoutError(self._describe("answer took too long"))
        except requests.exceptions.RequestException as error:
            raise self.stream_error(error) from None
        finally:
            response.close()
        return b"".join(chunks)

    def iter_raw(self, response: requests.Response) -> Iterator[bytes]:
        """Yield body bytes as they arrive; the read timeout bounds each gap.

        A stream longer than ``max_stream_seconds`` or ``max_body_bytes`` is cut with an
        :class:`UpstreamError` (the relay tells the client in-band).
        """
        give_up_at = time.monotonic() + self.max_stream_seconds
        size = 0
        try:
            for chunk in response.iter_content(None):
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise UpstreamError(self._describe(
                        f"streamed more than {self.max_body_bytes} bytes"))
                if time.monotonic() > give_up_at:
                    raise UpstreamTimeoutError(self._describe(
                        f"streamed for more than {self.max_stream_seconds:g} s"))
                yield chunk
        except requests.exceptions.RequestException as error:
            raise self.stream_error(error) from None

    def stream_error(self, error: Exception) -> UpstreamError:
        """The gateway error for a failure while reading a response body."""
        if isinstance(error, (requests.exceptions.Timeout,
                              requests.exceptions.ConnectionError)) and "timed out" in str(error):
            return UpstreamTimeoutError(self._describe("timed out while answering"))
        return UpstreamConnectionError(self._describe("connection lost while answering"))

    def complete_json(self, payload: dict, *, timeout: float,
                      headers: Mapping[str, str] | None = None) -> dict:
        """One non-streaming call whose whole answer must arrive within ``timeout``.

        Used by the LLM router. Raises :class:`UpstreamError` for any failure, HTTP error
        statuses and non-JSON answers included. ``timeout`` bounds connecting too: an
        unreachable routing host costs ``timeout``, not the provider connect timeout.
        """
        deadline = time.monotonic() + timeout
        # The router speaks Chat Completions; an Anthropic routing model is asked through
        # Anthropic's OpenAI-compatible /chat/completions rather than /messages.
        path = "/chat/completions" if self.provider.interface == "anthropic" else None
        response = self.post(json.dumps(payload, separators=(",", ":")).encode(),
                             headers=headers, read_timeout_seconds=timeout,
                             connect_timeout_seconds=min(timeout,
                                                         self.connect_timeout_seconds),
                             path=path)
        body = self.read_body(response, deadline)
        if response.status_code >= 400:
            raise UpstreamError(self._describe(f"answered HTTP {response.status_code}"),
                                status=502)
        try:
            answer = json.loads(body)
        except ValueError:
            raise UpstreamError(self._describe("answered with non-JSON")) from None
        if not isinstance(answer, dict):
            raise UpstreamError(self._describe("answered with a non-object"))
        return answer

    def close(self) -> None:
        """Close the origin's pooled connections (shared: closes them for its siblings)."""
        self.pool.close()

    def _describe(self, what: str) -> str:
        # The provider's name and host, never its key or full URL query.
        return f"provider {self.provider.name} {what}"


def _request_target(url: str) -> str:
    """The path and query of ``url``: what the origin's pool is asked for."""
    parts = urlsplit(url)
    return f"{parts.path or '/'}?{parts.query}" if parts.query else (parts.path or "/")


def _as_response(raw: urllib3.BaseHTTPResponse, url: str) -> requests.Response:
    """urllib3's answer as the ``requests.Response`` the relay reads. Its body is read
    through ``iter_content`` (which turns urllib3's read errors into requests' exceptions)
    and ``close`` gives the connection back to the pool, or drops it when the body was not
    read to the end."""
    response = requests.Response()
    response.raw = raw
    response.status_code = raw.status
    response.headers = CaseInsensitiveDict(raw.headers)
    response.reason = raw.reason
    response.url = url
    return response


#: Key-like strings: ``sk-...`` keys in any masked form (``sk-proj-ab12****wxyz``), and long
#: runs of key characters that mix letters and digits (bearer tokens, other vendors' keys).
_KEY_PREFIXED = re.compile(r"\b(?:sk|pk|rk|ak)-[A-Za-z0-9_\-*.]{3,}")
_LONG_TOKEN = re.compile(r"[A-Za-z0-9_\-*]{24,}")
_TOKEN = re.compile(r"[A-Za-z0-9_\-*.]+")
#: A piece of a configured key this long is a fragment worth hiding.
MIN_SECRET_FRAGMENT = 6
REDACTED = "[redacted]"


def _looks_secret(token: str) -> bool:
    return any(c.isdigit() for c in token) and any(c.isalpha() for c in token)


def scrub_secrets(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without anything that looks like a key or quotes one of ``secrets``.

    Providers quote the key they were sent in their 401 messages ("Incorrect API key
    provided: sk-proj-ab12***wxyz"): prefixed keys, long letter-and-digit tokens and any
    run of six or more characters of a configured key (a masked fragment) are replaced.
    """
    text = _KEY_PREFIXED.sub(REDACTED, text)
    text = _LONG_TOKEN.sub(lambda m: REDACTED if _looks_secret(m.group()) else m.group(),
                           text)
    keys = [secret for secret in secrets if secret]
    if not keys:
        return text

    def fragment(match: re.Match) -> str:
        for piece in match.group().split("*"):
            piece = piece.strip(".")
            if len(piece) >= MIN_SECRET_FRAGMENT and any(piece in key for key in keys):
                return REDACTED
        return match.group()
    return _TOKEN.sub(fragment, text)


def upstream_error_body(status: int, body: bytes, secrets: Iterable[str] = ()) -> dict:
    """The error envelope to relay for a provider's HTTP error answer.

    The provider's own body when it already is an OpenAI error envelope (its ``error``
    object's ``message``, ``type``, ``param`` and ``code`` only), else one of ours
    (``type: upstream_error``) quoting a truncated copy of what it said. Either way the
    message is passed through :func:`scrub_secrets` with the provider's key in ``secrets``.
    """
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        error = parsed["error"]
        relayed = {name: error.get(name) for name in ("message", "type", "param", "code")}
        for name, value in relayed.items():
            if isinstance(value, str):
                relayed[name] = scrub_secrets(value, secrets)
        return {"error": relayed}
    text = body.decode("utf-8", errors="replace").strip()
    if len(text) > MAX_ERROR_BODY_CHARS:
        text = text[:MAX_ERROR_BODY_CHARS] + "..."
    return {"error": {"message": f"upstream answered HTTP {status}: "
                                 f"{scrub_secrets(text, secrets)}",
                      "type": "upstream_error", "param": None, "code": f"upstream_{status}"}}
