"""The Anthropic adapter as a real process, its real SDK talking to the loopback fake API."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from llmmesh.v1 import chat_pb2
from llmmesh.v1 import provider_service_pb2 as pb
from services.common.errors import MeshError
from services.common.processes import ServiceProcess, run_to_exit
from services.common.reasoning import ReasoningAssembler
from services.testing.fake_anthropic import (
    FakeAnthropic,
    citation_examples,
    dropped_connection,
    error_reply,
    in_stream_error,
    json_reply,
    message,
    ratelimit_headers,
    sse_reply,
    stream_events,
    usage,
)
from tests.providers.anthropic.conftest import ADAPTIVE_MODEL, DEFAULT_MAX_TOKENS, assert_golden, text_message, user

MODEL = "claude-haiku-4-5"
PNG = b"\x89PNG\r\n\x1a\n fake image bytes"


def _chat(stub: Any, request: pb.ProviderServiceChatRequest, timeout: float = 10) -> pb.ProviderServiceChatResponse:
    return stub.Chat(request, timeout=timeout)


def _stream(stub: Any, request: pb.ProviderServiceStreamChatRequest, timeout: float = 10) -> list[Any]:
    return list(stub.StreamChat(request, timeout=timeout))


def _error(call: Any) -> MeshError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return MeshError.from_rpc_error(caught.value)


def _extension(holder: Any) -> dict[str, Any]:
    return json_format.MessageToDict(holder.extensions).get("anthropic", {})


def _tool_conversation() -> list[chat_pb2.Message]:
    return [
        text_message(chat_pb2.ROLE_SYSTEM, "You check the weather."),
        user("Weather in Paris and Oslo?"),
        chat_pb2.Message(
            role=chat_pb2.ROLE_ASSISTANT,
            content=[chat_pb2.ContentPart(text="Checking both.")],
            tool_calls=[
                chat_pb2.ToolCall(id="toolu_01", name="get_weather", arguments_json='{"city": "Paris"}'),
                chat_pb2.ToolCall(id="toolu_02", name="get_weather", arguments_json='{"city": "Oslo"}'),
            ],
        ),
        chat_pb2.Message(
            role=chat_pb2.ROLE_TOOL,
            tool_result=chat_pb2.ToolResult(tool_call_id="toolu_01", name="get_weather", content='{"temp": 21}'),
        ),
        chat_pb2.Message(
            role=chat_pb2.ROLE_TOOL,
            tool_result=chat_pb2.ToolResult(
                tool_call_id="toolu_02", name="get_weather", content="station offline", is_error=True
            ),
        ),
    ]


def _weather_tool() -> chat_pb2.ToolDefinition:
    tool = chat_pb2.ToolDefinition(name="get_weather", description="Current weather for a city.")
    tool.parameters.update({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
    return tool


class TestChat:
    def test_plain_chat(self, stub: Any, fake: FakeAnthropic) -> None:
        """A user message maps to one Messages call; text, usage, model, id and headroom come back."""
        fake.script(json_reply(message(text="Hello there."), headers=ratelimit_headers(requests_remaining=41)))
        response = _chat(stub, pb.ProviderServiceChatRequest(model=MODEL, messages=[user("Hi")]))
        assert [part.text for part in response.message.content] == ["Hello there."]
        assert response.message.role == chat_pb2.ROLE_ASSISTANT
        assert response.finish_reason == chat_pb2.FINISH_REASON_STOP
        assert response.usage == chat_pb2.Usage(input_tokens=12, output_tokens=7)
        assert response.response_model == "claude-haiku-4-5-20251001"
        assert response.response_id == "msg_fake_01"
        assert response.headroom.remaining_requests == 41
        assert response.headroom.limit_tokens == 40000
        assert 25 <= response.headroom.requests_reset.seconds <= 30
        [sent] = fake.requests
        assert sent.path == "/v1/messages"
        assert sent.body == {
            "model": MODEL,
            "max_tokens": DEFAULT_MAX_TOKENS,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        }

    def test_key_sent_as_bearer(self, stub: Any, fake: FakeAnthropic) -> None:
        """The SDK sends the key as Authorization: Bearer, with its own anthropic-version header."""
        fake.script(json_reply(message(text="ok")))
        _chat(stub, pb.ProviderServiceChatRequest(model=MODEL, messages=[user("Hi")]))
        [sent] = fake.requests
        assert (sent.auth_scheme, sent.key_matches) == ("bearer", True)
        assert sent.headers["anthropic-version"]
        assert sent.headers["x-stainless-retry-count"] == "0"

    def test_system_prompt_and_settings(self, stub: Any, fake: FakeAnthropic) -> None:
        """System messages become top-level `system`; max tokens, stop and JSON schema map; unsupported settings are reported."""
        fake.script(json_reply(message(text='{"answer": 4}')))
        request = pb.ProviderServiceChatRequest(
            model=MODEL,
            messages=[
                text_message(chat_pb2.ROLE_SYSTEM, "Be terse."),
                text_message(chat_pb2.ROLE_SYSTEM, "Answer in JSON."),
                user("2+2?"),
            ],
            settings=chat_pb2.GenerationSettings(
                max_output_tokens=256, stop=["\n\nHuman:"], temperature=0.2, top_p=0.9, seed=7
            ),
        )
        request.settings.response_format.type = chat_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA
        request.settings.response_format.json_schema.update(
            {"type": "object", "properties": {"answer": {"type": "integer", "minimum": 0}}, "required": ["answer"]}
        )
        response = _chat(stub, request)
        assert _extension(response)["ignored_settings"] == ["temperature", "top_p", "seed"]
        assert_golden("system_and_settings", fake.requests[0].body)

    def test_cached_tokens_normalised(self, stub: Any, fake: FakeAnthropic) -> None:
        """input_tokens includes cache reads and writes; cached_input_tokens is the cache reads,
        cache_write_input_tokens the writes."""
        fake.script(json_reply(message(text="ok", usage_=usage(10, 5, cache_read=100, cache_creation=20))))
        response = _chat(stub, pb.ProviderServiceChatRequest(model=MODEL, messages=[user("Hi")]))
        assert response.usage == chat_pb2.Usage(
            input_tokens=130, output_tokens=5, cached_input_tokens=100, cache_write_input_tokens=20
        )

    @pytest.mark.parametrize(
        ("stop_reason", "expected"),
        [
            ("end_turn", chat_pb2.FINISH_REASON_STOP),
            ("stop_sequence", chat_pb2.FINISH_REASON_STOP),
            ("max_tokens", chat_pb2.FINISH_REASON_LENGTH),
            ("model_context_window_exceeded", chat_pb2.FINISH_REASON_LENGTH),
            ("tool_use", chat_pb2.FINISH_REASON_TOOL_CALLS),
            ("refusal", chat_pb2.FINISH_REASON_REFUSAL),
            ("pause_turn", chat_pb2.FINISH_REASON_OTHER),
        ],
    )
    def test_finish_reasons(self, stub: Any, fake: FakeAnthropic, stop_reason: str, expected: int) -> None:
        """Each Anthropic stop_reason maps to its unified finish reason; the raw value rides in extensions."""
        fake.script(json_reply(message(text="x", stop_reason=stop_reason)))
        response = _chat(stub, pb.ProviderServiceChatRequest(model=MODEL, messages=[user("Hi")]))
        assert response.finish_reason == expected
        assert _extension(response)["stop_reason"] == stop_reason

    def test_request_extensions_allowlisted(self, stub: Any, fake: FakeAnthropic) -> None:
        """Allowlisted extensions.anthropic options reach the body, with whole numbers as integers."""
        fake.script(json_reply(message(text="ok")))
        request = pb.ProviderServiceChatRequest(model=MODEL, messages=[user("Hi")])
        request.extensions.update(
            {
                "anthropic": {
                    "thinking": {"type": "enabled", "budget_tokens": 2048},
                    "effort": "high",
                    "metadata": {"user_id": "u-1"},
                    "service_tier": "standard_only",
                }
            }
        )
        _chat(stub, request)
        body = fake.requests[0].body
        assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
        assert isinstance(body["thinking"]["budget_tokens"], int)
        assert body["output_config"] == {"effort": "high"}
        assert body["metadata"] == {"user_id": "u-1"}
        assert body["service_tier"] == "standard_only"

    def test_unknown_extension_refused(self, stub: Any, fake: FakeAnthropic) -> None:
        """An option outside the allowlist is INVALID_ARGUMENT naming it, and nothing goes upstream."""
        request = pb.ProviderServiceChatRequest(model=MODEL, messages=[user("Hi")])
        request.extensions.update({"anthropic": {"temperature": 0.3}})
        error = _error(lambda: _chat(stub, request))
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.field == "extensions.anthropic.temperature"
        assert fake.requests == []

    def test_json_object_mode_is_a_forced_tool(self, stub: Any, fake: FakeAnthropic) -> None:
        """Schema-less JSON mode, as Anthropic's docs give it: one forced tool, whose input comes back as the text."""
        fake.script(
            json_reply(
                message(tool_calls=[("toolu_j", "json_object", {"city": "Paris", "n": 2})], stop_reason="tool_use")
            )
        )
        request = pb.ProviderServiceChatRequest(model=MODEL, messages=[user("Paris as JSON")])
        request.settings.response_format.type = chat_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT
        response = _chat(stub, request)
        body = fake.requests[0].body
        assert [tool["name"] for tool in body["tools"]] == ["json_object"]
        assert body["tools"][0]["input_schema"] == {"type": "object"}
        assert body["tool_choice"] == {"type": "tool", "name": "json_object"}
        assert "output_config" not in body
        assert json.loads(response.message.content[0].text) == {"city": "Paris", "n": 2}
        assert (response.finish_reason, list(response.message.tool_calls)) == (chat_pb2.FINISH_REASON_STOP, [])

    def test_json_object_mode_streams_the_input_as_text(self, stub: Any, fake: FakeAnthropic) -> None:
        events = stream_events(message(tool_calls=[("toolu_j", "json_object", {"ok": True})], stop_reason="tool_use"))
        fake.script(sse_reply(events))
        request = pb.ProviderServiceStreamChatRequest(model=MODEL, messages=[user("JSON please")])
        request.settings.response_format.type = chat_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT
        chunks = _stream(stub, request)
        assert not any(chunk.delta.tool_calls for chunk in chunks if chunk.HasField("delta"))
        assert json.loads("".join(chunk.delta.text for chunk in chunks if chunk.HasField("delta"))) == {"ok": True}
        assert chunks[-1].final.finish_reason == chat_pb2.FINISH_REASON_STOP

    @pytest.mark.parametrize("clash", ["tools", "thinking"])
    def test_json_object_mode_cannot_join(self, stub: Any, fake: FakeAnthropic, clash: str) -> None:
        """A forced tool excludes the request's own tools and extended thinking: UNSUPPORTED_FEATURE, nothing sent."""
        request = pb.ProviderServiceChatRequest(model=MODEL, messages=[user("Hi")])
        request.settings.response_format.type = chat_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT
        if clash == "tools":
            request.tools.append(_weather_tool())
        else:
            request.settings.reasoning.budget_tokens = 2048
        error = _error(lambda: _chat(stub, request))
        assert (error.code, error.field) == (grpc.StatusCode.INVALID_ARGUMENT, "settings.response_format.type")
        assert error.reason == "UNSUPPORTED_FEATURE"
        assert fake.requests == []


