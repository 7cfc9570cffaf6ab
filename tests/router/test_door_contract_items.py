"""Issue 17's contract items at the HTTP door, with OpenAI's names, through the real openai SDK.

Refusals (`message.refusal`, `delta.refusal`, Responses `refusal` parts and
events), the upstream response id in the `llmmesh` field, and tool choice
limited to some tools (`allowed_tools`) with `parallel_tool_calls`, against a
live router and mock adapter (whose start events say what reached it). The wire shapes are checked against OpenAI's schema
in test_openai_schema.py; these tests pin what the SDK reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest

from services.testing.mesh import MockMesh
from tests.router.test_http_gateway import MOCK_CONFIG, ROUTING, TOOLS, USER, http_port_of

REFUSAL = "I can't help with that."
MONTHLY = [{"role": "user", "content": "what is the monthly total?"}]
RESPONSES_TOOLS = [{"type": "function", **tool["function"]} for tool in TOOLS]


def _mock(**options: Any) -> dict[str, Any]:
    """An extra_body that scripts the mock for one request and turns off router retries."""
    return {"llmmesh": {"max_retries": 0, "extensions": {"mock": options}}}


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockMesh]:
    with MockMesh(
        mock_config=MOCK_CONFIG,
        routing=ROUTING,
        env={"LLMMESH_HTTP_PORT": "0"},
        workdir=tmp_path_factory.mktemp("door-contract-items"),
    ) as started:
        yield started


@pytest.fixture
async def client(door: MockMesh) -> AsyncIterator[openai.AsyncOpenAI]:
    base_url = f"http://127.0.0.1:{http_port_of(door)}/v1"
    async with openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=20) as sdk:
        yield sdk


class TestRefusalsInChatCompletions:
    async def test_unary_refusal_is_message_refusal(self, client: openai.AsyncOpenAI) -> None:
        """A refused answer: `message.refusal`, `content: null`, finish_reason "stop", as OpenAI answers."""
        answer = await client.chat.completions.create(
            model="mock-small", messages=USER, extra_body=_mock(refusal=REFUSAL)
        )
        choice = answer.choices[0]
        assert (choice.message.refusal, choice.message.content, choice.finish_reason) == (REFUSAL, None, "stop")

    async def test_streamed_refusal_is_refusal_deltas(self, client: openai.AsyncOpenAI) -> None:
        """A refused stream: `delta.refusal` fragments, no content, then finish_reason "stop"."""
        stream = await client.chat.completions.create(
            model="mock-small", messages=USER, stream=True, extra_body=_mock(refusal=REFUSAL)
        )
        chunks = [chunk async for chunk in stream]
        deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
        assert "".join(delta.refusal or "" for delta in deltas) == REFUSAL
        assert "".join(delta.content or "" for delta in deltas) == ""
        assert chunks[-1].choices[0].finish_reason == "stop"

    async def test_refusal_goes_back_as_history(self, client: openai.AsyncOpenAI, door: MockMesh) -> None:
        """The SDK's refused message, replayed, reaches the provider as the assistant's refusal."""
        first = await client.chat.completions.create(
            model="mock-small", messages=USER, extra_body=_mock(refusal=REFUSAL)
        )
        replay = first.choices[0].message.model_dump(exclude_none=True)
        door.clear_events()
        again = await client.chat.completions.create(
            model="mock-small", messages=[*USER, replay, {"role": "user", "content": "something else"}]
        )
        assert again.choices[0].message.content == "[mock mock-small] something else"
        start = next(event for event in door.events() if event["event"] == "start")
        assert start["messages"] == 3


class TestRefusalsInResponses:
    async def test_unary_refusal_is_a_refusal_part(self, client: openai.AsyncOpenAI) -> None:
        """A refused answer is a message whose one content part is `refusal`; output_text stays empty."""
        response = await client.responses.create(model="mock-small", input="hi", extra_body=_mock(refusal=REFUSAL))
        [item] = response.output
        assert item.type == "message"
        assert [(part.type, getattr(part, "refusal", None)) for part in item.content] == [("refusal", REFUSAL)]
        assert response.output_text == ""

    async def test_streamed_refusal_events(self, client: openai.AsyncOpenAI) -> None:
        """Streamed: response.refusal.delta events, then response.refusal.done with the whole refusal,
        and the completed response carries the refusal part."""
        stream = await client.responses.create(
            model="mock-small", input="hi", stream=True, extra_body=_mock(refusal=REFUSAL, text="Well,")
        )
        events = [event async for event in stream]
        kinds = [event.type for event in events]
        assert "".join(event.delta for event in events if event.type == "response.refusal.delta") == REFUSAL
        [done] = [event for event in events if event.type == "response.refusal.done"]
        assert (done.refusal, done.content_index) == (REFUSAL, 1)
        assert kinds.index("response.output_text.done") < kinds.index("response.refusal.delta")
        final = events[-1].response
        assert [part.type for part in final.output[0].content] == ["output_text", "refusal"]


class TestResponseId:
    async def test_responses_llmmesh_field_names_the_upstream_response_id(self, client: openai.AsyncOpenAI) -> None:
        """Unary and streamed Responses answers carry the upstream's id in `llmmesh.response_id`."""
        response = await client.responses.create(model="mock-small", input="hi")
        assert response.model_extra["llmmesh"]["response_id"].startswith("mock-")
        stream = await client.responses.create(model="mock-small", input="hi", stream=True)
        events = [event async for event in stream]
        mesh = events[-1].response.model_extra["llmmesh"]
        assert mesh["response_id"].startswith("mock-")
        assert mesh["response_id"] != response.model_extra["llmmesh"]["response_id"]


