"""The routing budget's arithmetic (SPEC §20, app/affinity/budget.py), with Plano's own cases
(katanemo/plano, brightstaff ``session_router`` tests): the same prices, contexts and
expected dollars."""

from __future__ import annotations

import pytest

from app.affinity import budget
from app.config import RoutingBudgetConfig
from app.usage.prices import Price

# Plano's test prices: `expensive` input 3.0 cached 0.3, `pricey` input 5.0 cached 0.5,
# `cheap` input 0.1 cached 0.01 (USD per million tokens).
PRICES = {"anthropic/expensive": Price(3.0, 0.3, 3.75, 15.0),
          "openai/pricey": Price(5.0, 0.5, 5.0, 15.0),
          "google/cheap": Price(0.1, 0.01, 0.1, 0.4)}
EXPENSIVE, PRICEY, CHEAP = "anthropic/expensive", "openai/pricey", "google/cheap"
NOW = 1_000_000.0
WINDOW = 300.0
CONTEXT = 100_000


def cap(pct: float, **options) -> RoutingBudgetConfig:
    return RoutingBudgetConfig(max_switch_spend_pct=pct, **options)


def warm_state(*, baseline: float, spend: float = 0.0, idle: float = 30.0,
               anchor: str = EXPENSIVE, default: str = EXPENSIVE,
               also_seen: dict | None = None) -> budget.BudgetState:
    """A session warm on ``anchor`` with a 100k-token context, as read from its totals."""
    bound_at = NOW - 600
    totals = {budget.F_BOUND_AT: bound_at, budget.F_LAST_USED: NOW - idle,
              budget.F_BASELINE: baseline, budget.F_SPEND: spend,
              budget.F_CONTEXT: CONTEXT, budget.F_DEFAULT + default: bound_at,
              budget.F_SEEN + anchor: NOW - idle, budget.F_TOKENS + anchor: CONTEXT}
    for model, (seen_at, tokens) in (also_seen or {}).items():
        totals[budget.F_SEEN + model] = seen_at
        totals[budget.F_TOKENS + model] = tokens
    return budget.BudgetState.from_totals(totals)


def judge(state, candidate, budget_config, now=NOW, price_of=PRICES.get):
    return budget.decide(state, candidate, budget=budget_config, price_of=price_of,
                         request_tokens=10, now=now, warm_window=WINDOW)


def test_paid_switch_within_the_cap_is_allowed_and_adds_its_cost_to_the_spend():
    verdict = judge(warm_state(baseline=2.0), PRICEY, cap(25))
    # Baseline 2.00 + this turn's 100k x 0.3/M = 2.03; ceiling 25 % = 0.5075 >= 0.47.
    assert (verdict.model, verdict.decision, verdict.reason) == (PRICEY, "allowed",
                                                                 "within_cap")
    assert verdict.cost_usd == pytest.approx(0.47)
    assert verdict.spend_usd == pytest.approx(0.47)
    assert verdict.baseline_usd == pytest.approx(2.03)
    assert verdict.switched


def test_paid_switch_over_the_cap_retains_the_current_model_and_spends_nothing():
    verdict = judge(warm_state(baseline=1.0), PRICEY, cap(25))
    assert (verdict.model, verdict.decision, verdict.reason) == (EXPENSIVE, "retained",
                                                                 "over_cap")
    assert verdict.spend_usd == 0.0
    assert not verdict.switched
    assert verdict.counterfactual is None


def test_a_retained_switch_names_its_counterfactual_only_when_asked():
    verdict = judge(warm_state(baseline=1.0), PRICEY, cap(25, record_counterfactual=True))
    assert verdict.counterfactual == PRICEY


def test_a_cheaper_candidate_is_a_free_switch_that_never_lowers_the_spend():
    verdict = judge(warm_state(baseline=1.0, spend=0.10), CHEAP, cap(25))
    assert (verdict.model, verdict.reason) == (CHEAP, "free")
    assert verdict.cost_usd < 0
    assert verdict.spend_usd == pytest.approx(0.10)


def test_zero_percent_still_allows_a_free_switch_and_retains_any_paid_one():
    assert judge(warm_state(baseline=50.0), CHEAP, cap(0)).reason == "free"
    assert judge(warm_state(baseline=50.0), PRICEY, cap(0)).reason == "over_cap"


def test_the_router_agreeing_with_the_current_model_is_same_anchor_and_grows_the_baseline():
    verdict = judge(warm_state(baseline=1.0), EXPENSIVE, cap(25))
    assert (verdict.model, verdict.decision, verdict.reason) == (EXPENSIVE, "allowed",
                                                                 "same_anchor")
    assert verdict.baseline_usd == pytest.approx(1.03)
    assert verdict.cost_usd is None and not verdict.switched


def test_a_cold_session_follows_the_router_and_starts_its_totals_afresh():
    verdict = judge(warm_state(baseline=5.0, spend=3.0, idle=600), PRICEY, cap(25))
    assert (verdict.model, verdict.decision, verdict.warm) == (PRICEY, None, False)
    assert (verdict.baseline_usd, verdict.spend_usd) == (0.0, 0.0)
    assert verdict.bound_at == NOW and verdict.default_model == PRICEY


