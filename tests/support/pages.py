"""Reading the status page (``GET /status``) the way a test needs it: by its ``data-field``s."""

from __future__ import annotations

from html.parser import HTMLParser

#: Elements without a closing tag (they never hold a field's text).
_VOID = frozenset({"br", "meta", "img", "input", "link", "hr", "wbr"})


class _Fields(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.fields: dict[str, str] = {}
        self._open: list[tuple[str | None, list[str]]] = []

    def handle_starttag(self, tag, attrs):
        if tag in _VOID:
            return
        self._open.append((dict(attrs).get("data-field"), []))

    def handle_endtag(self, tag):
        if tag in _VOID or not self._open:
            return
        name, parts = self._open.pop()
        text = " ".join("".join(parts).split())
        if name is not None:
            self.fields[name] = text
        if self._open:
            self._open[-1][1].append(" " + text + " ")

    def handle_data(self, data):
        if self._open:
            self._open[-1][1].append(data)


def page_fields(html: str) -> dict[str, str]:
    """``data-field`` name -> the element's text (tags removed, whitespace collapsed)."""
    parser = _Fields()
    parser.feed(html)
    parser.close()
    return parser.fields
