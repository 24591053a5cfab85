"""The embedded router (SPEC §5): a small, explainable lexical scorer, no network.

It scores the latest user message (harness envelopes stripped, its last
:data:`TEXT_BUDGET_CHARS` characters) against every route and answers the best route whose
score is above a threshold, else "no match". Everything a route contributes is computed
once in ``__init__``; a request costs one tokenisation of one message and a few dict
lookups per route (microseconds).

How a score is made:

1. *Terms.* Text is lower-cased and split into words (``[a-z0-9]+``); a small English
   stop-word list is dropped; each word is lightly stemmed (:func:`stem`: ``-s``, ``-es``,
   ``-ies``, ``-ing``, ``-ed``, ``-ly``, ``-tion`` -> ``-t`` and a final ``-e``), so
   "equations" and "equation" are one term, as are "derive" and "derived".
2. *Route vocabulary.* Each route gives weighted terms: its name split on ``_``/``-``
   (:data:`NAME_WEIGHT`), its description (:data:`DESCRIPTION_WEIGHT`) and its optional
   ``keywords`` (:data:`KEYWORD_WEIGHT`, the strongest: an operator wrote them to match).
   A term present in several fields keeps its highest weight.
3. *Synonyms.* A deliberately small, fixed table (:data:`SYNONYMS`) adds the concept a
   word stands for: "hi", "hello", "thanks" -> "greeting"; "explain", "detail" ->
   "explanation"; "math" -> "mathematics"; "poem", "haiku" -> "creative", "snippet"; ...
   Without it, a two-letter greeting could never match a route described as "greetings".
   It is a heuristic, applied the same way to routes and messages, and kept short on
   purpose so every decision can be explained by reading this module.
4. *Score.* Each distinct term of the message contributes the route weight of its best
   match (the term itself or one of its synonyms), at most once. The sum is divided by the
   square root of the number of distinct message terms, so a long message does not win by
   sheer length while one that is mostly on topic scores high.
5. *Decision.* The highest score strictly above ``threshold`` wins; equal scores go to the
   route listed first. Nothing above the threshold means "no match" (``None``).
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Mapping, Sequence

from app.config import RouteConfig
from app.router.base import Router, latest_user_text, newest_chars

DEFAULT_THRESHOLD = 0.35
#: How much of the latest user text is scored: its last 8192 characters (the LLM router's
#: default budget, 2048 tokens of 4 characters). A longer turn keeps its end, where an
#: agent's prompt sits after the context its harness put first.
TEXT_BUDGET_CHARS = 8192
"""With description words weighing 1, one matching word needs a message of at most 8
distinct content words to count, two matching words at most 32; a keyword counts double."""

KEYWORD_WEIGHT = 2.0
NAME_WEIGHT = 1.5
DESCRIPTION_WEIGHT = 1.0

STOP_WORDS = frozenset("""
    a about above after again all am an and any are as at be been before being below
    between both but by can could did do does doing down during each few for from further
    had has have having he her here hers him his how i if in into is it its itself just
    me more most my no nor not now of off on once only or other our out over own please
    same she should so some such than that the their them then there these they this
    those through to too under until up very was we were what when where which while who
    whom why will with would you your yours
