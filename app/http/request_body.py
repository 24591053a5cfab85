"""Reading a request body within a deadline (``server.body_read_timeout``).

Under gunicorn's gevent worker a client that sends its body slowly holds a greenlet and a
connection slot for as long as it likes; the deadline bounds that. The deadline is a
``gevent.Timeout``, which only fires where gevent runs the sockets (the gunicorn worker);
elsewhere (Flask's test client, a threaded server) the body is read as is.
"""

from __future__ import annotations

from typing import Callable

from app.errors import RequestTimeoutError


def gevent_is_serving() -> bool:
    """Whether the socket module is gevent's (true in gunicorn's gevent worker)."""
    try:
        from gevent import monkey
    except ImportError:
        return False
    return monkey.is_module_patched("socket")


def read_within(read: Callable[[], bytes], seconds: float, use_gevent: bool) -> bytes:
    """``read()``, abandoned with :class:`RequestTimeoutError` after ``seconds``."""
    if not use_gevent:
        return read()
    from gevent import Timeout

    timer = Timeout(seconds)  # the error is only built if it fires
    timer.start()
    try:
        return read()
    except Timeout as fired:
        if fired is not timer:
            raise
        raise RequestTimeoutError(
            f"request body not received within {seconds:g} s") from None
    finally:
        timer.close()