def _start(door: MockMesh) -> dict[str, Any]:
    return next(event for event in door.events() if event["event"] == "start")


class TestToolChoiceLimits:
    async def test_chat_allowed_tools_and_parallel_tool_calls(self, client: openai.AsyncOpenAI, door: MockMesh) -> None:
        """tool_choice allowed_tools and parallel_tool_calls reach the provider; the scripted answer keeps only
        the allowed call."""
        door.clear_events()
        choice = {
            "type": "allowed_tools",
            "allowed_tools": {"mode": "required", "tools": [{"type": "function", "function": {"name": "calculator"}}]},
        }
        answer = await client.chat.completions.create(
            model="mock-agent", messages=MONTHLY, tools=TOOLS, tool_choice=choice, parallel_tool_calls=False
        )
        calls = answer.choices[0].message.tool_calls or []
        assert [call.function.name for call in calls] == ["calculator"]
        start = _start(door)
        assert (start["allowed_tools"], start["parallel_tool_calls"]) == (["calculator"], False)

    async def test_parallel_tool_calls_false_keeps_one_call(self, client: openai.AsyncOpenAI) -> None:
        """parallel_tool_calls false streamed: one call where the script has two."""
        stream = await client.chat.completions.create(
            model="mock-agent", messages=MONTHLY, tools=TOOLS, parallel_tool_calls=False, stream=True
        )
        indices = {
            call.index async for chunk in stream if chunk.choices for call in chunk.choices[0].delta.tool_calls or []
        }
        assert indices == {0}

    async def test_unknown_allowed_tool_names_the_field(self, client: openai.AsyncOpenAI) -> None:
        """An allowed tool that is not in tools: 400 naming it as the caller spelled it."""
        choice = {
            "type": "allowed_tools",
            "allowed_tools": {"mode": "auto", "tools": [{"type": "function", "function": {"name": "nope"}}]},
        }
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="mock-agent", messages=MONTHLY, tools=TOOLS, tool_choice=choice)
        assert caught.value.param == "tool_choice.allowed_tools.tools[0]"

    async def test_responses_allowed_tools_and_parallel_tool_calls(
        self, client: openai.AsyncOpenAI, door: MockMesh
    ) -> None:
        """The Responses spelling ({type: allowed_tools, mode, tools}) maps the same way and is echoed back."""
        door.clear_events()
        choice = {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "current_time"}]}
        response = await client.responses.create(
            model="mock-agent",
            input=MONTHLY[0]["content"],
            tools=RESPONSES_TOOLS,
            tool_choice=choice,
            parallel_tool_calls=False,
        )
        assert [item.name for item in response.output if item.type == "function_call"] == ["current_time"]
        assert (response.parallel_tool_calls, response.tool_choice.type) == (False, "allowed_tools")
        start = _start(door)
        assert (start["allowed_tools"], start["parallel_tool_calls"]) == (["current_time"], False)

    async def test_responses_unknown_allowed_tool_names_the_field(self, client: openai.AsyncOpenAI) -> None:
        choice = {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "nope"}]}
        with pytest.raises(openai.BadRequestError) as caught:
            await client.responses.create(
                model="mock-agent", input="monthly", tools=RESPONSES_TOOLS, tool_choice=choice
            )
        assert caught.value.param == "tool_choice.tools[0]"