def _citation_rows(citations: Any) -> list[tuple[Any, ...]]:
    return [
        (
            c.kind,
            c.start_index,
            c.end_index,
            c.cited_text,
            c.url,
            c.title,
            c.document_index if c.HasField("document_index") else None,
            c.document_title,
            c.source_id,
            c.location_unit,
            c.location_start if c.HasField("location_start") else None,
            c.location_end if c.HasField("location_end") else None,
        )
        for c in citations
    ]


# What citation_examples() map to, on a text block spanning 6..18 of the answer.
_EXPECTED_CITATIONS = [
    (chat_pb2.CITATION_KIND_DOCUMENT, 6, 18, "The grass is green.", "", "", 0, "Notes", "",
     chat_pb2.CITATION_LOCATION_UNIT_CHARACTER, 0, 19),
    (chat_pb2.CITATION_KIND_DOCUMENT, 6, 18, "Page two says so.", "", "", 1, "Report.pdf", "file_011abc",
     chat_pb2.CITATION_LOCATION_UNIT_PAGE, 2, 3),
    (chat_pb2.CITATION_KIND_DOCUMENT, 6, 18, "A block.", "", "", 2, "", "",
     chat_pb2.CITATION_LOCATION_UNIT_CONTENT_BLOCK, 0, 1),
    (chat_pb2.CITATION_KIND_URL, 6, 18, "From the web.", "https://example.org/page", "A page", None, "", "EnC0dEd",
     chat_pb2.CITATION_LOCATION_UNIT_UNSPECIFIED, None, None),
    (chat_pb2.CITATION_KIND_SEARCH_RESULT, 6, 18, "From a result.", "", "KB doc 7", 0, "", "https://kb.example/doc-7",
     chat_pb2.CITATION_LOCATION_UNIT_CONTENT_BLOCK, 1, 2),
]  # fmt: skip


