"""Citations (`Message.citations`, `ChatDelta.citations`) in the HTTP door's OpenAI shapes.

- Chat Completions: `message.annotations` (streams: `delta.annotations`), one
  `{"type": "url_citation", "url_citation": {url, title, start_index,
  end_index}}` per citation with a URL (an unplaced one spans 0..0: OpenAI's
  fields are required). Chat Completions has no shape for a citation of a
  document: every citation, URL or not, is also in the `llmmesh.citations`
  field (of the completion, or of the chunk that carries it), in the
  contract's field names.
- Responses: an `output_text` part's `annotations`: `url_citation` (url,
  title, start_index, end_index) for a citation with a URL, else
  `file_citation` (file_id: the provider's source id, filename: the
  document's title, index: where the cited span ends); streamed as
  `response.output_text.annotation.added` events.

Annotations sent back in history (assistant messages, Responses
`output_text` input parts) are accepted and not carried: no provider needs
them to continue a conversation.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf import json_format

from llmmesh.v1 import chat_pb2
from services.common.citations import url_citation


def chat_annotations(citations: Iterable[chat_pb2.Citation]) -> list[dict[str, Any]]:
    """Chat Completions `annotations`: the URL citations."""
    out = []
    for citation in citations:
        fields = url_citation(citation)
        if fields is not None:
            out.append({"type": "url_citation", "url_citation": fields})
    return out


def mesh_citations(citations: Iterable[chat_pb2.Citation]) -> list[dict[str, Any]]:
    """Every citation in the contract's own names (the `llmmesh.citations` field)."""
    return [
        json_format.MessageToDict(citation, preserving_proto_field_name=True, use_integers_for_enums=False)
        for citation in citations
    ]


def responses_annotation(citation: chat_pb2.Citation) -> dict[str, Any]:
    """One Responses `output_text` annotation."""
    fields = url_citation(citation)
    if fields is not None:
        return {"type": "url_citation", **fields}
    return {
        "type": "file_citation",
        "file_id": citation.source_id,
        "filename": citation.document_title or citation.title,
        "index": citation.end_index,
    }