class TestLogprobs:
    async def test_chat_logprobs_unary_and_stream(self, client: openai.AsyncOpenAI) -> None:
        """logprobs / top_logprobs come back in choice.logprobs.content, as the SDK reads them, on both paths."""
        answer = await client.chat.completions.create(model="mock-small", messages=USER, logprobs=True, top_logprobs=2)
        content = answer.choices[0].logprobs.content
        assert "".join(item.token for item in content) == answer.choices[0].message.content
        assert [len(item.top_logprobs) for item in content] == [2] * len(content)
        assert content[0].bytes == list(content[0].token.encode())
        stream = await client.chat.completions.create(
            model="mock-small", messages=USER, logprobs=True, top_logprobs=2, stream=True
        )
        streamed = [
            item
            for chunk in [chunk async for chunk in stream]
            if chunk.choices and chunk.choices[0].logprobs
            for item in chunk.choices[0].logprobs.content or []
        ]
        assert [item.model_dump() for item in streamed] == [item.model_dump() for item in content]

    async def test_responses_logprobs_unary_and_stream(self, client: openai.AsyncOpenAI) -> None:
        """include message.output_text.logprobs (with top_logprobs) fills output_text's logprobs and the deltas'."""
        response = await client.responses.create(
            model="mock-small", input="hi", include=["message.output_text.logprobs"], top_logprobs=1
        )
        part = response.output[0].content[0]
        assert "".join(item.token for item in part.logprobs) == part.text
        assert all(len(item.top_logprobs) == 1 for item in part.logprobs)
        stream = await client.responses.create(
            model="mock-small", input="hi", include=["message.output_text.logprobs"], top_logprobs=1, stream=True
        )
        events = [event async for event in stream]
        deltas = [
            item.token for event in events if event.type == "response.output_text.delta" for item in event.logprobs
        ]
        assert "".join(deltas) == part.text
        [done] = [event for event in events if event.type == "response.output_text.done"]
        assert [item.token for item in done.logprobs] == deltas


DOCUMENT_CITATION = {
    "kind": "CITATION_KIND_DOCUMENT",
    "citedText": "The grass is green.",
    "startIndex": 0,
    "endIndex": 5,
    "documentIndex": 0,
    "documentTitle": "Notes",
    "sourceId": "file_011abc",
    "locationUnit": "CITATION_LOCATION_UNIT_CHARACTER",
    "locationStart": 0,
    "locationEnd": 19,
}


