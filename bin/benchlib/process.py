"""Child processes of ``bin/bench``: started in their own session, stopped by their own pid.

Every process is started by us, in its own session (a Ctrl-C in the terminal reaches only
``bin/bench``, which then stops everything in order), with ``PR_SET_PDEATHSIG`` so that a
killed ``bin/bench`` does not leave orphans, and is stopped by its own pid only: SIGTERM,
then SIGKILL after a grace period. Readiness is polled, never slept for.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "bin"
VENV_BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


class ServerError(RuntimeError):
    """A process could not be started or did not become ready."""


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when ``bin/bench`` dies (Linux only)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def bench_env(**extra: str) -> dict:
    """The environment for child processes: ours, plus ``extra``.

    Without ``OTEL_*`` (tracing stays off), ``PLANO_*`` (the bench sets its own) and
    ``PROMETHEUS_MULTIPROC_DIR`` (each gunicorn makes its own metrics directory instead of
    emptying the caller's).
    """
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("OTEL_", "PLANO_", "PROMETHEUS_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(BIN), str(ROOT)])
    env.update(extra)
    return env


class Process:
    """One child process with a log file; stopped by its own pid."""

    def __init__(self, name: str, argv: list[str], *, log_dir: Path, env: dict | None = None,
                 cwd: Path = ROOT, stdout_pipe: bool = False):
        self.name = name
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.log_path = log_dir / f"{name}.log"
        self.stdout_pipe = stdout_pipe
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        """The child's pid while it runs."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self) -> "Process":
        """Start the process (stderr, and stdout unless piped, to the log file)."""
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if self.stdout_pipe else log, stderr=log,
                start_new_session=True, preexec_fn=_die_with_parent)
        finally:
            log.close()
        return self

    def read_first_line(self, timeout: float) -> str:
        """The first stdout line (needs ``stdout_pipe``), or ServerError after ``timeout``."""
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline().decode(errors="replace") if ready else ""
        if not line:
            raise ServerError(f"{self.name} printed nothing within {timeout:.0f}s"
                              f"{self.log_tail()}")
        return line

    def check_alive(self) -> None:
        """ServerError with the log tail when the process has exited."""
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise ServerError(f"{self.name} exited (status {code}){self.log_tail()}")

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM by pid, SIGKILL after ``grace`` seconds; idempotent."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=grace)
        if proc.stdout is not None:
            proc.stdout.close()

    def log_tail(self, lines: int = 25) -> str:
        """The end of the log file, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace").rstrip()
        except OSError:
            return ""
        if not text:
            return " (log empty)"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"\n--- last lines of {self.log_path} ---\n{tail}"


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by ``pids`` (those still running)."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        total += int(fields[11]) + int(fields[12])     # utime, stime (fields 14, 15)
    return total / os.sysconf("SC_CLK_TCK")


def http_get_ok(port: int, path: str, timeout: float = 1.0) -> bool:
    """Whether ``GET path`` on loopback answers 200 right now."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def wait_until(check: Callable[[], bool], timeout: float, what: str,
               alive: Callable[[], None] = lambda: None) -> None:
    """Poll ``check`` until true; ServerError after ``timeout`` (``alive`` may raise)."""
    deadline = time.monotonic() + timeout
    interval = 0.02
    while not check():
        alive()
        if time.monotonic() >= deadline:
            raise ServerError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
        interval = min(interval * 1.5, 0.25)


