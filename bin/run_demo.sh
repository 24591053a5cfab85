#!/usr/bin/env bash
# The session-affinity demo on one machine (SPEC §9); the work is done by bin/devkit/demo.py
# (usage, ports, process handling: see its docstring).
#   bin/run_demo.sh up [--cache memory|redis] [--workers N] [--port P]
#                      [--mock-port P] [--redis-port P]
#   bin/run_demo.sh down | status | redis-cli ARGS...
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/venv.sh"
ensure_venv
# Run as a module from bin/, so this checkout's devkit is the one imported.
cd "$PLANO_ROOT/bin"
exec "$PLANO_VENV/bin/python" -m devkit.demo "$@"