class TestCitationsInChatCompletions:
    async def test_unary_url_citation_is_an_annotation(self, client: openai.AsyncOpenAI) -> None:
        """A URL citation is `message.annotations` url_citation, spanning the content, as the SDK types it;
        llmmesh.citations has it in the contract's names."""
        answer = await client.chat.completions.create(
            model="mock-small", messages=USER, extra_body=_mock(citations=True)
        )
        message = answer.choices[0].message
        [annotation] = message.annotations or []
        assert annotation.type == "url_citation"
        cited = annotation.url_citation
        assert cited.url.startswith("https://mock.invalid/sources/")
        assert (cited.start_index, cited.end_index) == (0, len(message.content or ""))
        [mesh] = answer.model_extra["llmmesh"]["citations"]
        assert (mesh["kind"], mesh["url"], mesh["end_index"]) == ("CITATION_KIND_URL", cited.url, cited.end_index)

    async def test_document_citation_only_in_llmmesh(self, client: openai.AsyncOpenAI) -> None:
        """A document citation has no Chat Completions shape: no annotation, all its fields in llmmesh.citations."""
        answer = await client.chat.completions.create(
            model="mock-small", messages=USER, extra_body=_mock(citations=[DOCUMENT_CITATION])
        )
        assert not answer.choices[0].message.annotations
        [mesh] = answer.model_extra["llmmesh"]["citations"]
        assert mesh == {
            "kind": "CITATION_KIND_DOCUMENT",
            "cited_text": "The grass is green.",
            "start_index": 0,
            "end_index": 5,
            "document_index": 0,
            "document_title": "Notes",
            "source_id": "file_011abc",
            "location_unit": "CITATION_LOCATION_UNIT_CHARACTER",
            "location_start": 0,
            "location_end": 19,
        }

    async def test_streamed_annotations_ride_a_delta(self, client: openai.AsyncOpenAI) -> None:
        """Streamed: one delta after the text carries `annotations` (and the chunk llmmesh.citations)."""
        stream = await client.chat.completions.create(
            model="mock-small", messages=USER, stream=True, extra_body=_mock(citations=True)
        )
        chunks = [chunk async for chunk in stream]
        text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
        carriers = [
            chunk for chunk in chunks if chunk.choices and chunk.choices[0].delta.model_extra.get("annotations")
        ]
        assert len(carriers) == 1
        [annotation] = carriers[0].choices[0].delta.model_extra["annotations"]
        assert annotation["type"] == "url_citation"
        assert (annotation["url_citation"]["start_index"], annotation["url_citation"]["end_index"]) == (0, len(text))
        assert carriers[0].model_extra["llmmesh"]["citations"][0]["url"] == annotation["url_citation"]["url"]

    async def test_annotations_in_history_are_accepted(self, client: openai.AsyncOpenAI, door: MockMesh) -> None:
        """The SDK's cited message, replayed with its annotations, is accepted; the conversation goes on."""
        first = await client.chat.completions.create(
            model="mock-small", messages=USER, extra_body=_mock(citations=True)
        )
        replay = first.choices[0].message.model_dump(exclude_none=True)
        assert replay["annotations"]
        door.clear_events()
        again = await client.chat.completions.create(
            model="mock-small", messages=[*USER, replay, {"role": "user", "content": "more"}]
        )
        assert again.choices[0].message.content == "[mock mock-small] more"
        assert _start(door)["messages"] == 3


