"""``bin/mock_llm.py`` as a routing LLM for ``bin/bench``: answers ``{"route": NAME}``.

The gateway's LLM router sends its own headers, so the mock's per-request ``x-mock-route``
header cannot be set by the load generator. This wrapper runs the unmodified mock with that
header defaulted to ``--route`` on every request (an explicit header still wins), so each
routing call gets a valid route answer after ``--latency-ms``.

    python -m benchlib.routing_mock --route deep_reasoning --latency-ms 50 --port 0
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

MOCK_PATH = Path(__file__).resolve().parents[1] / "mock_llm.py"


def load_mock():
    """Import ``bin/mock_llm.py`` as a module (it is a script, not a package member)."""
    spec = importlib.util.spec_from_file_location("mock_llm", MOCK_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["mock_llm"] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    """Run the mock with every chat answer defaulting to ``{"route": <--route>}``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--route", required=True)
    args, rest = parser.parse_known_args(argv)
    mock = load_mock()
    plain_chat = mock.chat

    def routing_chat(state, req):
        req.headers.setdefault("x-mock-route", args.route)
        return plain_chat(state, req)

    mock.chat = routing_chat  # dispatch() looks chat up in the module at call time
    return mock.main(rest)


if __name__ == "__main__":
    sys.exit(main())
