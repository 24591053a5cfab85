"""The real coding agents, Claude Code and the Codex CLI, run headless against a base URL.

``bin/install_agents`` installs both (pinned versions) into the git-ignored ``.agents/``
folder (``PLANO_AGENTS_DIR`` overrides); :func:`missing` says which are not there. Each run
gets a fresh HOME (and CODEX_HOME) under the caller's folder and an environment without the
caller's Anthropic / OpenAI / Codex settings, so nothing but what is passed here reaches the
CLI: the base URL, a dummy key ``x`` (the gateway keeps its own provider keys) and, where a
test asks, extra headers or retry settings. Non-essential traffic (telemetry, update checks)
is switched off; both CLIs then call only the model API.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from devkit import ROOT

AGENTS_DIR = Path(os.environ.get("PLANO_AGENTS_DIR") or ROOT / ".agents")
AGENTS_BIN = AGENTS_DIR / "node_modules" / ".bin"
CLAUDE = AGENTS_BIN / "claude"
CODEX = AGENTS_BIN / "codex"
#: Settings of the caller's own agents that must not leak into a run.
_FOREIGN = ("ANTHROPIC_", "CLAUDE_", "OPENAI_", "CODEX_", "PLANO_", "DISABLE_")
#: Seconds a headless run may take before it is killed (a loop against the mock takes ~1 s).
RUN_TIMEOUT = 120


def missing() -> list[str]:
    """Names of the agent CLIs that are not installed."""
    return [path.name for path in (CLAUDE, CODEX) if not os.access(path, os.X_OK)]


@dataclass(frozen=True)
class Run:
    """One finished headless run: exit status, stdout and stderr together, its workspace."""
    returncode: int
    output: str
    workspace: Path


def _env(home: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN)}
    env.update(HOME=str(home), DISABLE_TELEMETRY="1", DISABLE_AUTOUPDATER="1",
               CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", NO_COLOR="1", **extra)
    return env


def _run(argv: list, workspace: Path, env: dict) -> Run:
    done = subprocess.run([str(a) for a in argv], cwd=workspace, env=env,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=RUN_TIMEOUT, check=False)
    return Run(done.returncode, done.stdout, workspace)


def _dirs(folder: Path) -> tuple[Path, Path]:
    home, workspace = folder / "home", folder / "workspace"
    home.mkdir(parents=True, exist_ok=True)
    workspace.mkdir(parents=True, exist_ok=True)
    return home, workspace


def run_claude(base_url: str, model: str, prompt: str, folder: Path, *,
               headers: dict | None = None, env: dict | None = None) -> Run:
    """``claude -p PROMPT --model MODEL`` with ``ANTHROPIC_BASE_URL=base_url``, allowed to
    use Bash, Read and Write without asking; ``headers`` go in ``ANTHROPIC_CUSTOM_HEADERS``
    (one ``Name: value`` a line), ``env`` adds variables (e.g. retry settings)."""
    home, workspace = _dirs(folder)
    extra = {"ANTHROPIC_BASE_URL": base_url, "ANTHROPIC_API_KEY": "x", **(env or {})}
    if headers:
        extra["ANTHROPIC_CUSTOM_HEADERS"] = "\n".join(f"{k}: {v}" for k, v in headers.items())
    argv = [CLAUDE, "-p", prompt, "--model", model, "--allowedTools", "Bash", "Read", "Write"]
    return _run(argv, workspace, _env(home, **extra))


def codex_config(base_url: str, model: str, *, headers: dict | None = None,
                 provider: dict | None = None) -> str:
    """A Codex ``config.toml``: one Responses ``model_provider`` at ``base_url`` + ``/v1``
    (the gateway), its key from ``PLANO_GATEWAY_KEY``, ``headers`` as its ``http_headers``,
    ``provider`` adding settings (e.g. ``stream_max_retries``); web search off."""
    lines = [f"model = {json.dumps(model)}", 'model_provider = "gateway"',
             'web_search = "disabled"', "", "[model_providers.gateway]",
             'name = "Plano gateway"', f"base_url = {json.dumps(base_url + '/v1')}",
             'wire_api = "responses"', 'env_key = "PLANO_GATEWAY_KEY"']
    if headers:
        table = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in headers.items())
        lines.append(f"http_headers = {{ {table} }}")
    lines += [f"{key} = {json.dumps(value)}" for key, value in (provider or {}).items()]
    return "\n".join(lines) + "\n"


def run_codex(base_url: str, model: str, prompt: str, folder: Path, *,
              headers: dict | None = None, provider: dict | None = None) -> Run:
    """``codex exec PROMPT`` (no approvals, no sandbox, outside a git repository) with the
    :func:`codex_config` of ``base_url`` and ``model`` in a fresh ``CODEX_HOME``."""
    home, workspace = _dirs(folder)
    (home / "config.toml").write_text(codex_config(base_url, model, headers=headers,
                                                   provider=provider))
    argv = [CODEX, "exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox",
            prompt]
    return _run(argv, workspace, _env(home, CODEX_HOME=str(home), PLANO_GATEWAY_KEY="x"))
