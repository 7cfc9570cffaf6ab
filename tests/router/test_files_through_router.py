"""Documents, audio, image detail and multi-part tool results (issue 17 item 3) end to end: the router
in front of the three real adapters, each on its official SDK against its loopback fake upstream.

The fakes run with `check_parts`: every content part the adapters send must be one the vendor SDK's
own types accept (services/testing/wire_parts.py), or the fake answers 400. The bodies they receive are
compared with golden files under tests/providers/<provider>/golden/files_*.json. What a provider
cannot take is refused by name before any upstream call, and the router moves on to the next candidate.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import openai
import pytest

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.processes import ServiceProcess, start_service
from services.testing import fake_anthropic as fa
from services.testing import fake_google as fg
from services.testing import fake_openai as fo
from services.testing.mesh import start_router

KEY = f"test-key-{secrets.token_hex(8)}"
GPT, CLAUDE, GEMINI = "gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash"
ROUTING = {
    "providers": {"openai": {"kind": "openai"}, "anthropic": {"kind": "anthropic"}, "google": {"kind": "google"}},
    "defaults": {"max_retries": 0},
    "models": {
        GPT: {"provider": "openai"},
        CLAUDE: {"provider": "anthropic"},
        GEMINI: {"provider": "google"},
        "claude-then-gemini": {"provider": "anthropic", "upstream_model": CLAUDE, "fallbacks": [GEMINI]},
        "gpt-then-claude": {"provider": "openai", "upstream_model": GPT, "fallbacks": [CLAUDE]},
        "gpt-then-gemini": {"provider": "openai", "upstream_model": GPT, "fallbacks": [GEMINI]},
        "gemini-then-claude": {"provider": "google", "upstream_model": GEMINI, "fallbacks": [CLAUDE]},
    },
}
#: The router's per-part limit in this module (the adapters keep the 8 MiB default).
CONTENT_LIMIT = 64 * 1024
PROVIDER_DIRS = {GPT: "openai", CLAUDE: "anthropic", GEMINI: "google"}
TESTS = Path(__file__).resolve().parents[1]

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt "
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"


class Fakes:
    def __init__(self) -> None:
        self.openai = fo.FakeOpenAI(expected_key=KEY, check_parts=True).start()
        self.anthropic = fa.FakeAnthropic(api_key=KEY, check_parts=True).start()
        self.google = fg.FakeGemini(api_key=KEY, check_parts=True).start()

    def stop(self) -> None:
        for fake in (self.openai, self.anthropic, self.google):
            fake.stop()

    def script_text(self, model: str) -> None:
        if model == GPT:
            self.openai.script(fo.Reply.json(fo.completion("Read it.")))
        elif model == CLAUDE:
            self.anthropic.script(fa.json_reply(fa.message(text="Read it.")))
        else:
            self.google.script(fg.Reply(body=fg.response([fg.text_part("Read it.")])))

    def last_body(self, model: str) -> Any:
        if model == GPT:
            return self.openai.chat_requests[-1].body
        if model == CLAUDE:
            return self.anthropic.requests[-1].body
        return self.google.requests[-1].body


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    started = Fakes()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def router(fakes: Fakes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("files-router")
    adapters = [
        ("openai", {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": fakes.openai.url, "LLMMESH_OPENAI_BASE_URL": ""}),
        ("anthropic", {"ANTHROPIC_API_KEY": KEY, "LLMMESH_ANTHROPIC_BASE_URL": fakes.anthropic.url}),
        ("google", {"GEMINI_API_KEY": KEY, "GOOGLE_API_KEY": "", "LLMMESH_GOOGLE_BASE_URL": fakes.google.url}),
    ]
    started: list[ServiceProcess] = []
    try:
        static = {}
        for kind, env in adapters:
            process = start_service(["-m", f"services.providers.{kind}"], name=kind, workdir=workdir, env=env)
            started.append(process)
            static[f"llmmesh-provider-{kind}"] = [process.address]
        started.append(start_router(workdir, ROUTING, static, env={"LLMMESH_MAX_CONTENT_BYTES": str(CONTENT_LIMIT)}))
        yield started[-1]
    finally:
        for process in reversed(started):
            process.terminate()


@pytest.fixture
async def stub(router: ServiceProcess) -> AsyncIterator[router_service_pb2_grpc.RouterServiceStub]:
    async with grpc.aio.insecure_channel(router.address) as channel:
        yield router_service_pb2_grpc.RouterServiceStub(channel)


def assert_golden(model: str, name: str, body: Any) -> None:
    """The body the fake received equals tests/providers/<provider>/golden/<name>.json
    (LLMMESH_UPDATE_GOLDEN=1 rewrites it)."""
    path = TESTS / "providers" / PROVIDER_DIRS[model] / "golden" / f"{name}.json"
    if os.environ.get("LLMMESH_UPDATE_GOLDEN") == "1":
        path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    assert path.exists(), f"{path} is missing; run with LLMMESH_UPDATE_GOLDEN=1 to create it"
    assert json.loads(path.read_text()) == body, f"mapped request differs from {path}"


def _user(*parts: chat_pb2.ContentPart) -> chat_pb2.Message:
    return chat_pb2.Message(role=chat_pb2.ROLE_USER, content=list(parts))


def _text(value: str) -> chat_pb2.ContentPart:
    return chat_pb2.ContentPart(text=value)


def _pdf(**fields: Any) -> chat_pb2.ContentPart:
    return chat_pb2.ContentPart(document=chat_pb2.DocumentPart(data=PDF, mime_type="application/pdf", **fields))


def _wav() -> chat_pb2.ContentPart:
    return chat_pb2.ContentPart(audio=chat_pb2.AudioPart(data=WAV, format="wav"))


def _png(detail: chat_pb2.ImageDetail.ValueType = chat_pb2.IMAGE_DETAIL_UNSPECIFIED) -> chat_pb2.ContentPart:
    return chat_pb2.ContentPart(image=chat_pb2.ImagePart(data=PNG, mime_type="image/png", detail=detail))


#: What each provider can take, in one user message (the rest is refused by name, tested below).
FILE_PARTS: dict[str, list[chat_pb2.ContentPart]] = {
    GPT: [
        _text("Summarise these."),
        _pdf(filename="report.pdf"),
        chat_pb2.ContentPart(document=chat_pb2.DocumentPart(file_id="file-abc123")),
        _wav(),
        _png(chat_pb2.IMAGE_DETAIL_LOW),
    ],
    CLAUDE: [
        _text("Summarise these."),
        _pdf(filename="report.pdf", title="Q3 report"),
        chat_pb2.ContentPart(document=chat_pb2.DocumentPart(data=b"plain notes", mime_type="text/plain")),
        chat_pb2.ContentPart(document=chat_pb2.DocumentPart(url="https://example.com/paper.pdf")),
        chat_pb2.ContentPart(document=chat_pb2.DocumentPart(file_id="file_011abc")),
        _png(chat_pb2.IMAGE_DETAIL_AUTO),
    ],
    GEMINI: [
        _text("Summarise these."),
        _pdf(filename="report.pdf"),
        chat_pb2.ContentPart(document=chat_pb2.DocumentPart(data=b"plain notes", mime_type="text/plain")),
        chat_pb2.ContentPart(document=chat_pb2.DocumentPart(url="https://example.com/paper.pdf")),
        chat_pb2.ContentPart(
            document=chat_pb2.DocumentPart(
                file_id="https://generativelanguage.googleapis.com/v1beta/files/abc", mime_type="application/pdf"
            )
        ),
        _wav(),
        _png(chat_pb2.IMAGE_DETAIL_HIGH),
    ],
}


class TestFileParts:
    @pytest.mark.parametrize("model", [GPT, CLAUDE, GEMINI])
    async def test_documents_audio_and_image_detail_reach_each_provider(self, stub, fakes, model: str) -> None:
        """Each provider gets documents, audio and image detail in its own wire format (golden files_parts)."""
        fakes.script_text(model)
        response = await stub.Chat(rpb.ChatRequest(model=model, messages=[_user(*FILE_PARTS[model])]), timeout=20)
        assert response.message.content[0].text == "Read it."
        assert_golden(model, "files_parts", fakes.last_body(model))

    async def test_openai_wire_shapes(self, stub, fakes) -> None:
        """OpenAI: a PDF as a file part with a data URL and filename, audio as input_audio, detail on image_url."""
        fakes.script_text(GPT)
        await stub.Chat(rpb.ChatRequest(model=GPT, messages=[_user(*FILE_PARTS[GPT])]), timeout=20)
        parts = fakes.openai.chat_requests[-1].body["messages"][0]["content"]
        pdf = base64.b64encode(PDF).decode()
        assert parts[1] == {
            "type": "file",
            "file": {"file_data": f"data:application/pdf;base64,{pdf}", "filename": "report.pdf"},
        }
        assert parts[2] == {"type": "file", "file": {"file_id": "file-abc123"}}
        assert parts[3] == {
            "type": "input_audio",
            "input_audio": {"data": base64.b64encode(WAV).decode(), "format": "wav"},
        }
        assert parts[4]["image_url"]["detail"] == "low"

    async def test_stream_carries_documents_to_gemini(self, stub, fakes) -> None:
        """A stream sends the same parts: Gemini gets inlineData, fileData and mediaResolution."""
        fakes.google.script(fg.Reply(events=fg.text_stream(["Read ", "it."])))
        request = rpb.StreamChatRequest(model=GEMINI, messages=[_user(*FILE_PARTS[GEMINI])])
        events = [event async for event in stub.StreamChat(request, timeout=20)]
        assert "".join(event.delta.text for event in events[:-1]) == "Read it."
        parts = fakes.google.requests[-1].body["contents"][0]["parts"]
        # The SDK writes the Blob and FileData fields in snake case; the API takes both spellings.
        assert parts[1]["inlineData"] == {"data": base64.b64encode(PDF).decode(), "mime_type": "application/pdf"}
        assert parts[3]["fileData"] == {"file_uri": "https://example.com/paper.pdf", "mime_type": "application/pdf"}
        assert parts[5]["inlineData"]["mime_type"] == "audio/wav"
        assert parts[6]["mediaResolution"] == {"level": "MEDIA_RESOLUTION_HIGH"}


def _tool_turns(*result_parts: chat_pb2.ContentPart) -> list[chat_pb2.Message]:
    call = chat_pb2.ToolCall(id="call_1", name="render_chart", arguments_json='{"metric": "sales"}')
    result = chat_pb2.ToolResult(
        tool_call_id="call_1", name="render_chart", content="Chart rendered.", parts=list(result_parts)
    )
    return [
        _user(_text("Show me the sales chart.")),
        chat_pb2.Message(role=chat_pb2.ROLE_ASSISTANT, tool_calls=[call]),
        chat_pb2.Message(role=chat_pb2.ROLE_TOOL, tool_result=result),
    ]


class TestToolResultParts:
    @pytest.mark.parametrize("model", [CLAUDE, GEMINI])
    async def test_text_and_image_tool_result(self, stub, fakes, model: str) -> None:
        """Anthropic gets tool_result content blocks; Gemini a functionResponse with the image as its part."""
        fakes.script_text(model)
        messages = _tool_turns(_text("Sales rose 4%."), _png())
        await stub.Chat(rpb.ChatRequest(model=model, messages=messages), timeout=20)
        body = fakes.last_body(model)
        assert_golden(model, "files_tool_result_parts", body)
        png = base64.b64encode(PNG).decode()
        if model == CLAUDE:
            content = body["messages"][2]["content"][0]["content"]
            assert [block["type"] for block in content] == ["text", "text", "image"]
            assert content[2]["source"] == {"type": "base64", "media_type": "image/png", "data": png}
        else:
            response = body["contents"][2]["parts"][0]["functionResponse"]
            assert response["response"] == {"output": "Chart rendered.\nSales rose 4%."}
            assert response["parts"] == [{"inline_data": {"data": png, "mime_type": "image/png"}}]

    async def test_openai_takes_text_parts(self, stub, fakes) -> None:
        """A text-only multi-part result reaches OpenAI as the tool message's text parts."""
        fakes.script_text(GPT)
        await stub.Chat(rpb.ChatRequest(model=GPT, messages=_tool_turns(_text("Sales rose 4%."))), timeout=20)
        body = fakes.openai.chat_requests[-1].body
        assert_golden(GPT, "files_tool_result_parts", body)
        assert body["messages"][2]["content"] == [
            {"type": "text", "text": "Chart rendered."},
            {"type": "text", "text": "Sales rose 4%."},
        ]


