"""Plano's routing budget (SPEC §20) as pure arithmetic: may a warm session change model?

Affinity keeps a provider's prompt cache warm; switching a warm session to another model
makes that model read the whole conversation at its uncached price. The budget lets a
session switch only while what it spent on switching stays within ``max_switch_spend_pct``
percent of what never switching would have cost. The router decides whether a switch helps
quality; this module decides whether it is affordable. Same rules as Plano's
``session_router`` (``katanemo/plano``, brightstaff), re-stated here:

* **Warm**: the session was last active less than ``warm_window_seconds`` ago and its warm
  episode (the binding) started at most :data:`MAX_EPISODE_SECONDS` ago. A cold session
  follows the router and starts a new episode: its totals start afresh unless
  ``replenish_on_rebind`` is off, and the model it starts on becomes its *default*.
* **Baseline**: each warm user turn adds the conversation's tokens at the default model's
  cached price (what staying would cost: the never-switch path stays warm).
* **Switch cost**: the conversation's tokens at the candidate's price minus the same tokens
  at the current model's cached price. Tokens the candidate still holds from its own earlier
  visit in this session (still within its warm window) count at its cached price, so a warm
  return (A -> B -> A) pays only for what was added since.
* **Gate**: ``cost <= 0``: a free switch, spend unchanged (never decreases); else allowed
  while ``spend + cost <= pct / 100 * baseline`` (the cost is added to the spend), else the
  session is retained on its model. A model without a price allows the switch
  (``no_pricing``): the budget never vetoes on guesswork.

Prices are USD per million tokens (:class:`app.usage.prices.Price`). A model's cached price
is its ``cached_input``, or ``input * cache_read_discount`` when the price has no cheaper
cached rate (the table falls back to ``input`` when a vendor publishes none).

The session's state lives in its usage totals hash (SPEC §19, key ``usage:<session key>``)
as numeric fields prefixed ``budget_`` (:data:`FIELD_PREFIX`): :class:`BudgetState` reads
them, :meth:`Verdict.fields` and :func:`activity_fields` say what to write back once the
answer is sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from app.config import RoutingBudgetConfig
from app.usage.prices import Price

#: A warm episode ends at most this long after it started, however busy (SPEC §20).
MAX_EPISODE_SECONDS = 3600.0
TOKENS_PER_MILLION = 1_000_000.0

ALLOWED = "allowed"
RETAINED = "retained"
#: The bounded ``reason`` label values of ``plano_session_switch_decisions_total``.
REASONS = ("same_anchor", "free", "within_cap", "over_cap", "no_pricing")
DECISIONS = ((ALLOWED, "same_anchor"), (ALLOWED, "free"), (ALLOWED, "within_cap"),
             (RETAINED, "over_cap"), (ALLOWED, "no_pricing"))

FIELD_PREFIX = "budget_"
F_BOUND_AT = "budget_bound_at"
F_LAST_USED = "budget_last_used"
F_BASELINE = "budget_baseline_usd"
F_SPEND = "budget_switch_spend_usd"
F_CONTEXT = "budget_context_tokens"
#: Per model: when it last answered in this session, how many prompt tokens it read then,
#: and (equal to ``budget_bound_at``) that it is the default of the current episode.
F_SEEN = "budget_seen:"
F_TOKENS = "budget_tokens:"
F_DEFAULT = "budget_default:"


def cached_rate(price: Price, cache_read_discount: float) -> float:
    """USD per million cached input tokens of ``price``."""
    if price.cached_input < price.input:
        return price.cached_input
    return price.input * cache_read_discount


def switch_cost_usd(context_tokens: int, candidate_warm_tokens: int, current_read_rate: float,
                    candidate_uncached_rate: float, candidate_cached_rate: float) -> float:
    """What moving ``context_tokens`` from the current model (read at its cached rate) to
    the candidate costs extra, in USD; negative when the candidate is outright cheaper.
    ``candidate_warm_tokens`` of them (at most all) are still cached at the candidate."""
    warm = min(candidate_warm_tokens, context_tokens)
    fresh = context_tokens - warm
    candidate = fresh * candidate_uncached_rate + warm * candidate_cached_rate
    return (candidate - context_tokens * current_read_rate) / TOKENS_PER_MILLION


@dataclass(frozen=True, slots=True)
class BudgetState:
    """A session's budget state as read from its usage totals (all zero when new)."""

    bound_at: float = 0.0
    last_used: float = 0.0
    baseline_usd: float = 0.0
    spend_usd: float = 0.0
    context_tokens: int = 0
    #: model -> (when it last answered, prompt tokens it read then)
    seen: Mapping[str, tuple[float, int]] = field(default_factory=dict)
    default_model: str | None = None

    @classmethod
    def from_totals(cls, totals: Mapping[str, int | float] | None) -> BudgetState:
        """The state kept in a usage-totals mapping (``None``: a session never seen)."""
        if not totals:
            return cls()
        bound_at = float(totals.get(F_BOUND_AT, 0) or 0)
        seen: dict[str, tuple[float, int]] = {}
        default = None
        for name, value in totals.items():
            if name.startswith(F_SEEN):
                model = name[len(F_SEEN):]
                seen[model] = (float(value), int(totals.get(F_TOKENS + model, 0) or 0))
            elif name.startswith(F_DEFAULT) and bound_at and float(value) == bound_at:
                default = name[len(F_DEFAULT):]
        return cls(bound_at=bound_at, last_used=float(totals.get(F_LAST_USED, 0) or 0),
                   baseline_usd=float(totals.get(F_BASELINE, 0) or 0),
                   spend_usd=float(totals.get(F_SPEND, 0) or 0),
                   context_tokens=int(totals.get(F_CONTEXT, 0) or 0), seen=seen,
                   default_model=default)

    @property
    def current_model(self) -> str | None:
        """The model that answered the session last (its warm anchor)."""
        if not self.seen:
            return None
        return max(self.seen.items(), key=lambda item: item[1][0])[0]

    def warm(self, now: float, warm_window: float) -> bool:
        """Whether the session's cache is taken to be warm at ``now``."""
        return (self.last_used > 0 and self.bound_at > 0
                and now - self.last_used < warm_window
                and now - self.bound_at <= MAX_EPISODE_SECONDS)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome for one user turn.

    ``model``: the model to serve (the candidate, or the current one when retained).
    ``decision`` / ``reason``: ``None`` when nothing was judged (a cold or new session),
    else :data:`ALLOWED` or :data:`RETAINED` and one of :data:`REASONS`. ``cost_usd``: the
    switch cost when it was priced. ``counterfactual``: the model a retained switch would
    have taken (only with ``record_counterfactual``). The totals are those after the turn.
    """

    model: str
    decision: str | None
    reason: str | None
    cost_usd: float | None
    warm: bool
    baseline_usd: float
    spend_usd: float
    bound_at: float
    default_model: str
    counterfactual: str | None = None

    @property
    def switched(self) -> bool:
        """Whether the session changes model on this turn (a warm, allowed switch)."""
        return self.decision == ALLOWED and self.reason != "same_anchor"

    def fields(self) -> dict[str, float]:
        """The state fields to write into the session's usage totals."""
        return {F_BOUND_AT: self.bound_at, F_BASELINE: self.baseline_usd,
                F_SPEND: self.spend_usd, F_DEFAULT + self.default_model: self.bound_at}


