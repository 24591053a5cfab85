"""Session caches: where session pins live (SPEC §6). See :mod:`app.session_cache.base`."""

from app.session_cache.base import SessionBinding, SessionCache
from app.session_cache.factory import create_session_cache

__all__ = ["SessionBinding", "SessionCache", "create_session_cache"]
