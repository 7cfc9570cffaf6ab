"""Citations (`chat_pb2.Citation`): the helpers the adapters and the HTTP door share.

Spans (`start_index` / `end_index`) count characters (Unicode code points) of
the answer's text, its text parts joined; providers that count UTF-8 bytes
(Gemini) are converted with `char_offset`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from llmmesh.v1 import chat_pb2


def char_offset(text: str, byte_offset: int) -> int:
    """The character offset in `text` of a UTF-8 byte offset (a byte inside a character counts up to it)."""
    if byte_offset <= 0:
        return 0
    return len(text.encode("utf-8")[:byte_offset].decode("utf-8", errors="ignore"))


def key(citation: chat_pb2.Citation) -> bytes:
    """An identity for a citation: providers that repeat metadata in later chunks are deduplicated on it."""
    return citation.SerializeToString(deterministic=True)


class Seen:
    """Citations already sent on a stream: each goes out once."""

    def __init__(self) -> None:
        self._keys: set[bytes] = set()

    def new(self, citations: Iterable[chat_pb2.Citation]) -> list[chat_pb2.Citation]:
        out = []
        for citation in citations:
            identity = key(citation)
            if identity not in self._keys:
                self._keys.add(identity)
                out.append(citation)
        return out


def url_citation(citation: chat_pb2.Citation) -> dict[str, Any] | None:
    """OpenAI's `url_citation` fields (url, title, start_index, end_index) of a citation with a URL, else None.

    OpenAI's span fields are required integers: an unplaced citation spans 0..0.
    """
    if not citation.url:
        return None
    return {
        "url": citation.url,
        "title": citation.title or citation.document_title,
        "start_index": citation.start_index,
        "end_index": citation.end_index,
    }
