"""gunicorn settings for the gateway (``bin/serve`` passes this file with ``-c``).

Values come from the environment that ``bin/serve`` sets (``PLANO_HOST``, ``PLANO_PORT``,
``PLANO_WORKERS``)
and from the gateway config's first model listener. The gateway config is loaded and
validated here, in the master, so a bad file stops start-up with every problem listed
before any worker forks. The app itself is built in each worker (``preload_app`` stays off:
gevent must patch before the app creates sockets, pools and the tracer).

Reload and drain (SPEC §17): ``kill -HUP <master>`` makes gunicorn re-read this file, start
new workers and retire the old ones gracefully (requests and streams in flight finish). The
gateway config is validated here first, and workers always load a validated copy of it (a
snapshot in a private temporary directory, given to each worker in ``post_fork``; the last
few are kept for workers still booting), never the operator's file directly: a file that
does not validate on a reload is logged (one JSON line, logger ``plano.config``, with every
problem) and the workers go on with the last good config, so a bad edit never stops or
breaks the master. Only the first start refuses a bad file (exit 2, every problem listed).
SIGTERM drains: no new connections, in-flight requests get ``graceful_timeout`` seconds
(``PLANO_GRACEFUL_TIMEOUT``, default 30).

Metrics: every worker writes its Prometheus values into ``PROMETHEUS_MULTIPROC_DIR`` and a
scrape of ``/metrics`` adds all workers up. The directory is set here, in the master, before
anything imports prometheus_client (which reads it at import) and before any worker forks:
a fresh temporary directory per run (named after the master's pid), removed when gunicorn
exits, those of masters killed with SIGKILL swept at the next start; or the operator's own
``PROMETHEUS_MULTIPROC_DIR``, emptied of old ``*.db`` files at start. Dead workers are
marked as such (``child_exit``).

Listening: one socket opened by the master and shared by the workers; with
``PLANO_REUSE_PORT=1`` one ``SO_REUSEPORT`` socket per worker instead (see ``reuse_port``
below and docs/configuration.md).

Logs: one JSON object per line on stderr for the app and gunicorn alike (formatter
``app.http.request_log.JsonFormatter``), level ``PLANO_LOG_LEVEL`` (default info); the app writes
one ``plano.access`` line per request. gunicorn's own access log is off unless
``PLANO_ACCESS_LOG=1``, and then costs nothing when off.
"""

import atexit
import glob
import json
import os
import shutil
import sys
import tempfile

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Marks the directory this file created, so a config reload (HUP) keeps it and exit removes
# only that one.
_MULTIPROC_OWNED_ENV = "PLANO_METRICS_DIR_CREATED"
_MULTIPROC_PREFIX = "plano-metrics-"
# Marks the operator's directory as emptied by this run, so a reload does not empty it again
# under the live workers (their counters would go backwards).
_MULTIPROC_PREPARED_ENV = "PLANO_METRICS_DIR_PREPARED"
_MASTER_PID = os.getpid()
# The master's directory of validated config snapshots; this file's first run creates it,
# a reload (same master, same environment) finds it here.
_SNAPSHOT_DIR_ENV = "PLANO_CONFIG_SNAPSHOTS"
_SNAPSHOT_PREFIX = "plano-config-"
# The snapshot the workers load (the last config that validated).
_ACTIVE_CONFIG_ENV = "PLANO_CONFIG_ACTIVE"
# Snapshots kept: the active one and the few before it (see _prune_snapshots).
_SNAPSHOTS_KEPT = 4


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_dead_runs(prefix: str = _MULTIPROC_PREFIX) -> None:
    """Remove the directories of earlier runs whose master is gone without cleaning up
    (killed with SIGKILL); each directory's name carries its master's pid."""
    for path in glob.glob(os.path.join(tempfile.gettempdir(), prefix + "*-*")):
        pid = os.path.basename(path)[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _prometheus_multiproc_dir() -> str:
    path = os.environ.get(_MULTIPROC_ENV)
    if path and path in (os.environ.get(_MULTIPROC_OWNED_ENV),
                         os.environ.get(_MULTIPROC_PREPARED_ENV)):
        return path  # a reload of this same run: the live workers keep counting there
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
        os.environ[_MULTIPROC_PREPARED_ENV] = path
        return path
    _sweep_dead_runs()
    path = tempfile.mkdtemp(prefix=f"{_MULTIPROC_PREFIX}{_MASTER_PID}-")
    os.environ[_MULTIPROC_ENV] = path
    os.environ[_MULTIPROC_OWNED_ENV] = path
    return path


def _remove_metrics_dir() -> None:
    """Remove the directories this run created (metrics, config snapshots); only in the
    master (workers inherit atexit handlers and must not remove them while their siblings
    still use them)."""
    if os.getpid() != _MASTER_PID:
        return
    if os.environ.get(_MULTIPROC_OWNED_ENV) == _metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
    snapshots = _own_snapshot_dir()
    if snapshots:
        shutil.rmtree(snapshots, ignore_errors=True)


_metrics_dir = _prometheus_multiproc_dir()
# Covers every way the master ends normally, an invalid gateway config below included.
atexit.register(_remove_metrics_dir)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gunicorn.glogging import Logger  # noqa: E402

from app.config import CONFIG_ENV_VAR, load_config  # noqa: E402
from app.config.loader import CONFIG_SOURCE_ENV_VAR  # noqa: E402
from app.errors import ConfigError  # noqa: E402
from app.http.request_log import lean_log_records  # noqa: E402


def _own_snapshot_dir() -> str | None:
    """This master's snapshot directory when it exists (that is: this is a reload)."""
    path = os.environ.get(_SNAPSHOT_DIR_ENV)
    if (path and os.path.isdir(path)
            and os.path.basename(path).startswith(f"{_SNAPSHOT_PREFIX}{_MASTER_PID}-")):
        return path
    return None


def _snapshot_dir() -> str:
    """This master's directory of config snapshots (made at the first start)."""
    path = _own_snapshot_dir()
    if path:
        return path
    _sweep_dead_runs(_SNAPSHOT_PREFIX)
    path = tempfile.mkdtemp(prefix=f"{_SNAPSHOT_PREFIX}{_MASTER_PID}-")
    os.environ[_SNAPSHOT_DIR_ENV] = path
    return path


def _operator_config_path() -> str:
    return os.environ.get(CONFIG_ENV_VAR) or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "config.yaml")