class TestMovesOn:
    async def test_audio_moves_from_anthropic_to_gemini(self, stub, fakes) -> None:
        """Anthropic takes no audio: UNSUPPORTED_FEATURE naming the part, and Gemini answers."""
        fakes.anthropic.reset()
        fakes.script_text(GEMINI)
        request = rpb.ChatRequest(model="claude-then-gemini", messages=[_user(_text("Transcribe."), _wav())])
        response = await stub.Chat(request, timeout=20)
        assert response.model == GEMINI
        assert response.attempts[0].moved_on_because == "anthropic cannot serve messages[0].content[1].audio"
        assert fakes.anthropic.requests == []

    async def test_image_in_tool_result_moves_from_openai_to_claude(self, stub, fakes) -> None:
        """OpenAI Chat takes text only in tool results: the router moves on to Anthropic."""
        fakes.openai.script()
        fakes.script_text(CLAUDE)
        request = rpb.ChatRequest(model="gpt-then-claude", messages=_tool_turns(_png()))
        response = await stub.Chat(request, timeout=20)
        assert response.model == CLAUDE
        assert response.attempts[0].moved_on_because == "openai cannot serve messages[2].tool_result.parts[0].image"
        assert fakes.openai.requests == []

    async def test_image_detail_moves_from_anthropic_to_gemini(self, stub, fakes) -> None:
        """Anthropic has no detail level: LOW moves on to Gemini, which gets it as mediaResolution."""
        fakes.anthropic.reset()
        fakes.script_text(GEMINI)
        request = rpb.ChatRequest(
            model="claude-then-gemini", messages=[_user(_text("Look."), _png(chat_pb2.IMAGE_DETAIL_LOW))]
        )
        response = await stub.Chat(request, timeout=20)
        assert response.attempts[0].moved_on_because == "anthropic cannot serve messages[0].content[1].image.detail"
        parts = fakes.google.requests[-1].body["contents"][0]["parts"]
        assert parts[1]["mediaResolution"] == {"level": "MEDIA_RESOLUTION_LOW"}

    async def test_document_url_moves_from_openai_to_gemini(self, stub, fakes) -> None:
        """OpenAI Chat takes no document URL: Gemini fetches it as fileData."""
        fakes.openai.script()
        fakes.script_text(GEMINI)
        document = chat_pb2.ContentPart(document=chat_pb2.DocumentPart(url="https://example.com/paper.pdf"))
        request = rpb.ChatRequest(model="gpt-then-gemini", messages=[_user(_text("Read."), document)])
        response = await stub.Chat(request, timeout=20)
        assert response.attempts[0].moved_on_because == "openai cannot serve messages[0].content[1].document.url"
        assert fakes.openai.requests == []