def test_without_replenish_on_rebind_a_cold_session_keeps_its_totals_and_default():
    verdict = judge(warm_state(baseline=5.0, spend=3.0, idle=600), PRICEY,
                    cap(25, replenish_on_rebind=False))
    assert (verdict.model, verdict.warm) == (PRICEY, False)
    assert (verdict.baseline_usd, verdict.spend_usd) == (5.0, 3.0)
    assert verdict.default_model == EXPENSIVE


def test_a_session_bound_more_than_an_hour_ago_is_cold_however_busy():
    bound_at = NOW - budget.MAX_EPISODE_SECONDS - 1
    busy = budget.BudgetState.from_totals({
        budget.F_BOUND_AT: bound_at, budget.F_LAST_USED: NOW - 1, budget.F_BASELINE: 5.0,
        budget.F_SEEN + EXPENSIVE: NOW - 1, budget.F_TOKENS + EXPENSIVE: CONTEXT})
    verdict = judge(busy, PRICEY, cap(25))
    assert (verdict.warm, verdict.model, verdict.baseline_usd) == (False, PRICEY, 0.0)


def test_a_new_session_follows_the_router():
    verdict = judge(budget.BudgetState.from_totals(None), PRICEY, cap(1))
    assert (verdict.model, verdict.decision, verdict.warm) == (PRICEY, None, False)


def test_the_baseline_is_priced_on_the_default_model_not_the_current_one():
    # Started on `expensive`, now on `cheap`: staying would have cost 100k x 0.30/M.
    state = warm_state(baseline=0.0, anchor=CHEAP, default=EXPENSIVE)
    verdict = judge(state, CHEAP, cap(25))
    assert verdict.reason == "same_anchor"
    assert verdict.baseline_usd == pytest.approx(0.03)
    assert verdict.default_model == EXPENSIVE


def test_a_warm_return_charges_only_the_cached_delta():
    # `pricey` answered 30 s ago and still holds the 100k context: returning costs
    # 100k x (0.5 - 0.3)/M = 0.02, under the 25 % x 0.43 ceiling; a cold switch (0.47)
    # would not be.
    state = warm_state(baseline=0.40, also_seen={PRICEY: (NOW - 40, CONTEXT)})
    verdict = judge(state, PRICEY, cap(25))
    assert (verdict.model, verdict.reason) == (PRICEY, "within_cap")
    assert verdict.cost_usd == pytest.approx(0.02)
    cold_return = warm_state(baseline=0.40, also_seen={PRICEY: (NOW - 900, CONTEXT)})
    assert judge(cold_return, PRICEY, cap(25)).reason == "over_cap"


def test_a_missing_price_allows_the_switch():
    verdict = judge(warm_state(baseline=1.0), "openai/unpriced", cap(0))
    assert (verdict.model, verdict.reason) == ("openai/unpriced", "no_pricing")


def test_a_model_without_a_cheaper_cached_price_is_read_at_the_discount():
    assert budget.cached_rate(Price(2.0, 2.0, 2.0, 8.0), 0.1) == pytest.approx(0.2)
    assert budget.cached_rate(Price(2.0, 0.5, 2.0, 8.0), 0.1) == 0.5


def apply(totals: dict, verdict: budget.Verdict, now: float) -> dict:
    """What the gateway writes after the answer: the judgement and the activity."""
    return {**totals, **verdict.fields(), **budget.activity_fields(verdict.model, CONTEXT, now)}


def test_over_many_turns_the_spend_stays_within_the_cap_every_turn():
    """Plano's end-to-end case: 100k context, the router asks for `pricey` every turn; at
    25 % the switch becomes affordable exactly at warm turn 63 (0.25 x 0.03 x 63 >= 0.47),
    and after that a return to `expensive` is a free warm return."""
    config = cap(25)
    now = NOW
    verdict = judge(budget.BudgetState.from_totals(None), EXPENSIVE, config, now=now)
    totals = apply({}, verdict, now)
    first_switch = None
    for turn in range(1, 71):
        now += 1
        verdict = judge(budget.BudgetState.from_totals(totals), PRICEY, config, now=now)
        assert verdict.warm
        assert verdict.spend_usd <= 0.25 * verdict.baseline_usd + 1e-9, turn
        assert verdict.baseline_usd == pytest.approx(0.03 * turn)
        totals = apply(totals, verdict, now)
        if verdict.model == PRICEY:
            first_switch = turn
            assert verdict.spend_usd == pytest.approx(0.47)
            break
        assert verdict.model == EXPENSIVE and verdict.spend_usd == 0.0
    assert first_switch == 63
    now += 1
    back = judge(budget.BudgetState.from_totals(totals), EXPENSIVE, config, now=now)
    assert (back.model, back.reason) == (EXPENSIVE, "free")
    assert back.spend_usd == pytest.approx(0.47)
    assert back.spend_usd <= 0.25 * back.baseline_usd


def test_state_round_trips_through_the_usage_totals():
    verdict = judge(warm_state(baseline=2.0), PRICEY, cap(25))
    totals = apply({"requests": 3, "cost_usd": 1.5}, verdict, NOW)
    state = budget.BudgetState.from_totals(totals)
    assert state.current_model == PRICEY and state.default_model == EXPENSIVE
    assert state.spend_usd == pytest.approx(0.47)
    assert state.baseline_usd == pytest.approx(2.03)
    assert all(isinstance(value, (int, float)) for value in totals.values())
