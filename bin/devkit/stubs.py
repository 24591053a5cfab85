"""Stand-ins for the gateway's upstreams, as real processes on a free loopback port.

:class:`Stub` runs ``bin/mock_llm.py``: the mock OpenAI upstream, also the bench's routing
LLM (``--route NAME``) and OTLP collector. It binds port 0, prints ``... listening on
http://HOST:PORT`` as its first line and answers ``GET /health``.
"""

from __future__ import annotations

import atexit
import re
import shutil
import sys
import tempfile
from pathlib import Path

import requests

from devkit import BIN
from devkit.ports import Listener
from devkit.processes import Process, ProcessError, http_ok, wait_until

_LISTENING = re.compile(r"listening on http://[^ ]+:(\d+)")


def scratch_dir() -> Path:
    """A temporary directory for logs and configs, removed at interpreter exit."""
    path = Path(tempfile.mkdtemp(prefix="plano-devkit-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


class Stub(Listener):
    """``bin/mock_llm.py ARGS`` on a free port."""

    def __init__(self, *args: str, name: str = "mock", log_dir: Path | None = None,
                 env: dict | None = None):
        self.name = name
        self.process = Process(name, [sys.executable, str(BIN / "mock_llm.py"), "--port", "0",
                                      "--quiet", *args],
                               log_path=(log_dir or scratch_dir()) / f"{name}.log",
                               env=env, stdout_pipe=True)
        self.port = 0

    @property
    def base_url(self) -> str:
        """What a provider's ``base_url`` should be to reach this stub."""
        return f"{self.url}/v1"

    def pids(self) -> list[int]:
        """The stub's pid while it runs."""
        return [pid for pid in [self.process.pid] if pid]

    def start(self, timeout: float = 15.0) -> Stub:
        """Start, read the port from the first line, wait for ``/health``."""
        self.process.start()
        try:
            line = self.process.read_first_line(timeout)
            match = _LISTENING.search(line)
            if not match:
                raise ProcessError(f"{self.name}: unexpected first line {line!r}")
            self.port = int(match.group(1))
            wait_until(lambda: http_ok(self.port, "/health"), timeout, f"{self.name} /health",
                       alive=self.process.check_alive)
        except BaseException:
            self.process.stop()
            raise
        return self

    def requests(self) -> list[dict]:
        """The requests the mock recorded (newest last)."""
        return requests.get(f"{self.url}/_mock/requests", timeout=5).json()

    def clear(self) -> None:
        """Forget the recorded requests."""
        requests.delete(f"{self.url}/_mock/requests", timeout=5)

    def stop(self) -> None:
        """Stop the process (idempotent)."""
        self.process.stop()

    def __enter__(self) -> Stub:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
