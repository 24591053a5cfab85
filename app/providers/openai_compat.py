"""HTTP client for one OpenAI-compatible provider (``POST {base_url}/chat/completions``).

Connections come from an :class:`UpstreamPool`: one per upstream origin (scheme, host,
port), shared by every provider on that origin (two models of one API share their
connections), made once at start-up in the gunicorn worker, after gevent patched the socket
module, and sized from ``worker_connections`` (:mod:`app.pools`) so that a request never
opens a connection that the pool then has to discard. Every call has explicit connect and
read timeouts; the read timeout is the listener's ``timeout``. Nothing is retried: a POST
that may have reached the provider is never sent twice.

The URL, headers and settings never change between calls, so each call hands a
``PreparedRequest`` straight to the session's pooled ``HTTPAdapter`` instead of going
through ``Session.post``: that skips re-parsing the URL, merging environment settings,
cookies and hooks on every request, which measured about 470 -> 260 µs of CPU per call on
loopback. Redirects are not followed (an API answer is never a redirect we want).

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
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict

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
        self._session = requests.Session()
        self._session.trust_env = False  # no proxy/netrc lookups
        self.adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self.size, max_retries=0)
        self._session.mount("http://", self.adapter)
        self._session.mount("https://", self.adapter)

    def close(self) -> None:
        """Close the pooled connections (idempotent)."""
        self._session.close()


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
        self._adapter = self.pool.adapter
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
        # Prepared once: the normalised URL and headers every call starts from.
        template = requests.Request("POST", self.url, headers=headers).prepare()
        self._prepared_url = template.url
        self._headers = template.headers
        #: Other paths of the same provider (``/responses``), prepared on first use.
        self._urls: dict[str, str] = {}

    def post(self, body: bytes, *, headers: Mapping[str, str] | None = None,
             read_timeout_seconds: float | None = None,
             connect_timeout_seconds: float | None = None,
             path: str | None = None) -> requests.Response:
        """POST ``body`` to the interface's URL (or the provider's ``path``, such as
        ``/responses``); the response body is not read yet (``stream=True``).

        The caller must close the response (``close()`` or reading it to the end).
        """
        request = requests.PreparedRequest()
        request.method = "POST"
        request.url = self._prepared_url if path is None else self._url_for(path)
        request.headers = CaseInsensitiveDict(self._headers)
        if headers:
            request.headers.update(headers)
        request.headers["Content-Length"] = str(len(body))
        request.body = body
        read = read_timeout_seconds or self.read_timeout_seconds
        timeout = (connect_timeout_seconds or min(self.connect_timeout_seconds, read), read)
        try:
            return self._adapter.send(request, stream=True, timeout=timeout)
        except requests.exceptions.ConnectTimeout:
            raise UpstreamTimeoutError(self._describe("connect timed out")) from None
        except requests.exceptions.Timeout:
            raise UpstreamTimeoutError(self._describe("timed out")) from None
        except requests.exceptions.RequestException as error:
            raise UpstreamConnectionError(self._describe(_short_cause(error))) from None

    def _url_for(self, path: str) -> str:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = requests.Request(
                "POST", self.provider.url(path)).prepare().url
        return url

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


def _short_cause(error: Exception) -> str:
    if isinstance(error, requests.exceptions.ConnectionError):
        return "could not be reached"
    return f"request failed ({type(error).__name__})"


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