class TestCitations:
    def test_every_citation_type_mapped(self, stub: Any, fake: FakeAnthropic) -> None:
        """Each TextCitation type maps to a Citation spanning its text block in the joined text."""
        body = message(text=["Sure. ", "Grass: green", "."], citations={1: citation_examples()})
        fake.script(json_reply(body))
        response = _chat(stub, pb.ProviderServiceChatRequest(model=MODEL, messages=[user("Colour?")]))
        assert "".join(part.text for part in response.message.content) == "Sure. Grass: green."
        assert _citation_rows(response.message.citations) == _EXPECTED_CITATIONS

    def test_streamed_citations_delta(self, stub: Any, fake: FakeAnthropic) -> None:
        """citations_delta events come back as one delta when their block stops, with the block's span."""
        body = message(text=["Sure. ", "Grass: green", "."], citations={1: citation_examples()})
        fake.script(sse_reply(stream_events(body)))
        events = _stream(stub, pb.ProviderServiceStreamChatRequest(model=MODEL, messages=[user("Colour?")]))
        carriers = [event.delta for event in events[:-1] if event.delta.citations]
        assert len(carriers) == 1
        assert not carriers[0].text
        assert _citation_rows(carriers[0].citations) == _EXPECTED_CITATIONS
        assert "".join(event.delta.text for event in events[:-1]) == "Sure. Grass: green."

    def test_citations_in_history_are_not_sent_upstream(self, stub: Any, fake: FakeAnthropic) -> None:
        """An assistant turn with citations is accepted; its text goes back without them."""
        fake.script(json_reply(message(text="ok")))
        earlier = text_message(chat_pb2.ROLE_ASSISTANT, "Green.")
        earlier.citations.add(kind=chat_pb2.CITATION_KIND_DOCUMENT, document_index=0, cited_text="green")
        _chat(stub, pb.ProviderServiceChatRequest(model=MODEL, messages=[user("Colour?"), earlier, user("Sure?")]))
        [sent] = fake.requests
        assert sent.body["messages"][1] == {"role": "assistant", "content": [{"type": "text", "text": "Green."}]}


class TestTools:
    def test_strict_tool(self, stub: Any, fake: FakeAnthropic) -> None:
        """`strict` on a tool is Anthropic's strict tool use; a tool without it sends no flag."""
        fake.script(json_reply(message(text="Sunny.")))
        strict = _weather_tool()
        strict.strict = True
        loose = chat_pb2.ToolDefinition(name="get_time", description="The time in a city.")
        _chat(stub, pb.ProviderServiceChatRequest(model=MODEL, messages=[user("Paris?")], tools=[strict, loose]))
        tools = fake.requests[0].body["tools"]
        assert [tool.get("strict") for tool in tools] == [True, None]

    def test_allowed_tools_and_no_parallel_calls(self, stub: Any, fake: FakeAnthropic) -> None:
        """Anthropic has no allowed-tools field: only the allowed tools are sent; parallel_tool_calls false is
        tool_choice.disable_parallel_tool_use."""
        fake.script(json_reply(message(text="ok")))
        tools = [_weather_tool(), chat_pb2.ToolDefinition(name="get_time", description="The time in a city.")]
        choice = chat_pb2.ToolChoice(
            mode=chat_pb2.TOOL_CHOICE_MODE_REQUIRED, allowed_tools=["get_time"], parallel_tool_calls=False
        )
        _chat(
            stub, pb.ProviderServiceChatRequest(model=MODEL, messages=[user("Time?")], tools=tools, tool_choice=choice)
        )
        body = fake.requests[0].body
        assert [tool["name"] for tool in body["tools"]] == ["get_time"]
        assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
        assert_golden("allowed_tools", body)

    def test_parallel_tool_calls_against_the_extension_is_refused(self, stub: Any, fake: FakeAnthropic) -> None:
        """The older extensions.anthropic.disable_parallel_tool_use contradicting the shared field: refused by name."""
        request = pb.ProviderServiceChatRequest(
            model=MODEL,
            messages=[user("Time?")],
            tools=[_weather_tool()],
            tool_choice=chat_pb2.ToolChoice(parallel_tool_calls=True),
        )
        request.extensions.update({"anthropic": {"disable_parallel_tool_use": True}})
        error = _error(lambda: _chat(stub, request))
        assert error.field == "extensions.anthropic.disable_parallel_tool_use"
        assert fake.requests == []

    def test_logprobs_are_unsupported(self, stub: Any, fake: FakeAnthropic) -> None:
        """Anthropic returns no log probabilities: UNSUPPORTED_FEATURE naming settings.logprobs, nothing sent."""
        settings = chat_pb2.GenerationSettings(logprobs=True)
        request = pb.ProviderServiceChatRequest(model=MODEL, messages=[user("Hi")], settings=settings)
        error = _error(lambda: _chat(stub, request))
        assert (error.reason, error.field) == ("UNSUPPORTED_FEATURE", "settings.logprobs")
        assert fake.requests == []

    def test_caller_user_is_metadata_user_id(self, stub: Any, fake: FakeAnthropic) -> None:
        fake.script(json_reply(message(text="Hi.")))
        request = pb.ProviderServiceChatRequest(
            model=MODEL, messages=[user("Hi")], caller=chat_pb2.CallerContext(user="u-7", labels={"team": "ads"})
        )
        _chat(stub, request)
        assert fake.requests[0].body["metadata"] == {"user_id": "u-7"}

    def test_multi_turn_tool_results(self, stub: Any, fake: FakeAnthropic) -> None:
        """Tool calls become tool_use blocks; both results of one turn go in ONE user message."""
        fake.script(json_reply(message(text="Paris is 21°C; Oslo's station is offline.")))
        request = pb.ProviderServiceChatRequest(
            model=MODEL,
            messages=_tool_conversation(),
            tools=[_weather_tool()],
            tool_choice=chat_pb2.ToolChoice(mode=chat_pb2.TOOL_CHOICE_MODE_AUTO),
        )
        _chat(stub, request)
        body = fake.requests[0].body
        assert [turn["role"] for turn in body["messages"]] == ["user", "assistant", "user"]
        assert [block["tool_use_id"] for block in body["messages"][2]["content"]] == ["toolu_01", "toolu_02"]
        assert_golden("tool_conversation", body)

    @pytest.mark.parametrize(
        ("mode", "name", "expected"),
        [
            (chat_pb2.TOOL_CHOICE_MODE_REQUIRED, "", {"type": "any"}),
            (chat_pb2.TOOL_CHOICE_MODE_NONE, "", {"type": "none"}),
            (chat_pb2.TOOL_CHOICE_MODE_NAMED, "get_weather", {"type": "tool", "name": "get_weather"}),
        ],
    )
    def test_tool_choice(self, stub: Any, fake: FakeAnthropic, mode: int, name: str, expected: dict[str, Any]) -> None:
        """Each tool-choice mode maps to Anthropic's tool_choice."""
        fake.script(json_reply(message(text="ok")))
        request = pb.ProviderServiceChatRequest(
            model=MODEL,
            messages=[user("Hi")],
            tools=[_weather_tool()],
            tool_choice=chat_pb2.ToolChoice(mode=mode, name=name),
        )
        _chat(stub, request)
        assert fake.requests[0].body["tool_choice"] == expected

    def test_parallel_tool_calls_returned(self, stub: Any, fake: FakeAnthropic) -> None:
        """Several tool_use blocks come back as ToolCalls with JSON arguments, finish TOOL_CALLS."""
        fake.script(
            json_reply(
                message(
                    text="Let me check.",
                    tool_calls=[
                        ("toolu_a", "get_weather", {"city": "Paris"}),
                        ("toolu_b", "get_weather", {"city": "Oslo"}),
                    ],
                    stop_reason="tool_use",
                )
            )
        )
        response = _chat(
            stub, pb.ProviderServiceChatRequest(model=MODEL, messages=[user("Hi")], tools=[_weather_tool()])
        )
        assert response.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
        assert [(call.id, call.name, json.loads(call.arguments_json)) for call in response.message.tool_calls] == [
            ("toolu_a", "get_weather", {"city": "Paris"}),
            ("toolu_b", "get_weather", {"city": "Oslo"}),
        ]

    def test_thinking_round_trip(self, stub: Any, fake: FakeAnthropic) -> None:
        """Thinking blocks come back as reasoning parts with their signatures and are replayed first in that turn."""
        fake.script(
            json_reply(
                message(
                    thinking=[("Need the weather tool.", "sig-abc")],
                    redacted_thinking=["opaque-data"],
                    tool_calls=[("toolu_a", "get_weather", {"city": "Paris"})],
                    stop_reason="tool_use",
                    usage_=usage(12, 90, thinking_tokens=70),
                )
            )
        )
        first = _chat(
            stub, pb.ProviderServiceChatRequest(model=MODEL, messages=[user("Paris?")], tools=[_weather_tool()])
        )
        assert [part.reasoning for part in first.message.content] == [
            chat_pb2.ReasoningPart(text="Need the weather tool.", signature="sig-abc", provider="anthropic"),
            chat_pb2.ReasoningPart(redacted_data="opaque-data", provider="anthropic"),
        ]
        assert first.usage.reasoning_tokens == 70
        assert not first.message.extensions.fields
        fake.script(json_reply(message(text="21°C")))
        follow_up = [
            user("Paris?"),
            first.message,
            chat_pb2.Message(
                role=chat_pb2.ROLE_TOOL, tool_result=chat_pb2.ToolResult(tool_call_id="toolu_a", content="21")
            ),
        ]
        _chat(stub, pb.ProviderServiceChatRequest(model=MODEL, messages=follow_up, tools=[_weather_tool()]))
        assistant = fake.requests[1].body["messages"][1]
        assert assistant["content"] == [
            {"type": "thinking", "thinking": "Need the weather tool.", "signature": "sig-abc"},
            {"type": "redacted_thinking", "data": "opaque-data"},
            {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"city": "Paris"}},
        ]

    def test_legacy_thinking_extension_still_replayed(self, stub: Any, fake: FakeAnthropic) -> None:
        """A history holding thinking blocks in extensions.anthropic.thinking (the older form) is still replayed."""
        fake.script(json_reply(message(text="ok")))
        earlier = chat_pb2.Message(role=chat_pb2.ROLE_ASSISTANT, content=[chat_pb2.ContentPart(text="Hi")])
        earlier.extensions.update(
            {"anthropic": {"thinking": [{"type": "thinking", "thinking": "t", "signature": "sig-old"}]}}
        )
        _chat(stub, pb.ProviderServiceChatRequest(model=MODEL, messages=[user("a"), earlier, user("b")]))
        assert fake.requests[0].body["messages"][1]["content"][0]["signature"] == "sig-old"

    def test_foreign_reasoning_is_dropped(self, stub: Any, fake: FakeAnthropic) -> None:
        """Reasoning another provider made cannot pass Anthropic's signature check: it is not sent."""
        fake.script(json_reply(message(text="ok")))
        earlier = chat_pb2.Message(
            role=chat_pb2.ROLE_ASSISTANT,
            content=[
                chat_pb2.ContentPart(reasoning=chat_pb2.ReasoningPart(text="g", signature="Zm9v", provider="google")),
                chat_pb2.ContentPart(text="Hi"),
            ],
        )
        _chat(stub, pb.ProviderServiceChatRequest(model=MODEL, messages=[user("a"), earlier, user("b")]))
        assert fake.requests[0].body["messages"][1]["content"] == [{"type": "text", "text": "Hi"}]


