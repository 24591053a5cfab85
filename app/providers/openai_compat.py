"""HTTP client for one OpenAI-compatible provider (``POST {base_url}/chat/completions``).

One pooled ``requests.Session`` per provider, made once at start-up (in the gunicorn worker,
after gevent patched the socket module). Every call has explicit connect and read timeouts;
the read timeout is the listener's ``timeout``. Nothing is retried: a POST that may have
reached the provider is never sent twice.

The URL, headers and settings never change between calls, so each call hands a
``PreparedRequest`` straight to the session's pooled ``HTTPAdapter`` instead of going
through ``Session.post``: that skips re-parsing the URL, merging environment settings,
cookies and hooks on every request, which measured about 470 -> 260 µs of CPU per call on
loopback. Redirects are not followed (an API answer is never a redirect we want).

Failures map to gateway errors: cannot connect -> :class:`UpstreamConnectionError` (502),
no answer in time -> :class:`UpstreamTimeoutError` (504). An HTTP error status is *not* an
exception here; the caller relays it (:func:`upstream_error_body`).
"""

from __future__ import annotations

import json
import time
from typing import Iterator, Mapping

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict

from app.config import ModelEndpoint
from app.errors import UpstreamConnectionError, UpstreamError, UpstreamTimeoutError

CONNECT_TIMEOUT_SECONDS = 5.0
ANTHROPIC_VERSION = "2023-06-01"
MAX_ERROR_BODY_CHARS = 500
_READ_CHUNK_BYTES = 64 * 1024


class ProviderClient:
    """Sends chat-completion bodies to one provider over a pooled session."""

    def __init__(self, provider: ModelEndpoint, read_timeout_seconds: float,
                 connect_timeout_seconds: float = CONNECT_TIMEOUT_SECONDS,
                 pool_size: int = 256, max_body_bytes: int = 64 * 1024 * 1024,
                 max_stream_seconds: float = 900.0):
        self.provider = provider
        self.url = f"{provider.base_url}/chat/completions"
        self.read_timeout_seconds = read_timeout_seconds
        # A provider (or whatever answers at base_url) must not make a worker buffer
        # without bound, or hold a stream open for ever.
        self.max_body_bytes = max_body_bytes
        self.max_stream_seconds = max_stream_seconds
        self.connect_timeout_seconds = min(connect_timeout_seconds, read_timeout_seconds)
        self._session = requests.Session()
        # One host per client: a single pool, sized for a gevent worker's concurrency.
        self._adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", self._adapter)
        self._session.mount("https://", self._adapter)
        self._session.trust_env = False  # no proxy/netrc lookups
        headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
        if provider.interface == "anthropic":
            # Anthropic Messages (SPEC §13): the key as x-api-key, a pinned API version.
            headers["anthropic-version"] = ANTHROPIC_VERSION
            if provider.access_key:
                headers["x-api-key"] = provider.access_key
            self.url = f"{provider.base_url}/messages"
        elif provider.access_key:
            headers["Authorization"] = f"Bearer {provider.access_key}"
        # Prepared once: the normalised URL and headers every call starts from.
        template = requests.Request("POST", self.url, headers=headers).prepare()
        self._prepared_url = template.url
        self._headers = template.headers
        #: Other paths of the same provider (``/responses``), prepared on first use.
        self._urls: dict[str, str] = {}

    def post(self, body: bytes, *, headers: Mapping[str, str] | None = None,
             read_timeout_seconds: float | None = None,
             path: str | None = None) -> requests.Response:
        """POST ``body`` to the provider's interface URL (or ``base_url + path``); the
        response body is not read yet (``stream=True``).

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
        timeout = (self.connect_timeout_seconds,
                   read_timeout_seconds or self.read_timeout_seconds)
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
                "POST", f"{self.provider.base_url}{path}").prepare().url
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
        statuses and non-JSON answers included.
        """
        deadline = time.monotonic() + timeout
        response = self.post(json.dumps(payload, separators=(",", ":")).encode(),
                             headers=headers, read_timeout_seconds=timeout)
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
        """Close pooled connections."""
        self._session.close()

    def _describe(self, what: str) -> str:
        # The provider's name and host, never its key or full URL query.
        return f"provider {self.provider.name} {what}"


def _short_cause(error: Exception) -> str:
    if isinstance(error, requests.exceptions.ConnectionError):
        return "could not be reached"
    return f"request failed ({type(error).__name__})"


def upstream_error_body(status: int, body: bytes) -> dict:
    """The error envelope to relay for a provider's HTTP error answer.

    The provider's own body when it already is an OpenAI error envelope, else one of ours
    (``type: upstream_error``) quoting a truncated copy of what it said.
    """
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        return parsed
    text = body.decode("utf-8", errors="replace").strip()
    if len(text) > MAX_ERROR_BODY_CHARS:
        text = text[:MAX_ERROR_BODY_CHARS] + "..."
    return {"error": {"message": f"upstream answered HTTP {status}: {text}",
                      "type": "upstream_error", "param": None, "code": f"upstream_{status}"}}
