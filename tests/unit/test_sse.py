"""The SSE codec: frames split at every byte boundary decode to the same events."""

from __future__ import annotations

import pytest

from app.providers.sse import ServerSentEvent, SSEDecoder, encode_data, encode_event

STREAM = ('data: {"id":"1","model":"gpt","choices":[{"delta":{"content":"héllo"}}]}\r\n\r\n'
          ": keep-alive\n\n"
          "event: note\nid: 7\nretry: 100\ndata: line one\ndata: line two\n\n"
          "data:no-space\r\rdata: [DONE]\n\n").encode("utf-8")
EXPECTED = ['{"id":"1","model":"gpt","choices":[{"delta":{"content":"héllo"}}]}', None,
            "line one\nline two", "no-space", "[DONE]"]


def decode_in_pieces(pieces) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events = [event for piece in pieces for event in decoder.feed(piece)]
    return events + list(decoder.flush())


@pytest.mark.parametrize("split", range(len(STREAM) + 1))
def test_stream_split_anywhere_decodes_identically(split):
    events = decode_in_pieces([STREAM[:split], STREAM[split:]])
    assert [event.data for event in events] == EXPECTED


def test_one_byte_at_a_time():
    events = decode_in_pieces([STREAM[i:i + 1] for i in range(len(STREAM))])
    assert [event.data for event in events] == EXPECTED
    assert events[1].comments == ["keep-alive"]
    assert (events[2].event, events[2].id, events[2].retry) == ("note", "7", 100)
    assert events[-1].is_done


def test_unterminated_final_event_is_flushed():
    assert [e.data for e in decode_in_pieces([b"data: tail"])] == ["tail"]


def test_encode_round_trips():
    event = ServerSentEvent(data="a\nb", event="e", id="1", comments=["c"])
    (decoded,) = decode_in_pieces([encode_event(event)])
    assert (decoded.data, decoded.event, decoded.id, decoded.comments) == ("a\nb", "e", "1",
                                                                           ["c"])
    assert encode_data("x") == b"data: x\n\n"
