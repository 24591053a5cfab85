"""Upstream interface ``openai`` Responses (``{base_url}/responses``).

Only a Responses client goes here, and only natively: its body passes through with
``model`` rewritten (which is also the only way ``previous_response_id`` can work: the
state lives at OpenAI). What this module knows is the path and where ``model`` sits in the
stream (inside the ``response`` snapshot of ``response.created`` / ``.completed`` ...).
"""

from __future__ import annotations

PATH = "/responses"


def offers_responses(vendor: str, setting: str | None) -> bool:
    """Whether a provider takes Responses natively: ``responses: native | translate`` on
    the provider, else native for vendor ``openai`` only (SPEC §13)."""
    if setting is not None:
        return setting == "native"
    return vendor == "openai"
