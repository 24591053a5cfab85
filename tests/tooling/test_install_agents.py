"""bin/install_agents: where the agent CLIs live, and that a run with the pinned versions
already installed is a silent no-op (what .ci/run and developers repeat)."""
from __future__ import annotations

import os
import subprocess

import pytest

from devkit import ROOT, agents

INSTALL = ROOT / "bin" / "install_agents"


def run_install(*args: str, agents_dir) -> subprocess.CompletedProcess:
    return subprocess.run([str(INSTALL), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PLANO_AGENTS_DIR": str(agents_dir)}, check=False)


def test_path_names_the_project_local_bin_folder_and_installs_nothing(tmp_path):
    done = run_install("--path", agents_dir=tmp_path)
    assert done.returncode == 0
    assert done.stdout.strip() == str(tmp_path / "node_modules" / ".bin")
    assert not any(tmp_path.iterdir())


def test_a_run_with_the_pinned_versions_installed_is_silent():
    if agents.missing():
        pytest.skip("agent CLIs not installed: run bin/install_agents")
    done = run_install(agents_dir=agents.AGENTS_DIR)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
