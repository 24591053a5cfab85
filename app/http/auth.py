"""Bearer-token checks for client keys (``server.api_keys``) and the admin token.

Keys are compared in constant time: each configured key is kept only as its SHA-256 digest,
the presented token is hashed the same way, and every digest is compared with
``hmac.compare_digest`` without stopping at the first match, so neither the position of a
match nor a key's length leaks through timing.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Iterable


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