class TestDocumentCitations:
    async def test_claude_is_asked_to_cite_and_its_citations_come_back(self, stub, fakes) -> None:
        """enable_citations → the document block's citations.enabled; the answer's char_location comes back."""
        cited = fa.citation_examples()[0]
        fakes.anthropic.script(fa.json_reply(fa.message(text="The grass is green.", citations={0: [cited]})))
        notes = chat_pb2.DocumentPart(data=b"The grass is green.", mime_type="text/plain", enable_citations=True)
        messages = [_user(_text("What colour is the grass?"), chat_pb2.ContentPart(document=notes), _pdf())]
        response = await stub.Chat(rpb.ChatRequest(model=CLAUDE, messages=messages), timeout=20)
        blocks = fakes.anthropic.requests[-1].body["messages"][0]["content"]
        assert blocks[1]["citations"] == {"enabled": True}
        assert "citations" not in blocks[2], "only the document asked for is cited"
        [citation] = response.message.citations
        assert (citation.kind, citation.cited_text) == (chat_pb2.CITATION_KIND_DOCUMENT, "The grass is green.")

    @pytest.mark.parametrize(("route", "first"), [("gpt-then-claude", "openai"), ("gemini-then-claude", "google")])
    async def test_others_refuse_it_by_name(self, stub, fakes, route: str, first: str) -> None:
        """OpenAI Chat and Gemini cannot cite a document: refused by name before any call, Claude answers."""
        fakes.openai.script()
        fakes.google.script()
        fakes.script_text(CLAUDE)
        request = rpb.ChatRequest(model=route, messages=[_user(_text("Cite it."), _pdf(enable_citations=True))])
        response = await stub.Chat(request, timeout=20)
        assert response.model == CLAUDE
        field = "messages[0].content[1].document.enable_citations"
        assert response.attempts[0].moved_on_because == f"{first} cannot serve {field}"
        assert getattr(fakes, first).requests == []