def _validated_snapshot():
    """Copy the operator's config file, validate the copy, return ``(path, config)``.

    Validating the copy (not the file) means the workers load exactly the bytes that were
    checked, even when the file changes meanwhile (a Kubernetes ConfigMap update).
    Raises ``ConfigError``; an unreadable file is one.
    """
    source = _operator_config_path()
    try:
        with open(source, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise ConfigError([f"(file): cannot read: {error.strerror}"], source) from None
    active = os.environ.get(_ACTIVE_CONFIG_ENV)
    if active and os.path.dirname(active) == _own_snapshot_dir() and _read(active) == data:
        return active, load_config(active)  # unchanged since the last (re)load
    fd, path = tempfile.mkstemp(prefix="config-", suffix=".yaml", dir=_snapshot_dir())
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    try:
        config = load_config(path)
    except ConfigError as error:
        os.remove(path)
        raise ConfigError(error.problems, source) from None
    return path, config


def _load_gateway_config():
    """The config this (re)load serves with: the new file when it validates; on a reload,
    the last good one otherwise (logged); at the first start, a bad file exits (2)."""
    previous = os.environ.get(_ACTIVE_CONFIG_ENV)
    own = _own_snapshot_dir()
    reloading = bool(own and previous and os.path.dirname(previous) == own
                     and os.path.exists(previous))
    try:
        path, config = _validated_snapshot()
    except ConfigError as error:
        if not reloading:
            sys.stderr.write(f"{error}\n")
            sys.exit(2)
        import logging
        logging.getLogger("plano.config").error(
            "config reload rejected, still serving the previous config: %s",
            "; ".join(error.problems),
            extra={"config_file": error.source, "problems": error.problems,
                   "serving": previous})
        return load_config(previous)
    os.environ[_ACTIVE_CONFIG_ENV] = path
    _prune_snapshots(keep=path)
    return config


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def _prune_snapshots(keep: str, count: int = _SNAPSHOTS_KEPT) -> None:
    """Remove all but the newest ``count`` snapshots (``keep`` among them). Not only the
    active one: a worker forked before a reload may still be loading its app from the
    previous snapshot, and a worker that cannot boot makes gunicorn halt the master."""
    directory = os.path.dirname(keep)
    snapshots = sorted(glob.glob(os.path.join(directory, "config-*.yaml")),
                       key=os.path.getmtime, reverse=True)
    for path in snapshots[count:]:
        if path != keep:
            os.remove(path)


_gateway_config = _load_gateway_config()
# Plano-config migrations are told here, in the master, at each (re)load; workers load
# silently.
for _warning in _gateway_config.warnings:
    sys.stderr.write(json.dumps({"level": "WARNING", "logger": "plano.config",
                                 "msg": _warning, "event": "config_migrated"}) + "\n")

_listener = _gateway_config.model_listener

bind = (f"{os.environ.get('PLANO_HOST') or _listener.address}:"
        f"{os.environ.get('PLANO_PORT') or _listener.port}")
workers = int(os.environ.get("PLANO_WORKERS", "2"))
worker_class = "gevent"
# Concurrent connections per gevent worker. The app reads the same variable
# (app/pools.py) and sizes its pools to it: the session cache's Redis pool
# (routing.session_cache.pool_size, unless set) and one upstream HTTP pool per provider
# base URL (scheme, host, port), so no request waits for a local connection.
worker_connections = int(os.environ.get("PLANO_WORKER_CONNECTIONS", "1000"))
# Exported so that workers (and the pools above) see the value gunicorn uses.
os.environ["PLANO_WORKER_CONNECTIONS"] = str(worker_connections)
preload_app = False
# PLANO_REUSE_PORT=1: every worker opens its own SO_REUSEPORT listener and the kernel spreads
# new connections over them by address hash. With the default shared listener, whichever
# worker wakes first accepts, and a burst of kept-alive connections (a client pool opening
# at once) can all land on one worker while the others idle. The price: a worker retired
# by a reload or restart drops the connections still queued on its own listener (clients
# see a reset) unless the kernel migrates them (Linux >= 5.14, sysctl
# net.ipv4.tcp_migrate_req=1). Off by default, so a SIGHUP never fails a request.
reuse_port = os.environ.get("PLANO_REUSE_PORT") == "1"
# gunicorn 27's control socket (for gunicornc) is not used by the gateway; left on, every
# gunicorn of this user shares ~/.gunicorn/gunicorn.ctl, so two gateways on one machine (the
# demo's processes, the tests' replicas) would fight over it.
control_socket_disable = True

# Heartbeat timeout for a worker (gevent workers notify while serving): a stuck worker is
# replaced. Provider calls are bounded separately by the listener's timeout.
timeout = 30
# SIGTERM: stop accepting, let in-flight requests (streams included) finish for this long.
graceful_timeout = int(os.environ.get("PLANO_GRACEFUL_TIMEOUT", "30"))
keepalive = 5

# Request limits enforced by gunicorn before the app sees a request (SPEC §8): a request
# line up to 8 KiB (longer: gunicorn's own 414), at most 100 headers of at most 8 KiB each
# (more or longer: gunicorn's own 431), control bytes in a header: gunicorn's own 400.
# Bodies are limited by the app (server.max_body_bytes -> 413).
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190

# Logs: JSON lines on stderr; gunicorn's access log only when PLANO_ACCESS_LOG=1 (the app
# writes its own JSON line per request, with the session, route and model).
errorlog = "-"
loglevel = os.environ.get("PLANO_LOG_LEVEL", "info")
accesslog = "-" if os.environ.get("PLANO_ACCESS_LOG") == "1" else None
proc_name = "plano-gateway"

_LOG_LEVEL = loglevel.upper()
# Log records without caller, thread and process fields: the JSON lines never write them,
# and every request makes one (inherited by the forked workers).
lean_log_records()
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "app.http.request_log.JsonFormatter"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                            "stream": "ext://sys.stderr"}},
    "root": {"level": _LOG_LEVEL, "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"level": _LOG_LEVEL, "handlers": ["stderr"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
        "plano.access": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
    },
}


class PlanoLogger(Logger):
    """gunicorn's logger, except that a ``logconfig_dict`` does not switch the access log on
    (gunicorn would build an access line per request, only to drop it)."""

    def _compute_access_log_enabled(self):
        return self.cfg.accesslog is not None


logger_class = PlanoLogger


def post_fork(server, worker):
    """In a new worker, before it loads the app: load the validated config snapshot (and
    remember the operator's file it copies, which ``GET /status`` names)."""
    os.environ[CONFIG_SOURCE_ENV_VAR] = _operator_config_path()
    os.environ[CONFIG_ENV_VAR] = os.environ[_ACTIVE_CONFIG_ENV]


def child_exit(server, worker):
    """In the master, when a worker is gone: drop its live-gauge files (counters and
    histograms of dead workers are kept, so totals never go backwards)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, _metrics_dir)


def worker_exit(server, worker):
    """In the worker, as it exits: flush the spans still queued for export."""
    from app.services import services_of

    services = services_of(getattr(worker, "wsgi", None))
    if services is not None and services.tracing is not None:
        services.tracing.shutdown()


def on_exit(server):
    """In the master, at shutdown: remove the metrics directory this run created."""
    _remove_metrics_dir()
