"""Documents and their citations in the production shape (issue 17 items 3 and 8): a PDF crosses the
internal-token and mTLS hops to the Anthropic adapters, asked to be cited, and the cited passage comes
back on the stream; a provider that cannot cite is refused before any upstream call, and the router
moves on."""

from __future__ import annotations

import pytest

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.testing import fake_anthropic
from services.testing.production import ProductionMesh
from tests.production.helpers import MODELS, reset_upstreams, stream_chat, upstream_requests

pytestmark = [pytest.mark.production, pytest.mark.timeout(300)]

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def _with_cited_pdf(request: rpb.StreamChatRequest) -> None:
    document = chat_pb2.DocumentPart(data=PDF, mime_type="application/pdf", title="Q3", enable_citations=True)
    request.messages[0].content.append(chat_pb2.ContentPart(document=document))


def test_a_cited_pdf_streams_back_its_citation(mesh: ProductionMesh) -> None:
    """The document block arrives with citations enabled; the citations_delta becomes ChatDelta.citations."""
    reset_upstreams(mesh)
    cited = {**fake_anthropic.citation_examples()[1], "document_index": 0}  # a page_location
    body = fake_anthropic.message(text="Page two says so.", citations={0: [cited]})
    mesh.anthropic.script(fake_anthropic.Reply(events=fake_anthropic.stream_events(body, pieces=3)))
    request = stream_chat(MODELS["anthropic"], "What does page two say?")
    _with_cited_pdf(request)
    with mesh.channel() as channel:
        stub = router_service_pb2_grpc.RouterServiceStub(channel)
        events = list(stub.StreamChat(request, timeout=30, metadata=mesh.caller("team-b")))
    block = mesh.anthropic.requests[0].body["messages"][0]["content"][1]
    assert (block["type"], block["title"], block["citations"]) == ("document", "Q3", {"enabled": True})
    citations = [citation for event in events if event.HasField("delta") for citation in event.delta.citations]
    assert [(c.kind, c.cited_text, c.document_index) for c in citations] == [
        (chat_pb2.CITATION_KIND_DOCUMENT, "Page two says so.", 0)
    ]
    assert "".join(event.delta.text for event in events if event.HasField("delta")) == "Page two says so."


def test_openai_cannot_cite_so_claude_answers(mesh: ProductionMesh) -> None:
    """gpt-4o-mini (OpenAI Chat cites no document) is refused by name before any upstream call; its
    fallback Claude answers the stream."""
    reset_upstreams(mesh)
    mesh.anthropic.script(
        fake_anthropic.Reply(events=fake_anthropic.stream_events(fake_anthropic.message(text="Cited.")))
    )
    request = stream_chat(MODELS["openai"], "Cite it.")
    _with_cited_pdf(request)
    with mesh.channel() as channel:
        stub = router_service_pb2_grpc.RouterServiceStub(channel)
        events = list(stub.StreamChat(request, timeout=30, metadata=mesh.caller("team-b")))
    final = events[-1].final
    assert final.model == MODELS["anthropic"]
    field = "messages[0].content[1].document.enable_citations"
    assert final.attempts[0].moved_on_because == f"openai cannot serve {field}"
    assert upstream_requests(mesh, "openai") == 0
