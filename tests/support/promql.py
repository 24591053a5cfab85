"""The metric names a PromQL expression reads, and the queries of a Grafana dashboard.

Enough PromQL for dashboards: string literals, label matchers ``{...}``, range and subquery
brackets ``[...]`` and the label lists of ``by``/``without``/``on``/``ignoring``/
``group_left``/``group_right`` are removed; what is left that looks like an identifier, is
not a keyword and is not called like a function is a metric name. So the dashboard's list of
metrics is derived from its own JSON, never copied by hand.
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_LABEL_LISTS = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.I)
_IDENTIFIER = re.compile(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                       "offset", "and", "or", "unless", "atan2", "inf", "nan"})


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects."""
    text = _STRINGS.sub(" ", expr)
    text = _MATCHERS.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _LABEL_LISTS.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, called = match.group(1), match.group(2)
        if not called and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def panel_queries(dashboard: dict) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel, rows' nested panels included."""
    def walk(panels: Iterable[dict]) -> Iterator[tuple[str, str]]:
        for panel in panels:
            for target in panel.get("targets", ()):
                if target.get("expr"):
                    yield panel.get("title", "?"), target["expr"]
            yield from walk(panel.get("panels", ()))
    return walk(dashboard.get("panels", ()))