class TestCitationsInResponses:
    async def test_unary_annotations(self, client: openai.AsyncOpenAI) -> None:
        """output_text annotations: url_citation for a URL, file_citation for a document (file id, title, index)."""
        response = await client.responses.create(model="mock-small", input="hi", extra_body=_mock(citations=True))
        [annotation] = response.output[0].content[0].annotations
        assert (annotation.type, annotation.start_index) == ("url_citation", 0)
        assert annotation.end_index == len(response.output_text)
        document = await client.responses.create(
            model="mock-small", input="hi", extra_body=_mock(citations=[DOCUMENT_CITATION])
        )
        [cited] = document.output[0].content[0].annotations
        assert (cited.type, cited.file_id, cited.filename, cited.index) == ("file_citation", "file_011abc", "Notes", 5)

    async def test_streamed_annotation_added_events(self, client: openai.AsyncOpenAI) -> None:
        """Streamed: response.output_text.annotation.added after the text, and the done part carries it."""
        stream = await client.responses.create(
            model="mock-small", input="hi", stream=True, extra_body=_mock(citations=True)
        )
        events = [event async for event in stream]
        kinds = [event.type for event in events]
        [added] = [event for event in events if event.type == "response.output_text.annotation.added"]
        assert (added.annotation_index, added.content_index, added.output_index) == (0, 0, 0)
        assert kinds.index("response.output_text.delta") < kinds.index("response.output_text.annotation.added")
        assert kinds.index("response.output_text.annotation.added") < kinds.index("response.output_text.done")
        [done] = [event for event in events if event.type == "response.content_part.done"]
        assert [a.type for a in done.part.annotations] == ["url_citation"]
        final = events[-1].response
        assert final.output[0].content[0].annotations[0].url == added.annotation.url

    async def test_annotations_in_input_are_accepted(self, client: openai.AsyncOpenAI, door: MockMesh) -> None:
        """The SDK's cited output item, sent back in input with its annotations, is accepted."""
        first = await client.responses.create(model="mock-small", input="hi", extra_body=_mock(citations=True))
        replay = first.output[0].model_dump(exclude_none=True)
        assert replay["content"][0]["annotations"]
        door.clear_events()
        again = await client.responses.create(
            model="mock-small", input=[{"role": "user", "content": "hi"}, replay, {"role": "user", "content": "more"}]
        )
        assert again.output_text == "[mock mock-small] more"
        assert _start(door)["messages"] == 3


EPHEMERAL_1H = {"type": "ephemeral", "ttl": "1h"}
# The system prompt: 4 + 5 words = 9 of the mock's tokens; the user message 4 + 2.
CACHED_CHAT = [
    {"role": "system", "content": [{"type": "text", "text": "a b c d e", "cache_control": EPHEMERAL_1H}]},
    {"role": "user", "content": "hi there"},
]


class TestPromptCacheInChatCompletions:
    async def test_breakpoints_key_and_cache_counts(self, client: openai.AsyncOpenAI, door: MockMesh) -> None:
        """cache_control on a part, a whole message and a tool, and prompt_cache_key, reach the provider; usage
        says what was written (OpenAI's cache_write_tokens and LiteLLM's cache_creation_input_tokens)."""
        door.clear_events()
        tools = [{**TOOLS[0], "cache_control": {"type": "ephemeral"}}]
        messages = [CACHED_CHAT[0], {**CACHED_CHAT[1], "cache_control": {"type": "ephemeral", "ttl": "5m"}}]
        answer = await client.chat.completions.create(
            model="mock-small", messages=messages, tools=tools, prompt_cache_key="tenant-7"
        )
        start = _start(door)
        assert start["cache_breakpoints"] == {
            "tools[0]": "CACHE_TTL_UNSPECIFIED",
            "messages[0].content[0]": "CACHE_TTL_1H",
            "messages[1].content[0]": "CACHE_TTL_5M",
        }
        assert start["prompt_cache"] == {"key": "tenant-7", "cached_content": ""}
        usage = answer.usage
        assert usage is not None
        assert usage.prompt_tokens_details is not None
        # Both messages are the cached prefix (the last breakpoint is on the user message): 9 + 6 written.
        assert (usage.prompt_tokens, usage.prompt_tokens_details.cache_write_tokens) == (15, 15)
        assert usage.prompt_tokens_details.cached_tokens == 0
        assert (usage.model_extra or {})["cache_creation_input_tokens"] == 15

    async def test_streamed_usage_reads_the_cache_on_a_later_turn(self, client: openai.AsyncOpenAI) -> None:
        """With history, the same prefix is read: prompt_tokens_details.cached_tokens in the usage chunk."""
        history = [*CACHED_CHAT, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "more"}]
        stream = await client.chat.completions.create(
            model="mock-small", messages=history, stream=True, stream_options={"include_usage": True}
        )
        usages = [chunk.usage async for chunk in stream if chunk.usage is not None]
        details = usages[-1].prompt_tokens_details
        assert details is not None
        assert (details.cached_tokens, details.cache_write_tokens) == (9, 0)
        assert (usages[-1].model_extra or {})["cache_read_input_tokens"] == 9

    @pytest.mark.parametrize(
        ("messages", "param"),
        [
            (
                [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral", "ttl": "2h"}}
                        ],
                    }
                ],
                "messages[0].content[0].cache_control.ttl",
            ),
            (
                [{"role": "user", "content": "hi", "cache_control": {"type": "persistent"}}],
                "messages[0].cache_control.type",
            ),
        ],
    )
    async def test_bad_or_unplaceable_breakpoints_are_400s_naming_the_field(
        self, client: openai.AsyncOpenAI, messages: list[Any], param: str
    ) -> None:
        """A TTL or type the mesh does not take: a 400 naming the field."""
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="mock-small", messages=messages, tools=TOOLS)
        assert caught.value.param == param

    async def test_breakpoint_on_a_tool_message_rides_its_result_parts(
        self, client: openai.AsyncOpenAI, door: MockMesh
    ) -> None:
        """A tool message's cache_control (the agent loop's last turn) marks its result's part, not a 400."""
        door.clear_events()
        call = {"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": "{}"}}
        messages = [
            {"role": "user", "content": "monthly"},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "4", "cache_control": {"type": "ephemeral"}},
        ]
        await client.chat.completions.create(model="mock-small", messages=messages, tools=TOOLS)
        assert _start(door)["cache_breakpoints"] == {"messages[2].tool_result.parts[0]": "CACHE_TTL_UNSPECIFIED"}