def _reasoning_request(**reasoning: Any) -> pb.ProviderServiceChatRequest:
    max_tokens = reasoning.pop("max_output_tokens", None)
    model = reasoning.pop("model", MODEL)
    settings = chat_pb2.GenerationSettings(reasoning=chat_pb2.ReasoningSettings(**reasoning))
    if max_tokens is not None:
        settings.max_output_tokens = max_tokens
    return pb.ProviderServiceChatRequest(model=model, messages=[user("Think")], settings=settings)


class TestReasoningSettings:
    def test_budget_is_a_manual_thinking_budget(self, stub: Any, fake: FakeAnthropic) -> None:
        """budget_tokens becomes thinking {enabled, budget_tokens}, kept below max_tokens."""
        fake.script(json_reply(message(text="ok")))
        _chat(stub, _reasoning_request(budget_tokens=3000, max_output_tokens=8000))
        body = fake.requests[0].body
        assert (body["thinking"], body["max_tokens"]) == ({"type": "enabled", "budget_tokens": 3000}, 8000)

    def test_budget_above_the_default_max_tokens_raises_it(self, stub: Any, fake: FakeAnthropic) -> None:
        """With no max_output_tokens, max_tokens grows to the budget plus the default answer room."""
        fake.script(json_reply(message(text="ok")))
        _chat(stub, _reasoning_request(budget_tokens=4000))
        assert fake.requests[0].body["max_tokens"] == 4000 + DEFAULT_MAX_TOKENS

    def test_effort_alone_is_a_budget_or_adaptive(self, stub: Any, fake: FakeAnthropic) -> None:
        """An effort is a manual budget from the table, or adaptive thinking with output_config.effort on
        the models LLMMESH_ANTHROPIC_ADAPTIVE_THINKING_MODELS lists."""
        fake.script(json_reply(message(text="ok")), json_reply(message(text="ok")))
        _chat(stub, _reasoning_request(effort=chat_pb2.REASONING_EFFORT_LOW, max_output_tokens=9000))
        _chat(stub, _reasoning_request(effort=chat_pb2.REASONING_EFFORT_MINIMAL, model=ADAPTIVE_MODEL))
        manual, adaptive = (request.body for request in fake.requests)
        assert manual["thinking"] == {"type": "enabled", "budget_tokens": 2048}
        assert "output_config" not in manual
        assert adaptive["thinking"] == {"type": "adaptive"}
        assert adaptive["output_config"] == {"effort": "low"}

    def test_zero_budget_turns_thinking_off(self, stub: Any, fake: FakeAnthropic) -> None:
        """budget_tokens 0 is thinking {type: disabled}."""
        fake.script(json_reply(message(text="ok")))
        _chat(stub, _reasoning_request(budget_tokens=0))
        assert fake.requests[0].body["thinking"] == {"type": "disabled"}

    @pytest.mark.parametrize(
        ("reasoning", "words"),
        [
            ({"budget_tokens": 500}, "smallest thinking budget"),
            ({"budget_tokens": 4000, "max_output_tokens": 4000}, "below"),
        ],
    )
    def test_budgets_anthropic_cannot_take_are_unsupported(
        self, stub: Any, fake: FakeAnthropic, reasoning: dict[str, Any], words: str
    ) -> None:
        """A budget below 1024 or not below max_output_tokens: UNSUPPORTED_FEATURE naming the field, no upstream call."""
        error = _error(lambda: _chat(stub, _reasoning_request(**reasoning)))
        assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNSUPPORTED_FEATURE")
        assert "settings.reasoning.budget_tokens" in str(error)
        assert words in str(error)
        assert fake.requests == []


