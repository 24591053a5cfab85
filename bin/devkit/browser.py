"""A real browser for the status page (SPEC §21): headless Chromium from the OS packages.

The test suite loads ``/status`` with :func:`dump_dom` (the DOM as the browser built it) and
the docs' screenshot is taken with :func:`screenshot`, by the same binary. Chromium is looked
up on PATH (Debian: ``apt-get install chromium``; ``.ci/run`` installs it when missing).

HTTP Basic credentials go in the URL's user-info part (``http://user:token@host/status``):
the browser turns them into an ``Authorization`` header and never sends them in the request
line, so they reach no access log. That is for these local tools only; a person types the
token into the browser's login prompt.

    python -m devkit.browser URL --screenshot PATH [--width W] [--height H]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: Names the OS packages give the binary (Debian, Ubuntu's snap wrapper, Google's build).
BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = "apt-get update && apt-get install -y chromium"
#: Seconds a page load (and the process) may take.
TIMEOUT_SECONDS = 60.0


class BrowserError(RuntimeError):
    """Chromium is missing, failed or took too long."""


def find_chromium() -> str | None:
    """The Chromium binary on PATH, or ``None``."""
    for name in BINARIES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    binary = find_chromium()
    if binary is None:
        raise BrowserError(f"no Chromium on PATH (Debian: {INSTALL_HINT})")
    with tempfile.TemporaryDirectory(prefix="plano-chromium-") as profile:
        # --no-sandbox: CI containers run as root, where Chromium's sandbox refuses to start.
        argv = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
                *args]
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BrowserError(f"chromium did not finish within {timeout:g}s") from None
    if result.returncode != 0:
        raise BrowserError(f"chromium exited with {result.returncode}: "
                           f"{result.stderr.strip()[-600:]}")
    return result


def dump_dom(url: str, timeout: float = TIMEOUT_SECONDS) -> str:
    """The page's DOM after loading ``url``, serialised as HTML."""
    return _run(["--dump-dom", url], timeout).stdout


def screenshot(url: str, path: Path, width: int = 1280, height: int = 1000,
               timeout: float = TIMEOUT_SECONDS) -> Path:
    """A PNG of ``url`` as a ``width`` x ``height`` window shows it."""
    path = Path(path).resolve()
    _run([f"--screenshot={path}", f"--window-size={width},{height}", url], timeout)
    if not path.exists() or path.stat().st_size == 0:
        raise BrowserError(f"chromium wrote no screenshot to {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devkit.browser", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--screenshot", type=Path, required=True, help="PNG to write")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args(argv)
    try:
        print(screenshot(args.url, args.screenshot, args.width, args.height))
    except BrowserError as error:
        print(f"browser: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
