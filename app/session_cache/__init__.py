"""Session caches: where session pins live (SPEC §6). See :mod:`app.session_cache.base`."""

from app.session_cache.base import (InvalidBindingError, SessionBinding, SessionCache,
                                    SessionCacheError, SessionCacheUnavailableError)
from app.session_cache.factory import create_session_cache

__all__ = ["InvalidBindingError", "SessionBinding", "SessionCache", "SessionCacheError",
           "SessionCacheUnavailableError", "create_session_cache"]
