"""Documents, audio, image detail and multi-part tool results at the HTTP door, with OpenAI's names,
through the real openai SDK against a live router and mock adapter (whose start events list the parts
that reached it: kind, type, size, detail).

Chat Completions: `file` (file_data as a data URL, or file_id), `input_audio`, `image_url.detail`,
tool messages with text and image_url parts. Responses: `input_file`, `input_image` with `detail`,
`input_audio`, and function_call_output with input_image parts. Bad ones are 400s naming the caller's field.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest

from services.testing.mesh import MockMesh
from tests.router.test_http_gateway import MOCK_CONFIG, ROUTING, http_port_of

PDF = b"%PDF-1.4\n%%EOF\n"
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt "
PDF_URL = f"data:application/pdf;base64,{base64.b64encode(PDF).decode()}"
WAV_B64 = base64.b64encode(WAV).decode()
PNG_URL = "data:image/png;base64,iVBORw0KGgo="


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockMesh]:
    with MockMesh(
        mock_config=MOCK_CONFIG,
        routing=ROUTING,
        env={"LLMMESH_HTTP_PORT": "0"},
        workdir=tmp_path_factory.mktemp("door-files"),
    ) as started:
        yield started


@pytest.fixture
async def client(door: MockMesh) -> AsyncIterator[openai.AsyncOpenAI]:
    base_url = f"http://127.0.0.1:{http_port_of(door)}/v1"
    async with openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=20) as sdk:
        yield sdk


async def _parts_seen(door: MockMesh) -> list[dict[str, Any]]:
    """The `parts` of the mock's latest start event (bounded wait: the event file is written after the answer)."""
    for _ in range(50):
        starts = door.events("start")
        if starts:
            return list(starts[-1].get("parts", []))
        await asyncio.sleep(0.05)
    raise AssertionError("the mock recorded no start event")


class TestChatCompletions:
    async def test_file_audio_and_detail_reach_the_provider(self, client: openai.AsyncOpenAI, door: MockMesh) -> None:
        """file (data URL and file_id), input_audio and image_url.detail become document, audio and image parts."""
        door.clear_events()
        answer = await client.chat.completions.create(
            model="mock-small",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "summarise"},
                        {"type": "file", "file": {"file_data": PDF_URL, "filename": "report.pdf"}},
                        {"type": "file", "file": {"file_id": "file-abc"}},
                        {"type": "input_audio", "input_audio": {"data": WAV_B64, "format": "wav"}},
                        {"type": "image_url", "image_url": {"url": PNG_URL, "detail": "low"}},
                    ],
                }
            ],
        )
        assert answer.choices[0].message.content == "[mock mock-small] summarise"
        seen = await _parts_seen(door)
        assert [(part["at"], part["kind"]) for part in seen] == [
            ("messages[0].content[1]", "document"),
            ("messages[0].content[2]", "document"),
            ("messages[0].content[3]", "audio"),
            ("messages[0].content[4]", "image"),
        ]
        assert (seen[0]["mime_type"], seen[0]["bytes"], seen[0]["filename"]) == (
            "application/pdf",
            len(PDF),
            "report.pdf",
        )
        assert (seen[1]["source"], seen[1]["file_id"]) == ("file_id", "file-abc")
        assert (seen[2]["format"], seen[2]["bytes"]) == ("wav", len(WAV))
        assert seen[3]["detail"] == "IMAGE_DETAIL_LOW"

    async def test_file_citations_switch(self, client: openai.AsyncOpenAI, door: MockMesh) -> None:
        """`citations: {"enabled": true}` on a file part (as LiteLLM passes Anthropic's) asks to cite that file."""
        door.clear_events()
        cited = {"type": "file", "file": {"file_data": PDF_URL, "filename": "a.pdf"}, "citations": {"enabled": True}}
        plain = {"type": "file", "file": {"file_id": "file-abc"}}
        await client.chat.completions.create(
            model="mock-small",
            messages=[{"role": "user", "content": [{"type": "text", "text": "cite"}, cited, plain]}],  # type: ignore[list-item]
        )
        seen = await _parts_seen(door)
        assert [part["enable_citations"] for part in seen] == [True, False]

    async def test_tool_message_with_an_image(self, client: openai.AsyncOpenAI, door: MockMesh) -> None:
        """A tool message's text and image_url parts become the tool result's parts, in order."""
        door.clear_events()
        call = {"id": "call_1", "type": "function", "function": {"name": "chart", "arguments": "{}"}}
        await client.chat.completions.create(
            model="mock-small",
            messages=[
                {"role": "user", "content": "chart please"},
                {"role": "assistant", "tool_calls": [call]},
                {
                    "role": "tool",
                    "tool_call_id": "call_1",
                    "content": [  # type: ignore[typeddict-item]
                        {"type": "text", "text": "rendered"},
                        {"type": "image_url", "image_url": {"url": PNG_URL}},
                    ],
                },
            ],
        )
        seen = await _parts_seen(door)
        assert [(part["at"], part["kind"]) for part in seen] == [
            ("messages[2].tool_result.parts[0]", "text"),
            ("messages[2].tool_result.parts[1]", "image"),
        ]
        assert seen[0]["text"] == "rendered"

    @pytest.mark.parametrize(
        ("part", "param"),
        [
            (
                {"type": "file", "file": {"file_data": "data:application/zip;base64,AAAA"}},
                "messages[0].content[1].file.file_data",
            ),
            ({"type": "file", "file": {"file_data": "%%%"}}, "messages[0].content[1].file.file_data"),
            ({"type": "file", "file": {}}, "messages[0].content[1].file"),
            (
                {"type": "input_audio", "input_audio": {"data": WAV_B64, "format": "ogg"}},
                "messages[0].content[1].input_audio.format",
            ),
            (
                {"type": "image_url", "image_url": {"url": PNG_URL, "detail": "ultra"}},
                "messages[0].content[1].image_url.detail",
            ),
            (
                {"type": "file", "file": {"file_id": "file-abc"}, "citations": {"enabled": "yes"}},
                "messages[0].content[1].citations",
            ),
            (
                {"type": "image_url", "image_url": {"url": PNG_URL}, "citations": {"enabled": True}},
                "messages[0].content[1].citations",
            ),
        ],
    )
    async def test_bad_parts_are_400s_naming_the_field(self, client: openai.AsyncOpenAI, part, param: str) -> None:
        """A bad file, audio or detail is a 400 whose `param` is the caller's field."""
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(
                model="mock-small", messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}, part]}]
            )
        assert caught.value.param == param