""".split())

# Ordered: the first suffix that fits is stripped (longer endings before their tails).
# "ss", "us" and "is" map to themselves so "class", "status", "analysis" keep their "s".
_SUFFIX_RULES = (
    ("tions", "t"), ("tion", "t"), ("ies", "y"), ("ings", ""), ("ing", ""),
    ("edly", ""), ("ed", ""), ("ly", ""), ("sses", "ss"), ("xes", "x"), ("ches", "ch"),
    ("shes", "sh"), ("ss", "ss"), ("us", "us"), ("is", "is"), ("s", ""),
)
_MIN_STEM_LENGTH = 3

SYNONYMS: Mapping[str, tuple[str, ...]] = {
    "hi": ("greeting",), "hello": ("greeting",), "hey": ("greeting",),
    "hiya": ("greeting",), "howdy": ("greeting",), "thanks": ("greeting",),
    "thank": ("greeting",), "thx": ("greeting",), "bye": ("greeting",),
    "goodbye": ("greeting",),
    "explain": ("explanation",), "detail": ("explanation",), "detailed": ("explanation",),
    "math": ("mathematics",), "maths": ("mathematics",), "algebra": ("mathematics",),
    "calculus": ("mathematics",), "formula": ("equation",),
    "prove": ("reasoning",), "proof": ("reasoning",), "derive": ("reasoning",),
    "poem": ("creative", "snippet"), "haiku": ("creative", "snippet"),
    "limerick": ("creative", "snippet"), "joke": ("creative", "snippet"),
    "slogan": ("creative", "snippet"), "tagline": ("creative", "snippet"),
    "brief": ("short",), "briefly": ("short",), "easy": ("simple",), "basic": ("simple",),
}
"""Word -> concepts it stands for (see the module docstring, step 3). Keys and values
are plain words; they are stemmed like everything else when a router is built."""

_WORD_PATTERN = re.compile(r"[a-z0-9]+")


def stem(word: str) -> str:
    """Strip one common English suffix (and a final ``e``) from a lower-case ``word``.

    Deliberately cruder than Porter: it only has to map a word and its inflections to the
    same string, on both the route side and the message side.
    """
    if len(word) <= _MIN_STEM_LENGTH:
        return word
    for suffix, replacement in _SUFFIX_RULES:
        if word.endswith(suffix) and len(word) - len(suffix) >= _MIN_STEM_LENGTH:
            word = word[:-len(suffix)] + replacement
            break
    if word.endswith("e") and len(word) > _MIN_STEM_LENGTH:
        word = word[:-1]
    return word


def terms(text: str) -> list[str]:
    """The stemmed content words of ``text``, in order (stop words removed)."""
    return [stem(word) for word in _WORD_PATTERN.findall(text.lower())
            if word not in STOP_WORDS]


def _stemmed_synonyms(table: Mapping[str, Iterable[str]]) -> dict[str, tuple[str, ...]]:
    expansions: dict[str, tuple[str, ...]] = {}
    for word, concepts in table.items():
        stemmed = tuple(stem(concept) for concept in concepts)
        key = stem(word)
        # Two raw words may share a stem ("thank", "thanks"): keep every concept once.
        expansions[key] = tuple(dict.fromkeys(expansions.get(key, ()) + stemmed))
    return expansions


class EmbeddedRouter(Router):
    """Lexical router: no I/O, deterministic, microseconds per call (see module docs)."""

    kind = "embedded"

    def __init__(self, routes: Sequence[RouteConfig], threshold: float = DEFAULT_THRESHOLD):
        self.routes = tuple(routes)
        self.threshold = threshold
        self._synonyms = _stemmed_synonyms(SYNONYMS)
        self._weights = tuple(self._route_weights(route) for route in self.routes)

    def for_routes(self, routes: Sequence[RouteConfig]) -> EmbeddedRouter:
        return EmbeddedRouter(routes, self.threshold)

    def select_route(self, messages: Sequence[Mapping]) -> RouteConfig | None:
        """The best-scoring route above the threshold, or ``None`` (never raises)."""
        best_route, best_score = None, self.threshold
        text = newest_chars(latest_user_text(messages), TEXT_BUDGET_CHARS)
        for route, score in zip(self.routes, self.scores(text), strict=True):
            if score > best_score:  # strict: the earlier route keeps a tie
                best_route, best_score = route, score
        return best_route

    def scores(self, text: str) -> list[float]:
        """The score of ``text`` against every route, in route order (for logs and tests)."""
        # dict.fromkeys, not set: a fixed summation order keeps scores bit-for-bit stable
        # across processes (string hashing is randomised per process).
        message_terms = tuple(dict.fromkeys(terms(text)))
        if not message_terms:
            return [0.0] * len(self.routes)
        candidates = [(term, *self._synonyms.get(term, ())) for term in message_terms]
        norm = math.sqrt(len(message_terms))
        return [sum(max(weights.get(candidate, 0.0) for candidate in group)
                    for group in candidates) / norm
                for weights in self._weights]

    def _route_weights(self, route: RouteConfig) -> dict[str, float]:
        weights: dict[str, float] = {}
        fields = ((route.name.replace("_", " ").replace("-", " "), NAME_WEIGHT),
                  (route.description, DESCRIPTION_WEIGHT),
                  (" ".join(route.keywords), KEYWORD_WEIGHT))
        for text, weight in fields:
            for term in terms(text):
                for candidate in (term, *self._synonyms.get(term, ())):
                    weights[candidate] = max(weights.get(candidate, 0.0), weight)
        return weights