class TestImages:
    def test_image_bytes_and_url(self, stub: Any, fake: FakeAnthropic) -> None:
        """Image bytes go as a base64 source, http(s) URLs as a url source, data: URLs as base64."""
        fake.script(json_reply(message(text="Two charts.")))
        data_url = "data:image/gif;base64," + base64.b64encode(b"GIF89a").decode()
        content = [
            chat_pb2.ContentPart(text="Compare these."),
            chat_pb2.ContentPart(image=chat_pb2.ImagePart(data=PNG, mime_type="image/png")),
            chat_pb2.ContentPart(image=chat_pb2.ImagePart(url="https://example.com/chart.jpg")),
            chat_pb2.ContentPart(image=chat_pb2.ImagePart(url=data_url)),
        ]
        request = pb.ProviderServiceChatRequest(
            model=MODEL, messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, content=content)]
        )
        _chat(stub, request)
        assert_golden("images", fake.requests[0].body)

    def test_unsupported_image_type_refused(self, stub: Any, fake: FakeAnthropic) -> None:
        """An image type Anthropic does not take is INVALID_ARGUMENT naming its mime_type field."""
        content = [
            chat_pb2.ContentPart(text="What is this?"),
            chat_pb2.ContentPart(image=chat_pb2.ImagePart(data=b"BM", mime_type="image/bmp")),
        ]
        request = pb.ProviderServiceChatRequest(
            model=MODEL, messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, content=content)]
        )
        error = _error(lambda: _chat(stub, request))
        assert (error.code, error.field) == (grpc.StatusCode.INVALID_ARGUMENT, "messages[0].content[1].image.mime_type")
        assert error.reason == "UNSUPPORTED_FEATURE"
        assert fake.requests == []

    def test_image_in_system_refused(self, stub: Any, fake: FakeAnthropic) -> None:
        """A system message with an image is INVALID_ARGUMENT naming that part."""
        system = chat_pb2.Message(
            role=chat_pb2.ROLE_SYSTEM, content=[chat_pb2.ContentPart(image=chat_pb2.ImagePart(url="https://x/y.png"))]
        )
        error = _error(lambda: _chat(stub, pb.ProviderServiceChatRequest(model=MODEL, messages=[system, user("Hi")])))
        assert (error.code, error.field) == (grpc.StatusCode.INVALID_ARGUMENT, "messages[0].content[0]")
        assert error.reason == "UNSUPPORTED_FEATURE"