class TestResponses:
    async def test_input_file_image_and_audio(self, client: openai.AsyncOpenAI, door: MockMesh) -> None:
        """input_file (file_data, file_url with citations asked for, file_id), input_image with detail and
        input_audio reach the provider."""
        door.clear_events()
        response = await client.responses.create(
            model="mock-small",
            input=[
                {
                    "role": "user",
                    "content": [  # type: ignore[list-item]
                        {"type": "input_text", "text": "summarise"},
                        {"type": "input_file", "file_data": PDF_URL, "filename": "report.pdf"},
                        {
                            "type": "input_file",
                            "file_url": "https://example.com/paper.pdf",
                            "citations": {"enabled": True},
                        },
                        {"type": "input_file", "file_id": "file-abc"},
                        {"type": "input_image", "image_url": PNG_URL, "detail": "high"},
                        {"type": "input_audio", "input_audio": {"data": WAV_B64, "format": "mp3"}},
                    ],
                }
            ],
        )
        assert response.output_text == "[mock mock-small] summarise"
        seen = await _parts_seen(door)
        assert [(part["kind"], part.get("source")) for part in seen] == [
            ("document", "data"),
            ("document", "url"),
            ("document", "file_id"),
            ("image", "url"),
            ("audio", None),
        ]
        assert seen[1]["url"] == "https://example.com/paper.pdf"
        assert [part.get("enable_citations") for part in seen[:3]] == [False, True, False]
        assert seen[3]["detail"] == "IMAGE_DETAIL_HIGH"
        assert seen[4]["format"] == "mp3"

    async def test_function_call_output_with_an_image(self, client: openai.AsyncOpenAI, door: MockMesh) -> None:
        """A function_call_output of input_text and input_image parts becomes the tool result's parts."""
        door.clear_events()
        await client.responses.create(
            model="mock-small",
            input=[
                {"role": "user", "content": "chart please"},
                {"type": "function_call", "call_id": "call_1", "name": "chart", "arguments": "{}"},
                {
                    "type": "function_call_output",
                    "call_id": "call_1",
                    "output": [
                        {"type": "input_text", "text": "rendered"},
                        {"type": "input_image", "image_url": PNG_URL, "detail": "auto"},
                    ],
                },
            ],
        )
        seen = await _parts_seen(door)
        assert [(part["kind"], part.get("detail")) for part in seen] == [("text", None), ("image", "IMAGE_DETAIL_AUTO")]

    @pytest.mark.parametrize(
        ("part", "param"),
        [
            ({"type": "input_file", "file_data": "data:application/zip;base64,AAAA"}, "input[0].content[1].file_data"),
            ({"type": "input_file"}, "input[0].content[1]"),
            ({"type": "input_image", "image_url": PNG_URL, "detail": "ultra"}, "input[0].content[1].detail"),
            ({"type": "input_file", "file_id": "file-abc", "detail": "low"}, "input[0].content[1].detail"),
            ({"type": "input_file", "file_id": "file-abc", "citations": True}, "input[0].content[1].citations"),
        ],
    )
    async def test_bad_parts_are_400s_naming_the_field(self, client: openai.AsyncOpenAI, part, param: str) -> None:
        """A bad input_file or detail is a 400 whose `param` is the caller's Responses field."""
        with pytest.raises(openai.BadRequestError) as caught:
            await client.responses.create(
                model="mock-small",
                input=[{"role": "user", "content": [{"type": "input_text", "text": "hi"}, part]}],  # type: ignore[list-item]
            )
        assert caught.value.param == param
