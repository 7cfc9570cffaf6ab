"""Gemini grounding and citation metadata → `chat_pb2.Citation`.

- `candidate.grounding_metadata`: each grounding support's segment, for each
  grounding chunk it names, is one Citation: a `web` chunk is a URL citation
  (uri, title); a `retrieved_context` chunk a DOCUMENT one (uri, title, its
  text as `cited_text`, `document_name` as `source_id`); a `maps` chunk a URL
  one. Chunks no support names still come back, unplaced (no span).
- `candidate.citation_metadata.citations` (the API's `citationSources`, when
  the model quotes a source at length): URL citations (uri, title, span).

Gemini counts segment offsets in UTF-8 bytes of the part named by
`part_index`; citation sources in bytes of the answer. Both are converted to
characters of the answer's joined text. On a stream, grounding that comes
after the first chunk (it usually rides the last) spans the text streamed so
far, not that chunk's parts: the reader then offers no parts, and a segment
that does not fit the part it names is read against the whole text too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.genai import types

from llmmesh.v1 import chat_pb2
from services.common.citations import char_offset


def of_candidate(
    candidate: types.Candidate, *, whole_text: str, part_starts: Mapping[int, tuple[int, str]]
) -> list[chat_pb2.Citation]:
    """The candidate's citations; `part_starts`: this response's text parts by index → (char offset, text)."""
    out: list[chat_pb2.Citation] = []
    grounding = candidate.grounding_metadata
    if grounding is not None:
        out += _grounding(grounding, whole_text, part_starts)
    sources = candidate.citation_metadata.citations if candidate.citation_metadata is not None else None
    for source in sources or []:
        citation = chat_pb2.Citation(kind=chat_pb2.CITATION_KIND_URL, url=source.uri or "", title=source.title or "")
        if source.start_index is not None:
            citation.start_index = char_offset(whole_text, source.start_index)
        if source.end_index is not None:
            citation.end_index = char_offset(whole_text, source.end_index)
        out.append(citation)
    return out


def _grounding(
    grounding: types.GroundingMetadata, whole_text: str, part_starts: Mapping[int, tuple[int, str]]
) -> list[chat_pb2.Citation]:
    chunks = grounding.grounding_chunks or []
    out: list[chat_pb2.Citation] = []
    named: set[int] = set()
    for support in grounding.grounding_supports or []:
        span = _span(support.segment, whole_text, part_starts)
        for index in support.grounding_chunk_indices or []:
            if not 0 <= index < len(chunks):
                continue
            citation = _chunk(chunks[index])
            if citation is None:
                continue
            named.add(index)
            if span is not None:
                citation.start_index, citation.end_index = span
            out.append(citation)
    for index, chunk in enumerate(chunks):
        if index not in named:
            unplaced = _chunk(chunk)
            if unplaced is not None:
                out.append(unplaced)
    return out


def _chunk(chunk: types.GroundingChunk) -> chat_pb2.Citation | None:
    if chunk.web is not None:
        return chat_pb2.Citation(kind=chat_pb2.CITATION_KIND_URL, url=chunk.web.uri or "", title=chunk.web.title or "")
    context = chunk.retrieved_context
    if context is not None:
        return chat_pb2.Citation(
            kind=chat_pb2.CITATION_KIND_DOCUMENT,
            url=context.uri or "",
            title=context.title or "",
            cited_text=context.text or "",
            source_id=context.document_name or "",
        )
    maps: Any = chunk.maps
    if maps is not None and getattr(maps, "uri", None):
        return chat_pb2.Citation(kind=chat_pb2.CITATION_KIND_URL, url=maps.uri, title=getattr(maps, "title", "") or "")
    return None


def _span(
    segment: types.Segment | None, whole_text: str, part_starts: Mapping[int, tuple[int, str]]
) -> tuple[int, int] | None:
    if segment is None or segment.end_index is None:
        return None
    start_byte, end_byte = segment.start_index or 0, segment.end_index
    placed = part_starts.get(segment.part_index or 0)
    if placed is not None and end_byte <= len(placed[1].encode("utf-8")):
        base, text = placed
        return base + char_offset(text, start_byte), base + char_offset(text, end_byte)
    return char_offset(whole_text, start_byte), char_offset(whole_text, end_byte)