class TestStreaming:
    def test_streaming_text(self, stub: Any, fake: FakeAnthropic) -> None:
        """Text deltas arrive in order and the stream ends with exactly one final: finish, usage, model, headroom."""
        body = message(text="Hello from a stream.", usage_=usage(9, 4, cache_read=3))
        fake.script(sse_reply(stream_events(body, pieces=3), headers=ratelimit_headers(tokens_remaining=123)))
        events = _stream(stub, pb.ProviderServiceStreamChatRequest(model=MODEL, messages=[user("Hi")]))
        assert all(event.HasField("delta") for event in events[:-1])
        assert "".join(event.delta.text for event in events[:-1]) == "Hello from a stream."
        final = events[-1].final
        assert final.finish_reason == chat_pb2.FINISH_REASON_STOP
        assert final.usage == chat_pb2.Usage(input_tokens=12, output_tokens=4, cached_input_tokens=3)
        assert (final.response_model, final.response_id) == ("claude-haiku-4-5-20251001", "msg_fake_01")
        assert final.headroom.remaining_tokens == 123
        assert _extension(final)["stop_reason"] == "end_turn"
        assert_golden("stream_request", fake.requests[0].body)

    def test_streaming_tool_calls(self, stub: Any, fake: FakeAnthropic) -> None:
        """Tool-call deltas carry index, id and name first, then argument fragments that join to JSON."""
        body = message(
            text="Checking.",
            tool_calls=[("toolu_a", "get_weather", {"city": "Paris"}), ("toolu_b", "list_cities", {})],
            stop_reason="tool_use",
        )
        fake.script(sse_reply(stream_events(body)))
        events = _stream(stub, pb.ProviderServiceStreamChatRequest(model=MODEL, messages=[user("Hi")]))
        calls: dict[int, dict[str, str]] = {}
        for event in events[:-1]:
            for delta in event.delta.tool_calls:
                call = calls.setdefault(delta.index, {"id": delta.id, "name": delta.name, "arguments": ""})
                assert call["id"], "the first delta of a call carries its id"
                assert call["name"], "the first delta of a call carries its name"
                call["arguments"] += delta.arguments_json_delta
        assert {index: (c["id"], c["name"], json.loads(c["arguments"])) for index, c in calls.items()} == {
            0: ("toolu_a", "get_weather", {"city": "Paris"}),
            1: ("toolu_b", "list_cities", {}),
        }
        assert events[-1].final.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS

    def test_streamed_thinking_is_reasoning_deltas(self, stub: Any, fake: FakeAnthropic) -> None:
        """Thinking text, then its signature, stream as reasoning deltas of one index, before the text;
        assembled, they replay on the next turn as the thinking block."""
        body = message(
            thinking=[("Let me think.", "sig-stream")],
            redacted_thinking=["opaque"],
            text="Done.",
            usage_=usage(12, 40, thinking_tokens=30),
        )
        fake.script(sse_reply(stream_events(body)))
        events = _stream(stub, pb.ProviderServiceStreamChatRequest(model=MODEL, messages=[user("Hi")]))
        assembler = ReasoningAssembler()
        for event in events[:-1]:
            if event.delta.HasField("reasoning"):
                assert not event.delta.text
                assembler.add(event.delta.reasoning)
        assert assembler.parts() == [
            chat_pb2.ReasoningPart(text="Let me think.", signature="sig-stream", provider="anthropic"),
            chat_pb2.ReasoningPart(redacted_data="opaque", provider="anthropic"),
        ]
        assert "".join(event.delta.text for event in events[:-1]) == "Done."
        assert events[-1].final.usage.reasoning_tokens == 30
        assert "thinking" not in _extension(events[-1].final)
        earlier = chat_pb2.Message(
            role=chat_pb2.ROLE_ASSISTANT,
            content=[
                *(chat_pb2.ContentPart(reasoning=part) for part in assembler.parts()),
                chat_pb2.ContentPart(text="Done."),
            ],
        )
        fake.script(json_reply(message(text="ok")))
        _chat(stub, pb.ProviderServiceChatRequest(model=MODEL, messages=[user("Hi"), earlier, user("More")]))
        assert [block["type"] for block in fake.requests[1].body["messages"][1]["content"]] == [
            "thinking",
            "redacted_thinking",
            "text",
        ]

    def test_truncated_stream(self, stub: Any, fake: FakeAnthropic) -> None:
        """A stream that ends cleanly without a stop_reason is UNAVAILABLE STREAM_TRUNCATED, never a final."""
        fake.script(sse_reply(stream_events(message(text="Half an ans"), truncate=True)))
        received: list[Any] = []

        def consume() -> None:
            for event in stub.StreamChat(
                pb.ProviderServiceStreamChatRequest(model=MODEL, messages=[user("Hi")]), timeout=10
            ):
                received.append(event)

        error = _error(consume)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "STREAM_TRUNCATED")
        assert received
        assert not any(event.HasField("final") for event in received)

    def test_streamed_refusal_is_a_refusal(self, stub: Any, fake: FakeAnthropic) -> None:
        """A stream ending in stop_reason "refusal": the text so far, one refusal delta with Anthropic's
        explanation, then FINISH_REASON_REFUSAL and the raw reason and details."""
        details = {"type": "refusal", "category": "cyber", "explanation": "This could enable malware."}
        fake.script(sse_reply(stream_events(message(text="I can't", stop_reason="refusal", stop_details=details))))
        events = _stream(stub, pb.ProviderServiceStreamChatRequest(model=MODEL, messages=[user("Hi")]))
        assert "".join(event.delta.text for event in events[:-1]) == "I can't"
        assert [event.delta.refusal for event in events[:-1] if event.delta.refusal] == ["This could enable malware."]
        assert events[-1].final.finish_reason == chat_pb2.FINISH_REASON_REFUSAL
        assert _extension(events[-1].final)["stop_details"]["category"] == "cyber"
        assert events[-1].final.response_id == "msg_fake_01"

    def test_refusal_without_explanation_names_it(self, stub: Any, fake: FakeAnthropic) -> None:
        """A unary refusal without an explanation still says it was one (naming the category) in Message.refusal."""
        details = {"type": "refusal", "category": "bio"}
        fake.script(json_reply(message(stop_reason="refusal", stop_details=details)))
        response = _chat(stub, pb.ProviderServiceChatRequest(model=MODEL, messages=[user("Hi")]))
        assert response.finish_reason == chat_pb2.FINISH_REASON_REFUSAL
        assert response.message.refusal == "Anthropic declined to answer (stop_reason refusal, category bio)"

    def test_refusal_in_history_goes_back_as_text(self, stub: Any, fake: FakeAnthropic) -> None:
        """An assistant turn's Message.refusal reaches Anthropic as that turn's text (it has no refusal block)."""
        fake.script(json_reply(message(text="ok")))
        refused = chat_pb2.Message(role=chat_pb2.ROLE_ASSISTANT, refusal="I can't help with that.")
        _chat(stub, pb.ProviderServiceChatRequest(model=MODEL, messages=[user("Bad"), refused, user("Fine?")]))
        sent = fake.requests[-1].body["messages"][1]
        assert sent == {"role": "assistant", "content": [{"type": "text", "text": "I can't help with that."}]}

    def test_stream_without_final_usage_is_truncated(self, stub: Any, fake: FakeAnthropic) -> None:
        """A message_delta with a stop reason but no output count: UNAVAILABLE STREAM_TRUNCATED, not usage from message_start."""
        events = stream_events(message(text="All of it"))
        for name, data in events:
            if name == "message_delta":
                data["usage"] = {}
        fake.script(sse_reply(events))
        error = _error(lambda: _stream(stub, pb.ProviderServiceStreamChatRequest(model=MODEL, messages=[user("Hi")])))
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "STREAM_TRUNCATED")
        assert "usage" in error.message

    def test_connection_cut_mid_stream(self, stub: Any, fake: FakeAnthropic) -> None:
        """A raw httpx2 RemoteProtocolError mid-stream (not an SDK error) is UNAVAILABLE."""
        fake.script(sse_reply(stream_events(message(text="Hello world"))[:5], end="abort"))
        error = _error(lambda: _stream(stub, pb.ProviderServiceStreamChatRequest(model=MODEL, messages=[user("Hi")])))
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")

    @pytest.mark.parametrize(
        ("error_type", "code"),
        [
            ("overloaded_error", grpc.StatusCode.RESOURCE_EXHAUSTED),
            ("rate_limit_error", grpc.StatusCode.RESOURCE_EXHAUSTED),
            ("api_error", grpc.StatusCode.UNAVAILABLE),
            ("invalid_request_error", grpc.StatusCode.INVALID_ARGUMENT),
        ],
    )
    def test_in_stream_error_event(
        self, stub: Any, fake: FakeAnthropic, error_type: str, code: grpc.StatusCode
    ) -> None:
        """An `error` event inside a 200 stream (plain APIStatusError, status 200) is mapped by its error type."""
        fake.script(sse_reply([*stream_events(message(text="Hello world"))[:4], in_stream_error(error_type, "boom")]))
        error = _error(lambda: _stream(stub, pb.ProviderServiceStreamChatRequest(model=MODEL, messages=[user("Hi")])))
        assert error.code == code

    def test_stream_refused_before_start(self, stub: Any, fake: FakeAnthropic) -> None:
        """A 429 on the streaming request itself maps like a unary one, with its Retry-After."""
        fake.script(error_reply(429, "rate_limit_error", "Slow down", headers={"retry-after": "4"}))
        error = _error(lambda: _stream(stub, pb.ProviderServiceStreamChatRequest(model=MODEL, messages=[user("Hi")])))
        assert (error.code, error.retry_after) == (grpc.StatusCode.RESOURCE_EXHAUSTED, 4.0)
        assert len(fake.requests) == 1

    def test_cancellation_aborts_upstream(self, stub: Any, fake: FakeAnthropic) -> None:
        """Cancelling the gRPC stream closes the upstream HTTP connection mid-stream."""
        body = message(text="word " * 40)
        fake.script(sse_reply(stream_events(body, pieces=40), event_delay=0.2))
        call = stub.StreamChat(pb.ProviderServiceStreamChatRequest(model=MODEL, messages=[user("Hi")]), timeout=30)
        first = next(call)
        assert first.HasField("delta")
        call.cancel()
        [sent] = fake.requests
        assert sent.disconnected.wait(5), "the fake never saw the client go away"