class TestPromptCacheInResponses:
    async def test_breakpoints_key_and_cache_counts(self, client: openai.AsyncOpenAI, door: MockMesh) -> None:
        """input_text and tool cache_control and prompt_cache_key reach the provider; input_tokens_details
        carries the cache write count."""
        door.clear_events()
        items = [
            {"role": "system", "content": [{"type": "input_text", "text": "a b c d e", "cache_control": EPHEMERAL_1H}]},
            {"role": "user", "content": "hi there"},
        ]
        tools = [{**RESPONSES_TOOLS[0], "cache_control": {"type": "ephemeral"}}]
        response = await client.responses.create(
            model="mock-small", input=items, tools=tools, prompt_cache_key="tenant-7"
        )
        start = _start(door)
        assert start["cache_breakpoints"] == {
            "tools[0]": "CACHE_TTL_UNSPECIFIED",
            "messages[0].content[0]": "CACHE_TTL_1H",
        }
        assert start["prompt_cache"]["key"] == "tenant-7"
        assert response.usage is not None
        details = response.usage.input_tokens_details
        assert (details.cache_write_tokens, details.cached_tokens) == (9, 0)

    async def test_bad_ttl_names_the_input_field(self, client: openai.AsyncOpenAI) -> None:
        items = [
            {
                "role": "user",
                "content": [{"type": "input_text", "text": "hi", "cache_control": {"type": "ephemeral", "ttl": 5}}],
            }
        ]
        with pytest.raises(openai.BadRequestError) as caught:
            await client.responses.create(model="mock-small", input=items)
        assert caught.value.param == "input[0].content[0].cache_control.ttl"

    async def test_breakpoint_on_a_function_call_item_is_a_400(self, client: openai.AsyncOpenAI) -> None:
        """A function_call item has no place for a breakpoint in the contract: a 400 naming it, not dropped."""
        items = [
            {"role": "user", "content": "monthly"},
            {
                "type": "function_call",
                "call_id": "c1",
                "name": "calculator",
                "arguments": "{}",
                "cache_control": {"type": "ephemeral"},
            },
            {"type": "function_call_output", "call_id": "c1", "output": "4"},
        ]
        with pytest.raises(openai.BadRequestError) as caught:
            await client.responses.create(model="mock-small", input=items, tools=RESPONSES_TOOLS)
        assert caught.value.param == "input[1].cache_control"
