"""Anthropic text-block citations (`TextCitation`, the stream's `citations_delta`) → `chat_pb2.Citation`.

Anthropic attaches citations to a whole text block: the citation's span in
the answer (`start_index` / `end_index`) is that block's place in the
answer's joined text. Where in the source the quote is goes to
`location_unit` / `location_start` / `location_end`:

| Anthropic type | kind | location | source_id |
|---|---|---|---|
| char_location | DOCUMENT | CHARACTER start/end_char_index | file_id |
| page_location | DOCUMENT | PAGE start/end_page_number | file_id |
| content_block_location | DOCUMENT | CONTENT_BLOCK start/end_block_index | file_id |
| web_search_result_location | URL | — | encrypted_index |
| search_result_location | SEARCH_RESULT | CONTENT_BLOCK start/end_block_index | source |

Citations in history are not sent back: Anthropic does not need them to
continue, and its `TextBlockParam.citations` only hold against the same
documents in the same request.
"""

from __future__ import annotations

from typing import Any

from llmmesh.v1 import chat_pb2

_DOCUMENT_LOCATIONS = {
    "char_location": ("char_index", chat_pb2.CITATION_LOCATION_UNIT_CHARACTER),
    "page_location": ("page_number", chat_pb2.CITATION_LOCATION_UNIT_PAGE),
    "content_block_location": ("block_index", chat_pb2.CITATION_LOCATION_UNIT_CONTENT_BLOCK),
}


def citation(found: Any, *, start: int, end: int) -> chat_pb2.Citation | None:
    """One TextCitation (an SDK model or wire.Fields: read by attribute) on a text block spanning start..end of the answer; None for unknown types."""
    kind = getattr(found, "type", None)
    out = chat_pb2.Citation(cited_text=getattr(found, "cited_text", None) or "", start_index=start, end_index=end)
    if kind in _DOCUMENT_LOCATIONS:
        suffix, unit = _DOCUMENT_LOCATIONS[kind]
        out.kind = chat_pb2.CITATION_KIND_DOCUMENT
        out.document_index = found.document_index
        out.document_title = found.document_title or ""
        out.source_id = found.file_id or ""
        _locate(out, unit, getattr(found, f"start_{suffix}"), getattr(found, f"end_{suffix}"))
    elif kind == "web_search_result_location":
        out.kind = chat_pb2.CITATION_KIND_URL
        out.url = found.url
        out.title = found.title or ""
        out.source_id = found.encrypted_index
    elif kind == "search_result_location":
        out.kind = chat_pb2.CITATION_KIND_SEARCH_RESULT
        out.document_index = found.search_result_index
        out.title = found.title or ""
        out.source_id = found.source
        _locate(out, chat_pb2.CITATION_LOCATION_UNIT_CONTENT_BLOCK, found.start_block_index, found.end_block_index)
    else:
        return None
    return out


def block_citations(block: Any, *, start: int, end: int) -> list[chat_pb2.Citation]:
    """A text block's citations (None or a list on the SDK's TextBlock)."""
    mapped = (citation(found, start=start, end=end) for found in getattr(block, "citations", None) or [])
    return [found for found in mapped if found is not None]


def _locate(out: chat_pb2.Citation, unit: chat_pb2.CitationLocationUnit.ValueType, start: Any, end: Any) -> None:
    out.location_unit = unit
    if start is not None:
        out.location_start = start
    if end is not None:
        out.location_end = end
