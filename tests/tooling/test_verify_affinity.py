"""bin/verify_affinity.py's rounds (SPEC §9): with the demo's own config and router, every later
round of a session routes away from its first round, so a session that is routed afresh in
another process visibly changes model. No servers: the script is loaded from its path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from app.config import load_config
from app.router.embedded import EmbeddedRouter

SCRIPT = Path(__file__).resolve().parents[2] / "bin" / "verify_affinity.py"
OFFLINE_CONFIG = SCRIPT.parents[1] / "config" / "offline.yaml"


@pytest.fixture(scope="module")
def verify():
    """The script as a module (registered first: its dataclasses look their module up)."""
    spec = importlib.util.spec_from_file_location("verify_affinity_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


@pytest.fixture(scope="module")
def route_of():
    """The route the demo's gateway (offline config, embedded router) picks for a prompt."""
    router = EmbeddedRouter(load_config(OFFLINE_CONFIG, environ={}).routing_preferences)

    def route(prompt: str) -> str | None:
        chosen = router.select_route([{"role": "user", "content": prompt}])
        return chosen.name if chosen else None
    return route


@pytest.mark.parametrize("session", range(6))
def test_every_later_round_routes_to_another_route_than_the_first(verify, route_of, session):
    first = route_of(verify.session_prompt(session, 0))
    later = {route_of(verify.session_prompt(session, r)) for r in range(1, 12)}
    assert first in ("deep_reasoning", "fast_responses")
    assert len(later) == 1 and first not in later and None not in later


def test_sessions_alternate_their_first_route_so_pins_show_both_models(verify, route_of):
    firsts = [route_of(verify.session_prompt(s, 0)) for s in range(4)]
    assert firsts == ["fast_responses", "deep_reasoning"] * 2


def test_later_rounds_mix_several_prompts(verify):
    assert len({verify.session_prompt(0, r) for r in range(1, 7)}) > 1


def test_session_ids_carry_the_run_id_so_each_run_starts_without_pins(verify):
    assert verify.session_ids(2, "ab12cd") == ["demo-session-001-ab12cd", "demo-session-002-ab12cd"]
    assert set(verify.session_ids(3, "000001")).isdisjoint(verify.session_ids(3, "000002"))