class TestErrors:
    @pytest.mark.parametrize(
        ("status", "error_type", "text", "headers", "code", "reason", "retry_after"),
        [
            (400, "invalid_request_error", "messages: field required", {}, "INVALID_ARGUMENT", "INVALID_REQUEST", None),
            (
                400,
                "invalid_request_error",
                "prompt is too long: 215000 tokens > 200000 maximum",
                {},
                "INVALID_ARGUMENT",
                "CONTEXT_WINDOW_EXCEEDED",
                None,
            ),
            (
                400,
                "invalid_request_error",
                "This request violates our Usage Policy",
                {},
                "FAILED_PRECONDITION",
                "CONTENT_FILTERED",
                None,
            ),
            (401, "authentication_error", "invalid x-api-key", {}, "UNAUTHENTICATED", "PROVIDER_AUTH_FAILED", None),
            (402, "billing_error", "credit balance too low", {}, "PERMISSION_DENIED", "PROVIDER_AUTH_FAILED", None),
            (403, "permission_error", "key lacks access", {}, "PERMISSION_DENIED", "PROVIDER_AUTH_FAILED", None),
            (404, "not_found_error", "model: claude-nope", {}, "NOT_FOUND", "MODEL_NOT_FOUND", None),
            (
                413,
                "request_too_large",
                "Request exceeds the maximum allowed number of bytes",
                {},
                "INVALID_ARGUMENT",
                "INVALID_REQUEST",
                None,
            ),
            (
                429,
                "rate_limit_error",
                "Number of request tokens has exceeded your rate limit",
                {"retry-after": "7"},
                "RESOURCE_EXHAUSTED",
                "RATE_LIMITED",
                7.0,
            ),
            (
                429,
                "rate_limit_error",
                "Rate limited for an hour",
                {"retry-after": "3600"},
                "RESOURCE_EXHAUSTED",
                "RATE_LIMITED",
                3600.0,
            ),
            (500, "api_error", "Internal server error", {}, "UNAVAILABLE", "UPSTREAM_UNAVAILABLE", None),
            (503, "api_error", "Service unavailable", {"retry-after": "2"}, "UNAVAILABLE", "UPSTREAM_UNAVAILABLE", 2.0),
            (529, "overloaded_error", "Overloaded", {"retry-after": "3"}, "RESOURCE_EXHAUSTED", "RATE_LIMITED", 3.0),
        ],
    )
    def test_status_mapping(
        self,
        stub: Any,
        fake: FakeAnthropic,
        status: int,
        error_type: str,
        text: str,
        headers: dict[str, str],
        code: str,
        reason: str,
        retry_after: float | None,
    ) -> None:
        """Each upstream status maps per docs/errors.md, with RetryInfo from Retry-After and exactly one upstream request."""
        fake.script(error_reply(status, error_type, text, headers=headers))
        started = time.monotonic()
        error = _error(lambda: _chat(stub, pb.ProviderServiceChatRequest(model=MODEL, messages=[user("Hi")])))
        assert (error.code, error.reason, error.retry_after) == (grpc.StatusCode[code], reason, retry_after)
        assert len(fake.requests) == 1, "the SDK retried on its own"
        assert time.monotonic() - started < 3, "the SDK slept on Retry-After"

    def test_connection_dropped(self, stub: Any, fake: FakeAnthropic) -> None:
        """A connection closed before any answer is UNAVAILABLE, not retried."""
        fake.script(dropped_connection())
        error = _error(lambda: _chat(stub, pb.ProviderServiceChatRequest(model=MODEL, messages=[user("Hi")])))
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")
        assert len(fake.requests) == 1

    def test_deadline_shorter_than_upstream(self, stub: Any, fake: FakeAnthropic) -> None:
        """An upstream slower than the caller's deadline gives DEADLINE_EXCEEDED and the HTTP request is dropped."""
        fake.script(json_reply(message(text="late"), delay=3))
        started = time.monotonic()
        error = _error(
            lambda: _chat(stub, pb.ProviderServiceChatRequest(model=MODEL, messages=[user("Hi")]), timeout=0.6)
        )
        assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 2
        [sent] = fake.requests
        assert sent.disconnected.wait(3), "the upstream request outlived the deadline"


class TestProcess:
    def test_list_models_defaults(self, stub: Any) -> None:
        """With LLMMESH_MODELS empty the adapter lists its default Claude models as provider anthropic."""
        response = stub.ListModels(pb.ProviderServiceListModelsRequest(), timeout=5)
        assert response.provider == "anthropic"
        names = [model.name for model in response.models]
        assert "claude-haiku-4-5" in names
        assert all(model.provider == "anthropic" and not model.mock for model in response.models)

    def test_missing_key_refuses_to_start(self) -> None:
        """Without ANTHROPIC_API_KEY the process exits 2 and names the variable."""
        result = run_to_exit(
            ["-m", "services.providers.anthropic"], env={"ANTHROPIC_API_KEY": "", "LLMMESH_PORT": "0"}, timeout=30
        )
        assert result.returncode == 2
        assert "ANTHROPIC_API_KEY" in result.stderr

    def test_key_never_logged(self, stub: Any, fake: FakeAnthropic, adapter: ServiceProcess, api_key: str) -> None:
        """After successes and failures at debug level, the key is nowhere in the adapter's log, and nothing was INTERNAL."""
        fake.script(json_reply(message(text="ok")), error_reply(401, "authentication_error", "invalid x-api-key"))
        _chat(stub, pb.ProviderServiceChatRequest(model=MODEL, messages=[user("Hi")]))
        error = _error(lambda: _chat(stub, pb.ProviderServiceChatRequest(model=MODEL, messages=[user("Hi")])))
        assert api_key not in error.message
        log = adapter.log()
        assert log, "the adapter wrote no log at all"
        assert api_key not in log
        assert "unhandled error" not in log


