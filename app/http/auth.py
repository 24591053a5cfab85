"""Bearer-token checks for client keys (``server.api_keys``) and the admin token, and which
client key (if any) goes upstream for a ``passthrough_auth`` provider.

Keys are compared in constant time: each configured key is kept only as its SHA-256 digest,
the presented token is hashed the same way, and every digest is compared with
``hmac.compare_digest`` without stopping at the first match, so neither the position of a
match nor a key's length leaks through timing.

The key that authenticated a client to the gateway is never forwarded (SPEC §8): with
``passthrough_auth`` as well, the client sends its provider key in the other header, and
:func:`passthrough_key` skips every value that is a gateway key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Iterable, Mapping

#: Headers a client key may come in, in the order they are read.
CLIENT_KEY_HEADERS = ("Authorization", "x-api-key", "api-key")
#: Per-process salt of :func:`credential_fingerprint`: fingerprints never leave the worker.
_FINGERPRINT_SALT = os.urandom(16)


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", errors="surrogateescape")).digest()


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else ``None``."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class KeySet:
    """A set of secrets that answers "is this one of them?" in constant time."""

    def __init__(self, secrets: Iterable[str]):
        self._digests = tuple(_digest(secret) for secret in secrets)

    def __bool__(self) -> bool:
        return bool(self._digests)

    def matches(self, presented: str | None) -> bool:
        """Whether ``presented`` is one of the secrets (``None`` never is)."""
        if presented is None:
            return False
        candidate = _digest(presented)
        found = False
        for digest in self._digests:
            found |= hmac.compare_digest(candidate, digest)
        return found


def presented_keys(headers: Mapping[str, str]) -> list[str]:
    """The client keys a request carries, in header order: the ``Authorization: Bearer``
    token, ``x-api-key``, ``api-key`` (empty values left out)."""
    keys = []
    for name in CLIENT_KEY_HEADERS:
        value = headers.get(name)
        if name == "Authorization":
            value = bearer_token(value)
        elif value is not None:
            value = value.strip()
        if value:
            keys.append(value)
    return keys


def passthrough_key(headers: Mapping[str, str], gateway_keys: KeySet) -> str | None:
    """The key a ``passthrough_auth`` provider gets: the first presented key that is not one
    of the gateway's own client keys (``server.api_keys``); ``None`` when there is none (the
    request goes upstream without a credential, and the provider answers 401)."""
    for key in presented_keys(headers):
        if not gateway_keys.matches(key):
            return key
    return None


def credential_fingerprint(key: str | None) -> str | None:
    """A short salted digest naming a client credential in per-credential state (health
    marks of ``passthrough_auth`` models): never the key, and not comparable across
    processes."""
    if key is None:
        return None
    digest = hmac.new(_FINGERPRINT_SALT, key.encode("utf-8", errors="surrogateescape"),
                      hashlib.sha256)
    return digest.hexdigest()[:16]