class TestValidation:
    @pytest.mark.parametrize(
        ("part", "field"),
        [
            (
                chat_pb2.ContentPart(document=chat_pb2.DocumentPart(data=PDF, mime_type="application/zip")),
                "messages[0].content[1].document.mime_type",
            ),
            (
                chat_pb2.ContentPart(document=chat_pb2.DocumentPart(data=b"", mime_type="application/pdf")),
                "messages[0].content[1].document.data",
            ),
            (
                chat_pb2.ContentPart(document=chat_pb2.DocumentPart(data=PDF)),
                "messages[0].content[1].document.mime_type",
            ),
            (
                chat_pb2.ContentPart(audio=chat_pb2.AudioPart(data=b"", format="wav")),
                "messages[0].content[1].audio.data",
            ),
            (
                chat_pb2.ContentPart(audio=chat_pb2.AudioPart(data=WAV, format="ogg")),
                "messages[0].content[1].audio.format",
            ),
            (
                chat_pb2.ContentPart(image=chat_pb2.ImagePart(data=b"", mime_type="image/png")),
                "messages[0].content[1].image.data",
            ),
            (
                chat_pb2.ContentPart(
                    document=chat_pb2.DocumentPart(data=b"x" * (CONTENT_LIMIT + 1), mime_type="text/plain")
                ),
                "messages[0].content[1]",
            ),
        ],
    )
    async def test_bad_parts_are_refused_before_any_attempt(self, stub, fakes, part, field: str) -> None:
        """A bad document, audio or image part is INVALID_ARGUMENT naming its field; no upstream is called."""
        fakes.openai.script()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Chat(rpb.ChatRequest(model=GPT, messages=[_user(_text("Hi"), part)]), timeout=20)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = caught.value.details() or ""
        assert details.startswith(f"{field}:") or f"{field} " in details, details
        assert fakes.openai.requests == []

    async def test_document_in_an_assistant_message_is_refused(self, stub, fakes) -> None:
        """Documents and audio are user content: elsewhere INVALID_ARGUMENT naming the part."""
        assistant = chat_pb2.Message(role=chat_pb2.ROLE_ASSISTANT, content=[_pdf()])
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Chat(rpb.ChatRequest(model=GPT, messages=[_user(_text("Hi")), assistant]), timeout=20)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "messages[1].content[0].document" in (caught.value.details() or "")

    async def test_fake_refuses_what_the_sdk_types_reject(self, fakes) -> None:
        """The check the fakes run is real: a part outside the SDK's types is a 400 from the fake itself."""
        fakes.openai.script(fo.Reply.json(fo.completion("never")))
        client = openai.AsyncOpenAI(api_key=KEY, base_url=fakes.openai.url, max_retries=0)
        bad = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "ogg"}}
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(
                model=GPT,
                messages=[{"role": "user", "content": [bad]}],  # type: ignore[list-item]
            )
        assert "messages[0].content[0]" in str(caught.value)
        await client.close()

    @pytest.mark.parametrize(
        ("part", "field"),
        [
            (_pdf(), "messages[2].tool_result.parts[0].document"),
            (_wav(), "messages[2].tool_result.parts[0].audio"),
            (
                chat_pb2.ContentPart(image=chat_pb2.ImagePart(data=b"x" * (CONTENT_LIMIT + 1), mime_type="image/png")),
                "messages[2].tool_result.parts[0]",
            ),
        ],
    )
    async def test_bad_tool_result_parts_are_refused(self, stub, fakes, part, field: str) -> None:
        """Tool results take text and images within the per-part limit; anything else names the part."""
        fakes.anthropic.reset()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Chat(rpb.ChatRequest(model=CLAUDE, messages=_tool_turns(part)), timeout=20)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (caught.value.details() or "").startswith(field), caught.value.details()
        assert fakes.anthropic.requests == []
