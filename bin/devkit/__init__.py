"""The developers' toolkit: what the demo, ``bin/bench`` and the test suite start and drive.

- :mod:`devkit.ports` — free loopback ports;
- :mod:`devkit.processes` — child processes started in their own session, polled for
  readiness (never slept for) and stopped by their own pid; pid records that a later
  command (``bin/run_demo.sh down``) can check and stop;
- :mod:`devkit.redis_servers` — the ``redis-server`` lookup, real servers, a Cluster, a
  Sentinel;
- :mod:`devkit.configs` — the gateway's test and bench configurations (the route
  descriptions live here, once);
- :mod:`devkit.stubs` — the mock upstream (``bin/mock_llm.py``) and its variants;
- :mod:`devkit.gateway` — the real gateway under gunicorn with a generated config;
- :mod:`devkit.load` — the one Python load generator (tests and ``bin/bench``);
- :mod:`devkit.demo` — ``bin/run_demo.sh``;
- :mod:`devkit.browser` — headless Chromium for the status page (tests, screenshots).
- :mod:`devkit.agents` — the real Claude Code and Codex CLIs (``bin/install_agents``) run
  headless against a base URL;
- :mod:`devkit.capture` — a logging proxy: what a client really sends, and the answer's
  headers.

Installed into ``.venv`` in editable mode from ``pyproject.toml`` (bin/ is its source
directory), so it imports as ``devkit`` everywhere.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "bin"
VENV_BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