def activity_fields(model: str, prompt_tokens: int, now: float) -> dict[str, float]:
    """The fields an answer from ``model`` that read ``prompt_tokens`` sets at ``now``."""
    return {F_LAST_USED: now, F_CONTEXT: prompt_tokens, F_SEEN + model: now,
            F_TOKENS + model: prompt_tokens}


def decide(state: BudgetState, candidate: str, *, budget: RoutingBudgetConfig,
           price_of: Callable[[str], Price | None], request_tokens: int, now: float,
           warm_window: float) -> Verdict:
    """Judge the router's ``candidate`` for a user turn of a session in ``state``.

    ``request_tokens``: the conversation's size estimated from the request (characters /
    4), used when no earlier answer reported usage; ``price_of``: a model's price or
    ``None``.
    """
    current = state.current_model
    if current is None or not state.warm(now, warm_window):
        if budget.replenish_on_rebind or state.bound_at == 0:
            return Verdict(candidate, None, None, None, False, 0.0, 0.0, now, candidate)
        # Totals carried into the new episode, and its default with them.
        return Verdict(candidate, None, None, None, False, state.baseline_usd,
                       state.spend_usd, now, state.default_model or candidate)

    default = state.default_model or current
    tokens = state.context_tokens or request_tokens
    discount = budget.cache_read_discount
    baseline = state.baseline_usd
    default_price = price_of(default)
    if default_price is not None:
        baseline += tokens * cached_rate(default_price, discount) / TOKENS_PER_MILLION
    spend = state.spend_usd

    def verdict(model: str, decision: str, reason: str, cost: float | None,
                new_spend: float, counterfactual: str | None = None) -> Verdict:
        return Verdict(model, decision, reason, cost, True, baseline, new_spend,
                       state.bound_at, default, counterfactual)

    if candidate == current:
        return verdict(current, ALLOWED, "same_anchor", None, spend)
    current_price, candidate_price = price_of(current), price_of(candidate)
    if current_price is None or candidate_price is None:
        return verdict(candidate, ALLOWED, "no_pricing", None, spend)
    warm_tokens = 0
    if candidate in state.seen:
        seen_at, seen_tokens = state.seen[candidate]
        if now - seen_at < warm_window:
            warm_tokens = min(seen_tokens, tokens)
    cost = switch_cost_usd(tokens, warm_tokens, cached_rate(current_price, discount),
                           candidate_price.input, cached_rate(candidate_price, discount))
    if cost <= 0:
        return verdict(candidate, ALLOWED, "free", cost, spend)
    if spend + cost <= budget.max_switch_spend_pct / 100.0 * baseline:
        return verdict(candidate, ALLOWED, "within_cap", cost, spend + cost)
    return verdict(current, RETAINED, "over_cap", cost, spend,
                   candidate if budget.record_counterfactual else None)
