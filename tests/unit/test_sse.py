"""Streams are split into events at LF, CRLF and CR only, even when the pieces arrive cut anywhere."""

import json

from sse import EventSplitter

CHUNK = json.dumps({"text": "a\u2028b\x85c\u2029d"}, ensure_ascii=False)  # as vLLM sends it: unescaped


def test_separators_inside_json_strings_do_not_end_an_event() -> None:
    stream = f"data: {CHUNK}\n\ndata: [DONE]\n\n"
    assert "\u2028" in stream and len(stream.splitlines()) > 4  # what httpx's iter_lines would have split
    assert EventSplitter().feed(stream) == [CHUNK, "[DONE]"]


def test_events_cut_anywhere_and_every_line_ending_are_read_whole() -> None:
    stream = f"data: {CHUNK}\r\n\r\ndata: {CHUNK}\r\rdata: [DONE]\n\n"
    for cut in range(1, len(stream)):
        splitter = EventSplitter()
        assert splitter.feed(stream[:cut]) + splitter.feed(stream[cut:]) == [CHUNK, CHUNK, "[DONE]"], cut
