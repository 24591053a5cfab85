"""gunicorn settings for the gateway (``bin/serve`` passes this file with ``-c``).

Values come from the environment that ``bin/serve`` sets (``PLANO_HOST``, ``PLANO_PORT``,
``PLANO_WORKERS``)
and from the gateway config's first model listener. The gateway config is loaded and
validated here, in the master, so a bad file stops start-up with every problem listed
before any worker forks. The app itself is built in each worker (``preload_app`` stays off:
gevent must patch before the app creates sockets, pools and the tracer).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from app.config import ConfigError, load_config  # noqa: E402

try:
    _gateway_config = load_config()
except ConfigError as error:
    sys.stderr.write(f"{error}\n")
    sys.exit(2)

_listener = _gateway_config.model_listener

bind = (f"{os.environ.get('PLANO_HOST') or _listener.address}:"
        f"{os.environ.get('PLANO_PORT') or _listener.port}")
workers = int(os.environ.get("PLANO_WORKERS", "2"))
worker_class = "gevent"
# Concurrent connections per gevent worker; the Redis and HTTP pools are sized to match.
worker_connections = int(os.environ.get("PLANO_WORKER_CONNECTIONS", "1000"))
preload_app = False

# Heartbeat timeout for a worker (gevent workers notify while serving): a stuck worker is
# replaced. Provider calls are bounded separately by the listener's timeout.
timeout = 30
# SIGTERM: stop accepting, let in-flight requests (streams included) finish for this long.
graceful_timeout = int(os.environ.get("PLANO_GRACEFUL_TIMEOUT", "30"))
keepalive = 5

# Request limits enforced by gunicorn before the app sees a request (SPEC §8): a request
# line up to 8 KiB, at most 100 headers of at most 8 KiB each. Anything bigger gets
# gunicorn's own 400. Bodies are limited by the app (server.max_body_bytes -> 413).
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190

# Logs: errors to stderr; the access log only when PLANO_ACCESS_LOG=1 (one JSON line per
# request is written by the app itself).
errorlog = "-"
loglevel = os.environ.get("PLANO_LOG_LEVEL", "info")
accesslog = "-" if os.environ.get("PLANO_ACCESS_LOG") == "1" else None
proc_name = "plano-gateway"
