"""``bin/bench --profile``: sample gateway workers with py-spy while a scenario runs.

py-spy is not a project dependency (``pip install py-spy`` into the venv to use this). Each
profiled scenario gets one extra, unmeasured load run at the highest concurrency while
``py-spy record --format raw --function`` samples every gunicorn worker; the collapsed
stacks land in ``.bench/profile-<scenario>-<pid>.txt`` (load them into speedscope or
flamegraph.pl) and :func:`summarize` turns them into a text report: where the CPU goes by
component (our code, Flask/Werkzeug, gunicorn, gevent, requests/urllib3, redis-py, json,
logging, ...) and the heaviest functions, self and inclusive.

Only samples of a busy thread are kept (py-spy drops idle ones), so the percentages are
shares of the worker's busy time, not of wall time. A second recording keeps only samples
holding the GIL: the Python work alone, without the time inside socket syscalls.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Iterable

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

#: (component, substrings of the file path), first match wins.
COMPONENTS = (
    ("app (ours)", ("/app/", "app/")),
    ("redis-py", ("redis/",)),
    ("requests/urllib3", ("requests/", "urllib3/")),
    ("http.client/email (stdlib)", ("http/client.py", "email/")),
    ("flask/werkzeug", ("flask/", "werkzeug/")),
    ("gunicorn", ("gunicorn/",)),
    ("gevent", ("gevent/",)),
    ("json", ("json/",)),
    ("logging", ("logging/",)),
    ("socket/ssl/selectors (stdlib)", ("socket.py", "ssl.py", "selectors.py")),
)


def find_py_spy() -> str | None:
    """``py-spy`` next to this interpreter, else on PATH."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.is_file() and os.access(local, os.X_OK) \
        else shutil.which("py-spy")


def start(py_spy: str, pids: Iterable[int], seconds: float, out_dir: Path,
          name: str) -> list[tuple[subprocess.Popen, Path]]:
    """Start two ``py-spy record`` per pid: every busy sample, and only those holding the
    GIL (``.gil.txt``: Python work, without time spent inside socket syscalls, which on a
    contended machine also absorbs scheduler preemption). Returns (process, path) pairs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    started = []
    for pid in pids:
        for suffix, extra in ((".txt", []), (".gil.txt", ["--gil"])):
            path = out_dir / f"profile-{name}-{pid}{suffix}"
            proc = subprocess.Popen(
                [py_spy, "record", "--pid", str(pid), "--duration",
                 str(max(1, round(seconds))), "--rate", "200", "--format", "raw",
                 "--function", "--nonblocking", *extra, "--output", str(path)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            started.append((proc, path))
    return started


def finish(started: list[tuple[subprocess.Popen, Path]], timeout: float) -> list[Path]:
    """Wait for the recorders; the output files that were written."""
    written = []
    for proc, path in started:
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if path.exists():
            written.append(path)
        elif err:
            print(f"  py-spy: {err.decode(errors='replace').strip()[:300]}", flush=True)
    return written


def parse_frame(frame: str) -> tuple[str, str]:
    """``(function, file)`` of one py-spy frame like ``get (app/x.py:12)``."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip(), ""
    return match.group("func"), match.group("file")


def component(file: str) -> str:
    """The component a source file belongs to."""
    for name, needles in COMPONENTS:
        if any(needle in file for needle in needles):
            if name == "app (ours)" and "site-packages" in file:
                continue
            return name
    return "other"


def short(file: str) -> str:
    """A file path without the site-packages / repo prefix."""
    for marker in ("site-packages/", "/work/main/", "lib/python3."):
        if marker in file:
            file = file.split(marker, 1)[1]
    return file


def load_stacks(paths: Iterable[Path]) -> Counter:
    """Collapsed stacks (``a;b;c count``) from py-spy raw files, summed."""
    stacks: Counter = Counter()
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                stacks[stack] += int(count)
    return stacks


def summarize(stacks: Counter, top: int = 25) -> list[str]:
    """Text report: busy samples by component (self time) and the heaviest functions."""
    total = sum(stacks.values())
    if not total:
        return ["no samples"]
    by_component: Counter = Counter()
    self_time: Counter = Counter()
    inclusive: Counter = Counter()
    for stack, count in stacks.items():
        frames = [parse_frame(f) for f in stack.split(";") if f]
        frames = [f for f in frames if not f[0].startswith("process ")
                  and not f[0].startswith("thread ")]
        if not frames:
            continue
        func, file = frames[-1]
        by_component[component(file)] += count
        self_time[f"{func} ({short(file)})"] += count
        for name in {f"{fn} ({short(fl)})" for fn, fl in frames}:
            inclusive[name] += count

    def pct(count: int) -> str:
        return f"{100.0 * count / total:5.1f}%"

    lines = [f"{total} busy samples", "self time by component:"]
    lines += [f"  {pct(c)}  {name}" for name, c in by_component.most_common()]
    lines.append(f"top {top} functions by self time:")
    lines += [f"  {pct(c)}  {name}" for name, c in self_time.most_common(top)]
    lines.append(f"top {top} functions of app/ by inclusive time:")
    ours = [(n, c) for n, c in inclusive.items() if " (app/" in n]
    lines += [f"  {pct(c)}  {name}" for name, c in sorted(ours, key=lambda x: -x[1])[:top]]
    lines.append(f"top {top} library functions by inclusive time:")
    libs = [(n, c) for n, c in inclusive.items() if " (app/" not in n]
    lines += [f"  {pct(c)}  {name}" for name, c in sorted(libs, key=lambda x: -x[1])[:top]]
    return lines
