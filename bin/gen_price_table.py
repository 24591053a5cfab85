#!/usr/bin/env python3
"""Regenerate app/usage/price_table.json from the pinned genai-prices package (SPEC §19).

The gateway never imports genai-prices at run time: importing it costs a worker about
0.8 s and 30 MB (pydantic models of every provider's prices), and it would bring pydantic
and httpx into the runtime image. This script turns the package's bundled snapshot into a
small JSON table that app/usage/prices.py reads at start-up (a few milliseconds):

    .venv/bin/python bin/gen_price_table.py      # after bumping genai-prices in requirements.txt

For each genai-prices provider that a catalogue vendor maps to (and the providers those fall
back to, e.g. Azure -> OpenAI), every model's match rule and its prices as in force today
(the last active conditional price; a tiered price's base) in USD per million tokens:
input, cached_input (cache reads), cache_write, output. Nothing is fetched from the network.
"""

from __future__ import annotations

import datetime
import json
import sys
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "app" / "usage" / "price_table.json"
sys.path.insert(0, str(ROOT))

from app.usage.prices import VENDOR_PROVIDERS  # noqa: E402


def _clause(match) -> dict:
    """A genai-prices match clause as plain JSON (``{"or": [...]}``, ``{"starts_with": s}``)."""
    name = type(match).__name__
    if name == "ClauseOr":
        return {"or": [_clause(c) for c in match.or_]}
    if name == "ClauseAnd":
        return {"and": [_clause(c) for c in match.and_]}
    for key in ("equals", "starts_with", "ends_with", "contains", "regex"):
        if hasattr(match, key):
            return {key: getattr(match, key)}
    raise ValueError(f"unknown match clause {name}")


def _number(value) -> float | None:
    if value is None:
        return None
    if hasattr(value, "base"):  # TieredPrices: the price below the first tier
        value = value.base
    return float(Decimal(value))


def _prices(model, now: datetime.datetime) -> dict:
    price = model.get_prices(now)
    return {"input": _number(getattr(price, "input_mtok", None)),
            "cached_input": _number(getattr(price, "cache_read_mtok", None)),
            "cache_write": _number(getattr(price, "cache_write_mtok", None)),
            "output": _number(getattr(price, "output_mtok", None))}


def build() -> dict:
    from genai_prices import data

    now = datetime.datetime.now(datetime.timezone.utc)
    wanted = set(VENDOR_PROVIDERS.values())
    by_id = {provider.id: provider for provider in data.providers}
    for provider_id in list(wanted):
        wanted.update(by_id[provider_id].fallback_model_providers or ())
    providers = {}
    for provider_id in sorted(wanted):
        provider = by_id[provider_id]
        models = []
        for model in provider.models:
            prices = _prices(model, now)
            if prices["input"] is None and prices["output"] is None:
                continue
            models.append({"id": model.id, "match": _clause(model.match), "prices": prices})
        providers[provider_id] = {"fallback": list(provider.fallback_model_providers or ()),
                                  "models": models}
    return {"source": f"genai-prices {version('genai-prices')}",
            "generated": now.date().isoformat(), "unit": "USD per million tokens",
            "providers": providers}


def main() -> int:
    table = build()
    OUT.write_text(json.dumps(table, indent=0, sort_keys=True) + "\n")
    count = sum(len(p["models"]) for p in table["providers"].values())
    print(f"wrote {OUT.relative_to(ROOT)}: {count} models of {len(table['providers'])} "
          f"providers from {table['source']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
