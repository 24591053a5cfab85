"""The embedded lexical router (SPEC §5): expected decisions, determinism, input shapes."""

from __future__ import annotations

import pytest

from app.config import RouteConfig
from app.router.base import latest_user_text, message_text
from app.router.embedded import EmbeddedRouter, stem, terms
from devkit.configs import ROUTES

DEEP, FAST = (RouteConfig(route["name"], route["description"], tuple(route["models"]))
              for route in ROUTES)


def user(content):
    return {"role": "user", "content": content}


def route_name(router, messages):
    route = router.select_route(messages)
    return route.name if route else None


@pytest.fixture
def router():
    return EmbeddedRouter([DEEP, FAST])


@pytest.mark.parametrize("text, expected", [
    ("Explain quantum entanglement in detail with equations.", "deep_reasoning"),
    ("hi", "fast_responses"),
    ("Hello there!", "fast_responses"),
    ("Write a short poem about the ocean.", "fast_responses"),
    ("Derive the equations of motion for a double pendulum in detail", "deep_reasoning"),
    ("What is 2+2? Give a quick answer", "fast_responses"),
    ("xyzzy plugh", None),
])
def test_project_routes_give_the_expected_decisions(router, text, expected):
    assert route_name(router, [user(text)]) == expected


def test_same_input_gives_same_route_and_scores(router):
    text = "Explain quantum entanglement in detail with equations."
    first = router.scores(text)
    for _ in range(5):
        assert router.scores(text) == first
        assert route_name(router, [user(text)]) == "deep_reasoning"


def test_a_fresh_router_scores_identically(router):
    text = "Write a short poem about the ocean."
    assert EmbeddedRouter([DEEP, FAST]).scores(text) == router.scores(text)


def test_only_the_latest_user_message_is_scored(router):
    messages = [user("Derive the equations of motion in detail"),
                {"role": "assistant", "content": "Here is a long derivation..."},
                user("thanks!")]
    assert route_name(router, messages) == "fast_responses"


def test_assistant_and_system_messages_after_the_user_are_ignored(router):
    messages = [{"role": "system", "content": "greetings, short answers"},
                user("Explain the equations in detail"),
                {"role": "assistant", "content": "hi hello short quick"}]
    assert route_name(router, messages) == "deep_reasoning"


def test_text_parts_are_scored_and_other_parts_ignored(router):
    content = [{"type": "image_url", "image_url": {"url": "https://x/quick.png"}},
               {"type": "text", "text": "Explain these equations"},
               {"type": "text", "text": "in detail"}]
    assert route_name(router, [user(content)]) == "deep_reasoning"


@pytest.mark.parametrize("message", [
    {"role": "user"}, {"role": "user", "content": None}, {"role": "user", "content": ""},
    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
    {"role": "user", "content": 42},
])
def test_empty_or_missing_content_is_no_match(router, message):
    assert router.select_route([message]) is None


def test_conversation_without_user_message_is_no_match(router):
    assert router.select_route([{"role": "system", "content": "hi"}]) is None
    assert router.select_route([]) is None


def test_stop_words_alone_do_not_match(router):
    assert router.select_route([user("what is the of and to with")]) is None


def test_keywords_outweigh_description_words():
    cooking = RouteConfig("cooking", "recipes and kitchen help", ("m",), keywords=("pasta",))
    general = RouteConfig("general", "pasta trivia and general knowledge", ("m",))
    router = EmbeddedRouter([general, cooking])
    assert route_name(router, [user("pasta")]) == "cooking"


def test_route_name_words_are_matched():
    router = EmbeddedRouter([RouteConfig("code-review", "look at a diff", ("m",))])
    assert route_name(router, [user("please review my code")]) == "code-review"


def test_equal_scores_go_to_the_route_listed_first():
    first = RouteConfig("first", "weather forecasts", ("m",))
    second = RouteConfig("second", "weather reports", ("m",))
    assert route_name(EmbeddedRouter([first, second]), [user("weather")]) == "first"
    assert route_name(EmbeddedRouter([second, first]), [user("weather")]) == "second"


def test_long_message_with_one_matching_word_is_no_match(router):
    filler = " ".join(f"word{index}" for index in range(40))
    assert route_name(router, [user("quick " + filler)]) is None
    assert route_name(router, [user("quick")]) == "fast_responses"


def test_repeating_a_word_does_not_raise_the_score(router):
    assert router.scores("quick quick quick quick") == router.scores("quick")


def test_threshold_is_configurable(router):
    assert route_name(EmbeddedRouter([DEEP, FAST], threshold=5.0), [user("hi")]) is None
    assert route_name(router, [user("hi")]) == "fast_responses"


def test_score_equal_to_threshold_is_not_a_match():
    router = EmbeddedRouter([FAST], threshold=1.0)
    assert router.scores("quick") == [1.0]
    assert router.select_route([user("quick")]) is None


def test_no_routes_means_no_match():
    assert EmbeddedRouter([]).select_route([user("hi")]) is None


def test_router_kind_is_embedded(router):
    assert router.kind == "embedded"


@pytest.mark.parametrize("word, base", [
    ("equations", "equation"), ("greetings", "greeting"), ("answers", "answer"),
    ("detailed", "detail"), ("quickly", "quick"), ("derived", "derive"),
    ("responses", "response"), ("queries", "query"), ("classes", "class"),
    ("explanations", "explanation"),
])
def test_inflections_share_a_stem(word, base):
    assert stem(word) == stem(base)


def test_short_words_and_s_endings_that_are_not_plurals_are_kept():
    assert stem("is") == "is"
    assert stem("status") == "status"
    assert stem("analysis") == "analysis"


def test_terms_lowercases_drops_stop_words_and_punctuation():
    assert terms("The EQUATIONS, of Motion!") == [stem("equation"), "motion"]


def test_message_text_joins_text_parts():
    message = {"role": "user", "content": [{"type": "text", "text": "a"},
                                           {"type": "input_audio"},
                                           {"type": "text", "text": "b"}]}
    assert message_text(message) == "a\nb"


def test_latest_user_text_skips_later_non_user_messages():
    messages = [user("first"), user("second"), {"role": "assistant", "content": "third"}]
    assert latest_user_text(messages) == "second"