class TestContinuation:
    def test_assistant_prefix_is_a_trimmed_prefill(self, stub: Any, fake: FakeAnthropic) -> None:
        """assistant_prefix ends the conversation as an assistant turn without trailing whitespace; the seam has one space."""
        fake.script(sse_reply(stream_events(message(text=" forty-two."))))
        request = pb.ProviderServiceStreamChatRequest(
            model=MODEL, messages=[user("The answer?")], assistant_prefix="The answer is \n"
        )
        events = _stream(stub, request)
        assert "".join(event.delta.text for event in events[:-1]) == "forty-two."
        assert events[-1].final.finish_reason == chat_pb2.FINISH_REASON_STOP
        sent = fake.requests[0].body["messages"]
        assert sent[-1] == {"role": "assistant", "content": [{"type": "text", "text": "The answer is"}]}

    def test_assistant_prefix_with_thinking_is_unsupported(self, stub: Any, fake: FakeAnthropic) -> None:
        """Prefill with thinking on (which Anthropic rejects) is UNSUPPORTED_FEATURE naming assistant_prefix."""
        request = pb.ProviderServiceStreamChatRequest(model=MODEL, messages=[user("Hi")], assistant_prefix="So")
        request.extensions.update({"anthropic": {"thinking": {"type": "enabled", "budget_tokens": 2048}}})
        error = _error(lambda: _stream(stub, request))
        assert (error.code, error.reason, error.field) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "UNSUPPORTED_FEATURE",
            "assistant_prefix",
        )
        assert fake.requests == []


def _cached(text: str, ttl: chat_pb2.CacheTtl.ValueType = chat_pb2.CACHE_TTL_UNSPECIFIED) -> chat_pb2.ContentPart:
    return chat_pb2.ContentPart(text=text, cache_control=chat_pb2.CacheControl(ttl=ttl))


class TestPromptCache:
    def _cached_request(self, cls: Any = pb.ProviderServiceChatRequest) -> Any:
        tool = chat_pb2.ToolDefinition(
            name="lookup",
            description="Looks a term up.",
            parameters=json_format.ParseDict({"type": "object"}, chat_pb2.ToolDefinition().parameters),
            cache_control=chat_pb2.CacheControl(ttl=chat_pb2.CACHE_TTL_1H),
        )
        system = chat_pb2.Message(
            role=chat_pb2.ROLE_SYSTEM,
            content=[chat_pb2.ContentPart(text="You answer from the handbook."), _cached("<handbook text>")],
        )
        question = chat_pb2.Message(
            role=chat_pb2.ROLE_USER,
            content=[_cached("Earlier context.", chat_pb2.CACHE_TTL_5M), chat_pb2.ContentPart(text="What is X?")],
        )
        settings = chat_pb2.GenerationSettings(prompt_cache=chat_pb2.PromptCache(key="ignored-by-anthropic"))
        return cls(model=MODEL, messages=[system, question], tools=[tool], settings=settings)

    def test_breakpoints_become_cache_control_blocks(self, stub: Any, fake: FakeAnthropic) -> None:
        """Parts and tools carry cache_control; a cached system prompt goes as text blocks; the key is a no-op."""
        body_back = message(text="X is Y.", usage_=usage(20, 4, cache_read=1800, cache_creation=300))
        fake.script(json_reply(body_back))
        response = _chat(stub, self._cached_request())
        body = fake.requests[0].body
        assert body["system"] == [
            {"type": "text", "text": "You answer from the handbook."},
            {"type": "text", "text": "<handbook text>", "cache_control": {"type": "ephemeral"}},
        ]
        assert body["tools"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
        assert body["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral", "ttl": "5m"}
        assert "cache_control" not in body["messages"][0]["content"][1]
        assert "prompt_cache_key" not in json.dumps(body)
        assert_golden("prompt_cache", body)
        usage_back = response.usage
        assert (usage_back.input_tokens, usage_back.cached_input_tokens, usage_back.cache_write_input_tokens) == (
            2120,
            1800,
            300,
        )

    def test_streamed_usage_carries_cache_counts(self, stub: Any, fake: FakeAnthropic) -> None:
        """message_start's cache_creation / cache_read counts reach the stream final."""
        body_back = message(text="X is Y.", usage_=usage(20, 4, cache_read=0, cache_creation=2100))
        fake.script(sse_reply(stream_events(body_back)))
        final = _stream(stub, self._cached_request(pb.ProviderServiceStreamChatRequest))[-1].final
        assert (final.usage.input_tokens, final.usage.cache_write_input_tokens) == (2120, 2100)

    def test_plain_system_prompt_stays_a_string(self, stub: Any, fake: FakeAnthropic) -> None:
        """Without a breakpoint on it, the system prompt is sent as before: one string."""
        fake.script(json_reply(message(text="Hi.")))
        request = pb.ProviderServiceChatRequest(
            model=MODEL, messages=[text_message(chat_pb2.ROLE_SYSTEM, "Be brief."), user("Hi")]
        )
        _chat(stub, request)
        assert fake.requests[0].body["system"] == "Be brief."

    def test_a_fifth_breakpoint_is_unsupported(self, stub: Any, fake: FakeAnthropic) -> None:
        """Anthropic takes four breakpoints: the fifth is UNSUPPORTED_FEATURE naming it, nothing sent."""
        parts = [_cached(f"chunk {index}") for index in range(5)]
        request = pb.ProviderServiceChatRequest(
            model=MODEL, messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, content=parts)]
        )
        error = _error(lambda: _chat(stub, request))
        assert (error.reason, error.field) == ("UNSUPPORTED_FEATURE", "messages[0].content[4].cache_control")
        assert fake.requests == []

    def test_explicit_cache_is_unsupported(self, stub: Any, fake: FakeAnthropic) -> None:
        """Gemini's cached_content: UNSUPPORTED_FEATURE naming it, so the router moves on."""
        settings = chat_pb2.GenerationSettings(prompt_cache=chat_pb2.PromptCache(cached_content="cachedContents/a1"))
        request = pb.ProviderServiceChatRequest(model=MODEL, messages=[user("Hi")], settings=settings)
        error = _error(lambda: _chat(stub, request))
        assert (error.reason, error.field) == ("UNSUPPORTED_FEATURE", "settings.prompt_cache.cached_content")
        assert fake.requests == []

    def test_tool_result_part_breakpoint_marks_its_block(self, stub: Any, fake: FakeAnthropic) -> None:
        """A breakpoint on a tool result's part becomes that block's cache_control inside the tool_result."""
        fake.script(json_reply(message(text="It is 4.")))
        result = chat_pb2.ToolResult(tool_call_id="toolu_1", name="calc", parts=[_cached("4", chat_pb2.CACHE_TTL_1H)])
        messages = [
            user("What is 2+2?"),
            chat_pb2.Message(
                role=chat_pb2.ROLE_ASSISTANT,
                tool_calls=[chat_pb2.ToolCall(id="toolu_1", name="calc", arguments_json="{}")],
            ),
            chat_pb2.Message(role=chat_pb2.ROLE_TOOL, tool_result=result),
        ]
        _chat(stub, pb.ProviderServiceChatRequest(model=MODEL, messages=messages))
        block = fake.requests[0].body["messages"][2]["content"][0]
        assert block["type"] == "tool_result"
        assert block["content"] == [{"type": "text", "text": "4", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
