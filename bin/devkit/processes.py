"""Child processes: started in their own session, waited for by polling, stopped by pid.

Every helper here signals only pids it started (or, for :class:`PidRecord`, a pid recorded
together with its start time, so a reused pid is never mistaken for ours). Readiness is
polled, never slept for. psutil keeps this portable (no ``/proc`` parsing).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import http.client
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import psutil

from devkit import HOST, ROOT

T = TypeVar("T")
_PR_SET_PDEATHSIG = 1
_RUNNING: set[Process] = set()


class ProcessError(RuntimeError):
    """A process could not be started or did not become ready."""


def wait_until(check: Callable[[], T], timeout: float, what: str, *,
               alive: Callable[[], object] = lambda: None,
               ignore: tuple[type[BaseException], ...] = (),
               interval: float = 0.02) -> T:
    """Poll ``check`` until it returns something truthy, and return that.

    ``alive`` is called between polls and may raise (a process that died ends the wait at
    once); exceptions of the ``ignore`` types count as "not yet". TimeoutError after
    ``timeout`` seconds, naming ``what`` and the last ignored error.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except ignore as error:
            last_error = error
        alive()
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}{detail}")
        time.sleep(interval)
        interval = min(interval * 1.5, 0.2)


def http_ok(port: int, path: str, timeout: float = 1.0, host: str = HOST) -> bool:
    """Whether ``GET path`` on ``host:port`` answers 200 right now."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


_PRCTL = getattr(ctypes.CDLL(None), "prctl", None) if sys.platform.startswith("linux") \
    else None
#: Children get SIGTERM when the process that started them dies (Linux). Off by default:
#: code run between fork and exec is unsafe while other threads run (the tests drive load
#: from a thread while they restart servers); ``bin/bench``, which starts its servers from
#: its only thread, turns it on so that a killed bench leaves no orphans.
DIE_WITH_PARENT = False


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux; elsewhere a no-op)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by those of ``pids`` still running."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def children(pid: int | None) -> list[int]:
    """The direct children of ``pid`` (a gunicorn master's workers); [] when it is gone."""
    if pid is None:
        return []
    try:
        return [child.pid for child in psutil.Process(pid).children()]
    except psutil.Error:
        return []


class Process:
    """One child process with a log file (and optionally a stdout pipe), stopped by its pid.

    Started in a session of its own, so a Ctrl-C in the terminal reaches only the command
    that started it, which then stops its children in order; anything still running at
    interpreter exit is stopped by an ``atexit`` hook (and see :data:`DIE_WITH_PARENT`).
    ``detached=True`` (the demo) does neither: the process outlives the command that
    started it, and a pid file is how a later command finds it.
    """

    def __init__(self, name: str, argv: list[str], *, log_path: Path,
                 env: dict | None = None, cwd: Path = ROOT, stdout_pipe: bool = False,
                 detached: bool = False):
        self.name = name
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.log_path = log_path
        self.stdout_pipe = stdout_pipe
        self.detached = detached
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        """The child's pid while it runs."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self) -> Process:
        """Start it (stderr, and stdout unless piped, appended to the log file)."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if self.stdout_pipe else log, stderr=log,
                start_new_session=True,
                preexec_fn=_die_with_parent if DIE_WITH_PARENT and not self.detached else None)
        if not self.detached:
            _RUNNING.add(self)
        return self

    def read_first_line(self, timeout: float) -> str:
        """The first stdout line (needs ``stdout_pipe``); ProcessError after ``timeout``."""
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline().decode(errors="replace") if ready else ""
        if not line:
            raise ProcessError(f"{self.name} printed nothing within {timeout:g}s"
                               f"{self.log_tail()}")
        return line

    def check_alive(self) -> None:
        """ProcessError with the log's tail when the process has exited."""
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise ProcessError(f"{self.name} exited (status {code}){self.log_tail()}")

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the process (only while it runs)."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM by pid, SIGKILL after ``grace`` seconds; the exit status. Idempotent."""
        proc, self.proc = self.proc, None
        _RUNNING.discard(self)
        if proc is None:
            return None
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
        return proc.returncode

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


@atexit.register
def _stop_all() -> None:
    for process in list(_RUNNING):
        process.stop(grace=3)


@dataclass(frozen=True)
class PidRecord:
    """A pid with its start time, written to a file so that a later command can stop it.

    The start time tells our process from a later one that reused the pid.
    """

    pid: int
    started: float

    @classmethod
    def of(cls, pid: int) -> PidRecord:
        """The record of the running process ``pid``."""
        return cls(pid, psutil.Process(pid).create_time())

    @classmethod
    def read(cls, path: Path) -> PidRecord | None:
        """The record in ``path``; None when there is none or it is unreadable."""
        try:
            pid, started = path.read_text().split()[:2]
            return cls(int(pid), float(started))
        except (OSError, ValueError):
            return None

    def write(self, path: Path) -> None:
        """Store the record in ``path``."""
        path.write_text(f"{self.pid} {self.started!r}\n")

    def process(self) -> psutil.Process | None:
        """The very process recorded, while it runs (a zombie counts as gone); else None."""
        try:
            process = psutil.Process(self.pid)
            if process.create_time() != self.started or \
                    process.status() == psutil.STATUS_ZOMBIE:
                return None
            return process
        except psutil.Error:
            return None
