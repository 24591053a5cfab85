"""Request parsing and affinity header validation (SPEC §4 step 1, §8)."""

from __future__ import annotations

import pytest

from app.errors import InvalidAffinityIdError, InvalidRequestError
from app.pipeline.parse import parse_chat_request, validate_affinity_value


def test_valid_body_keeps_every_field():
    parsed = parse_chat_request(
        b'{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"n":2}')
    assert parsed.model == "m" and parsed.stream is True and parsed.body["n"] == 2


@pytest.mark.parametrize("raw, code", [
    (b"{not json", "invalid_json"),
    (b"", "invalid_json"),
    (b"[1,2]", "invalid_body"),
    (b'{"messages": []}', "invalid_messages"),
    (b'{"messages": "hi"}', "invalid_messages"),
    (b'{"messages": [{"content": "no role"}]}', "invalid_messages"),
    (b'{"messages": [{"role": 5}]}', "invalid_messages"),
    (b'{"messages": ["text"]}', "invalid_messages"),
    (b'{"messages": [{"role": "user"}], "model": 4}', "invalid_model"),
    (b'{"messages": [{"role": "user"}], "stream": "yes"}', "invalid_stream"),
    (b"\xff\xfe", "invalid_json"),
    (b"[" * 100000, "invalid_json"),
])
def test_bad_bodies_are_400_with_a_code(raw, code):
    with pytest.raises(InvalidRequestError) as caught:
        parse_chat_request(raw)
    assert caught.value.status == 400 and caught.value.code == code


def test_missing_affinity_header_is_none():
    assert validate_affinity_value(None, "X-Model-Affinity") is None


@pytest.mark.parametrize("value", ["", "x" * 257, "caf\u00e9", "a\x00b", "tab\there",
                                   "line\nbreak", "\x7f"])
def test_bad_affinity_values_are_refused(value):
    with pytest.raises(InvalidAffinityIdError) as caught:
        validate_affinity_value(value, "X-Model-Affinity")
    assert caught.value.code == "invalid_affinity_id" and caught.value.status == 400


def test_affinity_value_at_the_limit_and_with_colon_is_fine():
    assert validate_affinity_value("x" * 256, "h") == "x" * 256
    assert validate_affinity_value("a:b ~!", "h") == "a:b ~!"


def test_tenant_may_not_contain_colon():
    with pytest.raises(InvalidAffinityIdError):
        validate_affinity_value("org:1", "x-org-id", allow_colon=False)
