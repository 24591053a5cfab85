"""docs/client-apis.md's SDK example runs as written against the offline configuration
(config/offline.yaml: the mock upstream serves every model) and is pinned across APIs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from devkit.gateway import Gateway

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = re.compile(r"<!-- example: sdk -->\n```python\n(.*?)```", re.DOTALL)


def test_the_sdk_example_runs_offline_and_stays_pinned_across_apis(mock_llm, shared_redis,
                                                                   tmp_path):
    offline = yaml.safe_load((ROOT / "config" / "offline.yaml").read_text())
    port = mock_llm.base_url.rsplit(":", 1)[1].split("/")[0]
    env = {"MOCK_LLM_PORT": port, "SESSION_CACHE_TYPE": "redis",
           "REDIS_URL": shared_redis.url}
    script = tmp_path / "example.py"
    script.write_text(EXAMPLE.search((ROOT / "docs" / "client-apis.md").read_text()).group(1))
    with Gateway(offline, workers=2, env=env) as gateway:
        done = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=60,
            env={**os.environ, "PLANO_URL": gateway.url, "SESSION": f"docs-{time.time_ns()}"})
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("messages: anthropic/claude-sonnet-4-6 [mock-llm]")
    assert "responses: anthropic/claude-sonnet-4-6 true" in done.stdout
    assert lines[-1] == "chat: anthropic/claude-sonnet-4-6"
