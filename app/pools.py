"""Connection-pool sizes derived from gunicorn's ``worker_connections`` (SPEC §11).

A gevent worker serves up to ``worker_connections`` requests at once (gunicorn's setting,
``PLANO_WORKER_CONNECTIONS`` in ``config/gunicorn.conf.py``, default 1000), and each of them
holds at most one Redis connection and one upstream HTTP connection at a time. Pools of
that size therefore never make a request wait for a local connection, however many
requests arrive together; smaller pools turn local congestion into waiting (and, for the
session cache, into lost affinity: ``bin/bench --streams`` measured it, see
docs/performance.md). Connections are opened on demand, so an idle worker holds only what it
has needed so far.
"""

from __future__ import annotations

import os

WORKER_CONNECTIONS_ENV = "PLANO_WORKER_CONNECTIONS"
DEFAULT_WORKER_CONNECTIONS = 1000


def worker_connections() -> int:
    """gunicorn's ``worker_connections`` for this worker, as ``gunicorn.conf.py`` sets it."""
    raw = os.environ.get(WORKER_CONNECTIONS_ENV, "")
    try:
        value = int(raw)
    except ValueError:
        return DEFAULT_WORKER_CONNECTIONS
    return value if value >= 1 else DEFAULT_WORKER_CONNECTIONS
