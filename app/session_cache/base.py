"""The session-cache contract (SPEC §6): where a session's model pin lives.

A *binding* pins one session to one model for a fixed time. Implementations share these
semantics, and one behaviour suite (``tests/contract``) runs against every backend:

* ``get(key)`` returns the live binding, or ``None`` when nothing is stored (never stored,
  expired or deleted). It never extends the binding's lifetime.
* ``put_if_absent(key, binding, ttl_seconds)`` stores ``binding`` only when no binding is
  stored under ``key`` and returns the *winner*: the very ``binding`` object passed in when
  this call stored it, else (another object) the binding another writer stored first, so
  ``winner is binding`` tells the caller whether it created the pin even when both writers
  chose the same model. Concurrent first writes of one key, from
  any greenlet, worker or replica sharing the backend, therefore all see the same winner.
  The TTL runs from this moment and is never extended by ``get``.
* ``replace_stale(key, stale_model, binding, ttl_seconds)`` replaces a *stale* pin (one
  naming ``stale_model``, a model no longer configured) atomically, in one round trip:
  ``binding`` is stored when the key is absent or still names ``stale_model``, and the
  winner is returned as for ``put_if_absent``. Two requests replacing the same stale pin
  therefore end on one model: the second sees the first one's fresh pin and keeps it
  (a DEL followed by SET NX would let it delete that fresh pin).
* ``get_renewing(key, ttl_seconds)`` is ``get`` that also restarts the binding's TTL at
  ``ttl_seconds`` when one is stored (``routing.session_ttl_mode: sliding``), in the same
  single round trip (Redis ``GETEX key EX ttl``). A stored value that is not a binding
  raises :class:`app.errors.InvalidBindingError` as for ``get``; its bytes are untouched.
* ``put(key, binding, ttl_seconds)`` stores ``binding`` whatever is stored (last writer
  wins), with a fresh TTL. Only for the gateway's own records (the turn records of
  ``routing.route_on_user_only``), never for pins, which are first-writer-wins.
* ``delete(key)`` removes the binding; returns whether a live one was stored (an expired
  binding is not stored: ``False``, as Redis answers).
* ``ttl(key)`` returns the whole seconds left, or ``None`` when nothing is stored.
* ``add_usage(key, increments, ttl_seconds)`` adds each number of ``increments`` (ints
  and floats by field name) to the totals stored under ``key`` (absent fields start at 0)
  and sets their TTL to ``ttl_seconds``, in one round trip (Redis: one script call on one
  hash, HINCRBY / HINCRBYFLOAT per field and EXPIRE, so Cluster works). ``usage(key)`` returns
  those totals (ints stay ints) or ``None``. The gateway keeps a session's usage under
  ``usage:<session key>`` (SPEC §19), beside the pin, never in the pin's value. A key of
  another type raises :class:`app.errors.InvalidBindingError`. ``replace`` (optional) sets
  numeric fields to the given values in the same round trip (Redis: HSET): the routing
  budget's state (SPEC §20) is kept in the same totals. ``add_usage_batch({key:
  increments}, ttl_seconds)`` is ``add_usage`` for many keys in one round trip (Redis: a
  pipeline of one script call per hash): a worker's periodic flush of its sessions' totals.
  A key of another type is left alone and reported once the others are added.
* A backend failure (unreachable, timed out, erroring) raises :class:`app.errors.SessionCacheError`,
  never returns ``None``: "not found" and "could not look" are different answers. A stored
  value that cannot be decoded (or a Redis key of another type) raises
  :class:`app.errors.InvalidBindingError`; such a key is never overwritten by ``put_if_absent``.

Keys are *logical* keys (``[tenant:]session id``); a backend adds its own namespace.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Mapping, NamedTuple

from app.errors import InvalidBindingError

#: The gateway's own keys beside the pins, under the same ``key_prefix`` (SPEC §8, §16,
#: §19): a session's turn record and its usage totals. No session id may begin with them.
TURN_KEY_PREFIX = "turn:"
USAGE_KEY_PREFIX = "usage:"
RESERVED_KEY_PREFIXES = (TURN_KEY_PREFIX, USAGE_KEY_PREFIX)


@dataclass(frozen=True, slots=True)
class SessionBinding:
    """The model a session is pinned to, and the route that chose it (``None``: no match)."""

    model_name: str
    route_name: str | None = None


class StoredPin(NamedTuple):
    """One live pin found by :meth:`SessionCache.sample_pins`: logical key, binding, TTL."""

    key: str
    binding: SessionBinding
    ttl_seconds: int | None


class SessionCache(ABC):
    """Stores session pins; see the module docstring for the full contract."""

    #: Short backend name used in metrics and /healthz (``memory``, ``redis``).
    backend_name: str = "unknown"

    @abstractmethod
    def get(self, key: str) -> SessionBinding | None:
        """The live binding under ``key``, or ``None``."""

    @abstractmethod
    def get_renewing(self, key: str, ttl_seconds: int) -> SessionBinding | None:
        """The live binding under ``key`` with its TTL restarted at ``ttl_seconds``."""

    @abstractmethod
    def put(self, key: str, binding: SessionBinding, ttl_seconds: int) -> None:
        """Store ``binding`` under ``key`` whatever is stored there (last writer wins)."""

    @abstractmethod
    def put_if_absent(self, key: str, binding: SessionBinding,
                      ttl_seconds: int) -> SessionBinding:
        """Store ``binding`` unless one exists; return the binding that is stored now."""

    @abstractmethod
    def replace_stale(self, key: str, stale_model: str, binding: SessionBinding,
                      ttl_seconds: int) -> SessionBinding:
        """Store ``binding`` if nothing or a pin to ``stale_model`` is stored; the winner."""

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Remove the binding under ``key``; ``True`` when one was removed."""

    @abstractmethod
    def ttl(self, key: str) -> int | None:
        """Whole seconds the binding under ``key`` has left, or ``None``."""

    def add_usage(self, key: str, increments: Mapping[str, int | float],
                  ttl_seconds: int, replace: Mapping[str, int | float] | None = None) -> None:
        """Add ``increments`` to the totals under ``key`` and set the fields of ``replace``;
        their TTL becomes ``ttl_seconds``."""
        raise NotImplementedError(f"{type(self).__name__} keeps no usage totals")

    def add_usage_batch(self, batch: Mapping[str, Mapping[str, int | float]],
                        ttl_seconds: int) -> None:
        """:meth:`add_usage` for each key of ``batch`` (a backend with round trips makes
        them one); a key of another type is reported after the others were added."""
        invalid = None
        for key, increments in batch.items():
            try:
                self.add_usage(key, increments, ttl_seconds)
            except InvalidBindingError as error:
                invalid = invalid or error
        if invalid is not None:
            raise invalid

    def usage(self, key: str) -> dict[str, int | float] | None:
        """The totals under ``key``, or ``None``."""
        raise NotImplementedError(f"{type(self).__name__} keeps no usage totals")

    def ping(self) -> bool:
        """Whether the backend answers right now (for /healthz); never raises."""
        return True

    def sample_pins(self, limit: int, skip_prefixes: tuple[str, ...] = ()
                    ) -> list[StoredPin] | None:
        """Up to ``limit`` live pins for an operator to look at (``GET /status``), or
        ``None`` when this backend cannot list them.

        A sample, not a count: the work is bounded whatever the number of sessions. Keys
        starting with one of ``skip_prefixes`` (the gateway's own records) and values that
        are not bindings are left out. A backend failure raises :class:`SessionCacheError`.
        """
        return None

    def close(self) -> None:  # noqa: B027 - an optional hook: most backends hold nothing
        """Release connections; the cache is unusable afterwards."""
