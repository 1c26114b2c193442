"""Server-sent events read as the standard says: a line ends at LF, CRLF or CR, nowhere else.

httpx's `iter_lines` splits like `str.splitlines`, also at U+2028, U+2029, U+0085 and other separators that vLLM
leaves unescaped inside its JSON strings; a sampled token holding one cut an event in two, and the client saw
half a JSON object (the soak's one unexplained failure). Tests read streams through `data_events` instead.
"""

import re
from collections.abc import AsyncIterator, Iterator

import httpx

LINE_END = re.compile(r"\r\n|\r|\n")


class EventSplitter:
    """The `data:` fields of the lines that text, fed in pieces as it arrives, completes."""

    def __init__(self) -> None:
        self._rest = ""

    def feed(self, text: str) -> list[str]:
        *lines, self._rest = LINE_END.split(self._rest + text)
        return [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]


async def data_events(response: httpx.Response) -> AsyncIterator[str]:
    splitter = EventSplitter()
    async for text in response.aiter_text():
        for data in splitter.feed(text):
            yield data


def data_events_sync(response: httpx.Response) -> Iterator[str]:
    splitter = EventSplitter()
    for text in response.iter_text():
        yield from splitter.feed(text)
